"""Fairness with uncertainty: the intervals and powers against independent computations (scipy,
published worked examples), and the rule ``judge`` applies to them."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import binomtest, norm
from scipy.stats.contingency import relative_risk

from analytics import fairness, stats

LIMITS = {"equalized_odds_difference_max": 0.1, "fpr_ratio_min": 0.8, "fnr_ratio_min": 0.8}


def confusion(groups: dict[str, tuple[int, int, int, int]]) -> tuple[np.ndarray, ...]:
    """(labels, predicted, group) realising (tp, fp, fn, tn) per group."""
    labels, predicted, names = [], [], []
    for name, (tp, fp, fn, tn) in groups.items():
        for label, pred, count in ((1, 1, tp), (0, 1, fp), (1, 0, fn), (0, 0, tn)):
            labels += [label] * count
            predicted += [pred] * count
            names += [name] * count
    return np.array(labels, np.int8), np.array(predicted, np.int8), np.array(names)


def attribute(groups, *, min_group_size: int = 30) -> stats.AttributeFairness:
    labels, predicted, names = confusion(groups)
    return stats.group_fairness(
        labels, predicted, names, attribute="race", min_group_size=min_group_size
    )


# --- the intervals against independent computations --------------------------------------------


@pytest.mark.parametrize(
    ("x", "n", "level"), [(81, 263, 0.95), (0, 20, 0.95), (20, 20, 0.9), (3, 7, 0.99), (1, 1, 0.8)]
)
def test_wilson_matches_scipy(x, n, level):
    expected = binomtest(x, n).proportion_ci(level, method="wilson")
    assert stats.wilson_interval(x, n, level) == pytest.approx((expected.low, expected.high))


def test_wilson_of_an_empty_group_is_none_and_bad_counts_are_named():
    assert stats.wilson_interval(0, 0) is None
    with pytest.raises(ValueError, match="0 <= successes <= n"):
        stats.wilson_interval(5, 4)
    with pytest.raises(ValueError, match="confidence level must lie strictly between 0 and 1"):
        stats.wilson_interval(1, 4, 1.0)


@pytest.mark.parametrize(
    ("counts", "published"),
    [
        # Newcombe (1998), Stat Med 17:873-890, table II, method 10 (hybrid score, no CC)
        ((56, 70, 48, 80), (0.0524, 0.3339)),
        ((9, 10, 3, 10), (0.1705, 0.8090)),
    ],
)
def test_newcombe_reproduces_the_published_worked_examples(counts, published):
    assert stats.newcombe_difference(*counts) == pytest.approx(published, abs=5e-5)


@pytest.mark.parametrize(
    ("counts", "level"),
    [((20, 100, 40, 100), 0.95), ((805, 1795, 349, 1488), 0.95), ((7, 50, 30, 60), 0.9)],
)
def test_katz_matches_scipys_relative_risk(counts, level):
    expected = relative_risk(*counts).confidence_interval(level)
    assert stats.katz_ratio(*counts, level) == pytest.approx((expected.low, expected.high))


def test_katz_with_a_zero_count_uses_haldanes_half():
    # 0/100 against 10/100: counts 0.5 and 10.5 (Haldane), denominators as they are
    log_ratio = np.log(0.5 / 10.5)
    se = np.sqrt(1 / 0.5 - 1 / 100 + 1 / 10.5 - 1 / 100)
    expected = np.exp(log_ratio - 1.959964 * se), np.exp(log_ratio + 1.959964 * se)
    assert stats.katz_ratio(0, 100, 10, 100) == pytest.approx(expected, rel=1e-5)


def test_power_reproduces_the_textbook_sample_size():
    # Fleiss (1981), eq. 3.14 without continuity correction: 0.10 vs 0.20 at alpha 0.05 needs
    # 199 per group for 80 % power
    assert stats.two_proportion_power(0.10, 0.20, 199, 199) == pytest.approx(0.80, abs=0.002)
    assert stats.two_proportion_power(0.10, 0.20, 50, 50) < 0.35
    assert stats.two_proportion_power(0.2, 0.2, 80, 120) == pytest.approx(0.05)  # no gap: alpha
    assert stats.two_proportion_power(0.1, 0.2, 0, 10) is None


def test_power_matches_a_simulated_z_test():
    rng = np.random.default_rng(5)
    n1, n2, p1, p2 = 120, 300, 0.25, 0.4
    x1, x2 = rng.binomial(n1, p1, 20_000), rng.binomial(n2, p2, 20_000)
    pooled = (x1 + x2) / (n1 + n2)
    z = (x2 / n2 - x1 / n1) / np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    simulated = float(np.mean(np.abs(z) > 1.959964))
    assert stats.two_proportion_power(p1, p2, n1, n2) == pytest.approx(simulated, abs=0.015)


# --- intervals of the aggregates ----------------------------------------------------------------


def test_two_groups_get_the_newcombe_and_katz_intervals_of_their_pair():
    result = attribute({"a": (60, 40, 40, 160), "b": (75, 40, 25, 160)})
    eod = fairness.aggregate_interval(result, "equalized_odds_difference")
    tpr = stats.newcombe_difference(75, 100, 60, 100)
    fpr = stats.newcombe_difference(40, 200, 40, 200)
    assert eod == pytest.approx((max(tpr[0], fpr[0], 0), max(tpr[1], fpr[1])))
    # a ratio is one rate: each end a one-sided 95 % bound, the two-sided 90 % interval
    fnr = fairness.aggregate_interval(result, "fnr_ratio")
    assert fnr == pytest.approx(stats.katz_ratio(25, 100, 40, 100, 0.90))
    assert fnr[0] < result.fnr_ratio < fnr[1]


def test_a_ratios_upper_end_is_the_one_sided_95_percent_bound():
    # The FPR ratio floor asks one thing: is the ratio below it? The end the rule reads is then
    # the one-sided 95 % upper bound, exp(log r + z_0.95 se), by hand with scipy's quantile
    result = attribute({"a": (105, 105, 45, 245), "b": (105, 175, 45, 175)})  # FPR 0.30, 0.50
    se = np.sqrt(1 / 105 - 1 / 350 + 1 / 175 - 1 / 350)
    upper = np.exp(np.log(0.6) + norm.ppf(0.95) * se)
    assert fairness.aggregate_interval(result, "fpr_ratio")[1] == pytest.approx(upper)
    # and it is scipy's two-sided 90 % bound, tighter than the two-sided 95 % one
    rr = relative_risk(105, 350, 175, 350)
    assert upper == pytest.approx(rr.confidence_interval(0.90).high)
    assert upper < rr.confidence_interval(0.95).high


def test_more_groups_are_bonferroni_adjusted_over_their_pairs():
    groups = {"a": (70, 30, 30, 170), "b": (60, 40, 40, 160), "c": (80, 20, 20, 180)}
    result = attribute(groups)
    level = 1 - 0.10 / 3  # one-sided 95 % bounds of one rate, over 3 pairs
    fprs = {name: (fp, fp + tn) for name, (_, fp, _, tn) in groups.items()}
    pairs = [
        stats.newcombe_difference(*fprs[a], *fprs[b], level)
        for a, b in itertools.permutations(fprs, 2)
    ]
    assert fairness.aggregate_interval(result, "fpr_difference") == pytest.approx(
        (max(0, max(lo for lo, _ in pairs)), max(hi for _, hi in pairs))
    )
    ratios = [
        stats.katz_ratio(*fprs[a], *fprs[b], level) for a, b in itertools.permutations(fprs, 2)
    ]
    assert fairness.aggregate_interval(result, "fpr_ratio") == pytest.approx(
        (min(lo for lo, _ in ratios), min(1, min(hi for _, hi in ratios)))
    )


def test_small_groups_take_no_part_in_an_aggregates_interval():
    big = {"a": (60, 40, 40, 160), "b": (75, 40, 25, 160)}
    with_small = attribute({**big, "tiny": (1, 9, 9, 1)})
    assert fairness.aggregate_interval(with_small, "fpr_ratio") == fairness.aggregate_interval(
        attribute(big), "fpr_ratio"
    )


# --- the rule -----------------------------------------------------------------------------------


def test_a_breach_within_noise_is_a_watch_and_beyond_it_a_violation():
    small = fairness.judge_attribute(
        attribute({"a": (60, 40, 40, 160), "b": (75, 40, 25, 160)}), LIMITS
    )
    assert small.status == "watch"
    assert {f.aggregate for f in small.watches} == {"equalized_odds_difference", "fnr_ratio"}
    [watch] = [f for f in small.watches if f.aggregate == "equalized_odds_difference"]
    assert watch.interval[0] <= 0.1 < watch.value
    assert "includes the limit: a watch, not a violation" in watch.describe()
    big = fairness.judge_attribute(
        attribute({"a": (600, 400, 400, 1600), "b": (750, 400, 250, 1600)}), LIMITS
    )
    assert big.status == "violated"
    [eod] = [f for f in big.violations if f.aggregate == "equalized_odds_difference"]
    assert eod.interval[0] > 0.1 and "lies wholly beyond the limit" in eod.describe()


def test_a_watch_passes_a_gate_a_violation_fails_it():
    report = stats.FairnessReport(
        30, {"race": attribute({"a": (60, 40, 40, 160), "b": (75, 40, 25, 160)})}
    )
    assert fairness.judge(report, LIMITS).passed
    report = stats.FairnessReport(
        30, {"race": attribute({"a": (600, 400, 400, 1600), "b": (750, 400, 250, 1600)})}
    )
    assert not fairness.judge(report, LIMITS).passed


def test_a_higher_confidence_level_widens_the_intervals_and_can_turn_a_violation_into_a_watch():
    result = attribute({"a": (100, 40, 50, 160), "b": (130, 40, 20, 160)})
    at_95 = fairness.judge_attribute(result, LIMITS)
    at_999 = fairness.judge_attribute(result, LIMITS, confidence_level=0.999)
    lo95, hi95 = at_95.intervals["equalized_odds_difference"]
    lo999, hi999 = at_999.intervals["equalized_odds_difference"]
    assert lo999 < lo95 and hi999 > hi95
    assert at_95.findings[0].status == "violated" and at_999.findings[0].status == "watch"


def test_every_group_gets_wilson_intervals_and_its_power_even_when_too_small_to_judge():
    verdict = fairness.judge_attribute(
        attribute({"a": (600, 400, 400, 1600), "b": (75, 40, 25, 160), "tiny": (3, 2, 2, 5)}),
        LIMITS,
    )
    evidence = verdict.evidence()
    b = evidence["groups"]["b"]
    assert b["intervals"]["fpr"] == pytest.approx(list(stats.wilson_interval(40, 200)))
    assert b["intervals"]["ppv"] == pytest.approx(list(stats.wilson_interval(75, 115)))
    assert set(b["intervals"]) == {"selection_rate", "tpr", "fpr", "fnr", "ppv"}
    tiny = evidence["groups"]["tiny"]
    assert tiny["intervals"]["tpr"] is not None  # reported, though not judged
    powers = {
        name: g["power"]["equalized_odds_difference"] for name, g in evidence["groups"].items()
    }
    # each against the largest other judged group: a and b against each other, tiny against a
    assert powers["tiny"] < 0.2 < min(powers["a"], powers["b"])
    # the aggregate's power is that of its weakest judged group
    assert evidence["power"]["equalized_odds_difference"] == min(powers["a"], powers["b"])


def test_compas_published_rates_are_reproduced_and_the_gap_is_beyond_noise():
    """ProPublica's COMPAS analysis (Angwin et al., 2016; its notebook's two-year recidivism
    tables, score "medium or high" as positive): Black defendants 1369 TP, 805 FP, 532 FN,
    990 TN; white defendants 505 TP, 349 FP, 461 FN, 1139 TN."""
    result = attribute(
        {"African-American": (1369, 805, 532, 990), "Caucasian": (505, 349, 461, 1139)}
    )
    black, white = result.groups
    assert round(black.fpr * 100, 2) == 44.85 and round(black.fnr * 100, 2) == 27.99
    assert round(white.fpr * 100, 2) == 23.45 and round(white.fnr * 100, 2) == 47.72
    verdict = fairness.judge_attribute(result, LIMITS)
    assert verdict.status == "violated"
    assert {f.aggregate for f in verdict.violations} == {
        "equalized_odds_difference",
        "fpr_ratio",
        "fnr_ratio",
    }
    lo, hi = verdict.intervals["fpr_ratio"]
    assert lo < 23.45 / 44.85 < hi < 0.8
