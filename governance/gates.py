"""Validation gates: CI submits evidence, the platform computes the verdict.

The numbers come from ``analytics.stats`` over the submitted records; metrics reported at
registration are stored for reference and never used here. Each evaluation records the validation
policy version it used. Gates run in the pipeline's order: metrics, fairness, calibration (and, for
a shadow replay, the shadow period).

Evidence kinds:

* ``unit_tests``: ``{"passed": true, "summary": "..."}`` as reported by CI.
* ``validation``: records of the validation split (JSON, CSV or Parquet).
* ``shadow_replay``: timestamped records replayed offline, standing in for shadow mode when the
  model has no live version (its first version): passes when the validation gates pass on it and
  the timestamps span at least the policy's shadow period.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from django.db import transaction

from analytics import fairness, stats
from platform_core.errors import Conflict, InvalidInput
from registry import services as registry_services
from registry.models import ModelVersion

from . import audit, evidence, filestore
from .approvals import approvals_void
from .audit import Actor
from .models import SERVING_STAGES, Evaluation, EvidenceKind, Lifecycle, Stage, ValidationPolicy
from .policies import policy_in_force
from .selectors import latest_evaluation

__all__ = [
    "SUBMITTABLE_KINDS",
    "evaluation_list",
    "evaluation_record",
    "evaluation_submit",
    "failed_gates",
    "gate",
    "gates_passed",
    "latest_evaluation",
    "shadow_replay_report",
    "validation_report",
]

logger = logging.getLogger(__name__)

SUBMITTABLE_KINDS = (EvidenceKind.UNIT_TESTS, EvidenceKind.VALIDATION, EvidenceKind.SHADOW_REPLAY)
RECORD_KINDS = (EvidenceKind.VALIDATION, EvidenceKind.SHADOW_REPLAY)
ECE_BINS = 10
MAX_SUMMARY = 10_000

# A failing record-based evaluation sends the version back, from these stages, by this transition.
AUTOMATIC_ON_FAILURE = {
    (Stage.VALIDATION, EvidenceKind.VALIDATION): "fail_validation",
    (Stage.VALIDATION, EvidenceKind.SHADOW_REPLAY): "fail_validation",
    (Stage.STAGING, EvidenceKind.SHADOW_REPLAY): "fail_shadow",
    (Stage.STAGING, EvidenceKind.SHADOW): "fail_shadow",
}
GATES_ACTOR = Actor.system("validation gates")


# ------------------------------------------------------------------------------------------------
# Selectors (the lifecycle conditions read these)
# ------------------------------------------------------------------------------------------------


def gates_passed(version: ModelVersion) -> bool:
    """The latest validation evaluation of the version passed every gate."""
    evaluation = latest_evaluation(version, EvidenceKind.VALIDATION)
    return evaluation is not None and evaluation.passed


def failed_gates(evaluation: Evaluation) -> list[str]:
    """Names of the gates that failed in an evaluation's report."""
    return [g["gate"] for g in evaluation.report.get("gates", []) if not g.get("passed")]


def evaluation_list(version: ModelVersion, *, kind: str | None = None):
    qs = Evaluation.objects.filter(version=version).select_related("policy", "version__model")
    qs = qs.filter(kind=kind) if kind else qs
    return qs.order_by("-created_at", "-id")


# ------------------------------------------------------------------------------------------------
# Reports (pure: arrays and thresholds in, JSON out)
# ------------------------------------------------------------------------------------------------


def gate(
    name: str, passed: bool, values: dict, thresholds: dict, reasons: list[str]
) -> dict[str, Any]:
    """One gate of a report: every report (validation, replay, shadow) has this shape."""
    return {
        "gate": name,
        "passed": bool(passed),
        "values": values,
        "thresholds": thresholds,
        "reasons": reasons,
    }


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4f}"


