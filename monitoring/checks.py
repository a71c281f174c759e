"""The six monitoring checks: one function each, a window of production records in, numbers out.

Every check has the signature ``check(window, profile, version, settings, thresholds)``:

* ``window``: the records of ``store.load_window`` (columns ``score``, ``prediction``,
  ``f.<feature>``, ``s.<attribute>``, ``label``; ``label`` is null where no label arrived yet);
* ``profile``: the version's stored reference profile (``stats.build_reference_profile``) or None;
* ``version``: the ``ModelVersion`` (its ``thresholds["decision"]`` and ``feature_list``);
* ``settings``: the monitoring policy's settings (``MonitoringPolicy.resolved``);
* ``thresholds``: the validation policy's thresholds (the fairness limits, ``min_group_size``).

It returns a ``CheckResult`` (``metrics``: plain JSON, every number a JSON number or null;
``points``: the time-series rows ``(metric, feature, group, value)``; ``breach``: None or a
``Breach``). It raises ``Skip`` when there are too few rows to judge and ``CheckFailed`` when the
data are broken (NaN scores, missing columns, no reference profile, no baseline).

Concept drift does not wait for labels: on a window with too few, it estimates the metric from
the calibrated scores (``analytics.performance_estimation``) and says so (``"estimated": true``);
``reconcile_concept_drift`` judges the same window again once its labels are in.

No false alerts: a breach needs the threshold crossed *and*, for the checks whose statistic is
noisy on small samples (performance, calibration, fairness), the gap to be statistically
significant at the policy's level. Fairness states it with intervals (``analytics.fairness``):
an aggregate whose interval lies wholly beyond its limit alerts at the check's severity; one
whose interval still includes the limit raises a ``watch`` alert that nothing acts on. Label
drift and prediction drift are tests already; PSI with 10 bins over hundreds of rows is far
below its limit on an unshifted feature.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as sps

from analytics import fairness as fairness_rule
from analytics import performance_estimation as estimation
from analytics import stats
from analytics.stats import jsonable
from governance.models import Evaluation, EvidenceKind

from .columns import attribute_of, feature_column, is_sensitive
from .models import Alert, AlertStatus, Check, MonitorRun, RunStatus, Severity

ECE_BINS = 10
HIGHER_IS_WORSE = frozenset({"brier"})  # performance metrics that are losses
_F1_BOOTSTRAP = 2000


class Skip(Exception):
    """Too little data to judge; the run ends ``skipped`` with this reason."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class CheckFailed(Exception):
    """Broken data or configuration; the run ends ``failed`` with this reason."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class Breach(NamedTuple):
    metric: str
    feature: str  # "" when the breach is not about one feature (or attribute)
    value: float | None
    threshold: float | None
    details: dict[str, Any]
    # None: the check's severity (models.SEVERITY); "watch": a breach the evidence does not
    # establish (its interval includes the threshold), raised but acted on by nothing
    severity: str | None = None


Point = tuple[str, str, str, float | None]  # (metric, feature, group, value)


@dataclass(frozen=True)
class CheckResult:
    metrics: dict[str, Any]
    points: list[Point] = field(default_factory=list)
    breach: Breach | None = None


@dataclass(frozen=True)
class Needs:
    """What a check reads from the store (so a run loads only those columns)."""

    features: bool = False
    labels: bool = False
    sensitive: bool = False
    profile: bool = False


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _num(value: Any) -> float | None:
    return jsonable(value) if value is not None else None


def _numeric(window: pd.DataFrame, column: str) -> np.ndarray:
    """A column as float64 with NaN for nulls (pandas nullable types included)."""
    series = window[column]
    if not pd.api.types.is_float_dtype(series.dtype):
        series = pd.to_numeric(series, errors="coerce")
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def _require_profile(profile: Mapping[str, Any] | None, version) -> Mapping[str, Any]:
    if not profile:
        raise CheckFailed(
            f"{version} has no reference profile: upload its reference data "
            "(POST .../versions/{version}/reference/) before this check can run"
        )
    return profile


def _require_rows(n: int, minimum: int, what: str) -> None:
    if n == 0:
        raise Skip(f"no {what} in the window")
    if n < minimum:
        raise Skip(f"{n} {what} in the window; the policy needs at least {minimum}")


def _scores(window: pd.DataFrame) -> np.ndarray:
    if "score" not in window.columns:
        raise CheckFailed("the window has no score column")
    scores = _numeric(window, "score")
    missing = int(np.count_nonzero(np.isnan(scores)))
    if missing:
        raise CheckFailed(f"{missing} of {scores.size} scores are missing or not numbers (NaN)")
    if scores.size and (scores.min() < 0.0 or scores.max() > 1.0):
        raise CheckFailed(
            f"scores must lie in [0, 1]; found values in [{scores.min():g}, {scores.max():g}]"
        )
    return scores


def _labelled(window: pd.DataFrame) -> pd.DataFrame:
    """The rows that have a label, with the label checked to be 0 or 1."""
    if "label" not in window.columns:
        raise CheckFailed("the window has no label column")
    labels = _numeric(window, "label")
    raw_present = window["label"].notna().to_numpy()
    if np.any(raw_present & np.isnan(labels)):
        raise CheckFailed("some labels are not numbers; labels must be 0 or 1")
    present = ~np.isnan(labels)
    bad = present & (labels != 0.0) & (labels != 1.0)
    if bad.any():
        found = ", ".join(f"{v:g}" for v in np.unique(labels[bad])[:5])
        raise CheckFailed(f"labels must be 0 or 1; found {found}")
    return window if present.all() else window.loc[present]


def _label_array(labelled: pd.DataFrame) -> np.ndarray:
    return _numeric(labelled, "label").astype(np.int8)


def _predicted(window: pd.DataFrame, scores: np.ndarray, version) -> np.ndarray:
    """The logged prediction where present, else ``score >= thresholds["decision"]``."""
    predictions = _numeric(window, "prediction") if "prediction" in window.columns else None
    needs_threshold = predictions is None or bool(np.isnan(predictions).any())
    threshold = (version.thresholds or {}).get("decision")
    if needs_threshold and not isinstance(threshold, int | float):
        raise CheckFailed(
            f"{version} has no numeric decision threshold (thresholds.decision) and some records "
            "carry no logged prediction"
        )
    try:
        return stats.predicted_class(
            scores, predictions, decision_threshold=float(threshold if needs_threshold else 0.5)
        )
    except ValueError as exc:
        raise CheckFailed(str(exc)) from None


def _two_proportion_p(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided pooled two-proportion z-test (1.0 when it cannot tell)."""
    if n1 == 0 or n2 == 0:
        return 1.0
    pooled = (x1 + x2) / (n1 + n2)
    variance = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if variance <= 0:
        return 1.0
    z = abs(x1 / n1 - x2 / n2) / math.sqrt(variance)
    return float(2 * sps.norm.sf(z))


