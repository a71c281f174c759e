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

No false alerts: a breach needs the threshold crossed *and*, for the checks whose statistic is
noisy on small samples (performance, calibration, fairness), the gap to be statistically
significant at the policy's level. Label drift and prediction drift are tests already; PSI with
10 bins over hundreds of rows is far below its limit on an unshifted feature.
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
from analytics import stats
from analytics.stats import jsonable
from governance.models import Evaluation, EvidenceKind

from .columns import attribute_of, feature_column, is_sensitive
from .models import Check

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


def data_drift(window, profile, version, settings, thresholds) -> CheckResult:
    """PSI of every profiled feature; breach when the largest PSI exceeds ``psi_max``."""
    profile = _require_profile(profile, version)
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
    n = len(window)
    _require_rows(n, int(settings["min_rows"]), "predictions")
    missing = [f for f in expected if feature_column(f) not in window.columns]
    # float64 columns (what the store gives numeric features) convert to a view for free and
    # their NaN count answers "empty" too; other columns convert one at a time below
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
    psi_max = float(settings["psi_max"])
    per_feature: dict[str, Any] = {}
    points: list[Point] = []
    for name in expected:
        values, missing_values = ready.pop(name, None) or _feature_values(
            window[feature_column(name)], name, features
        )
        try:
            result = stats.psi_from_profile(features[name], values)
        except ValueError as exc:
            raise CheckFailed(f"feature {name}: {exc}") from None
        per_feature[name] = {
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
        points.append(("psi", name, "", result.psi))
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


def concept_drift(window, profile, version, settings, thresholds) -> CheckResult:
    """The policy's performance metric on labelled rows vs the validated baseline."""
    metric = str(settings["performance_metric"])
    baseline, evaluation_id = validated_baseline(version, metric)
    labelled = _labelled(window)
    _require_rows(len(labelled), int(settings["min_labeled_rows"]), "labelled records")
    scores = _scores(labelled)
    y = _label_array(labelled)
    predicted = _predicted(labelled, scores, version)
    perf = stats.performance_metrics(y, scores, predicted)
    current = getattr(perf, metric)
    if current is None:
        raise Skip(f"{metric} is undefined on this window (e.g. the labels hold one class only)")
    if baseline == 0:
        raise CheckFailed(f"the validated baseline {metric} is 0: a relative drop is undefined")
    worse = current - baseline if metric in HIGHER_IS_WORSE else baseline - current
    drop = worse / abs(baseline)
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
        "baseline_evaluation": evaluation_id,
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
    """Per-group rates and disparities per sensitive attribute, judged with the validation
    policy's limits (``analytics.fairness.judge``, the gates' rule); a violation counts when the
    gap is also statistically significant."""
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
    pmin = float(settings["fairness_pvalue_min"])
    groups_of = {attribute_of(column): _groups(labelled[column]) for column in attributes}
    report = stats.fairness_metrics(y, predicted, groups_of, min_group_size=min_size)
    verdict = fairness_rule.judge(report, limits)
    per_attribute: dict[str, Any] = {}
    points: list[Point] = []
    significant: list[dict[str, Any]] = []
    for name, result in report.attributes.items():
        data = result.to_dict()
        judged = verdict.attributes[name]
        entry = _fairness_entry(data, judged, min_size)
        entry["violations"] = _fairness_violations(name, data, judged, pmin)
        significant += [v for v in entry["violations"] if v["significant"]]
        points += _fairness_points(name, data)
        per_attribute[name] = entry
    if verdict.status == "not_judged":
        raise Skip(
            f"fairness not judged: no sensitive attribute has two groups of at least {min_size} "
            f"labelled records ({', '.join(per_attribute)})"
        )
    metrics = {
        "n": len(labelled),
        "thresholds": {**limits, "min_group_size": min_size},
        "fairness_pvalue_min": pmin,
        "attributes": per_attribute,
    }
    return CheckResult(jsonable(metrics), points, _worst_fairness_breach(significant))


def _fairness_entry(data: dict[str, Any], judged, min_size: int) -> dict[str, Any]:
    """One attribute's numbers as the run keeps them: aggregates, then each group's rates."""
    return {
        "judged": judged.judged,
        "status": judged.status,
        "undefined": [f.aggregate for f in judged.undefined],
        "n_judged_groups": data["n_judged_groups"],
        "min_group_size": min_size,
        **{k: data[k] for k in _FAIRNESS_AGGREGATES},
        "groups": {g["group"]: {k: g[k] for k in _GROUP_FIELDS} for g in data["groups"]},
    }


def _fairness_points(name: str, data: dict[str, Any]) -> list[Point]:
    """The time-series points: each charted aggregate, then each group's rates and size."""
    points: list[Point] = [(a, name, "", data[a]) for a in _CHARTED_AGGREGATES]
    for g in data["groups"]:
        points += [(rate, name, f"{name}={g['group']}", g[rate]) for rate in _GROUP_RATES]
        points.append(("n", name, f"{name}={g['group']}", g["n"]))
    return points


def _fairness_violations(
    name: str, data: dict[str, Any], judged, pmin: float
) -> list[dict[str, Any]]:
    """Each limit the attribute breaks, with the p-value of the gap between its extreme groups."""
    violations = []
    for finding in judged.violations:
        rate = _RATE_OF[finding.aggregate]
        if rate is None:  # equalized odds: the larger of the TPR and FPR spreads
            tpr, fpr = data["tpr_difference"] or 0, data["fpr_difference"] or 0
            rate = "tpr" if tpr >= fpr else "fpr"
        p_value, low, high = _extremes_p(data["groups"], rate)
        violations.append(
            {
                "attribute": name,
                "metric": finding.aggregate,
                "value": finding.value,
                "threshold": finding.limit,
                "rate": rate,
                "groups": [low, high],
                "p_value": p_value,
                "significant": p_value < pmin,
                "excess": finding.excess,
            }
        )
    return violations


def _worst_fairness_breach(significant: list[dict[str, Any]]) -> Breach | None:
    if not significant:
        return None
    worst = max(significant, key=lambda v: v["excess"])
    return Breach(
        worst["metric"],
        worst["attribute"],
        worst["value"],
        worst["threshold"],
        {"violations": significant},
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
    Check.CONCEPT_DRIFT: Needs(labels=True),
    Check.FAIRNESS: Needs(labels=True, sensitive=True),
    Check.CALIBRATION: Needs(labels=True),
}


def run_check(kind: str, window, profile, version, settings, thresholds) -> CheckResult:
    """Dispatch to the check named ``kind``; its breach and metrics are plain JSON."""
    result = CHECKS[kind](window, profile, version, settings, thresholds)
    return CheckResult(result.metrics, result.points, jsonable_breach(result.breach))
