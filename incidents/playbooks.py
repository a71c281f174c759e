"""Incidents run their playbook: the steps are data (``Playbook``/``PlaybookStep``), and each
incident holds a snapshot of them as ``StepRun`` rows.

``playbook_start`` (inside the transaction that opens the incident) writes one ``StepRun`` per
step: automated steps ``pending``, human steps ``waiting`` for their roles with a due time counted
from the incident's opening. After commit the ``incidents.run_playbook`` task runs the automated
steps in order (``playbook_advance``); people complete theirs (``step_complete``); the beat task
escalates overdue ones (``steps_escalate_overdue``). When every step but the review is finished the
incident is resolved (``incident_resolved``: review due in 48 h, paging alerts resolved).
Playbooks are edited (admin) only through the audited services of ``playbook_editing``; running
incidents keep their copy.

Locks are always taken in the same order - model, incident, step - the order the lifecycle and the
alert router use, so concurrent workers and people serialise instead of deadlocking. Each step
commits its effect, its status and its audit event together: a redelivered task finds the step
finished and does nothing twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from governance import audit
from governance.audit import Actor
from governance.lifecycle import live_lifecycle
from governance.permissions import can, roles_of
from governance.premises import Premise, PremiseFailed
from governance.roles import Action, Role
from monitoring.alerts import alerts_resolve_with_incident
from registry.errors import Conflict, Forbidden, InvalidInput, NotFound
from registry.models import RegisteredModel

from .models import (
    ACTIVE_STATUSES,
    OPEN_STEP_STATUSES,
    Channel,
    EventKind,
    Incident,
    IncidentStatus,
    Notification,
    Playbook,
    Rollback,
    RollbackStatus,
    StepRun,
    StepStatus,
)
from .notifications import notify_role
from .rollback import REVIEW_AFTER, rollback_create
from .timeline import add_event

logger = logging.getLogger(__name__)

SYSTEM = Actor.system("incidents.playbooks")
FINISHED_STEP_STATUSES = (StepStatus.DONE, StepStatus.SKIPPED, StepStatus.FAILED)
NOT_APPLICABLE = "not_applicable"
# Decisions that act instead of rolling back need no justification; any other decision on a step
# offering "rollback" is a decision not to roll back (spec 5.2: "No -> document justification").
ACTING_DECISIONS = frozenset({"rollback", "halt"})
REVIEW_ROLES = [Role.ML_ENGINEER.value, Role.ML_LEAD.value, Role.ETHICS_OFFICER.value]
IN_FLIGHT_ROLLBACK = (RollbackStatus.REQUESTED, RollbackStatus.SWITCHED, RollbackStatus.VERIFIED)


def playbook_start(incident: Incident, *, actor: Actor) -> list[StepRun]:
    """Snapshot the incident's playbook into step runs (idempotent: existing runs are kept)."""
    if not incident.playbook:
        return []
    existing = list(incident.steps.all())
    if existing:
        return existing
    playbook = Playbook.objects.filter(number=incident.playbook).first()
    if playbook is None:
        return []
    opened = incident.created_at
    runs = [
        StepRun(
            incident=incident,
            step=step,
            order=step.order,
            action=step.action,
            responsible=step.responsible,
            roles=list(step.roles),
            escalate_to=step.escalate_to,
            automated=step.automated,
            task=step.task,
            condition=step.condition,
            decisions=list(step.decisions),
            is_review=step.is_review,
            status=StepStatus.PENDING if step.automated else StepStatus.WAITING,
            due_at=opened + step.deadline if step.deadline is not None else None,
        )
        for step in playbook.steps.order_by("order")
    ]
    StepRun.objects.bulk_create(runs)
    add_event(
        incident,
        kind="step",
        actor=actor.label,
        message=f"playbook {playbook.number} ({playbook.name}) started with {len(runs)} steps",
        data={"playbook": playbook.number, "steps": len(runs)},
    )
    transaction.on_commit(partial(enqueue_playbook, incident.pk), robust=True)
    return list(incident.steps.all())


def enqueue_playbook(incident_id: int) -> None:
    from .tasks import run_playbook

    run_playbook.apply_async(args=[incident_id], queue="urgent")


# --- automated steps ------------------------------------------------------------------------


