"""Specification of the synthetic demo data and models (pure numpy/pandas/sklearn, no database)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest

from demo.data import (
    FEATURES_V1,
    FEATURES_V2,
    GROUP,
    TARGET,
    dataset_hash,
    evaluate,
    make_dataset,
    make_production_traffic,
    split_by_time,
    train_model,
)

TRAFFIC_START = date(2026, 3, 2)
DRIFT = {"calls_for_service_lag_1w": 1.6}
# the traffic every test here reads (the determinism test makes it again)
TRAFFIC = {
    "seed": 11,
    "start": TRAFFIC_START,
    "drift_from_day": 20,
    "drift_features": DRIFT,
    "fairness_shift_from_day": 25,
    "fairness_group": "eastfield",
}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_dataset()


@pytest.fixture(scope="module")
def split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return split_by_time(frame)


@pytest.fixture(scope="module")
def models(split) -> dict[tuple[str, str], object]:
    train, _ = split
    return {
        (kind, name): train_model(train, features, kind=kind)
        for kind in ("logreg", "gbm")
        for name, features in (("V1", FEATURES_V1), ("V2", FEATURES_V2))
    }


@pytest.fixture(scope="module")
def traffic(frame: pd.DataFrame) -> pd.DataFrame:
    return make_production_traffic(frame, **TRAFFIC)


def traffic_day(traffic: pd.DataFrame) -> np.ndarray:
    midnight = pd.Timestamp(datetime.combine(TRAFFIC_START, datetime.min.time(), tzinfo=UTC))
    return ((traffic["timestamp"] - midnight) // pd.Timedelta(days=1)).to_numpy()


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index over the reference's deciles (ties merged)."""
    inner = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))

    def shares(x: np.ndarray) -> np.ndarray:
        counts = np.bincount(np.searchsorted(inner, x, side="right"), minlength=len(inner) + 1)
        return np.clip(counts / len(x), 1e-6, None)

    ref, cur = shares(reference), shares(current)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


# --- the data set ----------------------------------------------------------------------------


def test_same_seed_gives_an_identical_frame_and_another_seed_a_different_one(frame):
    pd.testing.assert_frame_equal(make_dataset(seed=7), frame)
    assert not make_dataset(seed=8)["incidents"].equals(frame["incidents"])


def test_builds_twenty_by_twenty_cells_over_two_years():
    # speed is the demo's concern, measured by running it, not asserted by a timer here
    assert len(make_dataset()) == 20 * 20 * 104


def test_has_one_row_per_cell_and_week_with_the_documented_columns_and_types(frame):
    numeric = set(FEATURES_V2)
    assert set(frame.columns) == {"cell_id", "week_start", GROUP, "incidents", TARGET} | numeric
    assert not frame.duplicated(["cell_id", "week_start"]).any()
    assert frame["cell_id"].nunique() == 400
    assert all(re.fullmatch(r"c-\d{2}-\d{2}", c) for c in frame["cell_id"].unique())
    weeks = sorted(frame["week_start"].unique())
    assert len(weeks) == 104 and weeks[0] == date(2024, 1, 1)
    assert all(isinstance(w, date) for w in weeks)
    assert {b - a for a, b in pairwise(weeks)} == {timedelta(weeks=1)}
    assert all(frame[c].dtype == np.float64 for c in numeric)
    assert frame["incidents"].dtype == np.int64 and set(frame[TARGET].unique()) == {0, 1}
    assert not frame.isna().any().any()


def test_hotspot_marks_counts_at_or_above_the_80th_percentile(frame):
    threshold = np.quantile(frame["incidents"], 0.8)
    assert frame.attrs["hotspot_threshold"] == threshold
    assert (frame[TARGET] == (frame["incidents"] >= threshold)).all()
    assert 0.18 <= frame[TARGET].mean() <= 0.25


def test_lag_features_are_the_simulated_counts_of_earlier_weeks(frame):
    counts = frame.pivot(index="week_start", columns="cell_id", values="incidents").to_numpy()

    def feature(name: str) -> np.ndarray:
        return frame.pivot(index="week_start", columns="cell_id", values=name).to_numpy()

    np.testing.assert_array_equal(feature("incidents_lag_1w")[1:], counts[:-1])
    expected_mean = np.mean([counts[4 - k : -k] for k in range(1, 5)], axis=0)
    np.testing.assert_allclose(feature("incidents_mean_4w")[4:], expected_mean)
    np.testing.assert_array_equal(feature("incidents_same_week_last_year")[52:], counts[:-52])
    # ...and because counts persist, last week's count predicts this week's.
    assert np.corrcoef(feature("incidents_lag_1w").ravel(), counts.ravel())[0, 1] > 0.8


def test_neighbourhoods_are_unequal_spatial_regions_mildly_linked_to_risk(frame):
    assert (frame.groupby("cell_id")[GROUP].nunique() == 1).all()
    cells = frame.drop_duplicates("cell_id").set_index("cell_id")[GROUP]
    sizes = cells.value_counts()
    assert 4 <= len(sizes) <= 5 and sizes.nunique() == len(sizes)
    for name in sizes.index:  # every neighbourhood is one connected block of cells
        members = {tuple(map(int, c.split("-")[1:])) for c in cells.index[cells == name]}
        seen, todo = set(), [next(iter(members))]
        while todo:
            r, c = todo.pop()
            if (r, c) in members and (r, c) not in seen:
                seen.add((r, c))
                todo += [(r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)]
        assert seen == members, name
    rates = frame.groupby(GROUP)[TARGET].mean()
    assert rates.max() - rates.min() >= 0.02  # something for a fairness analysis to find
    assert rates.min() / rates.max() >= 0.7  # ...but no neighbourhood is a different world