# --------------------------------------------------------------------------------------------
# Data drift (PSI per feature)
# --------------------------------------------------------------------------------------------


def _feature_values(column: pd.Series, name: str, features: Mapping[str, Any]):
    """The column as ``stats`` wants it (as ``profiles.feature_values`` converts the reference):
    float64 with NaN for a numeric profile, ``str`` objects with None for a categorical one.
    Returns the values and the number of missing ones."""
    if features[name].get("kind") != "numeric":
        values = column.to_numpy(dtype=object, na_value=None)
        return values, int(column.isna().sum())
    if pd.api.types.is_float_dtype(column.dtype):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        numbers = pd.to_numeric(column, errors="coerce")
        not_numeric = int((column.notna() & numbers.isna()).sum())
        if not_numeric:
            raise CheckFailed(
                f"feature {name}: {not_numeric} value(s) are not numbers, but the reference "
                "profile is numeric"
            )
        values = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    return values, int(np.count_nonzero(np.isnan(values)))


def _drift_features(profile, version) -> tuple[dict[str, Any], list[str]]:
    """The profile's feature bins and the features to check (the version's list, else the
    profile's); every one of them must have bins."""
    features: dict[str, Any] = profile.get("features") or {}
    expected = list(version.feature_list or []) or list(features)
    if not expected:
        raise CheckFailed(f"{version} has no features to check (empty feature list and profile)")
    unprofiled = [f for f in expected if f not in features]
    if unprofiled:
        raise CheckFailed(
            f"the reference profile has no bins for feature(s) {', '.join(unprofiled)}; "
            "upload reference data carrying every feature"
        )
    return features, expected


def _present_features(window, expected, features) -> dict[str, tuple[np.ndarray, int]]:
    """Fail unless every expected feature has a column with at least one value. Returns the
    float64 columns already converted (a view for free, and their NaN count answers "empty"
    too); other columns are converted one at a time by the caller."""
    n = len(window)
    missing = [f for f in expected if feature_column(f) not in window.columns]
    ready: dict[str, tuple[np.ndarray, int]] = {}
    empty = []
    for name in expected:
        if name in missing:
            continue
        column = window[feature_column(name)]
        if column.dtype == np.float64 and features[name].get("kind") == "numeric":
            ready[name] = _feature_values(column, name, features)
            if ready[name][1] == n:
                empty.append(name)
        elif column.isna().all():
            empty.append(name)
    if missing or empty:
        parts = []
        if missing:
            parts.append(f"feature column(s) missing from the window: {', '.join(missing)}")
        if empty:
            parts.append(f"feature(s) with no value in any record: {', '.join(empty)}")
        raise CheckFailed("; ".join(parts))
    return ready


def _feature_psi(name, feature_profile, values, missing_values, psi_max) -> dict[str, Any]:
    """One feature's PSI entry of the check's metrics (its bins included)."""
    try:
        result = stats.psi_from_profile(feature_profile, values)
    except ValueError as exc:
        raise CheckFailed(f"feature {name}: {exc}") from None
    return {
        "psi": result.psi,
        "kind": result.kind,
        "n": result.n_current,
        "missing": missing_values,
        "breach": result.psi > psi_max,
        "bins": [
            {"bin": label, "reference": ref, "current": cur, "contribution": contrib}
            for label, ref, cur, contrib in zip(
                result.bin_labels,
                result.reference_proportions,
                result.current_proportions,
                result.contributions,
                strict=True,
            )
        ],
    }