def metrics_gate(
    batch: evidence.EvidenceBatch, *, decision_threshold: float, thresholds: Mapping[str, Any]
) -> dict[str, Any]:
    perf = stats.performance_metrics(
        batch.labels, batch.scores, batch.predictions, decision_threshold=decision_threshold
    ).to_dict()
    auc_min = float(thresholds["auc_min"])
    reasons = []
    if perf["auc"] is None:
        reasons.append("AUC is undefined: the records hold only one class of label")
    elif perf["auc"] < auc_min:
        reasons.append(f"AUC {_fmt(perf['auc'])} is below the minimum {auc_min}")
    keys = ("auc", "accuracy", "precision", "recall", "f1", "brier", "n", "n_positive")
    values = {k: perf[k] for k in keys} | {
        "positive_rate": perf["positive_rate"],
        "decision_threshold": perf["decision_threshold"],
    }
    return gate("metrics", not reasons, values, {"auc_min": auc_min}, reasons)


def _attribute_values(data: dict[str, Any], judged_attr, min_size: int) -> dict[str, Any]:
    """One sensitive attribute's entry of the gate's values: its fairness figures, the verdict,
    each group's rates with intervals and power, and a note on the groups too small to judge."""
    judged = judged_attr.judged
    small = [g["group"] for g in data["groups"] if not g["judged"]]
    proof = judged_attr.evidence()
    values = {
        "judged": judged,
        "passed": judged_attr.status in ("passed", "watch"),
        "status": judged_attr.status,
        "equalized_odds_difference": data["equalized_odds_difference"],
        "fpr_ratio": data["fpr_ratio"],
        "fnr_ratio": data["fnr_ratio"],
        "tpr_difference": data["tpr_difference"],
        "fpr_difference": data["fpr_difference"],
        "demographic_parity_ratio": data["demographic_parity_ratio"],
        "n_judged_groups": data["n_judged_groups"],
        "intervals": proof["intervals"],
        "power": proof["power"],
        "groups": {
            g["group"]: {
                "n": g["n"],
                "n_positive": g["n_positive"],
                "n_negative": g["n_negative"],
                "selection_rate": g["selection_rate"],
                "tpr": g["tpr"],
                "fpr": g["fpr"],
                "fnr": g["fnr"],
                "ppv": g["ppv"],
                "judged": g["judged"],
                "intervals": proof["groups"][g["group"]]["intervals"],
                "power": proof["groups"][g["group"]]["power"],
            }
            for g in data["groups"]
        },
    }
    if judged_attr.watches:
        values["watch"] = [f.describe() for f in judged_attr.watches]
    if small:
        values["note"] = (
            f"groups under {min_size} records are reported, not judged: {', '.join(small)}"
            + _power_note(proof, small)
        )
    if not judged:
        values["note"] = (
            f"not judged: fewer than two groups have at least {min_size} records"
            + (f" (under {min_size}: {', '.join(small)})" if small else "")
            + _power_note(proof, small)
        )
    return values


def fairness_gate(
    batch: evidence.EvidenceBatch, predicted: np.ndarray, *, thresholds: Mapping[str, Any]
) -> dict[str, Any]:
    """The fairness rule (``analytics.fairness.judge``) at the policy's confidence level: a limit
    fails the gate only when its whole interval lies beyond it (not on noise in a small group);
    a breach within noise is a ``watch`` note; each group's power to see a gap of the limit's
    size is reported, so a pass on small groups says how little it could have seen."""
    limits = {
        "equalized_odds_difference_max": float(thresholds["equalized_odds_difference_max"]),
        "fpr_ratio_min": float(thresholds["fpr_ratio_min"]),
        "fnr_ratio_min": float(thresholds["fnr_ratio_min"]),
        "min_group_size": int(thresholds["min_group_size"]),
    }
    level = float(thresholds.get("confidence_level", fairness.DEFAULT_CONFIDENCE_LEVEL))
    min_size = limits["min_group_size"]
    reasons: list[str] = []
    values: dict[str, Any] = {}
    if not batch.sensitive:
        reasons.append(
            "fairness cannot be judged: the records carry no sensitive attribute "
            '(give each record e.g. "sensitive": {"area": "north"})'
        )
        return gate("fairness", False, values, limits | {"confidence_level": level}, reasons)
    report = stats.fairness_metrics(
        batch.labels, predicted, batch.sensitive, min_group_size=max(min_size, 1)
    )
    verdict = fairness.judge(report, limits, confidence_level=level)
    for name, result in report.attributes.items():
        judged_attr = verdict.attributes[name]
        values[name] = _attribute_values(result.to_dict(), judged_attr, min_size)
        reasons += [f.describe() for f in judged_attr.violations + judged_attr.undefined]
    if verdict.status == "not_judged":
        reasons.insert(
            0,
            "fairness cannot be judged: no sensitive attribute has two or more groups of at "
            f"least {min_size} records ({', '.join(report.attributes)})",
        )
    return gate("fairness", verdict.passed, values, limits | {"confidence_level": level}, reasons)