@dataclass
class StepResult:
    """What an automated action did: the step's new status, its outcome and a timeline line."""

    status: str
    outcome: dict
    message: str
    due_at: datetime | None = None
    error: str = ""


def _page(incident: Incident, *, role: str, subject: str, body: str, dedup_key: str) -> dict:
    notification, created = notify_role(
        channel=Channel.PAGE,
        role=role,
        model=incident.model,
        incident=incident,
        subject=subject,
        body=body,
        dedup_key=dedup_key,
        incident_key=f"incident-{incident.pk}",
    )
    if created:
        add_event(
            incident,
            kind=EventKind.NOTIFICATION,
            actor=SYSTEM.label,
            message=f"paging {role}: {subject}",
            data={"role": role, "notification": notification.pk},
        )
    return {
        "paged": role,
        "notification": notification.pk,
        "already_paged": not created,
        "recipients": list(notification.recipients),
    }


def _raise(run: StepRun, incident: Incident, now: datetime) -> StepResult:
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


def _notify_ethics_officer(run: StepRun, incident: Incident, now: datetime) -> StepResult:
    """Page the Ethics Officer; the dedup key is routing's, so they are paged exactly once."""
    outcome = _page(
        incident,
        role=Role.ETHICS_OFFICER,
        subject=f"[{incident.model.name}] {incident.severity} {incident.kind} incident "
        f"{incident.pk}: {incident.title}",
        body=f"Playbook {incident.playbook} step {run.order}: {run.action}.",
        dedup_key=f"incident-{incident.pk}-page-{Role.ETHICS_OFFICER}",
    )
    state = "already paged" if outcome["already_paged"] else "paged"
    return StepResult(StepStatus.DONE, outcome, f"Ethics Officer {state}")


def _serve_stale(run: StepRun, incident: Incident, now: datetime) -> StepResult:
    """The gateway serves stale answers by itself; this step documents its fallback state."""
    from serving.conf import GLOBAL
    from serving.halt import active_halt
    from serving.models import StalePrediction

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


def _page_oncall(run: StepRun, incident: Incident, now: datetime) -> StepResult:
    outcome = _page(
        incident,
        role=Role.ONCALL,
        subject=f"[{incident.model.name}] outage: incident {incident.pk}: {incident.title}",
        body=f"Playbook {incident.playbook} step {run.order}: {run.action}.",
        dedup_key=f"incident-{incident.pk}-page-{Role.ONCALL}",
    )
    return StepResult(StepStatus.DONE, outcome, "on-call paged")


def _rollback_when_critical(run: StepRun, incident: Incident, now: datetime) -> StepResult:
    """Critical: roll the live version back now. Otherwise a person decides (spec 5.2)."""
    if incident.severity != "critical":
        offset = (run.due_at - incident.created_at) if run.due_at else timedelta(0)
        due_at = now + max(offset, timedelta(0))
        roles = ", ".join(run.roles) or run.escalate_to
        return StepResult(
            StepStatus.WAITING,
            {"severity": incident.severity, "decide": list(run.decisions), "roles": run.roles},
            f"severity {incident.severity}: waiting for {roles} to decide "
            f"{' or '.join(run.decisions) or 'whether to roll back'}",
            due_at=due_at,
        )
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
    if incident.version_id and live.version_id != incident.version_id:
        # rolled back or replaced since the incident opened: never roll back its successor
        raise PremiseFailed(
            f"the incident concerns {incident.version.version}, but {live.version.version} "
            "serves now (rolled back or replaced meanwhile)"
        )
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


ACTIONS: dict[str, Callable[[StepRun, Incident, datetime], StepResult]] = {
    "raise": _raise,
    "notify_ethics_officer": _notify_ethics_officer,
    "serve_stale": _serve_stale,
    "page_oncall": _page_oncall,
    "rollback_when_critical": _rollback_when_critical,
}


def _lock(incident_id: int) -> Incident:
    """Lock model then incident (the router's and the lifecycle's order); NotFound if absent."""
    model_id = Incident.objects.filter(pk=incident_id).values_list("model_id", flat=True).first()
    if model_id is None:
        raise NotFound(f"no incident {incident_id}")
    RegisteredModel.objects.select_for_update(no_key=True).filter(pk=model_id).first()
    return (
        Incident.objects.select_for_update(no_key=True, of=("self",))
        .select_related("model", "version")
        .get(pk=incident_id)
    )


