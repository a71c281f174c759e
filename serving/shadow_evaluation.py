"""The shadow evaluation: the staging version against the live one, on the same logged traffic.

Reads the predictions the gateway logged for both versions since the candidate entered staging
(``monitoring.store.load_window``), pairs them by ``prediction_id`` (a shadow prediction shares
its live twin's id, so labels posted for one label both) and judges, with the thresholds of the
model's validation policy:

- ``agreement``: share of paired instances where both versions predict the same class, at least
  ``shadow_agreement_min``. A version needing features the live one does not use (a MAJOR) is
  shadow-scored only on requests that carried them: it is judged on those, and with none it
  fails naming the features no request carried (the gateway's counts for the stay,
  ``serving.shadow_counts``, tell that apart from a shadow whose scoring failed);
- ``score_distribution``: KS two-sample test of the shadow scores against the live scores,
  p-value at least ``shadow_ks_pvalue_min``;
- ``metrics`` and ``fairness``: the validation gates (``governance.gates``) on the labelled shadow
  records (the live version's figures on the same records alongside); no labelled records, or no
  sensitive attributes, fail them: a version is not promoted on performance or fairness nobody
  measured;
- ``live_version``: the version it was compared with still serves (``promote`` replaces that
  one and no other; after a rollback or another promotion it must be staged again);
- ``shadow_period``: the candidate has been in staging for ``shadow_days``.

Serving computes the report (``shadow_evaluate``: small steps, one per gate); governance records
it (``shadow_evaluation_record`` hands it to ``governance.gates.evaluation_record``, the service
submitted evidence goes through too) as the version's ``shadow`` evidence, what ``promote``
requires; a failing one takes ``fail_shadow``. ``shadow_evaluations_due`` lists the versions
whose shadow period is over and that have no evaluation for their current stay in staging:
beat's hourly ``serving.record_shadow_evaluations`` records one for each (``once_per_stay``, so a
second run, or two workers at once, record nothing more). Not due: a first version (no live
version to shadow: its ``shadow_replay`` evidence stands in) and a PATCH of the live version
(fast-tracked: ``promote`` needs no shadow evidence from it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from django.utils import timezone

from governance.audit import Actor
from governance.models import Evaluation, EvidenceKind, Lifecycle, Stage, ValidationPolicy
from governance.policies import policy_current, policy_in_force, policy_values
from governance.premises import PremiseFailed
from monitoring.columns import attribute_of
from platform_core.errors import Conflict
from registry.models import ModelVersion
from registry.semver import Bump

from . import shadow_counts

logger = logging.getLogger(__name__)
ACTOR = Actor.system("serving gateway")


@dataclass(frozen=True)
class Stay:
    """The candidate's stay in staging being judged, and the policy it is judged by (read once)."""

    version: ModelVersion
    baseline: ModelVersion  # the live version it shadows
    policy: ValidationPolicy
    thresholds: dict[str, Any]
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Traffic:
    """The logged predictions of the stay: the candidate's, the live version's, and the pairs."""

    shadow: Any  # pandas DataFrames (monitoring.store.load_window)
    live: Any
    paired: Any

    @property
    def n(self) -> int:
        return len(self.paired)


def _frame(model, version, start, end):
    from monitoring import store

    return store.load_window(
        model=model, version=version, start=start, end=end, with_labels=True, with_sensitive=True
    )


def _batch(frame, sensitive_columns: list[str]):
    """Labelled rows as a governance ``EvidenceBatch`` (what the validation gates take)."""
    from governance.evidence import EvidenceBatch

    labels = frame["label"].to_numpy(dtype=np.float64)
    keep = ~np.isnan(labels)
    sensitive = {
        attribute_of(column): frame[column].to_numpy()[keep].astype(str)
        for column in sensitive_columns
        if frame[column].notna().to_numpy()[keep].all()
    }
    predictions = frame["prediction"].to_numpy(dtype=np.float64)[keep]
    return EvidenceBatch(
        scores=frame["score"].to_numpy(dtype=np.float64)[keep],
        labels=labels[keep].astype(np.int8),
        predictions=predictions,
        sensitive=sensitive,
        timestamps=None,
        digest="",
        attributes=tuple(sensitive),
    )


def _stay(version: ModelVersion, *, actor: Actor | None = None) -> Stay:
    """The stay being judged; with ``actor`` (recording) its policy is a stored version."""
    lifecycle = Lifecycle.objects.select_related("version__model").get(version=version)
    baseline = lifecycle.shadow_baseline
    if baseline is None:
        raise Conflict(
            f"{version} has no live version to be compared with (a first version is judged "
            "by its shadow_replay evidence)"
        )
    policy = (
        policy_in_force("validation", version.model, actor)
        if actor is not None
        else policy_current("validation", version.model)
    )
    return Stay(
        version=version,
        baseline=baseline,
        policy=policy,
        thresholds=policy.resolved,
        start=lifecycle.stage_entered_at,
        end=timezone.now(),
    )


