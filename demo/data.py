"""Synthetic crime-hotspot data and the scikit-learn models behind the platform demo.

The demo needs data that behaves like the real thing -- spatial hot areas, summer peaks,
holiday spikes, week-to-week persistence and a neighbourhood attribute that is mildly
correlated with risk -- so that registry, drift and fairness features have something
meaningful to show, while staying fully reproducible from a single integer seed.

Only numpy, pandas and scikit-learn are used so the module can run anywhere (CI, notebooks,
management commands) without Django.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from statistics import NormalDist

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

__all__ = [
    "FEATURES_V1",
    "FEATURES_V2",
    "GROUP",
    "HOTSPOT_QUANTILE",
    "TARGET",
    "dataset_hash",
    "evaluate",
    "expected_calibration_error",
    "make_dataset",
    "make_production_traffic",
    "split_by_time",
    "train_model",
]

TARGET = "hotspot"
GROUP = "neighbourhood"
#: A cell-week is a hotspot when its count is at or above this quantile of all counts in the set.
HOTSPOT_QUANTILE = 0.8

#: Compact model: recent history, calls and the two strongest static attributes.
FEATURES_V1: list[str] = [
    "incidents_lag_1w",
    "incidents_mean_4w",
    "incidents_same_week_last_year",
    "calls_for_service_lag_1w",
    "bars_and_clubs",
    "vacant_properties",
    "temperature_c",
    "is_holiday_week",
]
#: Full model: every numeric feature in the data set.
FEATURES_V2: list[str] = [
    "incidents_lag_1w",
    "incidents_mean_4w",
    "incidents_same_week_last_year",
    "calls_for_service_lag_1w",
    "streetlight_outages",
    "population_density",
    "bars_and_clubs",
    "transit_stops",
    "vacant_properties",
    "temperature_c",
    "is_holiday_week",
    "week_of_year_sin",
    "week_of_year_cos",
]

# (month, day) of dates whose week sees extra incidents: New Year, May Day, midsummer,
# Halloween, Christmas and New Year's Eve.
_HOLIDAYS: tuple[tuple[int, int], ...] = ((1, 1), (5, 1), (6, 21), (10, 31), (12, 25), (12, 31))
# Hot areas as (row, col) centre in unit coordinates, amplitude on the log rate, width. Kept
# small next to the cell-level noise so neighbourhood and risk are only mildly related.
_HOT_AREAS: tuple[tuple[float, float, float, float], ...] = (
    (0.45, 0.42, 0.25, 0.12),  # old-town nightlife
    (0.85, 0.12, 0.20, 0.10),  # harbour
    (0.30, 0.85, 0.15, 0.10),  # eastfield estates
)
# Weighted Voronoi seeds (row, col, reach): larger reach claims more cells, so sizes differ
# (124 / 104 / 91 / 81 cells on the default 20x20 grid). Four regions rather than more keep
# every group large enough for stable per-group error rates on a 12-week validation window.
_NEIGHBOURHOOD_SEEDS: dict[str, tuple[float, float, float]] = {
    "old-town": (0.45, 0.40, -0.10),
    "northgate": (0.00, 0.40, 0.05),
    "harbour": (0.95, 0.10, 0.00),
    "eastfield": (0.45, 1.00, 0.00),
}
# Incident process on the log scale. High base rates keep Poisson noise modest; a slow AR(1)
# latent (rho 0.9) gives persistence the lag features can pick up.
_BASE_LOG_RATE = 2.5
_CELL_NOISE_SD = 0.7
_AR_RHO, _AR_SIGMA = 0.9, 0.15
_SEASON_AMPLITUDE = 0.12
# Share of a group's non-hotspot rows that turn into unforeseeable hotspots after a fairness shift.
_FAIRNESS_FLIP_SHARE = 0.15
_STD_NORMAL = NormalDist()
_HISTORY_WEEKS = 52  # simulated before `start` so every lag is computed from real counts


def _neighbourhoods(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Assign neighbourhoods as contiguous spatial regions of deliberately unequal size."""
    names = np.array(list(_NEIGHBOURHOOD_SEEDS), dtype=object)
    dist = np.stack([np.hypot(u - r, v - c) - w for r, c, w in _NEIGHBOURHOOD_SEEDS.values()])
    return names[dist.argmin(axis=0)]