def data_drift(window, profile, version, settings, thresholds) -> CheckResult:
    """PSI of every profiled feature; breach when the largest PSI exceeds ``psi_max``."""
    profile = _require_profile(profile, version)
    features, expected = _drift_features(profile, version)
    n = len(window)
    _require_rows(n, int(settings["min_rows"]), "predictions")
    ready = _present_features(window, expected, features)
    psi_max = float(settings["psi_max"])
    per_feature: dict[str, Any] = {}
    points: list[Point] = []
    for name in expected:
        values, missing_values = ready.pop(name, None) or _feature_values(
            window[feature_column(name)], name, features
        )
        per_feature[name] = _feature_psi(name, features[name], values, missing_values, psi_max)
        points.append(("psi", name, "", per_feature[name]["psi"]))
    worst = max(per_feature, key=lambda f: per_feature[f]["psi"])
    max_psi = per_feature[worst]["psi"]
    breaching = sorted(
        ({"feature": f, "psi": v["psi"]} for f, v in per_feature.items() if v["breach"]),
        key=lambda item: -item["psi"],
    )
    points.append(("max_psi", "", "", max_psi))
    metrics = {
        "n": n,
        "psi_max": psi_max,
        "max_psi": max_psi,
        "max_feature": worst,
        "breaching_features": [b["feature"] for b in breaching],
        "features": per_feature,
    }
    breach = None
    if breaching:
        breach = Breach("psi", worst, max_psi, psi_max, {"features": breaching})
    return CheckResult(jsonable(metrics), points, breach)


# --------------------------------------------------------------------------------------------
# Prediction drift (KS on scores)
# --------------------------------------------------------------------------------------------


def prediction_drift(window, profile, version, settings, thresholds) -> CheckResult:
    """Two-sample KS of the window's scores against the stored sorted reference sample."""
    profile = _require_profile(profile, version)
    score_profile = profile.get("scores")
    if not score_profile or not score_profile.get("sample"):
        raise CheckFailed("the reference profile holds no score sample")
    n = len(window)
    _require_rows(n, int(settings["min_rows"]), "predictions")
    scores = _scores(window)
    try:
        result = stats.ks_from_profile(score_profile, scores)
    except ValueError as exc:
        raise CheckFailed(str(exc)) from None
    pmin = float(settings["ks_pvalue_min"])
    metrics = {
        "n": n,
        "ks_statistic": result.statistic,
        "p_value": result.p_value,
        "ks_pvalue_min": pmin,
        "method": result.method,
        "n_reference": result.n_reference,
        "reference_mean_score": score_profile.get("mean"),
        "mean_score": float(scores.mean()),
    }
    points: list[Point] = [
        ("ks_statistic", "", "", result.statistic),
        ("ks_pvalue", "", "", result.p_value),
        ("mean_score", "", "", float(scores.mean())),
    ]
    breach = None
    if result.p_value < pmin:
        breach = Breach(
            "ks_pvalue",
            "",
            result.p_value,
            pmin,
            {"ks_statistic": result.statistic, "n": n, "n_reference": result.n_reference},
        )
    return CheckResult(jsonable(metrics), points, breach)


# --------------------------------------------------------------------------------------------
# Label drift
# --------------------------------------------------------------------------------------------


def label_drift(window, profile, version, settings, thresholds) -> CheckResult:
    """Positive-rate change against the reference labels: significant and large enough."""
    profile = _require_profile(profile, version)
    label_profile = profile.get("labels")
    if not label_profile:
        raise CheckFailed("the reference profile holds no labels: upload labelled reference data")
    labelled = _labelled(window)
    _require_rows(len(labelled), int(settings["min_labeled_rows"]), "labelled records")
    try:
        result = stats.label_drift_from_profile(label_profile, _label_array(labelled))
    except ValueError as exc:
        raise CheckFailed(str(exc)) from None
    pmin = float(settings["label_pvalue_min"])
    change_max = float(settings["label_rate_change_max"])
    relative = result.relative_change
    big = relative is None or abs(relative) > change_max  # None: the reference had no positives
    metrics = {
        **result.to_dict(),
        "n": len(labelled),
        "reference_rate": result.reference_distribution["1"],
        "current_rate": result.current_distribution["1"],
        "label_pvalue_min": pmin,
        "label_rate_change_max": change_max,
    }
    points: list[Point] = [
        ("positive_rate", "", "", result.current_distribution["1"]),
        ("relative_change", "", "", relative),
        ("p_value", "", "", result.p_value),
    ]
    breach = None
    if result.p_value < pmin and big:
        breach = Breach(
            "relative_change",
            "",
            relative,
            change_max,
            {
                "p_value": result.p_value,
                "reference_rate": result.reference_distribution["1"],
                "current_rate": result.current_distribution["1"],
            },
        )
    return CheckResult(jsonable(metrics), points, breach)


# --------------------------------------------------------------------------------------------
# Concept drift (performance against the validated baseline)
# --------------------------------------------------------------------------------------------


def validated_baseline(version, metric: str) -> tuple[float, int]:
    """The metric of the latest passing validation evaluation of the version, and its id."""
    evaluation = (
        Evaluation.objects.filter(version=version, kind=EvidenceKind.VALIDATION, passed=True)
        .order_by("-created_at", "-id")
        .first()
    )
    if evaluation is None:
        raise CheckFailed(
            f"{version} has no passing validation evaluation: there is no baseline to compare with"
        )
    gates = (evaluation.report or {}).get("gates") or []
    values = next((g.get("values") or {} for g in gates if g.get("gate") == "metrics"), None)
    if values is None and gates:
        values = gates[0].get("values") or {}
    value = (values or {}).get(metric)
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise CheckFailed(
            f"the validation evaluation {evaluation.pk} of {version} records no {metric}"
        )
    return float(value), evaluation.pk


