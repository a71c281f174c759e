"""The feedback-loop statistic (analytics.feedback; docs/feedback-loops.md).

Pinned three ways: a worked example by hand; the score test against a Poisson GLM fitted
independently with scipy (period effects, prior rate as offset, the efficient information of
the top-k coefficient) and its Pearson dispersion; and simulations of the urn model of Ensign
et al. (2018) with fixed seeds: the runaway loop is caught within the documented periods, and
the check stays quiet when incidents are recorded at their true rates.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import optimize
from scipy import stats as sps

from analytics.feedback import cell_period_counts, feedback_loop_test, urn_patrols

# The policy defaults the docs state (monitoring/policies.py): ratio above 1.5 and p below 0.01.
RATIO_MAX, P_MIN = 1.5, 0.01


def fires(result) -> bool:
    return result.ratio is not None and result.ratio > RATIO_MAX and result.p_value < P_MIN


# ---------------------------------------------------------------------------------------------
# A worked example
# ---------------------------------------------------------------------------------------------


def test_worked_example_by_hand():
    # Three cells scored 10 times in each of two periods. Period 0 (history): incidents 1, 2, 3;
    # the model scores cell 0 highest, so period 1's attention is cell 0, which records 4 of the
    # period's 6 incidents.
    exposure = np.full((3, 2), 10.0)
    labels = np.array([[1, 4], [2, 1], [3, 1]], dtype=float)
    score = np.array([[0.9, 0.2], [0.5, 0.2], [0.1, 0.2]])
    result = feedback_loop_test(exposure, labels, score, top_k=1, prior_labels=1.0)
    # overall prior rate 6/30 = 0.2; shrunk rates (y + 1) / (10 + 1/0.2) = 2/15, 3/15, 4/15;
    # expected share p = 2/9; E = 6 * 2/9 = 4/3; V = 6 * 2/9 * 7/9 = 84/81
    (period,) = result.periods
    assert period.top_cells == [0] and period.labels == 6 and period.observed == 4
    assert period.expected_share == pytest.approx(2 / 9)
    assert result.expected == pytest.approx(4 / 3)
    assert result.ratio == pytest.approx(3.0)
    z = (4 - 4 / 3) / math.sqrt(84 / 81)
    assert result.z == pytest.approx(z) and result.z == pytest.approx(2.6186, abs=1e-4)
    assert result.p_value == pytest.approx(sps.norm.sf(z))
    assert result.dispersion == 1.0 and result.dispersion_dof == 1  # too few to estimate
    assert result.to_dict()["periods"][0]["observed_share"] == pytest.approx(4 / 6)


def test_cell_period_counts_match_a_pandas_group_by():
    rng = np.random.default_rng(3)
    n = 5_000
    cell = rng.integers(0, 7, n)
    period = rng.integers(0, 4, n)
    score = rng.random(n)
    label = np.where(rng.random(n) < 0.3, 1.0, np.where(rng.random(n) < 0.5, 0.0, np.nan))
    exposure, labels, mean = cell_period_counts(cell, period, score, label, n_cells=8, n_periods=4)
    frame = pd.DataFrame({"c": cell, "t": period, "s": score, "y": label == 1.0})
    grouped = frame.groupby(["c", "t"]).agg(n=("s", "size"), y=("y", "sum"), s=("s", "mean"))
    for (c, t), row in grouped.iterrows():
        assert exposure[c, t] == row["n"] and labels[c, t] == row["y"]
        assert mean[c, t] == pytest.approx(row["s"])
    assert exposure[7].sum() == 0 and np.isnan(mean[7]).all()  # cell 7 never scored


def test_bad_input_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="length mismatch"):
        cell_period_counts([0, 1], [0], [0.5, 0.5], [1, 0], n_cells=2, n_periods=1)
    with pytest.raises(ValueError, match="out of range"):
        cell_period_counts([0, 2], [0, 0], [0.5, 0.5], [1, 0], n_cells=2, n_periods=1)
    with pytest.raises(ValueError, match="top_k"):
        feedback_loop_test(np.ones((2, 2)), np.zeros((2, 2)), np.ones((2, 2)), top_k=0)
    with pytest.raises(ValueError, match="between 0 and the exposure"):
        feedback_loop_test(np.ones((2, 2)), np.full((2, 2), 2.0), np.ones((2, 2)), top_k=1)


def test_periods_without_a_comparison_or_without_incidents_are_not_tested():
    exposure = np.full((3, 3), 10.0)
    labels = np.array([[1, 0, 2], [1, 0, 1], [1, 0, 1]], dtype=float)
    score = np.array([[0.5, 0.6, 0.1], [np.nan, 0.5, 0.1], [np.nan, 0.4, 0.1]])
    result = feedback_loop_test(exposure, labels, score, top_k=1)
    # period 1: only one cell scored in period 0 (no comparison); period 2 tested
    assert [p.period for p in result.periods] == [2] and result.periods[0].top_cells == [0]
    quiet = feedback_loop_test(exposure, np.zeros((3, 3)), score, top_k=1)
    assert quiet.periods == [] and quiet.z is None and quiet.p_value == 1.0 and quiet.ratio is None


# ---------------------------------------------------------------------------------------------
# Against a Poisson GLM fitted independently
# ---------------------------------------------------------------------------------------------


def _design(exposure, labels, score, top_k, prior_labels=1.0):
    """Rows (cell, period) of the tested periods: offset log w, period, attended, count."""
    rows = []
    cells, periods = exposure.shape
    for t in range(1, periods):
        past_n, past_y = exposure[:, :t].sum(1), labels[:, :t].sum(1)
        overall = past_y.sum() / past_n.sum()
        rate = (past_y + prior_labels) / (past_n + prior_labels / overall)
        ranked = sorted(range(cells), key=lambda c: (-score[c, t - 1], c))[:top_k]
        if labels[:, t].sum() == 0:
            continue
        for c in range(cells):
            rows.append((math.log(exposure[c, t] * rate[c]), t, c in ranked, labels[c, t]))
    offset = np.array([r[0] for r in rows])
    tested = sorted({r[1] for r in rows})
    dummies = np.array([[r[1] == t for t in tested] for r in rows], dtype=float)
    attended = np.array([r[2] for r in rows], dtype=float)
    y = np.array([r[3] for r in rows])
    return offset, dummies, attended, y


def _poisson_fit(x: np.ndarray, offset: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fitted means of a Poisson GLM with log link, by maximising its likelihood (scipy)."""

    def nll(beta):
        eta = offset + x @ beta
        return float(np.sum(np.exp(eta) - y * eta))

    def grad(beta):
        return x.T @ (np.exp(offset + x @ beta) - y)

    start = np.full(x.shape[1], math.log(y.sum() / np.exp(offset).sum()))
    fit = optimize.minimize(nll, start, jac=grad, method="BFGS", options={"gtol": 1e-10})
    return np.exp(offset + x @ fit.x)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_statistic_is_the_glm_score_test_and_its_pearson_dispersion(seed):
    rng = np.random.default_rng(seed)
    cells, periods, k = 30, 5, 4
    exposure = rng.integers(20, 60, (cells, periods)).astype(float)
    lam = rng.uniform(0.05, 0.3, cells)[:, None] * rng.gamma(4, 0.25, (cells, periods))
    labels = np.minimum(rng.poisson(exposure * lam), exposure)
    score = rng.random((cells, periods))
    result = feedback_loop_test(exposure, labels, score, top_k=k)

    offset, dummies, attended, y = _design(exposure, labels, score, k)
    mu = _poisson_fit(dummies, offset, y)  # H0: period effects and the prior-rate offset
    u = float(attended @ (y - mu))
    x = np.column_stack([dummies, attended])
    info = x.T @ (x * mu[:, None])
    efficient = info[-1, -1] - info[-1, :-1] @ np.linalg.solve(info[:-1, :-1], info[:-1, -1])
    glm_z = u / math.sqrt(efficient)
    assert result.z * math.sqrt(result.dispersion) == pytest.approx(glm_z, rel=1e-5)
    assert result.observed - result.expected == pytest.approx(u, rel=1e-5)

    # dispersion: Pearson X2 / df of the model with one level per period for attended and rest
    groups = np.column_stack([dummies * attended[:, None], dummies * (1 - attended[:, None])])
    mu_alt = _poisson_fit(groups, offset, y)
    pearson = float(np.sum((y - mu_alt) ** 2 / mu_alt))
    dof = y.size - groups.shape[1]
    assert result.dispersion_dof == dof
    assert result.dispersion == pytest.approx(max(1.0, pearson / dof), rel=1e-4)
    assert result.dispersion > 1.0  # the gamma mixing overdisperses the counts