def _power_note(proof: dict[str, Any], small: list[str]) -> str:
    """What the small groups could have seen: their power for a gap of the limit's size."""
    parts = []
    for group in small:
        power = proof["groups"][group]["power"].get("equalized_odds_difference")
        if power is not None:
            parts.append(f"{group} {power:.2f}")
    if not parts:
        return ""
    return "; their power to detect an equalized-odds gap of the limit's size: " + ", ".join(parts)


def calibration_gate(
    batch: evidence.EvidenceBatch, *, thresholds: Mapping[str, Any]
) -> dict[str, Any]:
    result = stats.expected_calibration_error(batch.labels, batch.scores, n_bins=ECE_BINS)
    ece_max = float(thresholds["ece_max"])
    reasons = []
    if result.ece > ece_max:
        reasons.append(f"ECE {result.ece:.4f} exceeds {ece_max} ({ECE_BINS} equal-width bins)")
    values = {
        "ece": float(result.ece),
        "n_bins": ECE_BINS,
        "bins": [
            {k: b[k] for k in ("lower", "upper", "n", "mean_score", "mean_label")}
            for b in result.to_dict()["bins"]
        ],
    }
    return gate("calibration", not reasons, values, {"ece_max": ece_max}, reasons)


def shadow_period_gate(
    batch: evidence.EvidenceBatch, *, thresholds: Mapping[str, Any]
) -> dict[str, Any]:
    shadow_days = thresholds["shadow_days"]
    stamps = batch.timestamps
    assert stamps is not None  # shadow_replay records are parsed with require_timestamp
    first, last = stamps.min(), stamps.max()
    span_days = float((last - first) / np.timedelta64(1, "s")) / 86400.0
    reasons = []
    if span_days < float(shadow_days):
        reasons.append(
            f"the records span {span_days:.2f} days; the shadow period is {shadow_days} days"
        )
    values = {
        "first": _iso(first),
        "last": _iso(last),
        "span_days": round(span_days, 6),
    }
    return gate("shadow_period", not reasons, values, {"shadow_days": shadow_days}, reasons)


def _iso(value: np.datetime64) -> str:
    return np.datetime_as_string(value, unit="s") + "Z"


def validation_report(
    batch: evidence.EvidenceBatch, *, decision_threshold: float, policy: ValidationPolicy
) -> dict[str, Any]:
    """``{"passed", "policy_version", "gates": [metrics, fairness, calibration]}``."""
    thresholds = policy.resolved
    predicted = stats.predicted_class(
        batch.scores, batch.predictions, decision_threshold=decision_threshold
    )
    gates = [
        metrics_gate(batch, decision_threshold=decision_threshold, thresholds=thresholds),
        fairness_gate(batch, predicted, thresholds=thresholds),
        calibration_gate(batch, thresholds=thresholds),
    ]
    return {
        "passed": all(g["passed"] for g in gates),
        "policy_version": policy.version,
        "gates": gates,
    }


def shadow_replay_report(
    batch: evidence.EvidenceBatch, *, decision_threshold: float, policy: ValidationPolicy
) -> dict[str, Any]:
    """The validation gates on the replayed records, then the shadow period."""
    report = validation_report(batch, decision_threshold=decision_threshold, policy=policy)
    report["gates"].append(shadow_period_gate(batch, thresholds=policy.resolved))
    report["passed"] = all(g["passed"] for g in report["gates"])
    return report


