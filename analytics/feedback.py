"""Feedback-loop detection: do recorded incidents concentrate where the model sent attention,
beyond what each place's own history explains? (docs/feedback-loops.md)

Pure numpy/scipy; imports nothing of the project.

The data are counts per cell (an area) and period: ``exposure[c, t]``, how many times the model
scored cell ``c`` in period ``t``; ``labels[c, t]``, how many of those records carry a recorded
incident; ``score[c, t]``, the cell's mean score. In each tested period ``t`` the model's
attention is the top-k cells by their mean score in period ``t - 1``. Under the null hypothesis
(observations do not depend on attention) a cell's incidents in ``t`` are Poisson with mean
``theta_t * exposure[c, t] * rate[c]``, where ``rate[c]`` is the cell's prior rate (its labels per
record in the periods before ``t``, shrunk towards the overall rate by ``prior_labels``
pseudo-incidents) and ``theta_t`` the period's level. Conditional on the period's total
``Y_t``, the top-k cells' count ``O_t`` is then binomial with share
``p_t = sum_top w / sum_all w`` (``w = exposure * rate``).

The statistic is the score (Rao) test of ``beta = 0`` in the Poisson log-linear model
``log mu = alpha_t + log w + beta * top_k`` (period effects, prior rate as offset):
``z = sum_t (O_t - Y_t p_t) / sqrt(phi * sum_t Y_t p_t (1 - p_t))``, one-sided, with
``phi >= 1`` the Pearson dispersion of the model with a top/rest level per period
(quasi-Poisson). The effect size is ``ratio = sum O_t / sum Y_t p_t``: the top-k cells' incidents
per incident their history predicted. Being a score test it needs no fit under the alternative,
so it stays defined when attention explains everything (the runaway case, where non-attended
cells record nothing and the maximum-likelihood ``beta`` is infinite).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats as sps

__all__ = [
    "FeedbackPeriod",
    "FeedbackResult",
    "cell_period_counts",
    "feedback_loop_test",
    "urn_patrols",
]

# Below this many residual degrees of freedom the dispersion is not estimated (phi = 1).
MIN_DISPERSION_DOF = 10


def _json(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class FeedbackPeriod:
    """One tested period: the top-k cells' incidents against what their history predicted."""

    period: int
    labels: int  # Y_t, incidents recorded in the period over every cell
    top_cells: list[int]  # the attended cells (codes), chosen by the previous period's scores
    observed: int  # O_t, incidents in the attended cells
    expected: float  # Y_t * p_t
    variance: float  # Y_t * p_t * (1 - p_t)
    observed_share: float | None  # O_t / Y_t
    expected_share: float | None  # p_t

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _json(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclasses.dataclass(frozen=True)
class FeedbackResult:
    n_cells: int
    n_periods: int
    top_k: int
    periods: list[FeedbackPeriod]
    observed: int
    expected: float
    ratio: float | None  # observed / expected (None when nothing was expected)
    z: float | None
    p_value: float  # one-sided: more concentration than history explains
    dispersion: float  # phi, at least 1
    dispersion_dof: int

    @property
    def tested_labels(self) -> int:
        return sum(p.labels for p in self.periods)

    def to_dict(self) -> dict[str, Any]:
        data = {
            f.name: _json(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name != "periods"
        }
        data["tested_labels"] = self.tested_labels
        data["periods"] = [p.to_dict() for p in self.periods]
        return data


def cell_period_counts(
    cell: npt.ArrayLike,
    period: npt.ArrayLike,
    score: npt.ArrayLike,
    label: npt.ArrayLike,
    *,
    n_cells: int,
    n_periods: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Records to ``(exposure, labels, mean score)`` matrices of shape ``(n_cells, n_periods)``.

    ``cell`` and ``period`` are integer codes; ``label`` is 1 for a recorded incident and 0 or
    NaN otherwise (an incident not recorded yet is no incident yet). Mean score is NaN where a
    cell was not scored in a period.
    """
    c = np.asarray(cell, dtype=np.int64)
    t = np.asarray(period, dtype=np.int64)
    s = np.asarray(score, dtype=np.float64)
    y = np.asarray(label, dtype=np.float64)
    if not (c.shape == t.shape == s.shape == y.shape) or c.ndim != 1:
        raise ValueError(
            f"length mismatch: {c.size} cells, {t.size} periods, {s.size} scores, {y.size} labels"
        )
    if c.size and (c.min() < 0 or c.max() >= n_cells or t.min() < 0 or t.max() >= n_periods):
        raise ValueError("cell or period code out of range")
    flat = c * n_periods + t
    size = n_cells * n_periods
    exposure = np.bincount(flat, minlength=size).reshape(n_cells, n_periods)
    labels = np.bincount(flat, weights=(y == 1.0), minlength=size).reshape(n_cells, n_periods)
    total = np.bincount(flat, weights=s, minlength=size).reshape(n_cells, n_periods)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(exposure > 0, total / np.maximum(exposure, 1), np.nan)
    return exposure.astype(np.float64), np.rint(labels), mean


def _top_cells(scores: np.ndarray, k: int) -> np.ndarray | None:
    """The k cells with the highest mean score (ties: lower code first); None if fewer than
    k + 1 cells were scored (no comparison group)."""
    scored = np.flatnonzero(~np.isnan(scores))
    if scored.size <= k:
        return None
    order = np.lexsort((scored, -scores[scored]))
    return np.sort(scored[order[:k]])


def _checked_matrices(
    exposure: npt.ArrayLike,
    labels: npt.ArrayLike,
    score: npt.ArrayLike,
    *,
    top_k: int,
    prior_labels: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three matrices as floats, refused unless they and the parameters make sense."""
    n = np.asarray(exposure, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(score, dtype=np.float64)
    if n.ndim != 2 or n.shape != y.shape or n.shape != s.shape:
        raise ValueError("exposure, labels and score must be matrices of one shape")
    if top_k < 1:
        raise ValueError("top_k must be at least 1")
    if prior_labels <= 0:
        raise ValueError("prior_labels must be positive")
    if np.any(y > n) or np.any(y < 0):
        raise ValueError("labels must lie between 0 and the exposure of their cell and period")
    return n, y, s


def _prior_weights(n: np.ndarray, y: np.ndarray, t: int, prior_labels: float) -> np.ndarray | None:
    """``w = exposure * rate`` of period ``t``, the rate from the periods before it; None when
    nothing was recorded before (no overall rate to shrink towards)."""
    past_n, past_y = n[:, :t].sum(axis=1), y[:, :t].sum(axis=1)
    overall = past_y.sum() / past_n.sum() if past_n.sum() > 0 else 0.0
    if overall == 0:
        return None
    # Gamma(prior_labels, prior_labels / overall) prior: a cell without history gets the
    # overall rate, a cell with much history its own
    rate = (past_y + prior_labels) / (past_n + prior_labels / overall)
    return n[:, t] * rate


def _period_row(
    y_t: np.ndarray, w: np.ndarray, top: np.ndarray, attended: np.ndarray, t: int
) -> FeedbackPeriod:
    """Period ``t``'s attended incidents against their binomial expectation."""
    total = float(y_t.sum())
    p = float(w[attended].sum() / w.sum())
    observed = int(y_t[attended].sum())
    return FeedbackPeriod(
        period=t,
        labels=int(total),
        top_cells=[int(c) for c in top],
        observed=observed,
        expected=total * p,
        variance=total * p * (1.0 - p),
        observed_share=observed / total,
        expected_share=p,
    )


@dataclasses.dataclass
class _Dispersion:
    """Pearson residuals under the alternative: one level per period for attended and rest."""

    pearson: float = 0.0
    cells_used: int = 0
    levels: int = 0

    def add(self, y_t: np.ndarray, w: np.ndarray, attended: np.ndarray) -> None:
        for group in (attended, ~attended):
            used = group & (w > 0)
            if not used.any():
                continue
            self.levels += 1
            self.cells_used += int(used.sum())
            group_y = y_t[used].sum()
            if group_y == 0:
                continue  # fitted means 0 and counts 0: no residual
            mu = w[used] * (group_y / w[used].sum())
            self.pearson += float(np.sum((y_t[used] - mu) ** 2 / mu))

    @property
    def dof(self) -> int:
        return self.cells_used - self.levels

    @property
    def phi(self) -> float:
        return max(1.0, self.pearson / self.dof) if self.dof >= MIN_DISPERSION_DOF else 1.0


def feedback_loop_test(
    exposure: npt.ArrayLike,
    labels: npt.ArrayLike,
    score: npt.ArrayLike,
    *,
    top_k: int,
    prior_labels: float = 1.0,
) -> FeedbackResult:
    """The score test of attention (last period's top-k) on this period's incidents, conditional
    on each cell's prior rate; see the module docstring. Matrices are ``(cells, periods)``,
    periods oldest first; period 0 is history only."""
    n, y, s = _checked_matrices(exposure, labels, score, top_k=top_k, prior_labels=prior_labels)
    n_cells, n_periods = n.shape
    rows: list[FeedbackPeriod] = []
    residuals = _Dispersion()
    for t in range(1, n_periods):
        top = _top_cells(s[:, t - 1], top_k)
        if top is None or y[:, t].sum() == 0:
            continue
        w = _prior_weights(n, y, t, prior_labels)
        if w is None:
            continue
        attended = np.zeros(n_cells, dtype=bool)
        attended[top] = True
        rows.append(_period_row(y[:, t], w, top, attended, t))
        residuals.add(y[:, t], w, attended)
    return _result(rows, residuals, n_cells=n_cells, n_periods=n_periods, top_k=top_k)


def _result(
    rows: list[FeedbackPeriod], residuals: _Dispersion, *, n_cells: int, n_periods: int, top_k: int
) -> FeedbackResult:
    """The periods summed into one z score, its variance inflated by the dispersion."""
    observed = sum(r.observed for r in rows)
    expected = float(sum(r.expected for r in rows))
    variance = float(sum(r.variance for r in rows))
    dispersion = residuals.phi
    if variance > 0:
        z: float | None = (observed - expected) / math.sqrt(dispersion * variance)
        p_value = float(sps.norm.sf(z))
    else:
        z, p_value = None, 1.0
    return FeedbackResult(
        n_cells=n_cells,
        n_periods=n_periods,
        top_k=top_k,
        periods=rows,
        observed=observed,
        expected=expected,
        ratio=observed / expected if expected > 0 else None,
        z=z,
        p_value=p_value,
        dispersion=dispersion,
        dispersion_dof=max(residuals.dof, 0),
    )


def urn_patrols(
    rng: np.random.Generator,
    *,
    rates: npt.ArrayLike,
    periods: int,
    records: int,
    top_k: int = 1,
    discovered: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The predictive-policing urn of Ensign et al. (2018), by period, as ``(exposure, labels,
    score)`` matrices for ``feedback_loop_test``.

    Each cell is scored ``records`` times a period; an incident happens on a record with the
    cell's true probability ``rates[c]``. Period 0 is history observed everywhere. The model's
    score of a cell is its share of the incidents recorded so far (the urn, smoothed by one
    ball a cell); the next period's patrols go to the top-k cells by that score. With
    ``discovered`` incidents are recorded only where patrols went (the runaway loop); without,
    they are reported at their true rates wherever patrols went (no feedback).
    """
    p = np.asarray(rates, dtype=np.float64)
    cells = p.size
    exposure = np.full((cells, periods), float(records))
    labels = np.zeros((cells, periods))
    score = np.zeros((cells, periods))
    urn = np.zeros(cells)
    for t in range(periods):
        happened = rng.binomial(records, p).astype(np.float64)
        if t > 0 and discovered:
            attended = _top_cells(score[:, t - 1], top_k)
            seen = np.zeros(cells, dtype=bool)
            seen[attended] = True
            happened[~seen] = 0.0
        labels[:, t] = happened
        urn += happened
        score[:, t] = (urn + 1.0) / (urn.sum() + cells)
    return exposure, labels, score