# ---------------------------------------------------------------------------------------------
# The urn model of Ensign et al. (2018), fixed seeds
# ---------------------------------------------------------------------------------------------

# 10 cells scored 28 times a period (4 shifts a day, 7 days), patrols to the argmax cell.
CELLS, RECORDS, TOP_K, PERIODS = 10, 28, 1, 8
# The documented detection delay: at most this many periods after the loop starts (the check's
# window holding the history period and these periods).
DETECTION_PERIODS = 3
REPETITIONS = 200


def _first_alarm(exposure, labels, score) -> int | None:
    """The first number of loop periods after which the check (history + those) fires."""
    for t in range(2, labels.shape[1] + 1):
        if fires(feedback_loop_test(exposure[:, :t], labels[:, :t], score[:, :t], top_k=TOP_K)):
            return t - 1
    return None


@pytest.mark.parametrize("equal_rates", [True, False], ids=["equal-rates", "unequal-rates"])
def test_the_runaway_loop_is_caught_within_the_documented_periods(equal_rates):
    delays = []
    for seed in range(REPETITIONS):
        rng = np.random.default_rng(seed)
        rates = np.full(CELLS, 0.1) if equal_rates else rng.uniform(0.05, 0.3, CELLS)
        data = urn_patrols(rng, rates=rates, periods=PERIODS, records=RECORDS, top_k=TOP_K)
        delays.append(_first_alarm(*data))
    assert all(d is not None and d <= DETECTION_PERIODS for d in delays), delays
    assert np.mean([d == 1 for d in delays]) >= 0.8  # most after the loop's first period


