"""Confidence-based performance estimation (analytics.performance_estimation), checked against
independent computations: exact expectations by enumerating every labelling of a few records,
sklearn's metrics on drawn labellings, and realised metrics on simulated calibrated data.
No Django, no database."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from analytics import performance_estimation as pe
from analytics import stats


def sigmoid(v: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-v))


def simulated(n: int, seed: int, *, true_slope=2.0, score_slope=2.0, scale=1.0):
    """Scores ``sigmoid(score_slope z - 1)``, labels ~ Bernoulli(``sigmoid(true_slope z - 1)``):
    calibrated when the slopes agree; ``scale`` < 1 crowds the scores near the middle (a
    covariate shift that lowers AUC while the scores stay calibrated)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n) * scale
    labels = (rng.random(n) < sigmoid(true_slope * z - 1)).astype(np.int8)
    scores = sigmoid(score_slope * z - 1)
    groups = np.where(rng.random(n) < 0.4, "north", "south")
    return scores, (scores >= 0.5).astype(np.int8), labels, groups


# ---------------------------------------------------------------------------------------------
# Exact expectations: every labelling of eight records, weighted by its probability
# ---------------------------------------------------------------------------------------------

SCORES = np.array([0.05, 0.2, 0.35, 0.35, 0.5, 0.7, 0.8, 0.95])
PREDICTED = np.array([0, 0, 0, 1, 1, 1, 0, 1])  # logged decisions need not follow the scores


def enumerated() -> dict[str, float]:
    """E[TP], E[FP], E[FN], E[TN], E[accuracy], E[precision], E[Brier], E[U], E[n_pos n_neg]."""
    names = ("tp", "fp", "fn", "tn", "accuracy", "precision", "brier", "u", "pairs")
    totals = dict.fromkeys(names, 0.0)
    for bits in itertools.product((0, 1), repeat=SCORES.size):
        y = np.array(bits)
        weight = float(np.prod(np.where(y == 1, SCORES, 1 - SCORES)))
        tp = np.sum((PREDICTED == 1) & (y == 1))
        fp = np.sum((PREDICTED == 1) & (y == 0))
        fn = np.sum((PREDICTED == 0) & (y == 1))
        tn = np.sum((PREDICTED == 0) & (y == 0))
        pos, neg = SCORES[y == 1], SCORES[y == 0]
        u = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
        for key, value in (
            ("tp", tp),
            ("fp", fp),
            ("fn", fn),
            ("tn", tn),
            ("accuracy", (tp + tn) / y.size),
            ("precision", tp / (tp + fp)),
            ("brier", np.mean((SCORES - y) ** 2)),
            ("u", u),
            ("pairs", pos.size * neg.size),
        ):
            totals[key] += weight * float(value)
    return totals


def test_the_expected_confusion_matrix_and_exact_metrics_match_every_labelling_enumerated():
    exact = enumerated()
    estimate = pe.estimate_performance(SCORES, PREDICTED)
    assert estimate.tp == pytest.approx(exact["tp"])
    assert estimate.fp == pytest.approx(exact["fp"])
    assert estimate.fn == pytest.approx(exact["fn"])
    assert estimate.tn == pytest.approx(exact["tn"])
    # by hand: TP = 0.35 + 0.5 + 0.7 + 0.95 over the predicted positives
    assert estimate.tp == pytest.approx(2.5)
    for name in ("accuracy", "precision", "brier"):
        assert estimate.metrics[name].value == pytest.approx(exact[name]), name
    assert estimate.metrics["auc"].value == pytest.approx(exact["u"] / exact["pairs"])


def test_each_draw_computes_the_metrics_sklearn_computes_on_that_labelling():
    rng = np.random.default_rng(3)
    p = np.round(rng.random(400), 2)  # ties on purpose: AUC counts them 1/2
    predicted = (rng.random(400) < p).astype(int)
    columns = np.column_stack([predicted == 1, predicted == 0, pe._mid_ranks(p), 1 - 2 * p])
    labels = (rng.random((25, 400)) < p).astype(float)
    drawn = pe._metrics_of(labels @ columns, 400, int(predicted.sum()), float(p @ p))
    for k, y in enumerate(labels):
        assert drawn["auc"][k] == pytest.approx(roc_auc_score(y, p))
        assert drawn["accuracy"][k] == pytest.approx(accuracy_score(y, predicted))
        assert drawn["precision"][k] == pytest.approx(precision_score(y, predicted))
        assert drawn["recall"][k] == pytest.approx(recall_score(y, predicted))
        assert drawn["f1"][k] == pytest.approx(f1_score(y, predicted))
        assert drawn["brier"][k] == pytest.approx(np.mean((p - y) ** 2))


# ---------------------------------------------------------------------------------------------
# Accuracy on simulated calibrated data
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("scale", [1.0, 0.3])
def test_estimated_auc_is_within_002_of_the_realised_on_10k_calibrated_rows(seed, scale):
    scores, predicted, labels, _ = simulated(10_000, seed, scale=scale)
    estimate = pe.estimate_performance(scores, predicted, seed=seed)
    realised = stats.performance_metrics(labels, scores, predicted)
    assert abs(estimate.metrics["auc"].value - realised.auc) <= 0.02
    assert abs(estimate.metrics["accuracy"].value - realised.accuracy) <= 0.02
    assert estimate.metrics["auc"].low < estimate.metrics["auc"].value
    assert estimate.metrics["auc"].value < estimate.metrics["auc"].high