def _traffic(stay: Stay) -> Traffic:
    model = stay.version.model
    shadow = _frame(model, stay.version, stay.start, stay.end)
    live = _frame(model, stay.baseline, stay.start, stay.end)
    paired = shadow.merge(live, on="prediction_id", suffixes=("", "_live"))
    return Traffic(shadow=shadow, live=live, paired=paired)


def _agreement_gate(stay: Stay, traffic: Traffic) -> dict:
    from governance.gates import gate

    version, baseline, n = stay.version, stay.baseline, traffic.n
    agreement_min = float(stay.thresholds["shadow_agreement_min"])
    # A MAJOR may need features the live version does not use: the gateway shadow-scores only
    # the requests that carry them, so live predictions without a shadow twin are expected.
    uncovered = [f for f in version.feature_list or () if f not in set(baseline.feature_list or ())]
    counted = shadow_counts.stay_totals(version_id=version.pk, staged_at=stay.start)
    values = {
        "agreement": None,
        "paired": n,
        "live_unpaired": len(traffic.live) - n,
        "gateway": counted,
    }
    if uncovered:
        values["features_beyond_live"] = uncovered
    if n:
        paired = traffic.paired
        agree = float(
            np.mean(
                paired["prediction"].to_numpy(dtype=float)
                == paired["prediction_live"].to_numpy(dtype=float)
            )
        )
        reasons = (
            [] if agree >= agreement_min else [f"agreement {agree:.4f} is below {agreement_min}"]
        )
    else:
        agree, reasons = None, ["no paired shadow and live predictions were logged"]
        reasons += _why_unshadowed(version, baseline, uncovered, counted, len(traffic.live))
    values["agreement"] = agree
    return gate("agreement", not reasons, values, {"shadow_agreement_min": agreement_min}, reasons)


def _score_distribution_gate(stay: Stay, traffic: Traffic) -> dict:
    from analytics import stats
    from governance.gates import gate

    ks_min = float(stay.thresholds["shadow_ks_pvalue_min"])
    if not traffic.n:
        ks, reasons = {}, ["no paired predictions to compare"]
    else:
        paired = traffic.paired
        ks = stats.ks_two_sample(
            paired["score_live"].to_numpy(dtype=float), paired["score"].to_numpy(dtype=float)
        ).to_dict()
        reasons = (
            []
            if ks["p_value"] >= ks_min
            else [f"KS p-value {ks['p_value']:.3g} is below {ks_min}: the scores moved"]
        )
    return gate("score_distribution", not reasons, ks, {"shadow_ks_pvalue_min": ks_min}, reasons)


def _performance_gates(stay: Stay, traffic: Traffic) -> list[dict]:
    """The validation gates (metrics, fairness) on the labelled pairs, live AUC alongside."""
    from analytics import stats
    from governance import gates

    paired, thresholds = traffic.paired, stay.thresholds
    sensitive_columns = [
        c for c in paired.columns if c.startswith("s.") and not c.endswith("_live")
    ]
    labelled = _batch(paired, sensitive_columns) if traffic.n else None
    if labelled is None or not len(labelled):
        why = ["no labelled shadow records yet: post labels for the live prediction ids"]
        return [
            gates.gate("metrics", False, {"n": 0}, {"auc_min": thresholds["auc_min"]}, why),
            gates.gate("fairness", False, {}, {}, list(why)),
        ]
    threshold = float(stay.version.thresholds.get("decision", 0.5))
    metrics = gates.metrics_gate(labelled, decision_threshold=threshold, thresholds=thresholds)
    live_batch = _batch(
        paired.assign(score=paired["score_live"], prediction=paired["prediction_live"]),
        sensitive_columns,
    )
    live_perf = stats.performance_metrics(
        live_batch.labels,
        live_batch.scores,
        live_batch.predictions,
        decision_threshold=float(stay.baseline.thresholds.get("decision", 0.5)),
    ).to_dict()
    metrics["values"]["live_auc"] = live_perf["auc"]
    metrics["values"]["live_version"] = stay.baseline.version
    predicted = stats.predicted_class(
        labelled.scores, labelled.predictions, decision_threshold=threshold
    )
    return [metrics, gates.fairness_gate(labelled, predicted, thresholds=thresholds)]