def _standard_error(metric: str, perf: stats.PerformanceMetrics, y, s, rng_seed: int = 0):
    """Sampling standard error of one performance metric on these rows (None if undefined)."""
    if metric == "auc":
        a, n1, n0 = perf.auc, perf.n_positive, perf.n_negative
        if a is None:
            return None
        q1, q2 = a / (2 - a), 2 * a * a / (1 + a)  # Hanley & McNeil (1982)
        var = (a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0)
        return math.sqrt(max(var, 0.0))
    if metric == "brier":
        losses = (s - y) ** 2
        return float(np.std(losses, ddof=1) / math.sqrt(losses.size)) if losses.size > 1 else None
    denominators = {
        "accuracy": perf.n,
        "precision": perf.tp + perf.fp,
        "recall": perf.tp + perf.fn,
    }
    value = getattr(perf, metric)
    if value is None:
        return None
    if metric in denominators:
        return math.sqrt(value * (1 - value) / denominators[metric])
    # F1: bootstrap the confusion matrix (multinomial over its four cells), seeded.
    cells = np.array([perf.tp, perf.fp, perf.fn, perf.tn], dtype=np.float64)
    draws = np.random.default_rng(rng_seed).multinomial(perf.n, cells / perf.n, _F1_BOOTSTRAP)
    tp, fp, fn = draws[:, 0], draws[:, 1], draws[:, 2]
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros(denom.shape), where=denom > 0)
    return float(np.std(f1, ddof=1))


def _relative_drop(metric: str, baseline: float, value: float) -> float:
    """How much worse than the baseline, as a share of it (positive: worse)."""
    worse = value - baseline if metric in HIGHER_IS_WORSE else baseline - value
    return worse / abs(baseline)


def _realised_performance(
    labelled: pd.DataFrame, version, settings, metric: str, baseline: float
) -> tuple[dict[str, Any], list[Point], Breach | None]:
    """The metric on labelled rows, its relative drop and its one-sided p-value (raises Skip
    when the metric is undefined on these labels)."""
    scores = _scores(labelled)
    y = _label_array(labelled)
    predicted = _predicted(labelled, scores, version)
    perf = stats.performance_metrics(y, scores, predicted)
    current = getattr(perf, metric)
    if current is None:
        raise Skip(f"{metric} is undefined on this window (e.g. the labels hold one class only)")
    drop = _relative_drop(metric, baseline, current)
    worse = drop * abs(baseline)
    se = _standard_error(metric, perf, y.astype(np.float64), scores)
    if se is None:
        p_value = 1.0
    elif se == 0:
        p_value = 0.0 if worse > 0 else 1.0
    else:
        p_value = float(sps.norm.sf(worse / se))
    drop_max = float(settings["performance_drop_max"])
    pmin = float(settings["performance_pvalue_min"])
    metrics = {
        "n": len(labelled),
        "metric": metric,
        "baseline": baseline,
        "current": current,
        "relative_drop": drop,
        "performance_drop_max": drop_max,
        "standard_error": se,
        "p_value": p_value,
        "performance_pvalue_min": pmin,
        "performance": perf.to_dict(),
    }
    points: list[Point] = [
        (metric, "", "", current),
        ("relative_drop", "", "", drop),
        *((name, "", "", getattr(perf, name)) for name in ("accuracy", "f1", "brier")),
    ]
    if metric != "auc":
        points.append(("auc", "", "", perf.auc))
    breach = None
    if drop > drop_max and p_value < pmin:
        breach = Breach(
            "relative_drop",
            "",
            drop,
            drop_max,
            {"metric": metric, "baseline": baseline, "current": current, "p_value": p_value},
        )
    return metrics, points, breach


def concept_drift(window, profile, version, settings, thresholds) -> CheckResult:
    """The policy's performance metric on labelled rows vs the validated baseline.

    With fewer than ``min_labeled_rows`` labels the metric is estimated from the calibrated
    scores of every scored row instead (``_estimated_concept_drift``); with enough labels the
    estimate on the labelled rows is kept beside the realised value (``estimate_gap``: a gap
    means calibration broke, and with it every estimate of later windows)."""
    metric = str(settings["performance_metric"])
    baseline, evaluation_id = validated_baseline(version, metric)
    if baseline == 0:
        raise CheckFailed(f"the validated baseline {metric} is 0: a relative drop is undefined")
    labelled = _labelled(window)
    if len(labelled) < int(settings["min_labeled_rows"]):
        return _estimated_concept_drift(
            window, len(labelled), version, settings, thresholds, metric, baseline, evaluation_id
        )
    metrics, points, breach = _realised_performance(labelled, version, settings, metric, baseline)
    metrics = {**metrics, "baseline_evaluation": evaluation_id, "estimated": False}
    metrics["estimate"], gap_points = _estimate_gap(labelled, version, metric)
    return CheckResult(jsonable(metrics), points + gap_points, breach)