def test_the_interval_covers_the_realised_value_about_as_often_as_its_level():
    covered = {name: 0 for name in ("auc", "precision", "recall", "f1")}
    windows = 60
    for seed in range(windows):
        scores, predicted, labels, _ = simulated(2_000, 100 + seed)
        estimate = pe.estimate_performance(scores, predicted, seed=seed)
        realised = stats.performance_metrics(labels, scores, predicted)
        for name in covered:
            interval = estimate.metrics[name]
            covered[name] += interval.low <= getattr(realised, name) <= interval.high
    # 95 % intervals: 57 of 60 expected; 51 is more than three binomial sd below
    assert all(count >= 51 for count in covered.values()), covered


def test_the_normal_law_of_the_label_sums_gives_the_intervals_the_drawn_labels_give():
    scores, predicted, _, groups = simulated(20_000, 9)
    drawn = pe.estimate_performance(
        scores, predicted, groups={"area": groups}, draws=1000, method="bernoulli"
    )
    normal = pe.estimate_performance(
        scores, predicted, groups={"area": groups}, draws=1000, method="normal"
    )
    assert (drawn.method, normal.method) == ("bernoulli", "normal")
    for name in ("auc", "accuracy", "recall", "f1"):
        a, b = drawn.metrics[name], normal.metrics[name]
        assert a.value == b.value
        assert b.high - b.low == pytest.approx(a.high - a.low, rel=0.15), name
    a, b = drawn.groups["area"]["north"]["fpr"], normal.groups["area"]["north"]["fpr"]
    assert b.high - b.low == pytest.approx(a.high - a.low, rel=0.15)


def test_auto_switches_to_the_normal_law_past_the_draw_budget():
    scores, predicted, _, _ = simulated(2_000, 4)
    assert pe.estimate_performance(scores, predicted).method == "bernoulli"
    big = np.tile(scores, 6)
    assert pe.estimate_performance(big, (big >= 0.5).astype(int)).method == "normal"


def test_the_same_seed_gives_the_same_interval():
    scores, predicted, _, _ = simulated(3_000, 5)
    one = pe.estimate_performance(scores, predicted, seed=7).to_dict()
    assert one == pe.estimate_performance(scores, predicted, seed=7).to_dict()


def test_per_group_rates_are_estimated_near_the_realised_ones():
    scores, predicted, labels, groups = simulated(20_000, 6)
    estimate = pe.estimate_performance(scores, predicted, groups={"area": groups})
    codes = stats.GroupCodes((groups == "south").astype(np.int64), ["north", "south"])
    realised = stats.fairness_metrics(labels, predicted, {"area": codes}).attributes["area"]
    for group in realised.groups:
        estimated = estimate.groups["area"][group.group]
        assert estimated["n"] == group.n
        assert estimated["selection_rate"].value == pytest.approx(group.selection_rate)
        for rate in ("tpr", "fpr", "fnr", "ppv"):
            assert abs(estimated[rate].value - getattr(group, rate)) < 0.03, (group.group, rate)
            assert estimated[rate].low <= estimated[rate].value <= estimated[rate].high


def test_group_codes_given_as_a_pair_are_read_as_given():
    scores, predicted, _, groups = simulated(1_000, 8)
    codes = (groups == "south").astype(np.int64)
    by_pair = pe.estimate_performance(scores, predicted, groups={"a": (codes, ["north", "south"])})
    by_labels = pe.estimate_performance(scores, predicted, groups={"a": groups})
    assert by_pair.to_dict()["groups"] == by_labels.to_dict()["groups"]


# ---------------------------------------------------------------------------------------------
# The failure mode: the estimate is only as good as calibration
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("true_slope", "score_slope"),
    [(3.0, 0.5), (0.5, 3.0)],
    ids=["under-confident", "over-confident"],
)
def test_a_miscalibrated_model_shows_a_large_gap_outside_the_interval(true_slope, score_slope):
    scores, predicted, labels, _ = simulated(
        10_000, 11, true_slope=true_slope, score_slope=score_slope
    )
    estimate = pe.estimate_performance(scores, predicted)
    realised = stats.performance_metrics(labels, scores, predicted)
    gap = estimate.metrics["auc"].value - realised.auc
    assert abs(gap) > 0.2  # same ranking, so the realised AUC is the calibrated model's
    assert not estimate.metrics["auc"].low <= realised.auc <= estimate.metrics["auc"].high
    assert abs(estimate.metrics["precision"].value - realised.precision) > 0.2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scores": [], "predicted": []}, "must not be empty"),
        ({"scores": [0.2, 1.2], "predicted": [0, 1]}, r"in \[0, 1\]"),
        ({"scores": [0.2, np.nan], "predicted": [0, 1]}, r"in \[0, 1\]"),
        ({"scores": [0.2, 0.4], "predicted": [0, 2]}, "0 or 1"),
        ({"scores": [0.2, 0.4], "predicted": [0]}, "length mismatch"),
        ({"scores": [0.2, 0.4], "predicted": [0, 1], "draws": 1}, "draws"),
        ({"scores": [0.2, 0.4], "predicted": [0, 1], "level": 1.0}, "level"),
        ({"scores": [0.2, 0.4], "predicted": [0, 1], "method": "exact"}, "method"),
        ({"scores": [0.2, 0.4], "predicted": [0, 1], "groups": {"a": ["x"]}}, "groups of a"),
    ],
)
def test_invalid_input_names_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        pe.estimate_performance(kwargs.pop("scores"), kwargs.pop("predicted"), **kwargs)


def test_all_scores_certain_gives_undefined_auc_not_an_error():
    estimate = pe.estimate_performance([0.0, 0.0, 1.0], [0, 0, 1])
    assert estimate.metrics["auc"].to_dict() == {"value": 1.0, "low": 1.0, "high": 1.0}
    assert estimate.metrics["accuracy"].value == 1.0
    one_class = pe.estimate_performance([0.0, 0.0], [0, 0])
    assert one_class.metrics["auc"].value is None and one_class.metrics["precision"].value is None
