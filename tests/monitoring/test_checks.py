"""The six checks on synthetic windows: a known shift breaches, an unshifted window does not.

Each check takes (window, reference profile, version, monitoring settings, validation thresholds)
and returns metrics, time-series points and a breach or None; it raises Skip on too few rows and
CheckFailed on broken data.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from analytics import stats
from governance.models import Evaluation, EvidenceKind, ValidationPolicy
from monitoring import checks
from monitoring.checks import CheckFailed, Skip
from monitoring.columns import feature_of, is_feature
from monitoring.policies import MONITORING
from tests.factories import ModelVersionFactory

pytestmark = pytest.mark.django_db

SETTINGS: dict[str, Any] = MONITORING.defaults()
THRESHOLDS: dict[str, Any] = ValidationPolicy.schema.defaults()
FEATURES = ["f1", "f2", "f3"]


# ---------------------------------------------------------------------------------------------
# Synthetic data: features, calibrated scores, labels and a sensitive attribute
# ---------------------------------------------------------------------------------------------


def synthetic(
    n: int,
    *,
    seed: int,
    features: list[str] = FEATURES,
    shift: dict[str, float] | None = None,
    label_boost: float = 1.0,
    noisy_scores: float = 0.0,
    miscalibrate: bool = False,
    unfair_fpr: float = 0.0,
    labelled: float = 1.0,
    start: str = "2026-03-01",
    days: int = 7,
) -> pd.DataFrame:
    """Records as ``store.load_window`` returns them.

    Scores are ``sigmoid(1.5 f1 + f2 - 1)``; labels ~ Bernoulli(score) (calibrated). ``shift``
    adds to features *after* the scores are drawn (pure data drift); ``noisy_scores`` mixes the
    scores with uniform noise (concept drift: the scores stop tracking the labels);
    ``label_boost`` multiplies the label probability (label drift); ``miscalibrate`` reports
    ``sqrt(score)`` instead of the score; ``unfair_fpr`` predicts positive for that share of the
    negatives of area "south"."""
    rng = np.random.default_rng(seed)
    x = {name: rng.normal(size=n) for name in features}
    logit = 1.5 * x[features[0]] + (x[features[1]] if len(features) > 1 else 0) - 1.0
    p = 1 / (1 + np.exp(-logit))
    y = (rng.random(n) < np.clip(p * label_boost, 0, 1)).astype(float)
    score = p
    if noisy_scores:
        score = (1 - noisy_scores) * p + noisy_scores * rng.random(n)
    if miscalibrate:
        score = np.sqrt(p)
    area = np.where(rng.random(n) < 0.5, "north", "south")
    prediction = (score >= 0.5).astype(float)
    if unfair_fpr:
        flip = (area == "south") & (y == 0) & (rng.random(n) < unfair_fpr)
        prediction[flip] = 1.0
    if labelled < 1.0:
        y[rng.random(n) >= labelled] = np.nan
    seconds = pd.to_timedelta(rng.random(n) * days * 86400, unit="s")
    stamps = (pd.Timestamp(start, tz="UTC") + seconds).floor("us")
    frame = pd.DataFrame(
        {
            "prediction_id": [f"p{seed}-{i}" for i in range(n)],
            "timestamp": stamps,
            "score": score,
            "prediction": prediction,
        }
    )
    for name in features:
        frame["f." + name] = x[name] + (shift or {}).get(name, 0.0)
    frame["s.area"] = area
    frame["label"] = y
    return frame


def reference_profile(frame: pd.DataFrame) -> dict:
    features = {feature_of(c): frame[c].to_numpy() for c in frame.columns if is_feature(c)}
    return stats.build_reference_profile(features, frame["score"], frame["label"])


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return synthetic(20_000, seed=1)


@pytest.fixture(scope="module")
def profile(reference) -> dict:
    return reference_profile(reference)


@pytest.fixture
def version():
    return ModelVersionFactory(feature_list=FEATURES, thresholds={"decision": 0.5})


def run(kind: str, window, profile, version, settings=None, thresholds=None):
    return checks.run_check(
        kind, window, profile, version, {**SETTINGS, **(settings or {})}, thresholds or THRESHOLDS
    )


def assert_plain_json(value: Any) -> None:
    assert json.loads(json.dumps(value, allow_nan=False)) == value


def baseline(version, auc: float, **values: float) -> Evaluation:
    """A passing validation evaluation shaped like governance.gates.validation_report."""
    gate = {"gate": "metrics", "passed": True, "values": {"auc": auc, **values}}
    return Evaluation.objects.create(
        version=version,
        kind=EvidenceKind.VALIDATION,
        passed=True,
        report={"passed": True, "gates": [gate]},
        evidence_digest="d" * 64,
        created_by="tests",
    )


# ---------------------------------------------------------------------------------------------
# Data drift
# ---------------------------------------------------------------------------------------------


def test_data_drift_breaches_on_the_shifted_feature_only(profile, version):
    window = synthetic(5_000, seed=2, shift={"f2": 1.0})
    result = run("data_drift", window, profile, version)
    assert result.breach is not None
    assert result.breach.metric == "psi" and result.breach.feature == "f2"
    assert result.breach.value > 0.2 and result.breach.threshold == 0.2
    assert [f["feature"] for f in result.breach.details["features"]] == ["f2"]
    assert result.metrics["features"]["f1"]["psi"] < 0.05
    assert {p[1] for p in result.points if p[0] == "psi"} == set(FEATURES)
    assert_plain_json(result.metrics)


def test_data_drift_details_list_every_breaching_feature(profile, version):
    window = synthetic(5_000, seed=3, shift={"f1": 1.5, "f3": -1.0})
    result = run("data_drift", window, profile, version)
    listed = [f["feature"] for f in result.breach.details["features"]]
    assert sorted(listed) == ["f1", "f3"]
    psis = [f["psi"] for f in result.breach.details["features"]]
    assert psis == sorted(psis, reverse=True) and result.breach.value == psis[0]


def test_twenty_unshifted_features_raise_no_data_drift_alert():
    names = [f"x{i:02d}" for i in range(20)]
    version = ModelVersionFactory(feature_list=names)
    profile = reference_profile(synthetic(20_000, seed=10, features=names))
    window = synthetic(SETTINGS["min_rows"], seed=11, features=names)  # the smallest window
    result = run("data_drift", window, profile, version)
    assert result.breach is None
    assert len(result.metrics["features"]) == 20
    assert result.metrics["max_psi"] < 0.1
    assert result.metrics["breaching_features"] == []


def test_data_drift_skips_a_window_below_min_rows(profile, version):
    with pytest.raises(Skip, match="100 predictions in the window; the policy needs at least 500"):
        run("data_drift", synthetic(100, seed=4), profile, version)


def test_data_drift_fails_on_a_missing_feature_column(profile, version):
    window = synthetic(1_000, seed=5).drop(columns=["f.f3"])
    with pytest.raises(CheckFailed, match="missing from the window: f3"):
        run("data_drift", window, profile, version)


def test_data_drift_fails_without_a_reference_profile(version):
    with pytest.raises(CheckFailed, match="no reference profile"):
        run("data_drift", synthetic(1_000, seed=5), None, version)


def test_data_drift_fails_on_text_in_a_numeric_feature(profile, version):
    window = synthetic(1_000, seed=5)
    window["f.f1"] = window["f.f1"].astype(object)
    window.loc[3, "f.f1"] = "abc"
    with pytest.raises(CheckFailed, match="feature f1: 1 value"):
        run("data_drift", window, profile, version)


# ---------------------------------------------------------------------------------------------
# Prediction drift
# ---------------------------------------------------------------------------------------------


def test_prediction_drift_breaches_when_the_scores_shift(profile, version):
    window = synthetic(5_000, seed=6, shift=None, label_boost=1.0)
    window["score"] = np.clip(window["score"] + 0.1, 0, 1)
    result = run("prediction_drift", window, profile, version)
    assert result.breach is not None and result.breach.metric == "ks_pvalue"
    assert result.breach.value < 0.01 and result.breach.threshold == 0.01
    assert result.metrics["ks_statistic"] > 0.05


def test_prediction_drift_holds_on_unshifted_scores(profile, version):
    result = run("prediction_drift", synthetic(5_000, seed=7), profile, version)
    assert result.breach is None
    assert result.metrics["p_value"] >= 0.01
    assert_plain_json(result.metrics)


def test_prediction_drift_fails_on_nan_scores(profile, version):
    window = synthetic(1_000, seed=7)
    window.loc[[2, 9], "score"] = np.nan
    with pytest.raises(CheckFailed, match="2 of 1000 scores are missing"):
        run("prediction_drift", window, profile, version)


# ---------------------------------------------------------------------------------------------
# Label drift
# ---------------------------------------------------------------------------------------------


def test_label_drift_breaches_on_a_large_significant_rate_change(profile, version):
    result = run("label_drift", synthetic(3_000, seed=8, label_boost=1.6), profile, version)
    assert result.breach is not None and result.breach.metric == "relative_change"
    assert result.breach.value > 0.25 and result.breach.details["p_value"] < 0.01


def test_label_drift_holds_on_the_reference_rate(profile, version):
    result = run("label_drift", synthetic(3_000, seed=9), profile, version)
    assert result.breach is None


def test_label_drift_needs_both_significance_and_size(profile, version):
    # significant (p << 0.01 at 20k rows) but only ~10% relative: no breach
    result = run("label_drift", synthetic(20_000, seed=12, label_boost=1.1), profile, version)
    assert result.metrics["p_value"] < 0.01
    assert abs(result.metrics["relative_change"]) < 0.25
    assert result.breach is None


def test_label_drift_skips_with_too_few_labelled_rows(profile, version):
    window = synthetic(2_000, seed=13, labelled=0.05)
    with pytest.raises(Skip, match="labelled records in the window; the policy needs at least 200"):
        run("label_drift", window, profile, version)


def test_label_drift_fails_on_labels_other_than_0_and_1(profile, version):
    window = synthetic(1_000, seed=13)
    window.loc[0, "label"] = 2
    with pytest.raises(CheckFailed, match="labels must be 0 or 1; found 2"):
        run("label_drift", window, profile, version)


# ---------------------------------------------------------------------------------------------
# Concept drift
# ---------------------------------------------------------------------------------------------


def test_concept_drift_breaches_on_a_large_auc_drop(reference, version):
    auc = stats.roc_auc(reference["label"], reference["score"])
    baseline(version, auc)
    result = run("concept_drift", synthetic(3_000, seed=14, noisy_scores=0.8), None, version)
    assert result.breach is not None and result.breach.metric == "relative_drop"
    assert result.breach.value > 0.05 and result.breach.details["baseline"] == pytest.approx(auc)
    assert result.metrics["p_value"] < 0.01


def test_concept_drift_holds_when_performance_matches_the_baseline(reference, version):
    baseline(version, stats.roc_auc(reference["label"], reference["score"]))
    result = run("concept_drift", synthetic(3_000, seed=15), None, version)
    assert result.breach is None
    assert abs(result.metrics["relative_drop"]) < 0.05
    assert_plain_json(result.metrics)


def test_concept_drift_ignores_a_drop_within_sampling_noise(version):
    baseline(version, 0.80)
    window = synthetic(200, seed=16)
    result = run("concept_drift", window, None, version)
    current = result.metrics["current"]
    # arrange a drop just past 5% that 200 rows cannot tell from noise
    assert result.metrics["standard_error"] > 0.02
    drop_baseline = current / (1 - 0.06)
    Evaluation.objects.all().delete()
    baseline(version, drop_baseline)
    result = run("concept_drift", window, None, version)
    assert result.metrics["relative_drop"] == pytest.approx(0.06)
    assert result.metrics["p_value"] > 0.01
    assert result.breach is None


def test_concept_drift_fails_without_a_validated_baseline(version):
    with pytest.raises(CheckFailed, match="no passing validation evaluation"):
        run("concept_drift", synthetic(1_000, seed=17), None, version)


def test_concept_drift_uses_the_threshold_when_no_prediction_is_logged(reference, version):
    baseline(version, 0.7, f1=0.6)
    window = synthetic(1_000, seed=18).drop(columns=["prediction"])
    result = run("concept_drift", window, None, version, settings={"performance_metric": "f1"})
    assert result.metrics["performance"]["decision_threshold"] == 0.5
    assert result.metrics["metric"] == "f1"


# ---------------------------------------------------------------------------------------------
# Fairness
# ---------------------------------------------------------------------------------------------


def test_fairness_breaches_on_an_fpr_disparity_and_reports_every_group(version):
    result = run("fairness", synthetic(6_000, seed=19, unfair_fpr=0.3), None, version)
    assert result.breach is not None
    assert result.breach.feature == "area"
    assert result.breach.metric in {"equalized_odds_difference", "fpr_ratio"}
    groups = result.metrics["attributes"]["area"]["groups"]
    assert set(groups) == {"north", "south"}
    for g in groups.values():
        assert isinstance(g["fpr"], float) and isinstance(g["fnr"], float)
    assert groups["south"]["fpr"] > groups["north"]["fpr"] + 0.2
    assert ("fpr", "area", "area=south", groups["south"]["fpr"]) in result.points
    assert_plain_json(result.metrics)


def test_fairness_holds_for_a_fair_model(version):
    result = run("fairness", synthetic(6_000, seed=20), None, version)
    assert result.breach is None
    assert result.metrics["attributes"]["area"]["judged"] is True


def _confusion_frame(groups: dict[str, tuple[int, int, int, int]]) -> pd.DataFrame:
    """Rows realising (tp, fp, fn, tn) per group of ``s.area``."""
    rows = []
    for group, (tp, fp, fn, tn) in groups.items():
        for label, pred, count in ((1, 1, tp), (0, 1, fp), (1, 0, fn), (0, 0, tn)):
            rows += [{"label": label, "prediction": pred, "s.area": group}] * count
    frame = pd.DataFrame(rows)
    frame["score"] = np.where(frame["prediction"] == 1, 0.8, 0.2)
    return frame


def test_a_gap_small_groups_cannot_tell_from_noise_is_a_watch_not_an_alert(version):
    # TPR 0.60 vs 0.75 (EOD 0.15 > 0.10, FNR ratio 0.625 < 0.8) on 100 positives per group:
    # both estimates breach, but their 95 % intervals still include the limits
    small = _confusion_frame({"north": (60, 40, 40, 160), "south": (75, 40, 25, 160)})
    result = run("fairness", small, None, version)
    attribute = result.metrics["attributes"]["area"]
    assert attribute["equalized_odds_difference"] == pytest.approx(0.15)
    assert attribute["status"] == "watch"
    lo, hi = attribute["intervals"]["equalized_odds_difference"]
    assert lo <= 0.10 < 0.15 < hi
    assert {v["metric"] for v in attribute["violations"]} == {
        "equalized_odds_difference",
        "fnr_ratio",
    }
    assert not any(v["conclusive"] for v in attribute["violations"])
    assert result.breach is not None and result.breach.severity == "watch"
    assert result.breach.details["violations"] == []
    assert "includes the limit" in result.breach.details["message"]
    # the same rates on ten times the rows are a real disparity: the check's own severity
    big = _confusion_frame({"north": (600, 400, 400, 1600), "south": (750, 400, 250, 1600)})
    result = run("fairness", big, None, version)
    assert result.breach is not None and result.breach.feature == "area"
    assert result.breach.severity is None
    assert result.metrics["attributes"]["area"]["status"] == "violated"


def test_fairness_skips_when_no_attribute_has_two_judged_groups(version):
    frame = _confusion_frame({"north": (100, 50, 50, 200), "south": (5, 5, 5, 10)})
    with pytest.raises(Skip, match="no sensitive attribute has two groups of at least 30"):
        run("fairness", frame, None, version)


def test_fairness_fails_without_sensitive_attributes(version):
    window = synthetic(1_000, seed=21).drop(columns=["s.area"])
    with pytest.raises(CheckFailed, match="no sensitive attribute"):
        run("fairness", window, None, version)


# ---------------------------------------------------------------------------------------------
# Calibration
# ---------------------------------------------------------------------------------------------


def test_calibration_breaches_on_miscalibrated_scores(version):
    result = run("calibration", synthetic(3_000, seed=22, miscalibrate=True), None, version)
    assert result.breach is not None and result.breach.metric == "ece"
    assert result.breach.value > 0.05 and result.breach.details["p_value"] < 0.01
    assert len(result.metrics["bins"]) == 10


def test_calibration_holds_for_calibrated_scores(version):
    result = run("calibration", synthetic(5_000, seed=23), None, version)
    assert result.breach is None and result.metrics["ece"] < 0.05


def test_calibration_ignores_a_small_sample_ece_above_the_limit(version):
    # a perfectly calibrated model's ECE over 200 rows is ~0.06 by chance alone
    seeds = range(24, 60)
    windows = (synthetic(200, seed=s) for s in seeds)
    results = (run("calibration", w, None, version) for w in windows)
    noisy = next(r for r in results if r.metrics["ece"] > 0.05)
    assert noisy.metrics["p_value"] >= 0.01
    assert noisy.breach is None


def test_calibration_skips_with_too_few_labelled_rows(version):
    with pytest.raises(Skip):
        run("calibration", synthetic(1_000, seed=61, labelled=0.1), None, version)


# ---------------------------------------------------------------------------------------------
# Every metric is plain JSON
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind",
    ["data_drift", "prediction_drift", "label_drift", "concept_drift", "fairness", "calibration"],
)
def test_every_check_returns_plain_json_numbers(kind, reference, profile, version):
    baseline(version, 0.8)
    result = run(kind, synthetic(2_000, seed=62, shift={"f1": 0.5}), profile, version)
    assert_plain_json(result.metrics)
    for metric, feature, group, value in result.points:
        assert isinstance(metric, str) and isinstance(feature, str) and isinstance(group, str)
        assert value is None or (isinstance(value, int | float) and math.isfinite(value))
    if result.breach is not None:
        assert_plain_json(list(result.breach))