def _estimate_gap(
    labelled: pd.DataFrame, version, metric: str
) -> tuple[dict[str, Any], list[Point]]:
    """The estimate beside the realised value on the same labelled rows: a seeded sample of at
    most ``GAP_ROWS`` of them (a gap of a few hundredths is what matters, and the estimate's
    sort would otherwise double the check's cost on a million rows)."""
    rows = labelled
    if len(labelled) > GAP_ROWS:
        chosen = np.random.default_rng(0).choice(len(labelled), GAP_ROWS, replace=False)
        rows = labelled.iloc[np.sort(chosen)]
    scores = _scores(rows)
    predicted = _predicted(rows, scores, version)
    realised = getattr(stats.performance_metrics(_label_array(rows), scores, predicted), metric)
    value = estimation.estimate_performance(
        scores, predicted, draws=ESTIMATE_DRAWS, level=ESTIMATE_LEVEL
    ).metrics[metric]
    gap = None if value.value is None or realised is None else value.value - realised
    summary = {
        **value.to_dict(),
        "realised": realised,
        "gap": gap,
        "n": len(rows),
        "level": ESTIMATE_LEVEL,
    }
    points: list[Point] = [
        (f"{metric}_estimated", "", "", value.value),
        (f"{metric}_estimated_low", "", "", value.low),
        (f"{metric}_estimated_high", "", "", value.high),
        ("estimate_gap", "", "", gap),
    ]
    return summary, points


# Labellings drawn for the estimate's interval and its level (analytics.performance_estimation).
ESTIMATE_DRAWS = 200
ESTIMATE_LEVEL = 0.95
GAP_ROWS = 50_000
_ESTIMATE_POINTS = ("auc", "accuracy", "precision", "recall", "f1", "brier")
_UNRESOLVED_ALERT = (AlertStatus.OPEN, AlertStatus.QUEUED, AlertStatus.ACKNOWLEDGED)


def calibration_reliability(version) -> tuple[bool, str, int | None]:
    """Whether the scores can be trusted as probabilities: not while the latest calibration run
    of the version breached and its alert is unresolved. Returns (reliable, why not, run id)."""
    latest = (
        MonitorRun.objects.filter(
            version=version, kind=Check.CALIBRATION, status=RunStatus.SUCCEEDED
        )
        .order_by("-window_end", "-id")
        .values_list("pk", flat=True)
        .first()
    )
    if latest is None:
        return True, "", None
    alert = Alert.objects.filter(run_id=latest, status__in=_UNRESOLVED_ALERT).first()
    if alert is None:
        return True, "", latest
    numbers = alert.value is not None and alert.threshold is not None
    ece = f"ECE {alert.value:.3g} above {alert.threshold:g}, " if numbers else ""
    return (
        False,
        f"the latest calibration run ({latest}) breached (alert {alert.pk}, {ece}"
        f"{alert.status}): the scores are not probabilities, so an estimate from them is only "
        "as good as that miscalibration allows",
        latest,
    )


def _estimate_points(estimate, metric: str, drop: float, min_size: int) -> list[Point]:
    """The estimate's time-series rows: the metric with its interval, the estimated drop, the
    other metrics, and each group's rates (groups under ``min_size`` are not charted)."""
    value = estimate.metrics[metric]
    points: list[Point] = [
        (f"{metric}_estimated", "", "", value.value),
        (f"{metric}_estimated_low", "", "", value.low),
        (f"{metric}_estimated_high", "", "", value.high),
        ("relative_drop_estimated", "", "", drop),
        *(
            (f"{name}_estimated", "", "", estimate.metrics[name].value)
            for name in _ESTIMATE_POINTS
            if name != metric
        ),
    ]
    for attribute, by_group in estimate.groups.items():
        for group, rates in by_group.items():
            if rates["n"] < min_size:
                continue  # reported in the metrics, not charted: too small to read
            points += [
                (f"{rate}_estimated", attribute, f"{attribute}={group}", rates[rate].value)
                for rate in estimation.GROUP_RATES
            ]
    return points


def _estimate_breach(
    metric, baseline, value, drop, drop_interval, drop_max, n, n_labelled
) -> Breach:
    """The breach of an estimate whose whole drop interval lies beyond ``drop_max``."""
    return Breach(
        "relative_drop_estimated",
        "",
        drop,
        drop_max,
        {
            "estimated": True,
            "metric": metric,
            "baseline": baseline,
            "current": value.value,
            "interval": [value.low, value.high],
            "relative_drop_interval": drop_interval,
            "n": n,
            "n_labelled": n_labelled,
            "message": (
                f"estimated {metric} {value.value:.3f} (interval {value.low:.3f} to "
                f"{value.high:.3f}) from {n} scored records, {n_labelled} labelled: every "
                f"value in the interval is more than {drop_max:.0%} below the baseline "
                f"{baseline:.3f}. Estimated, not measured: reconciled when the labels arrive"
            ),
        },
    )


