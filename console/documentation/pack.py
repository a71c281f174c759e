"""Build the technical-documentation pack of one version as a plain, reproducible dict.

Reproducible: the pack is a function of the rows recorded up to one audit sequence number (the
cut). Only recorded times appear, never the time of generation. Besides the audit trail (cut at
the sequence number), every dated record (evaluations, approvals, policies, halts, incidents and
their timeline and steps, rollbacks, runs, alerts, metric points) is taken as recorded at or
before the time of the event at the cut, a date after that time is shown as null, and a status is
derived from those dates (see ``AS_OF_RULE``); the data ingested is summed from the ingestions'
audit events up to the cut (``_ingested``: manifest rows are rewritten by compaction and purges).
What is not dated (the version's registered facts, which never change, the model card, and the
settings the logging section quotes, and the beat schedule) is shown as it is now.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from django.conf import settings
from django.db.models import CharField, Q, QuerySet
from django.db.models.functions import Cast
from django_celery_beat.models import PeriodicTask

from governance import audit
from governance.api.audit_views import version_events
from governance.models import Approval, AuditChainHead, AuditEvent, Evaluation, Lifecycle
from governance.policies import policy_class
from incidents.models import Incident, IncidentEvent, Playbook, Rollback, StepRun
from monitoring.models import (
    DAILY_CHECKS,
    WEEKLY_CHECKS,
    Alert,
    BatchKind,
    MetricPoint,
    MonitorRun,
)
from platform_core.errors import Conflict, InvalidInput
from registry.models import ModelCard, ModelVersion
from serving.conf import GLOBAL
from serving.models import Halt, HaltReleaseApproval

SCHEMA = "annex-iv-technical-documentation/1"
REGULATION = (
    "EU AI Act (Regulation (EU) 2024/1689): Annex IV technical documentation, Article 12 "
    "record-keeping, Article 14 human oversight"
)
AS_OF_RULE = (
    "Built as of audit event built_from.audit_seq. The audit trail and the chain verification stop "
    "at that event. Every dated record (evaluations, approvals, policies, halts, incidents with "
    "their timeline and steps, rollbacks, monitor runs, alerts, metric points) is included when "
    "recorded at or before that event's time (built_from.audit_recorded_at); a date after it is "
    "shown as null and statuses are derived from the dates shown; the data batches are those the "
    "ingestion events up to that event record; the stage is the "
    "one the audit trail records at that event. Not dated, shown as now: the version's registered "
    "facts (immutable), the model card text, the beat schedule of the monitoring plan and the "
    "settings quoted under logging."
)
VERIFY = (
    "Run manage.py verify_audit (or GET /api/v1/audit/verify/): the chain must be intact and "
    "its event at built_from.audit_seq must carry built_from.audit_hash; the events listed under "
    "changes carry their own links (hash, prev_hash). The same seq gives the same bytes."
)

# What chain_verification checked; the same words whatever earlier builds recorded, so the same
# cut still gives the same bytes (governance.audit.verify_through).
VERIFIED_HOW = (
    "Each event's digest, link and sequence number checked from seq 1 to through_seq. "
    "Incrementally: the events up to the newest verified prefix at or below through_seq (a seq "
    "and link recorded, signed with a key derived from the audit key, by an earlier build or by "
    "manage.py verify_audit) were checked when it was recorded, and that event must still carry "
    "the recorded link; only the events after it are walked at build time. An event edited "
    "before that prefix without re-linking is caught by manage.py verify_audit, which walks "
    "every event from seq 1 and then discards the prefixes after the first bad one."
)


@dataclass(frozen=True)
class Cut:
    """The audit event the pack is built from: its sequence number, link and recorded time."""

    seq: int
    hash: str
    at: datetime


def cut_at(version: ModelVersion, as_of: int | None) -> Cut:
    """The cut for ``as_of`` (the chain head when None); 400 naming ``as_of`` when it is not a
    sequence number of the chain at which the version existed."""
    head = AuditChainHead.objects.filter(pk=1).values_list("seq", flat=True).first() or 0
    seq = head if as_of is None else as_of
    if as_of is not None and not 1 <= as_of <= head:
        raise InvalidInput({"as_of": f"must be an audit sequence number from 1 to {head}"})
    first = _version_events(version).values_list("seq", flat=True).first()
    if first is not None and seq < first:
        raise InvalidInput(
            {"as_of": f"{version} was registered at audit seq {first}; give {first} or later"}
        )
    event = AuditEvent.objects.filter(seq=seq).values("hash", "created_at").first()
    if event is None:
        raise Conflict(f"the audit log has no event at seq {seq}")
    return Cut(seq=seq, hash=event["hash"], at=event["created_at"])


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _until(value: datetime | None, cut: Cut) -> str | None:
    """A recorded time, or None when it lies after the cut (it had not happened yet)."""
    return _iso(value) if value is not None and value <= cut.at else None


def _name(user) -> str | None:
    return user.get_username() if user is not None else None


def _ids(qs: QuerySet) -> QuerySet:
    return qs.annotate(sid=Cast("pk", CharField())).values("sid")


def _version_events(version: ModelVersion) -> QuerySet[AuditEvent]:
    """The version's history (``version_events``) plus its incidents, steps, rollbacks and
    halts."""
    incidents = Incident.objects.filter(version=version)
    rollbacks = Rollback.objects.filter(Q(from_version=version) | Q(to_version=version))
    steps = StepRun.objects.filter(incident__in=incidents)
    return AuditEvent.objects.filter(
        Q(pk__in=version_events(version).values("pk"))
        | Q(object_type="incidents.Incident", object_id__in=_ids(incidents))
        | Q(object_type="incidents.StepRun", object_id__in=_ids(steps))
        | Q(object_type="incidents.Rollback", object_id__in=_ids(rollbacks))
        | Q(object_type="serving.Halt", object_id__in=_ids(_halt_rows(version)))
    ).order_by("seq")


def _policy(kind: str, model_id: int, cut: Cut) -> dict[str, Any]:
    """The policy of ``kind`` in force at the cut (version 0: the schema's defaults)."""
    cls = policy_class(kind)
    stored = (
        cls.objects.filter(model_id=model_id, created_at__lte=cut.at).order_by("-version").first()
    )
    policy = stored or cls(model_id=model_id, version=0, values=cls.schema.defaults())
    return {
        "version": policy.version,
        "recorded_at": _iso(policy.created_at) if stored else None,
        "reason": policy.reason if stored else "no version stored: the defaults",
        "values": policy.resolved,
    }


# --- 1. general description ------------------------------------------------------------------


def _stage(version: ModelVersion, events: list[AuditEvent]) -> str:
    for event in reversed(events):
        after = event.after if isinstance(event.after, dict) else {}
        mine = after.get("version") == version.version and after.get("stage")
        if event.action.startswith("lifecycle.") and mine:
            return str(after["stage"])
    lifecycle = Lifecycle.objects.filter(version=version).values_list("stage", flat=True).first()
    return lifecycle or ""


def _general(version: ModelVersion, events: list[AuditEvent]) -> dict[str, Any]:
    card = ModelCard.objects.filter(version=version).first()
    return {
        "model": {"name": version.model.name, "description": version.model.description},
        "version": {
            "version": version.version,
            "stage_at_cut": _stage(version, events),
            "registered_at": _iso(version.registered_at or version.created_at),
            "registered_by": _name(version.registered_by),
            "responsible_engineer": _name(version.responsible_engineer),
            "ethics_audit_date": _iso(version.ethics_audit_date),
            "artifact": {
                "uri": version.artifact_uri,
                "digest": version.artifact_digest,
                "flavor": version.flavor,
                "serialization_format": version.serialization_format,
                "executable": version.executable,
            },
        },
        "intended_purpose": card.intended_use if card else None,
        "model_card": (
            {title: getattr(card, field) for field, title in ModelCard.SECTIONS}
            | {"Owners": card.owners}
            if card
            else None
        ),
    }


# --- 2. development --------------------------------------------------------------------------


def _development(version: ModelVersion) -> dict[str, Any]:
    types = version.feature_types or {}
    return {
        "training_data": {
            "from": _iso(version.training_data_start),
            "to": _iso(version.training_data_end),
            "hash": version.training_data_hash,
        },
        "hyperparameters": version.hyperparameters or {},
        "features": [{"name": f, "type": types.get(f)} for f in version.feature_list or []],
        "metrics": version.metrics or {},
        "thresholds": version.thresholds or {},
        "training_run": {
            "mlflow_model": version.mlflow_name or None,
            "mlflow_version": version.mlflow_version or None,
            "mlflow_run_id": version.mlflow_run_id or None,
            "source_commit": version.source_commit or None,
            "signature": version.signature or None,
        },
    }


# --- 3. validation ---------------------------------------------------------------------------

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile
# rate -> the count it is a rate of, in a fairness gate's group report
_RATE_OF = {"tpr": "n_positive", "fnr": "n_positive", "fpr": "n_negative", "selection_rate": "n"}


def wilson(rate: Any, n: Any) -> list[float] | None:
    """The Wilson score 95 % interval of a proportion ``rate`` observed on ``n`` records (sound
    at small n and at rates of 0 or 1, where the normal approximation is not)."""
    if not isinstance(rate, int | float) or not isinstance(n, int | float) or n <= 0:
        return None
    z2 = Z95 * Z95
    centre = (rate + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(max(rate * (1 - rate), 0.0) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return [round(max(0.0, centre - half), 6), round(min(1.0, centre + half), 6)]


def _intervals(values: Any) -> dict[str, dict[str, list[float]]]:
    groups = values.get("groups") if isinstance(values, dict) else None
    if not isinstance(groups, dict):
        return {}
    out: dict[str, dict[str, list[float]]] = {}
    for group, report in groups.items():
        if not isinstance(report, dict):
            continue
        found = {
            rate: interval
            for rate, count in _RATE_OF.items()
            if (interval := wilson(report.get(rate), report.get(count))) is not None
        }
        if found:
            out[str(group)] = found
    return out


def _validation(version: ModelVersion, cut: Cut) -> dict[str, Any]:
    evaluations = (
        Evaluation.objects.filter(version=version, created_at__lte=cut.at)
        .select_related("policy", "submitted_by")
        .order_by("created_at", "pk")
    )
    reports, fairness = [], []
    for e in evaluations:
        report = e.report if isinstance(e.report, dict) else {}
        gates = [g for g in report.get("gates", []) if isinstance(g, dict)]
        reports.append(
            {
                "id": e.pk,
                "kind": e.kind,
                "passed": e.passed,
                "recorded_at": _iso(e.created_at),
                "submitted_by": _name(e.submitted_by) or e.created_by or None,
                "evidence_digest": e.evidence_digest,
                "records": e.records,
                "policy": (
                    {"version": e.policy.version, "values": e.policy.resolved} if e.policy else None
                ),
                "gates": [
                    {
                        "gate": str(g.get("gate", "")),
                        "passed": bool(g.get("passed")),
                        "reasons": [str(r) for r in g.get("reasons", [])],
                        "values": g.get("values") or {},
                        "thresholds": g.get("thresholds") or {},
                    }
                    for g in gates
                ],
            }
        )
        for g in gates:
            if g.get("gate") != "fairness" or not isinstance(g.get("values"), dict):
                continue
            for attribute, values in sorted(g["values"].items()):
                fairness.append(
                    {
                        "evaluation": e.pk,
                        "kind": e.kind,
                        "recorded_at": _iso(e.created_at),
                        "policy_version": e.policy.version if e.policy else None,
                        "attribute": attribute,
                        "result": values,
                        "intervals_95": _intervals(values),
                    }
                )
    return {"gate_reports": reports, "fairness_per_group": fairness}


# --- 4. risk management and human oversight --------------------------------------------------


def _approvals(version: ModelVersion, cut: Cut) -> list[dict[str, Any]]:
    rows = (
        Approval.objects.filter(version=version, created_at__lte=cut.at)
        .select_related("user")
        .order_by("created_at", "pk")
    )
    return [
        {
            "transition": a.transition,
            "role": a.role,
            "by": _name(a.user),
            "decision": a.decision,
            "comment": a.comment,
            "recorded_at": _iso(a.created_at),
            "artifact_digest": a.artifact_digest,
            "evidence_digest": a.evidence_digest,
            "voided_at": _until(a.voided_at, cut),
            "voided_reason": a.voided_reason if _until(a.voided_at, cut) else None,
        }
        for a in rows
    ]


def _halt_rows(version: ModelVersion) -> QuerySet[Halt]:
    """Halts of the model (or global) engaged from the version's registration on, and any halt
    one of its incidents names."""
    since = version.registered_at or version.created_at
    named = Incident.objects.filter(version=version, halt__isnull=False).values("halt_id")
    return Halt.objects.filter(
        Q(scope__in=[version.model.name, GLOBAL], engaged_at__gte=since) | Q(pk__in=named)
    )


def _halts(version: ModelVersion, cut: Cut) -> list[dict[str, Any]]:
    halts = (
        _halt_rows(version)
        .filter(engaged_at__lte=cut.at)
        .select_related("engaged_by")
        .order_by("engaged_at", "pk")
    )
    approvals = defaultdict(list)
    for a in (
        HaltReleaseApproval.objects.filter(halt__in=halts, created_at__lte=cut.at)
        .select_related("user")
        .order_by("created_at", "pk")
    ):
        approvals[a.halt_id].append(
            {"by": _name(a.user), "role": a.role, "comment": a.comment, "at": _iso(a.created_at)}
        )
    return [
        {
            "id": h.pk,
            "scope": h.scope,
            "reason": h.reason,
            "engaged_by": _name(h.engaged_by) or h.engaged_by_label or None,
            "engaged_at": _iso(h.engaged_at),
            "released_at": _until(h.released_at, cut),
            "release_approvals": approvals[h.pk],
        }
        for h in halts
    ]


def _incident_status(events: list[IncidentEvent]) -> str:
    for event in reversed(events):
        if event.kind == "status" and isinstance(event.data, dict) and event.data.get("status"):
            return str(event.data["status"])
    return "active (open or mitigating)"


def _incidents(incidents: list[Incident], cut: Cut) -> list[dict[str, Any]]:
    ids = [i.pk for i in incidents]
    timeline = defaultdict(list)
    for event in IncidentEvent.objects.filter(incident_id__in=ids, at__lte=cut.at).order_by(
        "at", "pk"
    ):
        timeline[event.incident_id].append(event)
    steps = defaultdict(list)
    for step in StepRun.objects.filter(incident_id__in=ids).order_by("order", "pk"):
        steps[step.incident_id].append(step)
    alerts = defaultdict(list)
    for incident_id, alert_id in Incident.alerts.through.objects.filter(
        incident_id__in=ids, alert__created_at__lte=cut.at
    ).values_list("incident_id", "alert_id"):
        alerts[incident_id].append(alert_id)
    playbooks = dict(Playbook.objects.values_list("number", "name"))
    return [
        {
            "id": i.pk,
            "title": i.title,
            "kind": i.kind,
            "severity": i.severity,
            "playbook": {"number": i.playbook, "name": playbooks.get(i.playbook)},
            "opened_by": i.opened_by,
            "opened_at": _iso(i.created_at),
            "resolved_at": _until(i.resolved_at, cut),
            "status_at_cut": _incident_status(timeline[i.pk]),
            "halt": i.halt_id,
            "alerts": sorted(alerts[i.pk]),
            "timeline": [
                {
                    "at": _iso(e.at),
                    "actor": e.actor,
                    "kind": e.kind,
                    "message": e.message,
                    "data": e.data,
                }
                for e in timeline[i.pk]
            ],
            "playbook_steps": [_step(s, cut) for s in steps[i.pk]],
        }
        for i in incidents
    ]


def _step(s: StepRun, cut: Cut) -> dict[str, Any]:
    done = _until(s.completed_at, cut)
    return {
        "order": s.order,
        "action": s.action,
        "responsible": s.responsible,
        "automated": s.automated,
        "due_at": _iso(s.due_at),
        "started_at": _until(s.started_at, cut),
        "completed_at": done,
        "status_at_cut": s.status if done else "open",
        "completed_by": s.completed_by if done else None,
        "decision": s.decision if done else None,
        "justification": s.justification if done else None,
        "outcome": s.outcome if done else None,
        "note": s.note if done else None,
    }


def _rollbacks(version: ModelVersion, cut: Cut) -> list[dict[str, Any]]:
    rows = (
        Rollback.objects.filter(
            Q(from_version=version) | Q(to_version=version), requested_at__lte=cut.at
        )
        .select_related("from_version", "to_version")
        .order_by("requested_at", "pk")
    )
    out = []
    for r in rows:
        done = _until(r.completed_at, cut)
        if done:
            status = r.status
        elif _until(r.verified_at, cut):
            status = "verified"
        elif _until(r.switched_at, cut):
            status = "switched"
        else:
            status = "requested"
        out.append(
            {
                "id": r.pk,
                "incident": r.incident_id,
                "from_version": r.from_version.version,
                "to_version": r.to_version.version if r.to_version else None,
                "automatic": r.automatic,
                "reason": r.reason,
                "requested_by": r.requested_by,
                "requested_at": _iso(r.requested_at),
                "switched_at": _until(r.switched_at, cut),
                "verified_at": _until(r.verified_at, cut),
                "completed_at": done,
                "status_at_cut": status,
                "verification": r.verification if done else None,
            }
        )
    return out


def _oversight(version: ModelVersion, cut: Cut) -> dict[str, Any]:
    incidents = Incident.objects.filter(version=version, created_at__lte=cut.at)
    incidents = list(incidents.order_by("created_at", "pk"))
    return {
        "approvals": _approvals(version, cut),
        "halts": _halts(version, cut),
        "incidents": _incidents(incidents, cut),
        "rollbacks": _rollbacks(version, cut),
        "ethics_policy": _policy("ethics", version.model_id, cut),
    }


# --- 5. monitoring plan and 6. post-market results -------------------------------------------


def _schedules() -> list[dict[str, Any]]:
    """The monitoring tasks of the beat schedule (django-celery-beat rows, editable in the
    admin; shown as they are now)."""
    rows = (
        PeriodicTask.objects.filter(task__startswith="monitoring.")
        .select_related("crontab")
        .order_by("name")
    )
    return [
        {
            "name": t.name,
            "task": t.task,
            "enabled": t.enabled,
            "crontab_utc": (
                f"{t.crontab.minute} {t.crontab.hour} {t.crontab.day_of_month} "
                f"{t.crontab.month_of_year} {t.crontab.day_of_week}"
                if t.crontab
                else None
            ),
            "description": t.description,
        }
        for t in rows
    ]


def _plan(version: ModelVersion, cut: Cut) -> dict[str, Any]:
    monitoring = _policy("monitoring", version.model_id, cut)
    values = monitoring["values"]
    return {
        "checks": {"daily": list(DAILY_CHECKS), "weekly": list(WEEKLY_CHECKS)},
        "schedule": (
            "Celery beat fans out one run per live version and check for the window ending at "
            f"midnight UTC: the daily checks over the last {values.get('daily_window_days')} "
            f"days, the weekly checks over the last {values.get('weekly_window_days')} days, "
            "when the beat_schedule rows below say. High and critical alerts open incidents; "
            "critical ones can roll back (see the policy's thresholds)."
        ),
        "beat_schedule": _schedules(),
        "monitoring_policy": monitoring,
        "validation_policy": _policy("validation", version.model_id, cut),
    }


def _series(version: ModelVersion, cut: Cut) -> list[dict[str, Any]]:
    """One summary per (check, metric, feature, group): points, first and last window, values."""
    points = (
        MetricPoint.objects.filter(version=version, run__created_at__lte=cut.at)
        .order_by("kind", "metric", "feature", "group", "window_end", "pk")
        .values_list("kind", "metric", "feature", "group", "window_end", "value")
    )
    series: dict[tuple, list[tuple[datetime, float]]] = defaultdict(list)
    for kind, metric, feature, group, end, value in points:
        series[(kind, metric, feature, group)].append((end, value))
    return [
        {
            "check": kind,
            "metric": metric,
            "feature": feature or None,
            "group": group or None,
            "points": len(values),
            "first_window_end": _iso(values[0][0]),
            "last_window_end": _iso(values[-1][0]),
            "first": values[0][1],
            "last": values[-1][1],
            "min": min(v for _, v in values),
            "max": max(v for _, v in values),
        }
        for (kind, metric, feature, group), values in series.items()
    ]


def _results(version: ModelVersion, cut: Cut) -> dict[str, Any]:
    runs = (
        MonitorRun.objects.filter(version=version, created_at__lte=cut.at)
        .select_related("policy")
        .order_by("window_end", "kind", "pk")
    )
    alerts = Alert.objects.filter(version=version, created_at__lte=cut.at).order_by(
        "created_at", "pk"
    )
    return {
        "runs": [
            {
                "check": r.kind,
                "window_start": _iso(r.window_start),
                "window_end": _iso(r.window_end),
                "trigger": r.trigger,
                "policy_version": r.policy.version if r.policy else None,
                "finished_at": _until(r.finished_at, cut),
                "status_at_cut": r.status if _until(r.finished_at, cut) else "pending",
                "rows": r.rows if _until(r.finished_at, cut) else None,
                "reason": r.reason if _until(r.finished_at, cut) else None,
            }
            for r in runs
        ],
        "alerts": [_alert(a, cut) for a in alerts],
        "series": _series(version, cut),
    }


def _alert(a: Alert, cut: Cut) -> dict[str, Any]:
    acknowledged, resolved = _until(a.acknowledged_at, cut), _until(a.resolved_at, cut)
    return {
        "id": a.pk,
        "check": a.kind,
        "severity": a.severity,
        "metric": a.metric,
        "feature": a.feature or None,
        "value": a.value,
        "threshold": a.threshold,
        "window_end": _iso(a.window_end),
        "recorded_at": _iso(a.created_at),
        "acknowledged_at": acknowledged,
        "acknowledged_by": a.acknowledged_by if acknowledged else None,
        "resolved_at": resolved,
        "resolved_by": a.resolved_by if resolved else None,
        "status_at_cut": "resolved" if resolved else "acknowledged" if acknowledged else "open",
    }


# --- 7. logging and 8. changes ---------------------------------------------------------------


INGESTIONS = {
    "predictions.ingested": BatchKind.PREDICTIONS,
    "reference.ingested": BatchKind.REFERENCE,
    "labels.ingested": BatchKind.LABELS,
}


def _ingested(version: ModelVersion, cut: Cut) -> dict[str, dict[str, Any]]:
    """The version's data as ingested by the cut, from the ingestions' audit events: manifest
    rows change later (a compaction merges a day's files, a retention purge deletes them), the
    log does not, so the same cut keeps giving the same figures. Labels are filed per model;
    their event says what each version got (``by_version``)."""
    batches: dict[str, dict[str, Any]] = {}
    events = AuditEvent.objects.filter(seq__lte=cut.seq).filter(
        Q(
            action__in=["predictions.ingested", "reference.ingested"],
            object_type="registry.ModelVersion",
            object_id=str(version.pk),
        )
        | Q(
            action="labels.ingested",
            object_type="registry.RegisteredModel",
            object_id=str(version.model_id),
        )
    )
    for action, after in events.order_by("seq").values_list("action", "after"):
        after = after if isinstance(after, dict) else {}
        part = after
        if action == "labels.ingested":
            part = (after.get("by_version") or {}).get(version.version)
            if part is None and after.get("versions") == [version.version]:
                part = after  # recorded before by_version: the event's labels are all its
        if not part:
            continue
        days = sorted(part.get("days") or [])
        entry = batches.setdefault(INGESTIONS[action], {"batches": 0, "rows": 0})
        entry["batches"] += len(part.get("batches") or [])
        entry["rows"] += int(part.get("rows") or 0)
        if days:
            entry["first_day"] = min(entry.get("first_day") or days[0], days[0])
            entry["last_day"] = max(entry.get("last_day") or days[-1], days[-1])
    return batches


def _logging(version: ModelVersion, cut: Cut, retention_days: Any) -> dict[str, Any]:
    batches = _ingested(version, cut)
    return {
        "what_is_logged": {
            "audit_log": (
                "Every change of state (registration, evidence, approvals, transitions, "
                "policies, halts, incidents, steps, rollbacks, alerts) with the acting user or "
                "service, before and after, reason and request id, written in the transaction of "
                "the change into an append-only HMAC-chained log."
            ),
            "prediction_log": (
                "Every live and shadow prediction the gateway serves: prediction id, time, "
                "score, prediction, the request's features and sensitive attributes, stored as "
                "Parquet batches per model, version and day with a manifest row and digest."
            ),
            "labels_and_reference_data": "Ingested as Parquet batches with a manifest row each.",
            "incident_timeline": (
                "Every incident event (opened, alert joined, step, decision, notification, "
                "rollback, status) with time and actor; every notification and delivery attempt."
            ),
            "monitoring": "Every run with its window, policy version and metrics; every alert.",
        },
        "retention": {
            "audit_events": "kept for good: append-only, never deleted (lawful redaction keeps "
            "the digests)",
            "audit_checkpoints_days": settings.AUDIT_CHECKPOINT_RETENTION_DAYS,
            "predictions_days": retention_days,
        },
        "data_batches_of_this_version": batches,
    }


def _event(e: AuditEvent) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "recorded_at": _iso(e.created_at),
        "actor": e.actor,
        "action": e.action,
        "object_type": e.object_type,
        "object_id": e.object_id,
        "object": e.object_repr,
        "before": e.before,
        "after": e.after,
        "reason": e.reason,
        "redacted": e.redacted,
        "prev_hash": e.prev_hash,
        "hash": e.hash,
    }


def _changes(
    events: list[AuditEvent], cut: Cut, audit_visible: bool, check: audit.Verification
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "chain_verification": {
            "through_seq": cut.seq,
            "valid": check.valid,
            "events_checked": check.events,
            "first_bad_seq": check.first_bad_seq,
            "problem": check.problem or None,
            "method": VERIFIED_HOW,
        },
        "audit_trail": [_event(e) for e in events] if audit_visible else None,
    }
    if not audit_visible:
        body["audit_trail_withheld"] = (
            "reading the audit trail needs the read_audit permission for this model"
        )
    return body


def verify(cut: Cut) -> audit.Verification:
    """The chain verified up to the cut (incrementally: ``VERIFIED_HOW``)."""
    return audit.verify_through(cut.seq)


def build(
    version: ModelVersion,
    cut: Cut,
    *,
    audit_visible: bool,
    check: audit.Verification | None = None,
) -> dict[str, Any]:
    """The pack of ``version`` at ``cut``; ``audit_visible`` says whether the reader may read the
    audit trail (the audit API's rule), else the trail is withheld and the rest is the same.
    ``check``: ``verify(cut)`` when the caller has it already (the console page shows how it
    went)."""
    events = list(_version_events(version).filter(seq__lte=cut.seq))
    monitoring_plan = _plan(version, cut)
    retention = monitoring_plan["monitoring_policy"]["values"].get("retention_days")
    return {
        "document": {
            "schema": SCHEMA,
            "title": f"Technical documentation of {version.model.name} {version.version}",
            "regulation": REGULATION,
            "model": version.model.name,
            "version": version.version,
            "built_from": {
                "audit_seq": cut.seq,
                "audit_hash": cut.hash,
                "audit_recorded_at": _iso(cut.at),
            },
            "as_of": AS_OF_RULE,
            "how_to_verify": VERIFY,
        },
        "s1_general_description": _general(version, events),
        "s2_development": _development(version),
        "s3_validation": _validation(version, cut),
        "s4_risk_management_and_human_oversight": _oversight(version, cut),
        "s5_monitoring_plan": monitoring_plan,
        "s6_post_market_results": _results(version, cut),
        "s7_logging": _logging(version, cut, retention),
        "s8_changes": _changes(events, cut, audit_visible, check or verify(cut)),
    }


SECTION_TITLES = {
    "document": "About this document",
    "s1_general_description": "1. General description and intended purpose",
    "s2_development": "2. Development: data, hyperparameters, features, training run",
    "s3_validation": "3. Validation: gate reports and fairness per group",
    "s4_risk_management_and_human_oversight": "4. Risk management and human oversight",
    "s5_monitoring_plan": "5. Monitoring plan",
    "s6_post_market_results": "6. Post-market monitoring results",
    "s7_logging": "7. Logging (Article 12)",
    "s8_changes": "8. Changes: the audit trail of this version",
}