def playbook_advance(incident_id: int) -> list[dict]:
    """Run the incident's pending automated steps in order, each in its own transaction.

    Human steps never block: an automated step after a waiting human one runs as well. A step
    found no longer pending (done by an earlier delivery of the task) is skipped.
    """
    pending = list(
        StepRun.objects.filter(incident_id=incident_id, automated=True, status=StepStatus.PENDING)
        .order_by("order")
        .values_list("pk", flat=True)
    )
    results = []
    for pk in pending:
        result = _run_step(incident_id, pk)
        if result is not None:
            results.append(result)
    return results


def _step_premise(incident: Incident, run: StepRun) -> Premise:
    return Premise(
        "incidents.run_playbook",
        f"incident {incident.pk} is still open and step {run.order} ({run.task}) still pending",
        model_id=incident.model_id,
        model_name=incident.model.name,
    )


def _run_step(incident_id: int, step_id: int) -> dict | None:
    """Run one pending automated step; its premise (the incident still open, the step still
    pending) is checked under the model, incident and step locks that people completing steps
    and the rollback take, and a step whose premise fails ends ``skipped``, never run."""
    with transaction.atomic():
        incident = _lock(incident_id)
        run = StepRun.objects.select_for_update().filter(pk=step_id).first()
        if run is None or run.status != StepStatus.PENDING:
            return None
        now = timezone.now()
        run.attempts += 1
        run.started_at = run.started_at or now
        action = ACTIONS.get(run.task)
        if incident.status not in ACTIVE_STATUSES:
            return _skip_step(incident, run, now, f"incident {incident.pk} is {incident.status}")
        if action is None:
            known = ", ".join(sorted(ACTIONS))
            result = StepResult(
                StepStatus.FAILED,
                {},
                f"unknown task '{run.task}'",
                error=f"unknown task '{run.task}'; known tasks: {known}",
            )
        else:
            try:
                with transaction.atomic():
                    result = action(run, incident, now)
            except PremiseFailed as failed:
                return _skip_step(incident, run, now, failed.reason)
            except Exception as exc:  # the effect rolled back; the step fails visibly
                logger.exception(
                    "incident %s step %s (%s) failed", incident_id, run.order, run.task
                )
                error = f"{type(exc).__name__}: {exc}"
                result = StepResult(StepStatus.FAILED, {}, f"failed: {error}", error=error)
        run.status = result.status
        run.outcome = result.outcome
        run.last_error = result.error
        if result.due_at is not None:
            run.due_at = result.due_at
        if result.status in FINISHED_STEP_STATUSES:
            run.completed_at = now
            run.completed_by = SYSTEM.label
        run.save()
        add_event(
            incident,
            kind=EventKind.STEP,
            actor=SYSTEM.label,
            message=f"step {run.order} ({run.action}): {run.status}: {result.message}",
            data={"step": run.order, "task": run.task, "status": run.status},
        )
        if result.status == StepStatus.FAILED:
            _email(
                incident,
                role=run.escalate_to,
                subject=f"[{incident.model.name}] incident {incident.pk}: automated step "
                f"{run.order} failed",
                body=f"{run.action}: {result.error}",
                dedup_key=f"step-{run.pk}-failed",
            )
        audit.record(
            actor=SYSTEM,
            action="incidents.step_done",
            obj=run,
            model_name=incident.model.name,
            before={"status": StepStatus.PENDING},
            after={
                "incident": incident.pk,
                "step": run.order,
                "task": run.task,
                "status": run.status,
                "outcome": run.outcome,
                "due_at": run.due_at,
            },
            reason=result.error or result.message,
        )
        incident_resolve_if_finished(incident, actor=SYSTEM)
    return {"step": run.order, "task": run.task, "status": run.status, "outcome": run.outcome}