def _estimated_concept_drift(
    window: pd.DataFrame,
    n_labelled: int,
    version,
    settings,
    thresholds,
    metric: str,
    baseline: float,
    evaluation_id: int,
) -> CheckResult:
    """Confidence-based performance estimation for a window whose labels have not arrived.

    Every scored row counts; the metric's interval is where the realised value falls if the
    scores are calibrated. A breach needs the whole interval of the relative drop beyond
    ``performance_drop_max`` and a reliable estimate (no unresolved calibration alert); the
    alert says "estimated" and the daily reconciliation judges it again once labels arrive."""
    n = len(window)
    minimum, label_minimum = int(settings["min_rows"]), int(settings["min_labeled_rows"])
    if n < minimum:
        raise Skip(
            f"{n_labelled} labelled records in the window (the policy needs {label_minimum}) and "
            f"{n} predictions to estimate from (it needs {minimum})"
        )
    scores = _scores(window)
    predicted = _predicted(window, scores, version)
    groups = {attribute_of(c): _groups(window[c]) for c in window.columns if is_sensitive(c)}
    estimate = estimation.estimate_performance(
        scores, predicted, groups=groups, draws=ESTIMATE_DRAWS, level=ESTIMATE_LEVEL
    )
    value = estimate.metrics[metric]
    if value.value is None:
        raise Skip(f"{metric} cannot be estimated on this window (every score is 0 or 1)")
    drop = _relative_drop(metric, baseline, value.value)
    bounds = [
        _relative_drop(metric, baseline, bound)
        for bound in (value.low, value.high)
        if bound is not None
    ]
    drop_interval = [min(bounds), max(bounds)] if bounds else [drop, drop]
    reliable, why, calibration_run = calibration_reliability(version)
    drop_max = float(settings["performance_drop_max"])
    min_size = max(int(thresholds["min_group_size"]), 1)
    metrics = {
        "n": n,
        "n_labelled": n_labelled,
        "min_labeled_rows": label_minimum,
        "estimated": True,
        "estimate_reliable": reliable,
        "estimate_unreliable_reason": why or None,
        "calibration_run": calibration_run,
        "metric": metric,
        "baseline": baseline,
        "baseline_evaluation": evaluation_id,
        "current": None,  # realised: filled in by the reconciliation when the labels arrive
        "relative_drop": None,
        "estimated_value": value.value,
        "interval": [value.low, value.high],
        "level": ESTIMATE_LEVEL,
        "estimated_relative_drop": drop,
        "estimated_relative_drop_interval": drop_interval,
        "performance_drop_max": drop_max,
        "min_group_size": min_size,
        "estimate": estimate.to_dict(),
    }
    points = _estimate_points(estimate, metric, drop, min_size)
    breach = None
    if reliable and drop_interval[0] > drop_max:
        breach = _estimate_breach(
            metric, baseline, value, drop, drop_interval, drop_max, n, n_labelled
        )
    return CheckResult(jsonable(metrics), points, breach)


def reconcile_concept_drift(
    window: pd.DataFrame, version, settings, estimated: Mapping[str, Any]
) -> CheckResult | None:
    """The realised metric of an estimate-only window now that its labels arrived, judged
    against the baseline the estimate used; None while the window still lacks labels.

    ``estimated`` is the run's metrics (``_estimated_concept_drift``). The breach, if any, is
    the realised one (``relative_drop``), as the check would have raised it."""
    labelled = _labelled(window)
    if len(labelled) < int(settings["min_labeled_rows"]):
        return None
    metric, baseline = str(estimated["metric"]), float(estimated["baseline"])
    realised, points, breach = _realised_performance(labelled, version, settings, metric, baseline)
    value = estimated.get("estimated_value")
    gap = value - realised["current"] if isinstance(value, int | float) else None
    interval = estimated.get("interval") or [None, None]
    within = None
    if None not in interval:
        within = interval[0] <= realised["current"] <= interval[1]
    metrics = {
        **realised,
        "estimated_value": value,
        "estimate_gap": gap,
        "realised_within_interval": within,
        "breach": breach is not None,
    }
    points.append(("estimate_gap", "", "", gap))
    return CheckResult(jsonable(metrics), points, breach)


# --------------------------------------------------------------------------------------------
# Fairness
# --------------------------------------------------------------------------------------------

# The per-group rate whose spread a violated aggregate measures (None: equalized odds, either).
_RATE_OF = {"equalized_odds_difference": None, "fpr_ratio": "fpr", "fnr_ratio": "fnr"}


def _extremes_p(groups: list[dict], rate: str) -> tuple[float, str, str]:
    """Bonferroni-adjusted two-proportion p-value between the judged groups with the lowest and
    highest ``rate`` (its denominator: negatives for FPR, positives for TPR/FNR)."""
    denom = "n_negative" if rate == "fpr" else "n_positive"
    judged = [g for g in groups if g["judged"] and g[rate] is not None and g[denom] > 0]
    if len(judged) < 2:
        return 1.0, "", ""
    lo = min(judged, key=lambda g: g[rate])
    hi = max(judged, key=lambda g: g[rate])
    p = _two_proportion_p(
        round(lo[rate] * lo[denom]), lo[denom], round(hi[rate] * hi[denom]), hi[denom]
    )
    pairs = len(judged) * (len(judged) - 1) // 2
    return min(1.0, p * pairs), lo["group"], hi["group"]


def _groups(column: pd.Series) -> stats.GroupCodes:
    """Each record's group as a code into the group names ("(missing)" for nulls): factorised
    once by hashing, so no million strings are built or sorted (stats sorts the few names)."""
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    codes = np.where(codes < 0, len(uniques), codes)  # not in place: codes may be read-only
    return stats.GroupCodes(codes, [str(u) for u in uniques] + ["(missing)"])


_FAIRNESS_AGGREGATES = (
    "equalized_odds_difference",
    "fpr_ratio",
    "fnr_ratio",
    "tpr_difference",
    "fpr_difference",
    "demographic_parity_ratio",
)
_CHARTED_AGGREGATES = (
    "equalized_odds_difference",
    "fpr_ratio",
    "fnr_ratio",
    "demographic_parity_ratio",
)
_GROUP_FIELDS = (
    "n",
    "n_positive",
    "n_negative",
    "n_predicted_positive",
    "selection_rate",
    "tpr",
    "fpr",
    "fnr",
    "ppv",
    "judged",
)
_GROUP_RATES = ("selection_rate", "tpr", "fpr", "fnr", "ppv")