@pytest.mark.parametrize("equal_rates", [True, False], ids=["equal-rates", "unequal-rates"])
def test_reported_incidents_at_true_rates_raise_no_alarm(equal_rates):
    alarms = 0
    for seed in range(REPETITIONS):
        rng = np.random.default_rng(10_000 + seed)
        rates = np.full(CELLS, 0.1) if equal_rates else rng.uniform(0.05, 0.3, CELLS)
        data = urn_patrols(
            rng, rates=rates, periods=PERIODS, records=RECORDS, top_k=TOP_K, discovered=False
        )
        alarms += _first_alarm(*data) is not None  # any of the 7 growing windows
    assert alarms == 0


def test_ensigns_two_neighbourhoods_are_caught_after_the_first_period():
    # The paper's setting: two neighbourhoods of equal rate, a week of hourly records each.
    caught = 0
    for seed in range(REPETITIONS):
        rng = np.random.default_rng(20_000 + seed)
        data = urn_patrols(rng, rates=[0.1, 0.1], periods=2, records=168, top_k=1)
        caught += fires(feedback_loop_test(*data, top_k=1))
    assert caught >= 0.9 * REPETITIONS


def test_false_alarm_rate_is_bounded_when_attention_ignores_the_history():
    # Attention at random (not from the history): the test's size, without the regression to
    # the mean that makes urn-chosen cells conservative. Overdispersed counts included.
    rejections = {"poisson": 0, "overdispersed": 0}
    trials = 500
    for seed in range(trials):
        rng = np.random.default_rng(30_000 + seed)
        exposure = np.full((50, 6), 40.0)
        rates = rng.uniform(0.02, 0.3, 50)[:, None]
        score = rng.random((50, 6))
        poisson = np.minimum(rng.poisson(exposure * rates), exposure)
        mixed = np.minimum(rng.poisson(exposure * rates * rng.gamma(2, 0.5, (50, 6))), exposure)
        rejections["poisson"] += (
            feedback_loop_test(exposure, poisson, score, top_k=5).p_value < P_MIN
        )
        rejections["overdispersed"] += (
            feedback_loop_test(exposure, mixed, score, top_k=5).p_value < P_MIN
        )
    # nominal 1 %: 5 of 500 expected; 12 is beyond the binomial 99.9th percentile
    assert rejections["poisson"] <= 12 and rejections["overdispersed"] <= 12, rejections