def _skip_step(incident: Incident, run: StepRun, now: datetime, reason: str) -> dict:
    """The step's premise failed: it ends skipped with the reason; nothing else is done."""
    run.status = StepStatus.SKIPPED
    run.outcome = {"skipped": reason}
    run.completed_at = now
    run.completed_by = SYSTEM.label
    run.save()
    add_event(
        incident,
        kind=EventKind.STEP,
        actor=SYSTEM.label,
        message=f"step {run.order} ({run.action}): skipped: {reason}",
        data={"step": run.order, "task": run.task, "status": run.status},
    )
    skipped = _step_premise(incident, run).skip(
        reason, obj=run, incident=incident.pk, step=run.order, step_task=run.task
    )
    incident_resolve_if_finished(incident, actor=SYSTEM)
    return {**skipped, "step": run.order, "task": run.task, "outcome": run.outcome}


def _email(incident: Incident, *, role: str, subject: str, body: str, dedup_key: str) -> None:
    notify_role(
        channel=Channel.EMAIL,
        role=role,
        model=incident.model,
        incident=incident,
        subject=subject,
        body=body,
        dedup_key=dedup_key,
    )


# --- human steps ----------------------------------------------------------------------------


def _allowed_decisions(run: StepRun) -> list[str]:
    return [*run.decisions, *([NOT_APPLICABLE] if run.condition else [])]


def _validate(run: StepRun, *, note: str, decision: str, justification: str) -> None:
    errors: dict[str, str] = {}
    if not note.strip():
        errors["note"] = "required: what was done or found"
    allowed = _allowed_decisions(run)
    if decision and decision not in allowed:
        errors["decision"] = (
            f"'{decision}' is not offered here; one of: {', '.join(allowed)}"
            if allowed
            else f"step {run.order} takes no decision"
        )
    elif run.decisions and not decision:
        errors["decision"] = f"required: one of {', '.join(allowed)}"
    if (
        "rollback" in run.decisions
        and decision
        and decision not in ACTING_DECISIONS
        and not justification.strip()
    ):
        errors["justification"] = "required: why the live version is not rolled back"
    if errors:
        raise InvalidInput(errors)


def step_complete(
    *,
    incident_id: int,
    order: int,
    note: str,
    decision: str = "",
    justification: str = "",
    actor: Actor,
    scopes=None,
) -> StepRun:
    """A person in one of the step's roles completes a waiting step, with a note and, where the
    step offers them, a decision (acted on in the same transaction) and its justification."""
    note = (note or "").strip()
    decision = (decision or "").strip()
    justification = (justification or "").strip()
    incident = Incident.objects.select_related("model").filter(pk=incident_id).first()
    if incident is None:
        raise NotFound(f"no incident {incident_id}")
    run = incident.steps.filter(order=order).first()
    if run is None:
        raise NotFound(f"incident {incident_id} has no step {order}")
    if not run.roles:
        raise Conflict(
            f"step {order} ({run.action}) is automated ({run.task or 'no task'}): the platform "
            "performs it, nobody completes it"
        )
    held = roles_of(actor.user, model=incident.model, scopes=scopes) & set(run.roles)
    if not held:
        raise Forbidden(
            f"step {order} ({run.action}) is completed by {' or '.join(run.roles)}; you hold "
            f"none of these roles for model '{incident.model.name}'"
        )
    _validate(run, note=note, decision=decision, justification=justification)
    if decision == "rollback" and not can(
        actor.user, Action.ROLLBACK, model=incident.model, scopes=scopes
    ):
        raise Forbidden(
            f"deciding to roll back {incident.model.name} needs the 'rollback' permission"
        )
    with transaction.atomic():
        incident = _lock(incident_id)
        run = StepRun.objects.select_for_update().get(pk=run.pk)
        if run.status != StepStatus.WAITING:
            raise Conflict(
                f"step {order} is {run.status}; only a waiting step can be completed",
                reasons=[f"step {order} is {run.status}"],
            )
        if run.is_review:
            still_open = list(
                incident.steps.exclude(pk=run.pk)
                .filter(status__in=OPEN_STEP_STATUSES)
                .order_by("order")
                .values_list("order", "action", "status")
            )
            if still_open:
                raise Conflict(
                    "the post-incident review comes last: "
                    + ", ".join(f"step {o}" for o, _, _ in still_open)
                    + " still open",
                    reasons=[f"step {o} ({a}) is {s}" for o, a, s in still_open],
                )
            if incident.rollbacks.filter(status__in=IN_FLIGHT_ROLLBACK).exists():
                raise Conflict("the post-incident review waits until the rollback has finished")
        before = _step_state(run)
        effect = _decide(incident, run, decision=decision, note=note, actor=actor, scopes=scopes)
        now = timezone.now()
        run.status = StepStatus.SKIPPED if decision == NOT_APPLICABLE else StepStatus.DONE
        run.completed_at = now
        run.completed_by = actor.label[:200]
        run.note, run.decision, run.justification = note, decision, justification
        if effect:
            run.outcome = {**run.outcome, **effect}
        run.save()
        add_event(
            incident,
            kind=EventKind.DECISION if decision else EventKind.STEP,
            actor=actor.label,
            message=f"step {run.order} ({run.action}) {run.status}"
            + (f": decided {decision}" if decision else "")
            + f" - {note}"
            + (f" (justification: {justification})" if justification else ""),
            data={"step": run.order, "decision": decision, **effect},
        )
        audit.record(
            actor=actor,
            action="incidents.step_completed",
            obj=run,
            model_name=incident.model.name,
            before=before,
            after={**_step_state(run), "incident": incident.pk, "effect": effect},
            reason=justification or note,
        )
        if run.is_review:
            _set_reviewed(incident, note=note, actor=actor)
        else:
            incident_resolve_if_finished(incident, actor=actor)
    return run