def _stratified_normal(rng: np.random.Generator, groups: np.ndarray) -> np.ndarray:
    """Standard-normal scores whose distribution is identical within every group.

    Cell-level risk noise drawn i.i.d. lets a handful of extreme cells decide a
    neighbourhood's hotspot rate; stratifying it keeps the neighbourhood/risk link at the
    designed, mild level for every seed.
    """
    out = np.empty(len(groups))
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        ranks = rng.permutation(len(idx))
        out[idx] = [_STD_NORMAL.inv_cdf((r + 0.5) / len(idx)) for r in ranks]
    return out


def _holiday_flags(week_starts: list[date]) -> np.ndarray:
    """1.0 for weeks containing one of the holiday dates, else 0.0."""
    flags = np.zeros(len(week_starts))
    for i, ws in enumerate(week_starts):
        days = {(d.month, d.day) for d in (ws + timedelta(k) for k in range(7))}
        flags[i] = float(any(h in days for h in _HOLIDAYS))
    return flags


def make_dataset(
    *, seed: int = 7, grid: int = 20, weeks: int = 104, start: date = date(2024, 1, 1)
) -> pd.DataFrame:
    """Simulate weekly incident counts per grid cell and the features a forecaster would see.

    Counts are Poisson with a log rate made of a static spatial risk surface (Gaussian hot
    areas, land-use effects and per-cell noise), a summer peak, holiday and temperature
    effects, streetlight outages and a per-cell AR(1) latent that makes recent history
    predictive. A year of history is simulated before ``start`` so that every lag feature
    is computed from simulated counts. ``hotspot`` marks counts at or above the
    ``HOTSPOT_QUANTILE`` quantile of all counts in the returned frame (threshold stored in
    ``df.attrs["hotspot_threshold"]``).

    The four neighbourhoods are contiguous regions of unequal size. Cell noise is stratified
    per neighbourhood, so their hotspot rates differ only through the hot areas and land use
    (about 0.19 to 0.23 for the default seed): enough for a fairness analysis to read, small
    enough that a sound model keeps its equalized-odds difference under 0.10.
    """
    if grid < 2 or weeks < 1:
        raise ValueError("grid must be >= 2 and weeks >= 1")
    rng = np.random.default_rng(seed)  # the steps draw from it in this order: keep it
    cells = _cells(rng, grid)
    calendar = _calendar(rng, start, weeks + _HISTORY_WEEKS, cells.population_density)
    series = _simulate(rng, cells, calendar)
    return _frame(cells, calendar, series, weeks)


@dataclass(frozen=True)
class _Cells:
    """The static attributes of the grid's cells, one value per cell."""

    rows: np.ndarray
    cols: np.ndarray
    neighbourhood: np.ndarray
    population_density: np.ndarray
    bars_and_clubs: np.ndarray
    transit_stops: np.ndarray
    vacant_properties: np.ndarray
    risk: np.ndarray  # the static part of the log rate


@dataclass(frozen=True)
class _Calendar:
    """One value per simulated week (history included); temperature per week and cell."""

    week_starts: list[date]
    angle: np.ndarray
    season: np.ndarray
    holiday: np.ndarray
    temperature: np.ndarray


@dataclass(frozen=True)
class _Series:
    """Simulated weekly counts per cell (weeks x cells, history included)."""

    incidents: np.ndarray
    calls: np.ndarray
    outages: np.ndarray


