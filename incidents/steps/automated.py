"""The automated steps a playbook names in ``PlaybookStep.task``, one function each.

Each runs inside the engine's transaction (model, incident and step locked), returns a
``StepResult`` and may raise ``PremiseFailed`` when what the step was meant for no longer holds.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from governance.lifecycle import live_lifecycle
from governance.premises import PremiseFailed
from governance.roles import Role
from serving.conf import GLOBAL
from serving.halt import active_halt
from serving.models import StalePrediction

from ..models import EventKind, Incident, Rollback, StepRun, StepStatus
from ..paging import page_role, page_step_roles
from ..rollback import rollback_create, successor_serves
from . import SYSTEM, StepResult, is_immediate


def _page_about_incident(incident: Incident, run: StepRun, *, role: str, subject: str) -> dict:
    """Page ``role`` about the incident itself: the router may have paged them already."""
    notification, created = page_role(
        incident,
        role=role,
        subject=subject,
        body=f"Playbook {incident.playbook} step {run.order}: {run.action}.",
        actor=SYSTEM.label,
    )
    return {
        "paged": role,
        "notification": notification.pk,
        "already_paged": not created,
        "recipients": list(notification.recipients),
    }


def record_what_raised_the_incident(run: StepRun, incident: Incident, now: datetime) -> StepResult:
    """Record what raised the incident: its alerts, or the detail of the opening event."""
    alerts = [
        {
            "alert": a.pk,
            "kind": a.kind,
            "severity": a.severity,
            "version": a.version.version,
            "metric": a.metric,
            "feature": a.feature,
            "value": a.value,
            "threshold": a.threshold,
        }
        for a in incident.alerts.select_related("version").order_by("created_at", "id")
    ]
    outcome: dict = {"kind": incident.kind, "severity": incident.severity, "alerts": alerts}
    opening = incident.events.filter(kind=EventKind.OPENED).order_by("at", "id").first()
    if opening is not None:
        outcome["opened"] = {"by": opening.actor, "message": opening.message, "data": opening.data}
    if alerts:
        first = alerts[0]
        message = (
            f"raised by {len(alerts)} alert(s), first: {first['severity']} {first['kind']} "
            f"{first['metric']} {first['value']} against {first['threshold']}"
        )
    else:
        message = f"raised: {opening.message if opening else incident.title}"
    return StepResult(StepStatus.DONE, outcome, message)


def notify_ethics_officer(run: StepRun, incident: Incident, now: datetime) -> StepResult:
    """Page the Ethics Officer about the incident (once, whoever asks first)."""
    outcome = _page_about_incident(
        incident,
        run,
        role=Role.ETHICS_OFFICER,
        subject=f"[{incident.model.name}] {incident.severity} {incident.kind} incident "
        f"{incident.pk}: {incident.title}",
    )
    state = "already paged" if outcome["already_paged"] else "paged"
    return StepResult(StepStatus.DONE, outcome, f"Ethics Officer {state}")


def serve_stale(run: StepRun, incident: Incident, now: datetime) -> StepResult:
    """The gateway serves stale answers by itself; this step documents its fallback state."""
    name = incident.model.name
    cached = StalePrediction.objects.filter(model_name=name).count()
    halt = active_halt(GLOBAL) or active_halt(name)
    outcome = {
        "model": name,
        "stale_predictions": cached,
        "halt_active": halt is not None,
        "halt": halt.pk if halt else None,
    }
    if halt is not None:
        message = f"halt of {halt.scope} in force: the gateway refuses, stale answers included"
    elif cached:
        message = f'{cached} cached predictions of {name} served with "stale": true'
    else:
        message = f"no cached prediction of {name}: requests get 503 until service is restored"
    return StepResult(StepStatus.DONE, outcome, message)


def page_oncall(run: StepRun, incident: Incident, now: datetime) -> StepResult:
    outcome = _page_about_incident(
        incident,
        run,
        role=Role.ONCALL,
        subject=f"[{incident.model.name}] outage: incident {incident.pk}: {incident.title}",
    )
    return StepResult(StepStatus.DONE, outcome, "on-call paged")


def rollback_when_critical(run: StepRun, incident: Incident, now: datetime) -> StepResult:
    """Critical: roll the live version back now. Otherwise a person decides (spec 5.2)."""
    if incident.severity != "critical":
        return _wait_for_rollback_decision(run, incident, now)
    live = live_lifecycle(incident.model)
    if live is None:
        return StepResult(
            StepStatus.DONE, {"rollback": None}, "critical, but no version serves: nothing to roll"
        )
    existing = Rollback.objects.filter(from_version=live.version).first()
    if existing is None and incident.version_id:
        existing = Rollback.objects.filter(from_version_id=incident.version_id).first()
    if existing is not None:
        return StepResult(
            StepStatus.DONE,
            {"rollback": existing.pk, "already_requested": True},
            f"rollback {existing.pk} of {existing.from_version.version} already requested",
        )
    if why := successor_serves(incident, live):
        raise PremiseFailed(f"{why} (rolled back or replaced meanwhile)")
    rollback = rollback_create(
        incident=incident,
        version=live.version,
        reason=f"playbook {incident.playbook} step {run.order}: critical incident {incident.pk}",
        actor=SYSTEM,
        automatic=True,
    )
    return StepResult(
        StepStatus.DONE,
        {"rollback": rollback.pk if rollback else None, "from_version": live.version.version},
        f"critical: rollback of {live.version.version} requested",
    )


def _wait_for_rollback_decision(run: StepRun, incident: Incident, now: datetime) -> StepResult:
    """Not critical: the step waits for its roles, due as long after now as the playbook gives
    it after the opening (no deadline: none). A deadline of 0 means "immediately": due at the
    opening, its roles paged about the incident now, and no overdue reminder follows."""
    immediate = is_immediate(run, incident)
    due_at = None
    if run.due_at is not None:
        due_at = incident.created_at if immediate else now + (run.due_at - incident.created_at)
    if immediate:
        page_step_roles(incident, run, actor=SYSTEM.label)
    roles = ", ".join(run.roles) or run.escalate_to
    return StepResult(
        StepStatus.WAITING,
        {
            "severity": incident.severity,
            "decide": list(run.decisions),
            "roles": run.roles,
            "immediate": immediate,
        },
        f"severity {incident.severity}: waiting for {roles} to decide "
        f"{' or '.join(run.decisions) or 'whether to roll back'}" + (" now" if immediate else ""),
        due_at=due_at,
    )


# The playbook's task names (stored in ``PlaybookStep.task``) and the function performing each.
ACTIONS: dict[str, Callable[[StepRun, Incident, datetime], StepResult]] = {
    "raise": record_what_raised_the_incident,
    "notify_ethics_officer": notify_ethics_officer,
    "serve_stale": serve_stale,
    "page_oncall": page_oncall,
    "rollback_when_critical": rollback_when_critical,
}