def fairness(window, profile, version, settings, thresholds) -> CheckResult:
    """Per-group rates with Wilson intervals and disparities with their intervals per sensitive
    attribute, judged with the validation policy's limits at the monitoring policy's confidence
    level (``analytics.fairness.judge``, the gates' rule): a breach whose interval lies wholly
    beyond its limit alerts at the check's severity, one whose interval includes it is a watch."""
    labelled = _labelled(window)
    _require_rows(len(labelled), int(settings["min_labeled_rows"]), "labelled records")
    attributes = [c for c in window.columns if is_sensitive(c)]
    if not attributes:
        raise CheckFailed(
            "the window's records carry no sensitive attribute, so fairness cannot be judged"
        )
    y = _label_array(labelled)
    predicted = _predicted(labelled, _scores(labelled), version)
    min_size = max(int(thresholds["min_group_size"]), 1)
    limits = {key: float(thresholds[key]) for _, key, _ in fairness_rule.LIMITED_AGGREGATES}
    level = float(settings["confidence_level"])
    groups_of = {attribute_of(column): _groups(labelled[column]) for column in attributes}
    report = stats.fairness_metrics(y, predicted, groups_of, min_group_size=min_size)
    verdict = fairness_rule.judge(report, limits, confidence_level=level)
    per_attribute: dict[str, Any] = {}
    points: list[Point] = []
    breaches: list[dict[str, Any]] = []
    for name, result in report.attributes.items():
        data = result.to_dict()
        judged = verdict.attributes[name]
        evidence = judged.evidence()
        entry = _fairness_entry(data, judged, evidence, min_size)
        entry["violations"] = _fairness_violations(name, data, judged)
        breaches += entry["violations"]
        points += _fairness_points(name, data, evidence)
        per_attribute[name] = entry
    if verdict.status == "not_judged":
        raise Skip(
            f"fairness not judged: no sensitive attribute has two groups of at least {min_size} "
            f"labelled records ({', '.join(per_attribute)})"
        )
    metrics = {
        "n": len(labelled),
        "thresholds": {**limits, "min_group_size": min_size},
        "confidence_level": level,
        "attributes": per_attribute,
    }
    return CheckResult(jsonable(metrics), points, _worst_fairness_breach(breaches, level))


def _fairness_entry(
    data: dict[str, Any], judged, evidence: dict[str, Any], min_size: int
) -> dict[str, Any]:
    """One attribute's numbers as the run keeps them: aggregates with their intervals and
    powers, then each group's rates with their intervals and power."""
    groups = evidence["groups"]
    return {
        "judged": judged.judged,
        "status": judged.status,
        "undefined": [f.aggregate for f in judged.undefined],
        "n_judged_groups": data["n_judged_groups"],
        "min_group_size": min_size,
        **{k: data[k] for k in _FAIRNESS_AGGREGATES},
        "intervals": evidence["intervals"],
        "power": evidence["power"],
        "groups": {
            g["group"]: {
                **{k: g[k] for k in _GROUP_FIELDS},
                "intervals": groups[g["group"]]["intervals"],
                "power": groups[g["group"]]["power"],
            }
            for g in data["groups"]
        },
    }


def _fairness_points(name: str, data: dict[str, Any], evidence: dict[str, Any]) -> list[Point]:
    """The time-series points: each charted aggregate and its interval bounds, then each group's
    rates, their bounds (``<rate>_lower``/``<rate>_upper``: the console's bands) and size."""
    points: list[Point] = []
    for aggregate in _CHARTED_AGGREGATES:
        points.append((aggregate, name, "", data[aggregate]))
        points += _bounds(aggregate, name, "", evidence["intervals"].get(aggregate))
    for g in data["groups"]:
        group = f"{name}={g['group']}"
        intervals = evidence["groups"][g["group"]]["intervals"]
        for rate in _GROUP_RATES:
            points.append((rate, name, group, g[rate]))
            points += _bounds(rate, name, group, intervals.get(rate))
        points.append(("n", name, group, g["n"]))
    return points


def _bounds(metric: str, feature: str, group: str, interval) -> list[Point]:
    if interval is None:
        return []
    return [
        (f"{metric}_lower", feature, group, interval[0]),
        (f"{metric}_upper", feature, group, interval[1]),
    ]


def _fairness_violations(name: str, data: dict[str, Any], judged) -> list[dict[str, Any]]:
    """Each limit the attribute's estimate breaks, with its interval, whether the interval lies
    wholly beyond the limit (``conclusive``) and, for reference, the Bonferroni-adjusted p-value
    of the gap between its extreme groups."""
    violations = []
    for finding in judged.violations + judged.watches:
        rate = _RATE_OF[finding.aggregate]
        if rate is None:  # equalized odds: the larger of the TPR and FPR spreads
            tpr, fpr = data["tpr_difference"] or 0, data["fpr_difference"] or 0
            rate = "tpr" if tpr >= fpr else "fpr"
        p_value, low, high = _extremes_p(data["groups"], rate)
        conclusive = finding.status == "violated"
        violations.append(
            {
                "attribute": name,
                "metric": finding.aggregate,
                "value": finding.value,
                "threshold": finding.limit,
                "interval": finding.interval,
                "confidence_level": finding.confidence_level,
                "conclusive": conclusive,
                "severity": None if conclusive else Severity.WATCH,
                "power": finding.power,
                "rate": rate,
                "groups": [low, high],
                "p_value": p_value,
                "excess": finding.excess,
                "description": finding.describe(),
            }
        )
    return violations