def _step_state(run: StepRun) -> dict:
    return {
        "step": run.order,
        "status": run.status,
        "decision": run.decision,
        "note": run.note,
        "justification": run.justification,
        "completed_by": run.completed_by,
    }


def _decide(
    incident: Incident, run: StepRun, *, decision: str, note: str, actor: Actor, scopes
) -> dict:
    """Act on a decision inside the caller's transaction; returns what was done."""
    if decision == "rollback":
        return _decide_rollback(incident, run, note=note, actor=actor)
    if decision == "halt":
        from serving.halt import halt_engage

        halt, created = halt_engage(
            scope=incident.model.name, reason=note, actor=actor, scopes=scopes
        )
        effect = {"halt": halt.pk, "halt_engaged": created}
        incident.halt = halt
        if incident.status == IncidentStatus.OPEN:  # inference stopped: the incident is mitigated
            incident.status = effect["incident_status"] = IncidentStatus.MITIGATING
        incident.save(update_fields=["halt", "status"])
        return effect
    if decision == "escalate":
        return _page(
            incident,
            role=Role.ML_LEAD,
            subject=f"[{incident.model.name}] incident {incident.pk} escalated: {run.action}",
            body=f"Escalated by {actor.label}: {note}",
            dedup_key=f"step-{run.pk}-escalate-page",
        )
    return {}


def _decide_rollback(incident: Incident, run: StepRun, *, note: str, actor: Actor) -> dict:
    model = incident.model
    earlier = (
        Rollback.objects.filter(from_version_id=incident.version_id).first()
        if incident.version_id
        else None
    )
    if earlier is not None and earlier.incident_id == incident.pk:
        # the automatic rollback got there first: the decision confirms it
        return {"rollback": earlier.pk, "confirmed": True, "status": earlier.status}
    if earlier is not None:
        raise Conflict(
            f"{incident.version.version} is already being rolled back (or was), by incident "
            f"{earlier.incident_id}"
        )
    live = live_lifecycle(model)
    if live is None:
        raise Conflict(f"no version of {model.name} is serving; there is nothing to roll back")
    if incident.version_id and live.version_id != incident.version_id:
        raise Conflict(
            f"the incident concerns {incident.version.version}, but {live.version.version} "
            "serves now: roll that back with a new decision of its own"
        )
    rollback = rollback_create(
        incident=incident,
        version=live.version,
        reason=f"playbook {incident.playbook} step {run.order}, decided by {actor.label}: {note}",
        actor=actor,
        automatic=False,
    )
    if rollback is None:
        raise Conflict(f"{live.version.version} is already being rolled back (or was)")
    audit.record(
        actor=actor,
        action="incidents.rollback_requested",
        obj=rollback,
        model_name=model.name,
        after={"incident": incident.pk, "version": live.version.version, "automatic": False},
        reason=note,
    )
    return {"rollback": rollback.pk, "from_version": live.version.version}


# --- incident status ------------------------------------------------------------------------