def _live_version_gate(stay: Stay) -> dict:
    from governance.gates import gate

    now_version = _live_version_name(stay.version)
    reasons = (
        []
        if now_version == stay.baseline.version
        else [
            f"the live version changed since {stay.version.version} entered staging (was "
            f"{stay.baseline.version}, now {now_version}): stage it again to shadow the new one"
        ]
    )
    values = {"shadowed": stay.baseline.version, "live": now_version}
    return gate("live_version", not reasons, values, {}, reasons)


def _shadow_period_gate(stay: Stay) -> dict:
    from governance.gates import gate

    shadow_days = float(stay.thresholds["shadow_days"])
    days = (stay.end - stay.start).total_seconds() / 86400
    reasons = [] if days >= shadow_days else [f"{days:.2f} of {shadow_days:g} days in shadow"]
    values = {"since": stay.start.isoformat(), "days": round(days, 4)}
    return gate("shadow_period", not reasons, values, {"shadow_days": shadow_days}, reasons)


def _report(stay: Stay) -> dict[str, Any]:
    traffic = _traffic(stay)
    gates_out = [
        _agreement_gate(stay, traffic),
        _score_distribution_gate(stay, traffic),
        *_performance_gates(stay, traffic),
        _live_version_gate(stay),
        _shadow_period_gate(stay),
    ]
    return {
        "passed": all(g["passed"] for g in gates_out),
        "policy_version": stay.policy.version,
        "version": stay.version.version,
        "live_version": stay.baseline.version,
        "window": {"start": stay.start.isoformat(), "end": stay.end.isoformat()},
        "records": {"shadow": len(traffic.shadow), "live": len(traffic.live), "paired": traffic.n},
        "gates": gates_out,
    }


def shadow_evaluate(version: ModelVersion) -> dict[str, Any]:
    """The shadow report of ``version`` (in the shape of the governance gate reports)."""
    return _report(_stay(version))


def _why_unshadowed(
    version: ModelVersion,
    baseline: ModelVersion,
    uncovered: list[str],
    counted: dict[str, int] | None,
    live: int,
) -> list[str]:
    """Why no shadow prediction was logged, from the gateway's counts for this stay."""
    reasons = []
    tried = counted is not None and counted["scored"] + counted["failed"] > 0
    if uncovered and not tried:
        seen = (
            f"the gateway counted {counted['not_carried']} instances without them"
            if counted is not None
            else f"none of the {live} live predictions since it entered staging has a shadow twin"
        )
        reasons.append(
            f"{version.version} needs features the live {baseline.version} does not use "
            f"({', '.join(uncovered)}) and no request carried them ({seen}): send them in the "
            "predict requests beside the live features so the gateway can shadow it"
        )
    if counted is not None and counted["failed"]:
        reasons.append(
            f"the gateway failed to shadow-score {counted['failed']} instances with "
            f"{version.version}: see the gateway's log"
        )
    return reasons


def _same_stay(version: ModelVersion, report: dict[str, Any]) -> Evaluation | None:
    """Under the model lock, for the scheduled run: the report still describes this stay.

    A version that left staging raises ``PremiseFailed``; one already evaluated in this stay
    returns that evaluation (nothing more is recorded). The report was computed outside the
    lock, so a transition that slipped in meanwhile (a new stay, another live version) raises.
    """
    current = Lifecycle.objects.filter(version=version).values("stage", "stage_entered_at").first()
    if current is None or current["stage"] != Stage.STAGING:
        where = current["stage"] if current else "no stage"
        raise PremiseFailed(f"{version.version} left staging (it is in {where})")
    earlier = _evaluation_since(version, current["stage_entered_at"])
    if earlier is not None:
        return earlier
    if report["window"]["start"] != current["stage_entered_at"].isoformat():
        raise PremiseFailed(f"{version.version} entered staging again while it was evaluated")
    shadowed = next(g for g in report["gates"] if g["gate"] == "live_version")["values"]["live"]
    live_now = _live_version_name(version)
    if shadowed != live_now:
        raise PremiseFailed(
            f"the live version changed while {version.version} was evaluated (was "
            f"{shadowed}, now {live_now})"
        )
    return None


def shadow_evaluation_record(
    *, version: ModelVersion, actor: Actor = ACTOR, once_per_stay: bool = False
) -> Evaluation | None:
    """Compute the shadow report; governance records it as the version's ``shadow`` evidence.

    Recorded by ``governance.gates.evaluation_record``, as submitted evidence is: it voids the
    version's standing approvals (the promotion is signed on the shadow result), and a failing
    report takes ``fail_shadow`` (staging -> validation) in a transaction of its own.
    ``once_per_stay`` (the scheduled run): see ``_same_stay``.
    """
    from governance import evidence, gates

    stay = _stay(version, actor=actor)
    report = _report(stay)
    return gates.evaluation_record(
        version=version,
        kind=EvidenceKind.SHADOW,
        policy=stay.policy,
        report=report,
        digest=evidence.payload_digest(report),
        records=report["records"]["paired"],
        actor=actor,
        send_back_actor=actor,
        premise=(lambda: _same_stay(version, report)) if once_per_stay else None,
    )