def _cells(rng: np.random.Generator, grid: int) -> _Cells:
    """Land use from the hot areas and the city centre, and the static risk surface."""
    rows, cols = np.divmod(np.arange(grid * grid), grid)
    u, v = rows / (grid - 1), cols / (grid - 1)
    neighbourhood = _neighbourhoods(u, v)
    shapes = np.stack(
        [np.exp(-((u - r0) ** 2 + (v - c0) ** 2) / (2 * w**2)) for r0, c0, _, w in _HOT_AREAS]
    )
    amplitudes = np.array([a for *_, a, _ in _HOT_AREAS])
    centre = np.exp(-((u - 0.5) ** 2 + (v - 0.45) ** 2) / (2 * 0.3**2))
    population_density = np.round(rng.lognormal(np.log(2.0 + 8.0 * centre), 0.3), 2)
    bars_and_clubs = rng.poisson(0.3 + 9.0 * shapes[0]).astype(float)
    transit_stops = rng.poisson(0.5 + 0.6 * population_density).astype(float)
    vacant_properties = rng.poisson(1.5 + 10.0 * shapes[1] + 8.0 * shapes[2]).astype(float)
    risk = (
        amplitudes @ shapes
        + 0.015 * bars_and_clubs
        + 0.02 * vacant_properties
        + 0.05 * np.log(population_density)
        + _CELL_NOISE_SD * _stratified_normal(rng, neighbourhood)
    )
    return _Cells(
        rows,
        cols,
        neighbourhood,
        population_density,
        bars_and_clubs,
        transit_stops,
        vacant_properties,
        risk,
    )


def _calendar(
    rng: np.random.Generator, start: date, total: int, population_density: np.ndarray
) -> _Calendar:
    """Week of year, summer peak, holidays and a city temperature that denser cells exceed."""
    week_starts = [start + timedelta(weeks=k - _HISTORY_WEEKS) for k in range(total)]
    woy = np.array([ws.isocalendar().week for ws in week_starts], dtype=float)
    season = _SEASON_AMPLITUDE * np.cos(2 * np.pi * (woy - 29) / 52.0)  # peak in mid July
    city_temp = 11.0 + 9.0 * np.cos(2 * np.pi * (woy - 29) / 52.0) + rng.normal(0, 2.0, total)
    temperature = np.round(
        city_temp[:, None]
        + 0.4 * np.log(population_density)[None, :]
        + rng.normal(0, 0.5, (total, len(population_density))),
        1,
    )
    angle = 2 * np.pi * (woy - 1) / 52.0
    return _Calendar(week_starts, angle, season, _holiday_flags(week_starts), temperature)


def _simulate(rng: np.random.Generator, cells: _Cells, calendar: _Calendar) -> _Series:
    """Poisson counts whose log rate adds the static risk, the calendar, outages and a slow
    AR(1) latent (the persistence the lag features pick up)."""
    total, n_cells = calendar.temperature.shape
    outages = rng.poisson(0.2 + 0.12 * cells.vacant_properties, (total, n_cells)).astype(float)
    rho, sigma = _AR_RHO, _AR_SIGMA
    latent = np.empty((total, n_cells))
    latent[0] = rng.normal(0, sigma / np.sqrt(1 - rho**2), n_cells)
    shocks = rng.normal(0, sigma, (total, n_cells))
    for t in range(1, total):
        latent[t] = rho * latent[t - 1] + shocks[t]
    log_rate = (
        _BASE_LOG_RATE
        + cells.risk[None, :]
        + calendar.season[:, None]
        + 0.2 * calendar.holiday[:, None]
        + 0.01 * (calendar.temperature - 11.0)
        + 0.05 * outages
        + latent
    )
    rate = np.exp(log_rate)
    incidents = rng.poisson(rate)
    # Calls for service mix crime-driven calls with a population-driven baseline.
    calls = rng.poisson(1.2 * rate + 4.0 * cells.population_density[None, :])
    return _Series(incidents, calls, outages)