# ------------------------------------------------------------------------------------------------
# The service
# ------------------------------------------------------------------------------------------------


def _check_kind(kind: Any, payload: Mapping[str, Any] | None) -> str:
    if payload is not None and "kind" in payload and kind is not None and payload["kind"] != kind:
        raise InvalidInput({"kind": f"'{payload['kind']}' in the body contradicts '{kind}'"})
    kind = kind if kind is not None else (payload or {}).get("kind")
    if kind == EvidenceKind.SHADOW:
        raise InvalidInput(
            {"kind": "shadow evaluations are recorded by the serving gateway, not submitted"}
        )
    if kind not in SUBMITTABLE_KINDS:
        raise InvalidInput(
            {"kind": f"required; one of {', '.join(str(k) for k in SUBMITTABLE_KINDS)}"}
        )
    return str(kind)


def _unknown(payload: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise InvalidInput({name: "Unknown field." for name in unknown})


def _unit_tests(payload: Mapping[str, Any], upload) -> tuple[dict[str, Any], str]:
    _unknown(payload, {"kind", "passed", "summary"})
    errors = {}
    if upload is not None:
        errors["file"] = "unit_tests evidence is JSON: passed and summary, no file"
    passed = payload.get("passed")
    if not isinstance(passed, bool):
        errors["passed"] = "required; true or false"
    summary = payload.get("summary", "")
    if summary is None:
        summary = ""
    if not isinstance(summary, str) or len(summary) > MAX_SUMMARY:
        errors["summary"] = f"must be text of at most {MAX_SUMMARY} characters"
    if errors:
        raise InvalidInput(errors)
    report = {"passed": passed, "summary": summary}
    return report, evidence.payload_digest({"kind": EvidenceKind.UNIT_TESTS.value, **report})


def _records(kind: str, payload: Mapping[str, Any], upload) -> evidence.EvidenceBatch:
    _unknown(payload, {"kind", "records"})
    require_timestamp = kind == EvidenceKind.SHADOW_REPLAY
    if upload is not None:
        if "records" in payload:
            raise InvalidInput({"records": "send records in the body or a file, not both"})
        return evidence.parse_upload(upload, require_timestamp=require_timestamp)
    if "records" not in payload:
        raise InvalidInput({"records": "required (or upload a CSV or Parquet file as 'file')"})
    return evidence.parse_records(payload["records"], require_timestamp=require_timestamp)


def _refuse_shadow_replay_with_live_version(version: ModelVersion) -> None:
    live = (
        Lifecycle.objects.select_related("version")
        .filter(version__model_id=version.model_id, stage__in=SERVING_STAGES)
        .first()
    )
    if live is not None:
        raise Conflict(
            f"shadow_replay is only for a model with no live version; {live.version} is "
            f"{live.stage}, so {version} is shadowed on live traffic by the serving gateway",
            reasons=[f"{live.version} is in serving stage {live.stage}"],
        )


def evaluation_submit(
    *,
    model_name: str,
    version: str,
    kind: str | None,
    payload: Mapping[str, Any] | None,
    upload=None,
    actor: Actor,
) -> Evaluation:
    """Record one piece of evidence and the platform's verdict on it.

    Raises ``NotFound`` (no such version), ``InvalidInput`` (a bad field or record: nothing is
    stored) or ``Conflict`` (a shadow replay for a model that has a live version). A failing
    validation or shadow replay then sends the version back (``AUTOMATIC_ON_FAILURE``), in a
    transaction of its own after this one commits.
    """
    target = registry_services.version_get(model_name, version)
    payload = {} if payload is None else payload
    if not isinstance(payload, Mapping):
        raise InvalidInput({"non_field_errors": "the body must be a JSON object"})
    kind = _check_kind(kind, payload)
    if kind == EvidenceKind.SHADOW_REPLAY:
        _refuse_shadow_replay_with_live_version(target)  # before reading a large batch

    policy = policy_in_force("validation", target.model, actor)
    data_path, created, n_records = "", False, 0
    if kind == EvidenceKind.UNIT_TESTS:
        report, digest = _unit_tests(payload, upload)
    else:
        batch = _records(kind, payload, upload)
        build = validation_report if kind == EvidenceKind.VALIDATION else shadow_replay_report
        report = build(
            batch, decision_threshold=float(target.thresholds["decision"]), policy=policy
        )
        digest, n_records = batch.digest, len(batch)
        data_path, created = evidence.store(batch)  # the file first, then the row commits

    def refuse_if_live() -> None:
        if kind == EvidenceKind.SHADOW_REPLAY:
            _refuse_shadow_replay_with_live_version(target)  # again, under the lock

    try:
        return evaluation_record(
            version=target,
            kind=kind,
            policy=policy,
            report=report,
            digest=digest,
            records=n_records,
            data_path=data_path,
            actor=actor,
            premise=refuse_if_live,
        )
    except BaseException:
        # the file first, then the row: a row that did not commit leaves an orphan to discard
        # (one that did commit keeps its file: the verdict stands even if the send-back failed)
        if created:
            try:
                filestore.discard_unreferenced([data_path], referenced=evidence.referenced)
            except Exception:  # e.g. inside a broken outer transaction: the sweeper removes it
                logger.warning("could not discard evidence file %s", data_path, exc_info=True)
        raise


def evaluation_record(
    *,
    version: ModelVersion,
    kind: str,
    policy: ValidationPolicy,
    report: Mapping[str, Any],
    digest: str,
    records: int,
    actor: Actor,
    data_path: str = "",
    send_back_actor: Actor = GATES_ACTOR,
    premise: Callable[[], Evaluation | None] | None = None,
) -> Evaluation:
    """Record a verdict: the one way evidence of any kind, submitted or computed, is stored.

    Under the model lock (serialised with promotions), in one transaction: the ``Evaluation``
    row, the voiding of the version's standing approvals (new evidence, new round) and the audit
    event. ``premise`` runs first under that lock: it raises to refuse, or returns an existing
    evaluation to record nothing (idempotent callers). A failing verdict then takes the
    automatic transition its stage calls for (``AUTOMATIC_ON_FAILURE``) as ``send_back_actor``,
    in a transaction of its own.
    """
    with transaction.atomic():
        registry_services.model_get(version.model.name, lock=True)
        if premise is not None:
            earlier = premise()
            if earlier is not None:
                return earlier
        evaluation = Evaluation.objects.create(
            version=version,
            kind=kind,
            policy=policy,
            passed=bool(report["passed"]),
            report=report,
            evidence_digest=digest,
            records=records,
            data_path=data_path,
            created_by=actor.label[:200],
            submitted_by=actor.user,
        )
        voided = approvals_void(version=version, reason=f"new evidence: {kind}", actor=actor)
        audit.record(
            actor=actor,
            action="evaluation.recorded",
            obj=evaluation,
            after={
                "version": version.version,
                "kind": kind,
                "passed": evaluation.passed,
                "policy_version": policy.version,
                "evidence_digest": digest,
                "records": records,
                "approvals_voided": voided,
            },
        )
    if not evaluation.passed:
        _send_back(evaluation, actor=send_back_actor)
    return evaluation


def _send_back(evaluation: Evaluation, *, actor: Actor) -> None:
    """Apply the automatic transition a failed evaluation calls for, if the stage has one."""
    from .lifecycle import transition

    version = evaluation.version
    stage = Lifecycle.objects.filter(version=version).values_list("stage", flat=True).first()
    name = AUTOMATIC_ON_FAILURE.get((stage, evaluation.kind))
    if name is None:
        return
    failed = ", ".join(failed_gates(evaluation)) or "unknown"
    try:
        transition(
            version=version,
            name=name,
            actor=actor,
            comment=f"{evaluation.kind} evaluation {evaluation.pk} failed gate(s): {failed}",
            automatic=True,
        )
    except Conflict as exc:  # the stage moved meanwhile; the evaluation itself stands
        logger.warning("automatic %s of %s not applied: %s", name, version, exc)