def _evaluation_since(version: ModelVersion, since: datetime) -> Evaluation | None:
    return (
        Evaluation.objects.filter(version=version, kind=EvidenceKind.SHADOW, created_at__gte=since)
        .order_by("-created_at", "-id")
        .first()
    )


def _shadow_days(model_id: int) -> float:
    """The policy's shadow period, read only (a sweep creates no policy row)."""
    return float(policy_values("validation", model_id)["shadow_days"])


def shadow_evaluations_due(*, now: datetime | None = None) -> list[int]:
    """Ids of the staging versions whose shadow period is over and that await their evaluation.

    Those shadowing a live version (``shadow_baseline``; a first version has none), not a PATCH
    of the live version (fast-tracked, as ``promote`` judges it), in staging for at least the
    policy's ``shadow_days``, with no shadow evaluation since they entered staging.
    """
    from governance.lifecycle import declared_bump

    now = now or timezone.now()
    rows = (
        Lifecycle.objects.filter(stage=Stage.STAGING, shadow_baseline__isnull=False)
        .select_related("version__model")
        .order_by("stage_entered_at", "pk")
    )
    due = []
    for row in rows:
        version = row.version
        if now < row.stage_entered_at + timedelta(days=_shadow_days(version.model_id)):
            continue
        if _evaluation_since(version, row.stage_entered_at) is not None:
            continue
        if declared_bump(version) == Bump.PATCH:
            continue
        due.append(version.pk)
    return due


SHADOW_TASK = "serving.record_shadow_evaluation"


def _live_version_name(version: ModelVersion) -> str:
    from governance.lifecycle import live_lifecycle

    live = live_lifecycle(version.model, exclude=version)
    return live.version.version if live else "none"


def shadow_premise_now(version_id: int) -> dict[str, Any]:
    """The premise of a scheduled evaluation as it holds now: the stay in staging and the live
    version it shadows (passed to the task, which re-checks them under the model lock)."""
    from governance.lifecycle import live_lifecycle

    row = Lifecycle.objects.select_related("version__model").filter(version_id=version_id).first()
    if row is None:
        return {}
    live = live_lifecycle(row.version.model, exclude=row.version)
    return {
        "staged_at": row.stage_entered_at.isoformat(),
        "live_version_id": live.version_id if live else None,
    }


def _moved_on(version: ModelVersion, staged_at: str | None, live_version_id: int | None):
    """Why the premise captured at enqueue time no longer holds (None: it holds)."""
    from governance.lifecycle import live_lifecycle

    row = Lifecycle.objects.filter(version=version).first()
    if row is None or row.stage != Stage.STAGING:
        return f"{version.version} left staging (it is in {row.stage if row else 'no stage'})"
    if staged_at is not None and row.stage_entered_at.isoformat() != staged_at:
        return f"{version.version} left staging and entered it again since it was scheduled"
    live = live_lifecycle(version.model, exclude=version)
    if live_version_id is not None and (live is None or live.version_id != live_version_id):
        now = live.version.version if live else "none"
        return (
            f"the live version changed since the evaluation was scheduled (now {now}): the "
            "next hourly run judges it afresh"
        )
    return None


def shadow_evaluation_record_due(
    *,
    version_id: int,
    actor: Actor = ACTOR,
    staged_at: str | None = None,
    live_version_id: int | None = None,
) -> Evaluation | dict | None:
    """The scheduled evaluation of one version (idempotent: see ``once_per_stay``).

    Premise: the version is still in staging, in the same stay, shadowing the same live version
    as when it was scheduled (``staged_at``, ``live_version_id``; a caller without them takes
    the state as it is now). Checked under the model lock before anything is computed and again
    before the record: when it fails the task is skipped (the skip result), nothing recorded,
    no ``fail_shadow``.
    """
    from governance.premises import Premise

    version = ModelVersion.objects.select_related("model").filter(pk=version_id).first()
    if version is None:
        return None
    premise = Premise(
        SHADOW_TASK,
        f"{version.version} of {version.model.name} is still in staging, in the same stay, "
        "shadowing the same live version",
        model_id=version.model_id,
        model_name=version.model.name,
    )
    with premise.locked():
        reason = _moved_on(version, staged_at, live_version_id)
        if reason is not None:
            return premise.skip(reason, obj=version, version=version.version)
    try:
        return shadow_evaluation_record(version=version, actor=actor, once_per_stay=True)
    except PremiseFailed as failed:
        return premise.skip(failed.reason, obj=version, version=version.version)