def _frame(cells: _Cells, calendar: _Calendar, series: _Series, weeks: int) -> pd.DataFrame:
    """One row per cell and week after the history, with the lag features computed from the
    simulated series and the hotspot label."""
    n_cells = len(cells.rows)
    h, total = _HISTORY_WEEKS, weeks + _HISTORY_WEEKS
    incidents, out = series.incidents, slice(h, total)

    def per_row(a: np.ndarray) -> np.ndarray:
        return np.asarray(a, dtype=float).reshape(-1)

    def static(a: np.ndarray) -> np.ndarray:
        return np.tile(np.asarray(a, dtype=float), weeks)

    def weekly(a: np.ndarray) -> np.ndarray:
        return np.repeat(np.asarray(a, dtype=float)[out], n_cells)

    cell_ids = np.array(
        [f"c-{r:02d}-{c:02d}" for r, c in zip(cells.rows, cells.cols, strict=True)], dtype=object
    )
    counts = incidents[out].reshape(-1)
    threshold = float(np.quantile(counts, HOTSPOT_QUANTILE))
    df = pd.DataFrame(
        {
            "cell_id": np.tile(cell_ids, weeks),
            "week_start": np.repeat(np.array(calendar.week_starts[h:], dtype=object), n_cells),
            GROUP: np.tile(cells.neighbourhood, weeks),
            "incidents_lag_1w": per_row(incidents[h - 1 : total - 1]),
            "incidents_mean_4w": per_row(
                np.mean([incidents[h - k : total - k] for k in range(1, 5)], axis=0)
            ),
            "incidents_same_week_last_year": per_row(incidents[0:weeks]),
            "calls_for_service_lag_1w": per_row(series.calls[h - 1 : total - 1]),
            "streetlight_outages": per_row(series.outages[out]),
            "population_density": static(cells.population_density),
            "bars_and_clubs": static(cells.bars_and_clubs),
            "transit_stops": static(cells.transit_stops),
            "vacant_properties": static(cells.vacant_properties),
            "temperature_c": per_row(calendar.temperature[out]),
            "is_holiday_week": weekly(calendar.holiday),
            "week_of_year_sin": np.round(weekly(np.sin(calendar.angle)), 6),
            "week_of_year_cos": np.round(weekly(np.cos(calendar.angle)), 6),
            "incidents": counts.astype(np.int64),
            TARGET: (counts >= threshold).astype(np.int64),
        }
    )
    df.attrs["hotspot_threshold"] = threshold
    return df