def _worst_fairness_breach(breaches: list[dict[str, Any]], level: float) -> Breach | None:
    """The worst conclusive breach at the check's severity; else the worst watch, saying so."""
    if not breaches:
        return None
    conclusive = [v for v in breaches if v["conclusive"]]
    if conclusive:
        worst = max(conclusive, key=lambda v: v["excess"])
        details = {"violations": conclusive, "watch": [v for v in breaches if not v["conclusive"]]}
        return Breach(
            worst["metric"], worst["attribute"], worst["value"], worst["threshold"], details
        )
    worst = max(breaches, key=lambda v: v["excess"])
    message = (
        f"watch: the estimate breaches its limit but its {level * 100:g} % interval still "
        "includes the limit, so the gap may be noise; recorded for a person to look at, it "
        "opens no incident and counts toward no rollback or halt"
    )
    return Breach(
        worst["metric"],
        worst["attribute"],
        worst["value"],
        worst["threshold"],
        {"violations": [], "watch": breaches, "message": message},
        Severity.WATCH,
    )


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------


def _calibration_test(y: np.ndarray, s: np.ndarray, n_bins: int) -> tuple[float, int, float]:
    """Hosmer-Lemeshow statistic for scores not fitted on these rows (external validation):
    ``sum_b (O_b - E_b)^2 / sum_{i in b} s_i (1 - s_i)`` over bins with positive variance,
    chi-square with that many degrees of freedom. Returns (statistic, dof, p-value)."""
    idx = np.minimum((s * n_bins).astype(np.int64), n_bins - 1)
    observed = np.bincount(idx, weights=y, minlength=n_bins)
    expected = np.bincount(idx, weights=s, minlength=n_bins)
    variance = np.bincount(idx, weights=s * (1 - s), minlength=n_bins)
    usable = variance > 0
    dof = int(usable.sum())
    if dof == 0:
        return 0.0, 0, 1.0
    hl = float(np.sum((observed[usable] - expected[usable]) ** 2 / variance[usable]))
    return hl, dof, float(sps.chi2.sf(hl, dof))


def calibration(window, profile, version, settings, thresholds) -> CheckResult:
    """ECE over 10 equal-width bins on labelled rows; breach when above ``ece_max`` and the
    miscalibration is significant (Hosmer-Lemeshow p below ``calibration_pvalue_min``)."""
    labelled = _labelled(window)
    _require_rows(len(labelled), int(settings["min_labeled_rows"]), "labelled records")
    scores = _scores(labelled)
    y = _label_array(labelled)
    result = stats.expected_calibration_error(y, scores, n_bins=ECE_BINS)
    hl, dof, p_value = _calibration_test(y.astype(np.float64), scores, ECE_BINS)
    ece_max = float(settings["ece_max"])
    pmin = float(settings["calibration_pvalue_min"])
    metrics = {
        "n": len(labelled),
        "ece": result.ece,
        "ece_max": ece_max,
        "hosmer_lemeshow": hl,
        "dof": dof,
        "p_value": p_value,
        "calibration_pvalue_min": pmin,
        "bins": [b.to_dict() for b in result.bins],
    }
    points: list[Point] = [("ece", "", "", result.ece), ("p_value", "", "", p_value)]
    for b in result.bins:
        label = f"[{b.lower:.1f}, {b.upper:.1f})"
        points.append(("bin_gap", "", label, b.abs_gap))
    breach = None
    if result.ece > ece_max and p_value < pmin:
        breach = Breach("ece", "", result.ece, ece_max, {"p_value": p_value, "n": len(labelled)})
    return CheckResult(jsonable(metrics), points, breach)


# --------------------------------------------------------------------------------------------
# Registry of checks
# --------------------------------------------------------------------------------------------


def jsonable_breach(breach: Breach | None) -> Breach | None:
    if breach is None:
        return None
    return Breach(
        breach.metric,
        breach.feature,
        _num(breach.value),
        _num(breach.threshold),
        jsonable(breach.details),
        breach.severity,
    )


CheckFunction = Callable[..., CheckResult]

CHECKS: dict[str, CheckFunction] = {
    Check.DATA_DRIFT: data_drift,
    Check.PREDICTION_DRIFT: prediction_drift,
    Check.LABEL_DRIFT: label_drift,
    Check.CONCEPT_DRIFT: concept_drift,
    Check.FAIRNESS: fairness,
    Check.CALIBRATION: calibration,
}

NEEDS: dict[str, Needs] = {
    Check.DATA_DRIFT: Needs(features=True, profile=True),
    Check.PREDICTION_DRIFT: Needs(profile=True),
    Check.LABEL_DRIFT: Needs(labels=True, profile=True),
    Check.CONCEPT_DRIFT: Needs(labels=True, sensitive=True),  # estimated rates per group
    Check.FAIRNESS: Needs(labels=True, sensitive=True),
    Check.CALIBRATION: Needs(labels=True),
}


def run_check(kind: str, window, profile, version, settings, thresholds) -> CheckResult:
    """Dispatch to the check named ``kind``; its breach and metrics are plain JSON."""
    result = CHECKS[kind](window, profile, version, settings, thresholds)
    return CheckResult(result.metrics, result.points, jsonable_breach(result.breach))