def incident_resolve_if_finished(incident: Incident, *, actor: Actor) -> bool:
    """Resolve the incident once every step but the review is finished (not while a rollback
    is under way: the rollback resolves it when it completes)."""
    if incident.status not in ACTIVE_STATUSES:
        return False
    steps = incident.steps.filter(is_review=False)
    if not steps.exists() or steps.filter(status__in=OPEN_STEP_STATUSES).exists():
        return False
    if incident.rollbacks.filter(status__in=IN_FLIGHT_ROLLBACK).exists():
        return False
    previous = incident.status
    now = timezone.now()
    incident.status = IncidentStatus.RESOLVED
    incident.resolved_at = now
    incident.review_due_at = incident.review_due_at or now + REVIEW_AFTER
    incident.save(update_fields=["status", "resolved_at", "review_due_at"])
    add_event(
        incident,
        kind=EventKind.STATUS,
        actor=actor.label,
        message=f"resolved: every playbook step is finished; post-incident review due "
        f"{incident.review_due_at:%Y-%m-%d %H:%M} UTC",
        data={"status": incident.status, "from": previous},
    )
    incident_resolved(incident, actor=actor, previous_status=previous)
    return True


def review_step_ensure(incident: Incident, *, actor: Actor) -> tuple[StepRun, bool]:
    """The post-incident review step, due at ``incident.review_due_at`` (48 h after the
    resolution, or after a completed rollback): appended when the playbook has none, moved when
    the due time changed. Returns (step, whether anything changed); safe to call again."""
    if incident.review_due_at is None:
        incident.review_due_at = (incident.resolved_at or timezone.now()) + REVIEW_AFTER
        incident.save(update_fields=["review_due_at"])
    review = incident.steps.filter(is_review=True).order_by("order").first()
    changed = False
    if review is None:
        last = incident.steps.aggregate(last=Max("order"))["last"] or 0
        review = StepRun.objects.create(
            incident=incident,
            order=last + 1,
            action="Post-incident review within 48 hours",
            responsible="Full ML team (48h)",
            roles=list(REVIEW_ROLES),
            escalate_to=Role.ML_LEAD,
            is_review=True,
            status=StepStatus.WAITING,
            due_at=incident.review_due_at,
        )
        add_event(
            incident,
            kind=EventKind.STEP,
            actor=actor.label,
            message=f"step {review.order} added: post-incident review due "
            f"{incident.review_due_at:%Y-%m-%d %H:%M} UTC",
            data={"step": review.order},
        )
        changed = True
    elif review.status == StepStatus.WAITING and review.due_at != incident.review_due_at:
        review.due_at = incident.review_due_at
        review.escalated_at = None
        review.save(update_fields=["due_at", "escalated_at"])
        changed = True
    return review, changed


def incident_resolved(
    incident: Incident, *, actor: Actor, previous_status: str | None = None
) -> StepRun:
    """Follow-up of a resolution (inside its transaction): the post-incident review is due at
    ``incident.review_due_at`` - appended as a step when the playbook has none (spec 5.2: a
    rollback is followed by a review in 48 h) - and every role paged is sent a ``resolve``.
    Safe to call again: nothing is added or sent twice."""
    review, changed = review_step_ensure(incident, actor=actor)
    resolved_roles = _resolve_pages(incident)
    resolved_alerts = alerts_resolve_with_incident(
        incident.alerts.select_for_update().select_related("model", "version"),
        actor=actor,
        incident_id=incident.pk,
    )
    if not (changed or resolved_roles or resolved_alerts or previous_status):
        return review  # called again for the same resolution: nothing new to record
    audit.record(
        actor=actor,
        action="incidents.status_changed",
        obj=incident,
        model_name=incident.model.name,
        before={"status": previous_status} if previous_status else None,
        after={
            "status": incident.status,
            "resolved_at": incident.resolved_at,
            "review_due_at": incident.review_due_at,
            "review_step": review.order,
            "resolve_pages": resolved_roles,
            "resolved_alerts": resolved_alerts,
        },
        reason="resolved",
    )
    return review