def test_incidents_peak_in_summer_and_rise_in_holiday_weeks(frame):
    weekly = frame.groupby("week_start")[["incidents", "is_holiday_week"]].mean()
    month = np.array([w.month for w in weekly.index])
    summer = weekly["incidents"][np.isin(month, [6, 7, 8])].mean()
    winter = weekly["incidents"][np.isin(month, [12, 1, 2])].mean()
    assert summer > 1.2 * winter
    holiday = weekly["is_holiday_week"].to_numpy() == 1
    neighbours = weekly["incidents"].rolling(3, center=True).sum() - weekly["incidents"]
    lift = (weekly["incidents"] / (neighbours / 2))[holiday].dropna()
    assert lift.mean() > 1.1


def test_split_by_time_holds_out_the_last_weeks(frame, split):
    train, validation = split
    assert len(train) + len(validation) == len(frame)
    assert validation["week_start"].nunique() == 12
    assert train["week_start"].max() < validation["week_start"].min()
    assert validation["week_start"].max() == frame["week_start"].max()
    with pytest.raises(ValueError, match="validation_weeks"):
        split_by_time(frame, validation_weeks=104)


# --- models ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["logreg", "gbm"])
@pytest.mark.parametrize("feature_set", ["V1", "V2"])
def test_both_model_kinds_are_accurate_calibrated_and_fair_on_validation(
    models, split, kind, feature_set
):
    features = FEATURES_V1 if feature_set == "V1" else FEATURES_V2
    metrics = evaluate(models[kind, feature_set], split[1], features)
    # Measured for seed 7: AUC ~0.98, ECE <= 0.015, equalized-odds difference 0.01-0.05.
    assert metrics["auc"] >= 0.70, metrics
    assert metrics["ece"] <= 0.05, metrics
    assert metrics["equalized_odds_difference"] <= 0.10, metrics


@pytest.mark.slow
def test_evaluate_reports_plain_floats_for_every_metric(models, split):
    metrics = evaluate(models["logreg", "V1"], split[1], FEATURES_V1)
    assert set(metrics) == {
        "auc",
        "accuracy",
        "precision",
        "recall",
        "f1",
        "brier",
        "ece",
        "fpr_ratio",
        "fnr_ratio",
        "equalized_odds_difference",
    }
    assert all(type(v) is float and 0.0 <= v <= 1.0 for v in metrics.values())


def test_train_model_names_an_unknown_kind(split):
    with pytest.raises(ValueError, match="'forest'"):
        train_model(split[0], FEATURES_V1, kind="forest")


# --- dataset hash ----------------------------------------------------------------------------


def test_dataset_hash_is_stable_and_changes_with_any_single_value(frame):
    digest = dataset_hash(frame)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    assert dataset_hash(make_dataset()) == digest
    assert dataset_hash(frame[list(reversed(frame.columns))]) == digest
    changed = frame.copy()
    changed.loc[12_345, "temperature_c"] += 0.1
    assert dataset_hash(changed) != digest


# --- production traffic ----------------------------------------------------------------------


def test_production_traffic_is_deterministic_daily_scoring_input(frame, traffic):
    again = make_production_traffic(frame, **TRAFFIC)
    pd.testing.assert_frame_equal(again, traffic)
    assert list(traffic.columns[:2]) == ["timestamp", "prediction_id"]
    assert set(FEATURES_V2) | {GROUP, TARGET} <= set(traffic.columns)
    assert len(traffic) == 35 * 400
    assert str(traffic["timestamp"].dt.tz) == "UTC"
    assert traffic["timestamp"].is_monotonic_increasing
    assert (np.bincount(traffic_day(traffic)) == 400).all()
    ids = traffic["prediction_id"]
    assert ids.is_unique and all(re.fullmatch(r"[0-9a-f]{12}4[0-9a-f]{19}", i) for i in ids)


def test_drift_moves_only_the_named_features_past_psi_0_2(traffic):
    before, after = traffic[traffic_day(traffic) < 20], traffic[traffic_day(traffic) >= 20]
    scores = {f: psi(before[f].to_numpy(), after[f].to_numpy()) for f in FEATURES_V2}
    assert scores["calls_for_service_lag_1w"] > 0.2, scores
    unnamed = {f: s for f, s in scores.items() if f not in DRIFT}
    assert max(unnamed.values()) < 0.02, unnamed


def test_unknown_drift_feature_is_rejected(frame):
    with pytest.raises(ValueError, match="nope"):
        make_production_traffic(
            frame, seed=1, start=TRAFFIC_START, drift_from_day=0, drift_features={"nope": 2.0}
        )


@pytest.mark.slow
def test_fairness_shift_raises_the_groups_false_negative_rate(models, traffic):
    model, day = models["logreg", "V1"], traffic_day(traffic)
    # Days 20-24 carry the same feature drift as the shifted days, so only the labels differ.
    before, after = traffic[(day >= 20) & (day < 25)], traffic[day >= 25]

    def fnr(part: pd.DataFrame) -> float:
        hot = part[(part[GROUP] == "eastfield") & (part[TARGET] == 1)]
        return float((model.predict_proba(hot[FEATURES_V1])[:, 1] < 0.5).mean())

    assert fnr(after) > fnr(before) + 0.15
    ratio_before = evaluate(model, before, FEATURES_V1)["fnr_ratio"]
    ratio_after = evaluate(model, after, FEATURES_V1)["fnr_ratio"]
    assert ratio_after < ratio_before - 0.2