def split_by_time(
    df: pd.DataFrame, *, validation_weeks: int = 12
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out the most recent weeks, as a deployed forecaster only ever sees the past."""
    weeks = np.sort(df["week_start"].unique())
    if not 0 < validation_weeks < len(weeks):
        raise ValueError(f"validation_weeks must be in 1..{len(weeks) - 1}, got {validation_weeks}")
    is_val = df["week_start"] >= weeks[-validation_weeks]
    return df.loc[~is_val].reset_index(drop=True), df.loc[is_val].reset_index(drop=True)


def train_model(
    train: pd.DataFrame, features: list[str], *, kind: str = "logreg", seed: int = 7
) -> Pipeline:
    """Fit a demo classifier; both kinds are calibrated well enough for probability use."""
    if kind == "logreg":
        steps = [
            ("scale", StandardScaler()),
            ("clf", LogisticRegression(max_iter=1000, random_state=seed)),
        ]
    elif kind == "gbm":
        steps = [
            (
                "clf",
                HistGradientBoostingClassifier(
                    learning_rate=0.1,
                    max_iter=120,
                    max_depth=4,
                    min_samples_leaf=50,
                    early_stopping=False,
                    random_state=seed,
                ),
            )
        ]
    else:
        raise ValueError(f"unknown model kind {kind!r}; expected 'logreg' or 'gbm'")
    model = Pipeline(steps)
    model.fit(train[features], train[TARGET])
    return model


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, *, bins: int = 10) -> float:
    """Weighted mean |observed rate - mean predicted| over equal-width probability bins."""
    y_true, proba = np.asarray(y_true, dtype=float), np.asarray(proba, dtype=float)
    idx = np.clip((proba * bins).astype(int), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            ece += mask.mean() * abs(y_true[mask].mean() - proba[mask].mean())
    return float(ece)


def _ratio(values: list[float]) -> float:
    """min/max across groups; 1.0 (parity) when no group has a non-zero rate."""
    hi = max(values, default=0.0)
    return float(min(values) / hi) if hi > 0 else 1.0


def _gap(values: list[float]) -> float:
    return float(max(values) - min(values)) if values else 0.0


def evaluate(
    model: Pipeline, validation: pd.DataFrame, features: list[str], *, threshold: float = 0.5
) -> dict[str, float]:
    """Discrimination, calibration and group-parity metrics as plain floats for the registry.

    A group without negatives (positives) has no FPR (FNR) and is left out of that rate's
    ratio and gap rather than counted as zero, which would fake a disparity.
    """
    y = validation[TARGET].to_numpy()
    proba = model.predict_proba(validation[features])[:, 1]
    pred = (proba >= threshold).astype(int)
    groups = validation[GROUP].to_numpy()
    fprs, fnrs = [], []
    for g in np.unique(groups):
        yg, pg = y[groups == g], pred[groups == g]
        if (yg == 0).any():
            fprs.append(float(pg[yg == 0].mean()))
        if (yg == 1).any():
            fnrs.append(float(1.0 - pg[yg == 1].mean()))
    return {
        "auc": float(roc_auc_score(y, proba)),
        "accuracy": float(accuracy_score(y, pred)),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "brier": float(brier_score_loss(y, proba)),
        "ece": expected_calibration_error(y, proba),
        "fpr_ratio": _ratio(fprs),
        "fnr_ratio": _ratio(fnrs),
        # The TPR gap equals the FNR gap, so this is max(TPR gap, FPR gap) across groups.
        "equalized_odds_difference": max(_gap(fnrs), _gap(fprs)),
    }


def dataset_hash(df: pd.DataFrame) -> str:
    """Content hash that ignores column order but changes with any value, name or row order."""
    canonical = df[sorted(df.columns)].to_csv(index=False, lineterminator="\n")
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def make_production_traffic(
    df: pd.DataFrame,
    *,
    seed: int,
    days: int = 35,
    start: date,
    rows_per_day: int = 400,
    drift_from_day: int | None = None,
    drift_features: dict[str, float] | None = None,
    fairness_shift_from_day: int | None = None,
    fairness_group: str | None = None,
) -> pd.DataFrame:
    """Simulate daily scoring requests (with eventual labels) to exercise monitoring.

    Rows are resampled from ``df`` so that, absent a shift, every feature keeps its training
    distribution. From ``drift_from_day`` (0-based) the ``drift_features`` are multiplied by
    their factor; nothing else moves. From ``fairness_shift_from_day`` 15 % of the
    non-hotspot rows of ``fairness_group`` -- chosen among the lowest-risk ones -- become
    hotspots the features cannot foresee, so that group's false-negative rate rises.
    """
    drift_features = dict(drift_features or {})
    unknown = sorted(set(drift_features) - set(FEATURES_V2))
    if unknown:
        raise ValueError(f"drift_features names unknown features: {unknown}")
    if drift_features and drift_from_day is None:
        raise ValueError("drift_features given without drift_from_day")
    if fairness_shift_from_day is not None and fairness_group not in set(df[GROUP]):
        raise ValueError(f"fairness_group {fairness_group!r} is not a {GROUP} in the data")
    if days < 1 or rows_per_day < 1:
        raise ValueError("days and rows_per_day must be >= 1")

    rng = np.random.default_rng(seed)
    n = days * rows_per_day
    sample = df.iloc[rng.integers(0, len(df), n)]
    out = sample[[*FEATURES_V2, GROUP, TARGET]].reset_index(drop=True).copy()
    day = np.repeat(np.arange(days), rows_per_day)
    seconds = np.sort(rng.integers(0, 86_400, (days, rows_per_day)), axis=1).reshape(-1)
    midnight = datetime.combine(start, time(0), tzinfo=UTC)
    out.insert(
        0, "timestamp", pd.to_datetime(midnight) + pd.to_timedelta(day * 86_400 + seconds, "s")
    )
    out.insert(
        1, "prediction_id", [uuid.UUID(bytes=rng.bytes(16), version=4).hex for _ in range(n)]
    )

    if drift_from_day is not None:
        drifted = day >= drift_from_day
        for feature, factor in drift_features.items():
            out.loc[drifted, feature] = out.loc[drifted, feature] * float(factor)

    if fairness_shift_from_day is not None:
        eligible = np.flatnonzero(
            (day >= fairness_shift_from_day)
            & (out[GROUP].to_numpy() == fairness_group)
            & (out[TARGET].to_numpy() == 0)
        )
        # Low recent activity is what makes these new hotspots invisible to the model.
        activity = out["incidents_mean_4w"].to_numpy()[eligible] + rng.random(len(eligible))
        quiet = eligible[np.argsort(activity, kind="stable")[: len(eligible) // 2]]
        n_flip = round(_FAIRNESS_FLIP_SHARE * len(eligible))
        flip = np.sort(rng.choice(quiet, size=n_flip, replace=False))
        out.loc[flip, TARGET] = 1
    return out
