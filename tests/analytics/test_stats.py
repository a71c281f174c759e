"""Specification tests for analytics.stats (pure numpy/scipy, no Django, no database)."""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.stats import chi2_contingency, ks_2samp
from sklearn.metrics import roc_auc_score

from analytics import stats
from analytics.stats import (
    PSI_EPSILON,
    build_feature_profile,
    build_reference_profile,
    expected_calibration_error,
    fairness_metrics,
    group_fairness,
    ks_from_profile,
    ks_two_sample,
    label_drift,
    label_drift_from_profile,
    performance_metrics,
    predicted_class,
    psi,
    psi_from_profile,
    roc_auc,
)

pytestmark: list[Any] = []

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

finite_floats = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
unit_floats = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


def float_arrays(min_size: int = 1, max_size: int = 200, elements=finite_floats):
    return hnp.arrays(np.float64, st.integers(min_size, max_size), elements=elements)


def confusion_arrays(tp: int, fp: int, fn: int, tn: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predictions realising a given confusion matrix."""
    labels = np.array([1] * tp + [0] * fp + [1] * fn + [0] * tn)
    predicted = np.array([1] * tp + [1] * fp + [0] * fn + [0] * tn)
    return labels, predicted


def assert_json_plain(payload: Any) -> None:
    assert json.loads(json.dumps(payload, allow_nan=False)) == payload


# ----------------------------------------------------------------------------------------------
# PSI
# ----------------------------------------------------------------------------------------------


def test_psi_uses_reference_deciles_and_floors_empty_bins_by_hand() -> None:
    reference = np.arange(1.0, 11.0)  # deciles 1.9, 2.8, ..., 9.1 -> one value per bin
    current = np.array([1.0] * 5 + [10.0] * 5)  # half in the first bin, half in the last
    result = psi(reference, current)
    # reference: 10 bins at 0.1; current: 0.5, 0.5 and eight empty bins floored at 1e-4;
    # the NaN bin is empty (floored) on both sides and contributes 0.
    expected = 2 * (0.5 - 0.1) * math.log(0.5 / 0.1) + 8 * (1e-4 - 0.1) * math.log(1e-4 / 0.1)
    assert result.psi == pytest.approx(expected, rel=1e-12)
    assert result.psi == pytest.approx(6.80823, abs=1e-5)
    assert result.reference_counts == (1,) * 10 + (0,)
    assert result.current_counts == (5, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0)
    assert result.current_proportions[1] == PSI_EPSILON
    assert result.bin_labels[0].startswith("[-inf, 1.9")
    assert result.bin_labels[-2].endswith(", inf)")
    assert result.bin_labels[-1] == "missing"


def test_psi_bins_are_closed_on_the_left_at_reference_edges() -> None:
    profile = build_feature_profile(np.arange(1.0, 11.0))
    edge = profile["edges"][0]
    result = psi_from_profile(profile, np.array([edge, np.nextafter(edge, -np.inf)]))
    assert result.current_counts[:2] == (1, 1)


def test_psi_pools_unseen_categories_into_other_bin_by_hand() -> None:
    reference = np.array(["a"] * 6 + ["b"] * 4, dtype=object)
    current = np.array(["a"] * 5 + ["b"] * 3 + ["c", "d"], dtype=object)
    result = psi(reference, current)
    assert result.kind == "categorical"
    assert result.bin_labels == ("a", "b", stats.OTHER_CATEGORY)
    assert result.current_counts == (5, 3, 2)
    expected = (
        (0.5 - 0.6) * math.log(0.5 / 0.6)
        + (0.3 - 0.4) * math.log(0.3 / 0.4)
        + (0.2 - 1e-4) * math.log(0.2 / 1e-4)
    )
    assert result.psi == pytest.approx(expected, rel=1e-12)


def test_psi_collapses_duplicate_edges_of_low_cardinality_feature() -> None:
    reference = np.array([0.0] * 7 + [1.0] * 3)
    # deciles: 0 (x6), 0.3 (interpolated at position 6.3), 1, 1 -> unique edges [0, 0.3, 1]
    profile = build_feature_profile(reference)
    assert profile["edges"] == pytest.approx([0.0, 0.3, 1.0])
    assert profile["counts"] == [0, 7, 0, 3]
    assert psi(reference, reference[::-1]).psi == 0.0
    shifted = psi(reference, np.array([0.0] * 3 + [1.0] * 7)).psi
    expected = (0.3 - 0.7) * math.log(0.3 / 0.7) + (0.7 - 0.3) * math.log(0.7 / 0.3)
    assert shifted == pytest.approx(expected, rel=1e-12)


def test_psi_of_constant_feature_works_and_detects_values_below_the_constant() -> None:
    reference = np.full(50, 5.0)
    assert build_feature_profile(reference)["edges"] == [5.0]
    assert psi(reference, np.full(20, 5.0)).psi == 0.0
    assert psi(reference, np.full(20, 4.0)).psi > 5.0


def test_psi_counts_nan_in_a_missing_bin() -> None:
    reference = np.arange(100.0)
    current = np.arange(100.0)
    current[:20] = np.nan
    result = psi(reference, current)
    assert result.current_counts[-1] == 20
    assert result.psi > 0.1


def test_psi_many_bins_use_the_same_bin_semantics_as_few_bins() -> None:
    rng = np.random.default_rng(7)
    reference = rng.normal(size=2000).round(1)
    current = rng.normal(0.2, 1.1, size=3000).round(1)
    current[::11] = np.nan
    profile = build_feature_profile(reference, bins=100)  # > 32 edges: searchsorted path
    edges = np.asarray(profile["edges"])
    assert edges.size > stats._COMPARE_LOOP_MAX_EDGES
    result = psi_from_profile(profile, current)
    valid = current[~np.isnan(current)]
    expected = np.bincount(np.digitize(valid, edges), minlength=edges.size + 1)
    assert list(result.current_counts[:-1]) == expected.tolist()
    assert result.current_counts[-1] == np.isnan(current).sum()
    few = stats._numeric_bin_counts(current, edges[:30])[0]
    assert few.tolist() == np.bincount(np.digitize(valid, edges[:30]), minlength=31).tolist()


def test_psi_from_profile_survives_a_json_round_trip() -> None:
    rng = np.random.default_rng(3)
    features = {
        "age": rng.normal(40, 10, 500),
        "district": rng.choice(np.array(["n", "s", "e", "w"]), 500),
        "priors": rng.integers(0, 4, 500),
    }
    profile = build_reference_profile(
        features,
        rng.random(500),
        rng.integers(0, 2, 500),
        categorical_features={"priors"},
    )
    stored = json.loads(json.dumps(profile, allow_nan=False))
    assert stored == profile
    assert stored["features"]["priors"]["kind"] == "categorical"
    assert stored["features"]["district"]["kind"] == "categorical"
    current = {
        "age": rng.normal(45, 10, 300),
        "district": rng.choice(np.array(["n", "s", "x"]), 300),
        "priors": rng.integers(0, 6, 300),
    }
    for name, values in current.items():
        direct = psi(features[name], values, categorical=name in {"district", "priors"}).to_dict()
        assert psi_from_profile(stored["features"][name], values).to_dict() == direct
        assert_json_plain(direct)


@FAST
@given(reference=float_arrays(), current=float_arrays())
def test_psi_is_never_negative(reference: np.ndarray, current: np.ndarray) -> None:
    result = psi(reference, current)
    assert result.psi >= 0.0
    assert all(c >= 0.0 for c in result.contributions)


@FAST
@given(values=float_arrays(), bins=st.integers(2, 20))
def test_psi_of_identical_samples_is_zero(values: np.ndarray, bins: int) -> None:
    assert psi(values, values, bins=bins).psi == pytest.approx(0.0, abs=1e-15)


@FAST
@given(
    reference=st.lists(st.sampled_from("abcd"), min_size=1, max_size=60),
    current=st.lists(st.sampled_from("abcdef"), min_size=1, max_size=60),
)
def test_categorical_psi_is_non_negative_and_zero_on_identical_samples(
    reference: list[str], current: list[str]
) -> None:
    ref = np.array(reference, dtype=object)
    assert psi(ref, np.array(current, dtype=object)).psi >= 0.0
    assert psi(ref, ref[::-1]).psi == 0.0


# ----------------------------------------------------------------------------------------------
# KS
# ----------------------------------------------------------------------------------------------


def _ks_cases() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(20240601)
    cases = []
    sizes = [(1, 1), (1, 7), (3, 5), (10, 10), (17, 40), (100, 37), (250, 250), (999, 1000)]
    sizes += [(10_000, 10_000), (10_001, 400), (300, 12_000), (15_000, 25_000)]
    for n1, n2 in sizes:
        for decimals in (None, 1, 2):  # None: continuous; 1-2 decimals: heavy ties
            a = rng.beta(2, 5, n1)
            b = rng.beta(2.2, 5, n2)
            if decimals is not None:
                a, b = a.round(decimals), b.round(decimals)
            cases.append((a, b))
    cases.append((np.full(50, 0.5), np.full(60, 0.5)))  # all tied, D = 0
    cases.append((np.zeros(20), np.ones(30)))  # disjoint, D = 1
    cases.append((np.zeros(11_000), np.ones(30)))  # disjoint, asymptotic regime
    return cases


@pytest.mark.parametrize("reference_is_sorted", [False, True])
def test_ks_equals_scipy_ks_2samp_exactly_including_ties(reference_is_sorted: bool) -> None:
    for reference, current in _ks_cases():
        expected = ks_2samp(reference, current)
        ref = np.sort(reference) if reference_is_sorted else reference
        result = ks_two_sample(ref, current, reference_is_sorted=reference_is_sorted)
        assert result.statistic == float(expected.statistic), (reference.size, current.size)
        assert result.p_value == float(expected.pvalue), (reference.size, current.size)
        assert result.p_value == pytest.approx(float(expected.pvalue), rel=1e-12, abs=1e-12)
        if max(reference.size, current.size) > 10_000:
            assert result.method == "asymp"


@FAST
@given(
    reference=float_arrays(max_size=80, elements=st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9, 1.0])),
    current=float_arrays(max_size=80, elements=unit_floats),
)
def test_ks_equals_scipy_ks_2samp_on_generated_samples(
    reference: np.ndarray, current: np.ndarray
) -> None:
    expected = ks_2samp(reference, current)
    result = ks_two_sample(reference, current)
    assert (result.statistic, result.p_value) == (expected.statistic, expected.pvalue)


@pytest.mark.parametrize(
    ("statistic", "max_size"), [(psi, 200), (ks_two_sample, 80)], ids=["psi", "ks"]
)
@FAST
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_two_sample_statistics_are_invariant_to_permutation_of_either_sample(
    statistic, max_size: int, data: st.DataObject, seed: int
) -> None:
    reference = data.draw(float_arrays(max_size=max_size), label="reference")
    current = data.draw(float_arrays(max_size=max_size), label="current")
    rng = np.random.default_rng(seed)
    base = statistic(reference, current)
    assert statistic(rng.permutation(reference), rng.permutation(current)) == base


def test_ks_reports_scipys_silent_fallback_from_exact_to_asymptotic_p_value() -> None:
    # for these 5 vs 5 values scipy's exact p-value is numerically unusable (> 1)
    reference = np.array([0.5, 0.5, 0.25, 0.0, 1.0])
    current = np.array(
        [
            0.4533709755850801,
            0.8849908749637211,
            0.8747237915911318,
            0.475340817960096,
            0.0768790987061837,
        ]
    )
    with pytest.warns(RuntimeWarning, match="Switching to method=asymp"):
        expected = ks_2samp(reference, current)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = ks_two_sample(reference, current)
    assert (result.statistic, result.p_value) == (expected.statistic, expected.pvalue)
    assert result.method == "asymp"


def test_ks_from_profile_uses_the_stored_sorted_reference_sample() -> None:
    rng = np.random.default_rng(11)
    scores = rng.random(800)
    profile = build_reference_profile({}, scores, score_sample_size=10_000)
    assert profile["scores"]["sample"] == sorted(scores.tolist())
    current = rng.random(300) ** 1.3
    expected = ks_2samp(scores, current)
    result = ks_from_profile(profile["scores"], current)
    assert (result.statistic, result.p_value) == (expected.statistic, expected.pvalue)


def test_reference_score_sample_is_evenly_spaced_order_statistics() -> None:
    scores = np.linspace(0.0, 1.0, 1001)[::-1]
    sample = build_reference_profile({}, scores, score_sample_size=11)["scores"]["sample"]
    assert sample == pytest.approx([i / 10 for i in range(11)])


def test_ks_rejects_a_reference_flagged_sorted_that_is_not() -> None:
    with pytest.raises(ValueError, match="flagged as sorted"):
        ks_two_sample([0.3, 0.1], [0.2], reference_is_sorted=True)


# ----------------------------------------------------------------------------------------------
# Performance metrics
# ----------------------------------------------------------------------------------------------


def test_auc_equals_sklearn_roc_auc_score_including_ties() -> None:
    rng = np.random.default_rng(5)
    for trial in range(60):
        n = int(rng.integers(2, 3000))
        labels = rng.integers(0, 2, n)
        if labels.min() == labels.max():
            labels[0] = 1 - labels[0]
        scores = np.clip(rng.normal(0.4 + 0.2 * labels, 0.25), 0, 1)
        if trial % 2:
            scores = scores.round(int(rng.integers(0, 3)))  # heavy ties
        assert roc_auc(labels, scores) == pytest.approx(
            roc_auc_score(labels, scores), rel=1e-12, abs=1e-12
        )


def test_auc_is_none_when_only_one_class_is_present() -> None:
    assert roc_auc([1, 1, 1], [0.2, 0.5, 0.9]) is None
    metrics = performance_metrics([0, 0, 0], [0.2, 0.6, 0.9])
    assert metrics.auc is None
    assert metrics.recall is None
    assert metrics.precision == 0.0
    assert metrics.to_dict()["auc"] is None


def test_performance_metrics_by_hand() -> None:
    labels = [1, 1, 1, 0, 0, 0, 0, 1]
    scores = [0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.4, 0.7]
    m = performance_metrics(labels, scores)
    # threshold 0.5 -> predicted [1, 1, 0, 1, 0, 0, 0, 1]: TP=3, FN=1, FP=1, TN=3
    assert (m.tp, m.fp, m.fn, m.tn) == (3, 1, 1, 3)
    assert m.accuracy == 6 / 8
    assert m.precision == 3 / 4
    assert m.recall == 3 / 4
    assert m.f1 == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    brier = (0.01 + 0.04 + 0.49 + 0.36 + 0.04 + 0.01 + 0.16 + 0.09) / 8
    assert m.brier == pytest.approx(brier)
    # positives 0.9, 0.8, 0.7, 0.3 vs negatives 0.6, 0.4, 0.2, 0.1: 14 of 16 pairs ordered
    assert m.auc == pytest.approx(14 / 16)
    assert_json_plain(m.to_dict())


def test_f1_is_zero_not_undefined_when_positives_exist_but_none_are_found() -> None:
    m = performance_metrics([1, 0, 1], [0.1, 0.2, 0.3])
    assert (m.precision, m.recall, m.f1) == (None, 0.0, 0.0)


def test_predicted_class_prefers_logged_prediction_and_falls_back_to_threshold() -> None:
    scores = [0.9, 0.2, 0.7, 0.3, 0.5]
    logged = np.array([0, 1, np.nan, np.nan, np.nan])
    assert predicted_class(scores, logged, decision_threshold=0.6).tolist() == [0, 1, 1, 0, 0]
    assert predicted_class(scores).tolist() == [1, 0, 1, 0, 1]  # score >= 0.5
    assert predicted_class(scores, [None, 1, None, 0, None]).tolist() == [1, 1, 1, 0, 1]


def test_performance_metrics_use_logged_predictions() -> None:
    m = performance_metrics([1, 0], [0.9, 0.1], predictions=[0, 1])
    assert (m.tp, m.fp, m.fn, m.tn) == (0, 1, 1, 0)


# ----------------------------------------------------------------------------------------------
# Label drift
# ----------------------------------------------------------------------------------------------


def test_label_drift_reports_rates_changes_and_pearson_chi2_p_value() -> None:
    reference = np.array([1] * 30 + [0] * 70)
    current = np.array([1] * 45 + [0] * 55)
    result = label_drift(reference, current)
    assert result.reference_distribution == {"0": 0.7, "1": 0.3}
    assert result.current_distribution == pytest.approx({"0": 0.55, "1": 0.45})
    assert result.absolute_change == pytest.approx(0.15)
    assert result.relative_change == pytest.approx(0.5)
    chi2, p_value, _, _ = chi2_contingency([[70, 30], [55, 45]], correction=False)
    assert result.chi2 == pytest.approx(chi2, rel=1e-10)
    assert result.p_value == pytest.approx(p_value, rel=1e-10)
    assert "chi2" in result.test
    assert_json_plain(result.to_dict())


def test_label_drift_from_profile_matches_label_drift() -> None:
    reference = np.array([1] * 12 + [0] * 88)
    current = np.array([1] * 20 + [0] * 60)
    profile = build_reference_profile({}, np.full(100, 0.5), reference)
    assert profile["labels"] == {"n": 100, "positives": 12, "positive_rate": 0.12}
    assert label_drift_from_profile(profile["labels"], current) == label_drift(reference, current)


def test_label_drift_without_any_positives_has_p_value_one_and_no_relative_change() -> None:
    result = label_drift([0, 0, 0], [0, 0])
    assert (result.chi2, result.p_value, result.relative_change) == (0.0, 1.0, None)


# ----------------------------------------------------------------------------------------------
# Calibration (ECE)
# ----------------------------------------------------------------------------------------------


def test_ece_by_hand_with_score_one_in_the_last_bin() -> None:
    labels = [0, 0, 1, 1, 1]
    scores = [0.05, 0.15, 0.15, 0.95, 1.0]
    result = expected_calibration_error(labels, scores)
    # bin 0: {0.05} label 0 -> gap 0.05; bin 1: {0.15, 0.15} labels 0,1 -> |0.5 - 0.15| = 0.35;
    # bin 9: {0.95, 1.0} labels 1,1 -> |1 - 0.975| = 0.025
    expected = 1 / 5 * 0.05 + 2 / 5 * 0.35 + 2 / 5 * 0.025
    assert result.ece == pytest.approx(expected, rel=1e-12)
    assert result.ece == pytest.approx(0.16)
    assert [b.n for b in result.bins] == [1, 2, 0, 0, 0, 0, 0, 0, 0, 2]
    assert result.bins[9].mean_score == pytest.approx(0.975)
    assert (result.bins[9].lower, result.bins[9].upper) == (0.9, 1.0)
    assert result.bins[4].mean_label is None
    assert_json_plain(result.to_dict())


def test_ece_of_perfectly_calibrated_bins_is_zero() -> None:
    labels = [1, 0, 0, 0, 1, 1, 1, 0]
    scores = [0.25, 0.25, 0.25, 0.25, 0.75, 0.75, 0.75, 0.75]
    assert expected_calibration_error(labels, scores).ece == 0.0


@FAST
@given(
    data=st.lists(st.tuples(st.integers(0, 1), unit_floats), min_size=1, max_size=100),
    seed=st.integers(0),
)
def test_ece_is_in_unit_interval_and_invariant_to_permutation(
    data: list[tuple[int, float]], seed: int
) -> None:
    labels = np.array([y for y, _ in data])
    scores = np.array([s for _, s in data])
    base = expected_calibration_error(labels, scores)
    order = np.random.default_rng(seed).permutation(labels.size)
    permuted = expected_calibration_error(labels[order], scores[order])
    assert 0.0 <= base.ece <= 1.0
    assert permuted.ece == pytest.approx(base.ece, abs=1e-12)
    assert [b.n for b in permuted.bins] == [b.n for b in base.bins]


# ----------------------------------------------------------------------------------------------
# Fairness
# ----------------------------------------------------------------------------------------------


def _three_groups() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    parts = {
        "A": confusion_arrays(tp=8, fp=2, fn=2, tn=8),  # n=20
        "B": confusion_arrays(tp=3, fp=3, fn=6, tn=18),  # n=30
        "C": confusion_arrays(tp=0, fp=3, fn=2, tn=0),  # n=5: below min_group_size=10
    }
    labels = np.concatenate([p[0] for p in parts.values()])
    predicted = np.concatenate([p[1] for p in parts.values()])
    groups = np.concatenate([[g] * p[0].size for g, p in parts.items()])
    return labels, predicted, groups


def test_group_rates_match_confusion_matrices_worked_by_hand() -> None:
    labels, predicted, groups = _three_groups()
    result = group_fairness(labels, predicted, groups, attribute="race", min_group_size=10)
    a, b, c = result.groups
    assert (a.group, a.n, a.selection_rate, a.tpr, a.fpr, a.fnr, a.ppv) == (
        "A",
        20,
        10 / 20,
        8 / 10,
        2 / 10,
        2 / 10,
        8 / 10,
    )
    assert (b.group, b.n, b.selection_rate, b.tpr, b.fpr, b.fnr, b.ppv) == (
        "B",
        30,
        6 / 30,
        3 / 9,
        3 / 21,
        6 / 9,
        3 / 6,
    )
    assert (c.group, c.n, c.judged, c.selection_rate, c.tpr, c.fpr, c.ppv) == (
        "C",
        5,
        False,
        3 / 5,
        0.0,
        1.0,
        0.0,
    )
    assert a.judged and b.judged
    assert result.n_judged_groups == 2


def test_fairness_aggregates_by_hand_exclude_small_groups() -> None:
    labels, predicted, groups = _three_groups()
    result = group_fairness(labels, predicted, groups, min_group_size=10)
    # judged groups A and B only; C (n=5, TPR 0, FPR 1, selection 0.6) would change all of them
    assert result.tpr_difference == pytest.approx(8 / 10 - 3 / 9)  # 7/15
    assert result.fpr_difference == pytest.approx(2 / 10 - 3 / 21)  # 2/35
    assert result.equalized_odds_difference == pytest.approx(7 / 15)
    assert result.fpr_ratio == pytest.approx((3 / 21) / (2 / 10))  # 5/7
    assert result.fnr_ratio == pytest.approx((2 / 10) / (6 / 9))  # 0.3
    assert result.demographic_parity_ratio == pytest.approx((6 / 30) / (10 / 20))  # 0.4

    everyone = group_fairness(labels, predicted, groups, min_group_size=1)
    assert everyone.tpr_difference == pytest.approx(8 / 10 - 0.0)
    assert everyone.equalized_odds_difference == pytest.approx(1.0 - 3 / 21)  # FPR spread 6/7
    assert everyone.fpr_ratio == pytest.approx((3 / 21) / 1.0)
    assert everyone.fnr_ratio == pytest.approx((2 / 10) / 1.0)
    assert everyone.demographic_parity_ratio == pytest.approx((6 / 30) / (3 / 5))


def test_fairness_ratio_of_all_zero_rates_is_one() -> None:
    labels = np.array([0, 1] * 20)
    predicted = np.zeros(40, dtype=int)
    groups = np.array(["x"] * 20 + ["y"] * 20)
    result = group_fairness(labels, predicted, groups, min_group_size=5)
    assert result.demographic_parity_ratio == 1.0
    assert result.fpr_ratio == 1.0
    assert result.fnr_ratio == 1.0  # FNR is 1 in both groups


def test_fairness_aggregates_are_none_with_fewer_than_two_judged_groups() -> None:
    labels, predicted, groups = _three_groups()
    result = group_fairness(labels, predicted, groups, min_group_size=25)  # only B judged
    assert result.n_judged_groups == 1
    assert result.equalized_odds_difference is None
    assert result.demographic_parity_ratio is None


def test_fairness_metrics_covers_each_sensitive_attribute_and_is_json_ready() -> None:
    labels, predicted, groups = _three_groups()
    sex = np.resize(np.array(["f", "m"]), labels.size)
    report = fairness_metrics(labels, predicted, {"race": groups, "sex": sex}, min_group_size=10)
    assert set(report.attributes) == {"race", "sex"}
    assert report.attributes["race"] == group_fairness(
        labels, predicted, groups, attribute="race", min_group_size=10
    )
    payload = report.to_dict()
    assert_json_plain(payload)
    assert payload["attributes"]["race"]["groups"][2]["judged"] is False


group_block = st.tuples(st.integers(0, 1), st.integers(0, 1))  # (label, predicted) of one record


@FAST
@given(
    big=st.lists(st.lists(group_block, min_size=5, max_size=25), min_size=2, max_size=4),
    small=st.lists(group_block, min_size=1, max_size=4),
)
def test_groups_below_min_size_never_affect_aggregates(
    big: list[list[tuple[int, int]]], small: list[tuple[int, int]]
) -> None:
    records = [(y, p, f"g{i}") for i, grp in enumerate(big) for y, p in grp]
    labels, predicted, groups = (np.array(col) for col in zip(*records, strict=True))
    base = group_fairness(labels, predicted, groups, min_group_size=5)
    small_labels = np.array([y for y, _ in small])
    small_pred = np.array([p for _, p in small])
    with_small = group_fairness(
        np.concatenate([labels, small_labels]),
        np.concatenate([predicted, small_pred]),
        np.concatenate([groups, ["tiny"] * len(small)]),
        min_group_size=5,
    )
    aggregates = [
        "n_judged_groups",
        "tpr_difference",
        "fpr_difference",
        "equalized_odds_difference",
        "fpr_ratio",
        "fnr_ratio",
        "demographic_parity_ratio",
    ]
    for name in aggregates:
        assert getattr(with_small, name) == getattr(base, name), name
    tiny = [g for g in with_small.groups if g.group == "tiny"]
    assert len(tiny) == 1 and tiny[0].judged is False


@FAST
@given(
    records=st.lists(
        st.tuples(st.integers(0, 1), st.integers(0, 1), st.sampled_from("abc")),
        min_size=1,
        max_size=120,
    ),
    seed=st.integers(0),
)
def test_fairness_is_invariant_to_permutation(
    records: list[tuple[int, int, str]], seed: int
) -> None:
    labels, predicted, groups = (np.array(col) for col in zip(*records, strict=True))
    order = np.random.default_rng(seed).permutation(labels.size)
    base = group_fairness(labels, predicted, groups, min_group_size=3)
    permuted = group_fairness(labels[order], predicted[order], groups[order], min_group_size=3)
    assert permuted == base
    ratio = base.demographic_parity_ratio
    assert ratio is None or 0.0 <= ratio <= 1.0


# ----------------------------------------------------------------------------------------------
# Reference profile and JSON
# ----------------------------------------------------------------------------------------------


def test_reference_profile_is_plain_json_without_numpy_types() -> None:
    rng = np.random.default_rng(1)
    features = {
        "x": rng.normal(size=100).astype(np.float32),
        "k": rng.integers(0, 3, 100),
        "c": np.array(["u", "v", None, "u"] * 25, dtype=object),
        "flag": rng.random(100) > 0.5,
    }
    profile = build_reference_profile(features, rng.random(100), rng.integers(0, 2, 100))
    assert_json_plain(profile)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        else:
            assert type(node) in (int, float, str, bool, type(None)), type(node)

    walk(profile)
    assert profile["features"]["k"]["kind"] == "numeric"
    assert profile["features"]["flag"]["kind"] == "categorical"
    assert profile["features"]["c"]["categories"] == ["None", "u", "v"]
    assert profile["n"] == 100 and profile["version"] == stats.PROFILE_VERSION


def test_result_to_dict_turns_non_finite_numbers_into_none() -> None:
    result = stats.KSResult(float("nan"), 1.0, 1, 1, "exact")
    assert result.to_dict()["statistic"] is None


# ----------------------------------------------------------------------------------------------
# Validation errors
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: roc_auc([0, 1], [0.2, 1.5]), r"scores must lie in \[0, 1\]"),
        (lambda: roc_auc([0, 1], [-0.1, 0.5]), r"scores must lie in \[0, 1\]"),
        (lambda: roc_auc([0, 2], [0.1, 0.5]), "labels must be 0 or 1; found 2"),
        (lambda: roc_auc([0, np.nan], [0.1, 0.5]), "labels must be 0 or 1; found nan"),
        (lambda: roc_auc(["no", "yes"], [0.1, 0.5]), "labels must be 0 or 1"),
        (
            lambda: performance_metrics([0, 1] * 4 + [1], [0.5] * 10),
            "length mismatch: 10 scores, 9 labels",
        ),
        (lambda: performance_metrics([0, 1], [0.2, np.nan]), r"scores contain 1 NaN.*index 1"),
        (lambda: performance_metrics([], []), "labels must not be empty"),
        (lambda: expected_calibration_error([[0, 1]], [[0.1, 0.2]]), "one-dimensional"),
        (lambda: expected_calibration_error([0], [0.1], n_bins=0), "n_bins must be"),
        (lambda: predicted_class([0.5], decision_threshold=2), "decision_threshold"),
        (lambda: predicted_class([0.5, 0.5], [1, 3]), "predictions must be 0, 1 or missing"),
        (lambda: predicted_class([0.5, 0.5], [1]), "length mismatch: 2 scores, 1 predictions"),
        (lambda: psi([], [1.0]), "reference values must not be empty"),
        (lambda: psi([1.0], []), "current values must not be empty"),
        (lambda: psi([1.0, 2.0], ["a", "b"]), "must be numeric for a numeric feature profile"),
        (lambda: psi([1.0, 2.0], [1.0], bins=1), "bins must be an integer >= 2"),
        (lambda: psi_from_profile({"kind": "hist"}, [1.0]), "kind must be 'numeric'"),
        (
            lambda: psi_from_profile(
                {"kind": "numeric", "n": 3, "edges": [1.0], "counts": [3], "missing": 0}, [1.0]
            ),
            "len\\(edges\\) \\+ 1 counts",
        ),
        (lambda: ks_two_sample([0.1, np.nan], [0.2]), "reference contain 1 NaN"),
        (lambda: ks_two_sample([0.1], []), "current must not be empty"),
        (lambda: label_drift([0, 1], [0, 5]), "current labels must be 0 or 1; found 5"),
        (
            lambda: group_fairness([0, 1], [0, 1], ["a"], attribute="race"),
            "length mismatch: 2 labels, 2 predicted, 1 values of 'race'",
        ),
        (lambda: group_fairness([0], [0], ["a"], min_group_size=0), "min_group_size must be"),
        (
            lambda: build_reference_profile({"age": [1.0, 2.0]}, [0.1, 0.2, 0.3]),
            "length mismatch: 3 scores, 2 values of feature 'age'",
        ),
        (
            lambda: build_reference_profile({"a": [1.0]}, [0.1], categorical_features=["b"]),
            "categorical_features not among features",
        ),
    ],
)
def test_validation_errors_name_the_problem(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