def _resolve_pages(incident: Incident) -> list[str]:
    """One PagerDuty ``resolve`` per role paged on the incident, with the trigger's key."""
    paged = (
        Notification.objects.filter(incident=incident, channel=Channel.PAGE, event="trigger")
        .exclude(incident_key="")
        .order_by("role", "incident_key")
        .values_list("role", "incident_key")
        .distinct()
    )
    default_key = f"incident-{incident.pk}"
    roles = []
    for role, key in paged:
        suffix = "" if key == default_key else f"-{key}"
        _, created = notify_role(
            channel=Channel.PAGE,
            role=role,
            model=incident.model,
            incident=incident,
            subject=f"[{incident.model.name}] incident {incident.pk} resolved",
            body=f"{incident.title}: resolved; post-incident review due "
            f"{incident.review_due_at:%Y-%m-%d %H:%M} UTC"
            if incident.review_due_at
            else f"{incident.title}: resolved",
            dedup_key=f"incident-{incident.pk}-resolve-{role}{suffix}",
            event="resolve",
            incident_key=key,
        )
        if created:
            roles.append(role)
    return roles


def _set_reviewed(incident: Incident, *, note: str, actor: Actor) -> None:
    previous = incident.status
    now = timezone.now()
    incident.review_notes = note
    incident.status = IncidentStatus.REVIEWED
    incident.resolved_at = incident.resolved_at or now
    incident.save(update_fields=["review_notes", "status", "resolved_at"])
    add_event(
        incident,
        kind=EventKind.STATUS,
        actor=actor.label,
        message="reviewed: post-incident review recorded",
        data={"status": incident.status, "from": previous},
    )
    if previous in ACTIVE_STATUSES:  # reviewed without passing through resolved: close the pages
        _resolve_pages(incident)
    audit.record(
        actor=actor,
        action="incidents.status_changed",
        obj=incident,
        model_name=incident.model.name,
        before={"status": previous},
        after={"status": incident.status, "review_notes": note},
        reason=note,
    )


# --- overdue human steps --------------------------------------------------------------------


def steps_escalate_overdue(*, now: datetime | None = None) -> int:
    """Page and email the escalation role of every overdue waiting step, once per step."""
    now = now or timezone.now()
    due = list(
        StepRun.objects.filter(status=StepStatus.WAITING, due_at__lt=now, escalated_at__isnull=True)
        .order_by("due_at", "id")
        .values_list("incident_id", "pk")
    )
    count = 0
    for incident_id, pk in due:
        with transaction.atomic():
            incident = _lock(incident_id)
            run = (
                StepRun.objects.select_for_update()
                .filter(pk=pk, status=StepStatus.WAITING, escalated_at__isnull=True)
                .first()
            )
            if run is None:
                continue
            _escalate(incident, run, now=now)
            count += 1
    return count


def _escalate(incident: Incident, run: StepRun, *, now: datetime) -> None:
    late = now - run.due_at
    subject = (
        f"[{incident.model.name}] incident {incident.pk} step {run.order} overdue: {run.action}"
    )
    body = (
        f"Assigned to {', '.join(run.roles) or run.responsible}, due "
        f"{run.due_at:%Y-%m-%d %H:%M} UTC ({_minutes(late)} late)."
    )
    page, _ = notify_role(
        channel=Channel.PAGE,
        role=run.escalate_to,
        model=incident.model,
        incident=incident,
        subject=subject,
        body=body,
        dedup_key=f"step-{run.pk}-overdue-page",
        incident_key=f"incident-{incident.pk}",
    )
    email, _ = notify_role(
        channel=Channel.EMAIL,
        role=run.escalate_to,
        model=incident.model,
        incident=incident,
        subject=subject,
        body=body,
        dedup_key=f"step-{run.pk}-overdue-email",
    )
    run.escalated_at = now
    run.save(update_fields=["escalated_at"])
    add_event(
        incident,
        kind=EventKind.STEP,
        actor=SYSTEM.label,
        message=f"step {run.order} ({run.action}) overdue by {_minutes(late)}: "
        f"escalated to {run.escalate_to}",
        data={"step": run.order, "escalate_to": run.escalate_to},
    )
    audit.record(
        actor=SYSTEM,
        action="incidents.step_overdue",
        obj=run,
        model_name=incident.model.name,
        after={
            "incident": incident.pk,
            "step": run.order,
            "due_at": run.due_at,
            "escalated_at": now,
            "escalate_to": run.escalate_to,
            "notifications": [page.pk, email.pk],
        },
        reason=subject,
    )


def _minutes(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"
