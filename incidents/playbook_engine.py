"""Running an incident's playbook: the steps are data (``Playbook``/``PlaybookStep``), and each
incident holds a snapshot of them as ``StepRun`` rows.

``playbook_start`` (inside the transaction that opens the incident) writes one ``StepRun`` per
step: automated steps ``pending``, human steps ``waiting`` for their roles with a due time counted
from the incident's opening. After commit the ``incidents.run_playbook`` task runs the automated
steps in order (``playbook_advance``, the functions of ``incidents.steps.automated``); people
complete theirs (``incidents.steps.human.step_complete``); the beat task escalates overdue ones
(``steps_escalate_overdue``). When every step but the review is finished the incident is resolved
(``incidents.resolution``). Playbooks are edited (admin) only through the audited services of
``playbook_editing``; running incidents keep their copy.

A deadline of 0 means "immediately": the step is due at the opening, its roles are paged about
the incident when it starts waiting (the one page per incident and person, ``incidents.paging``)
and no overdue reminder follows a minute later.

Locks are always taken in the same order - model, incident, step - the order the lifecycle and the
alert router use, so concurrent workers and people serialise instead of deadlocking. Each step
commits its effect, its status and its audit event together: a redelivered task finds the step
finished and does nothing twice.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from governance import audit
from governance.audit import Actor
from governance.premises import Premise, PremiseFailed
from platform_core.errors import NotFound
from platform_core.tasking import enqueue_on_commit
from registry.models import RegisteredModel

from .models import (
    ACTIVE_STATUSES,
    Channel,
    EventKind,
    Incident,
    Playbook,
    StepRun,
    StepStatus,
)
from .notifications import notify_role
from .paging import incident_key, page_step_roles
from .resolution import incident_resolve_if_finished
from .steps import SYSTEM, StepResult, is_immediate
from .steps.automated import ACTIONS
from .timeline import add_event

logger = logging.getLogger(__name__)

FINISHED_STEP_STATUSES = (StepStatus.DONE, StepStatus.SKIPPED, StepStatus.FAILED)


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
    for run in runs:
        if run.status == StepStatus.WAITING and is_immediate(run, incident):
            page_step_roles(incident, run, actor=actor.label)
    enqueue_on_commit("incidents.run_playbook", incident.pk)
    return list(incident.steps.all())


def lock_incident(incident_id: int) -> Incident:
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


# --- automated steps ------------------------------------------------------------------------


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
        incident = lock_incident(incident_id)
        run = StepRun.objects.select_for_update().filter(pk=step_id).first()
        if run is None or run.status != StepStatus.PENDING:
            return None
        now = timezone.now()
        run.attempts += 1
        run.started_at = run.started_at or now
        if incident.status not in ACTIVE_STATUSES:
            return _skip_step(incident, run, now, f"incident {incident.pk} is {incident.status}")
        try:
            result = _perform(run, incident, now)
        except PremiseFailed as failed:
            return _skip_step(incident, run, now, failed.reason)
        _record_result(incident, run, result, now)
        incident_resolve_if_finished(incident, actor=SYSTEM)
    return {"step": run.order, "task": run.task, "status": run.status, "outcome": run.outcome}


def _perform(run: StepRun, incident: Incident, now: datetime) -> StepResult:
    """The step's action in a savepoint: an error rolls its effect back and fails the step."""
    action = ACTIONS.get(run.task)
    if action is None:
        known = ", ".join(sorted(ACTIONS))
        return StepResult(
            StepStatus.FAILED,
            {},
            f"unknown task '{run.task}'",
            error=f"unknown task '{run.task}'; known tasks: {known}",
        )
    try:
        with transaction.atomic():
            return action(run, incident, now)
    except PremiseFailed:
        raise
    except Exception as exc:  # the effect rolled back; the step fails visibly
        logger.exception("incident %s step %s (%s) failed", incident.pk, run.order, run.task)
        error = f"{type(exc).__name__}: {exc}"
        return StepResult(StepStatus.FAILED, {}, f"failed: {error}", error=error)


def _record_result(incident: Incident, run: StepRun, result: StepResult, now: datetime) -> None:
    """Store the step's status and outcome, with its timeline line and audit event."""
    run.status = result.status
    run.outcome = result.outcome
    run.last_error = result.error
    if result.due_at is not None:
        run.due_at = result.due_at
    if result.status in FINISHED_STEP_STATUSES:
        run.completed_at = now
        run.completed_by = SYSTEM.label
    run.save()
    _step_event(incident, run, f"{run.status}: {result.message}")
    if result.status == StepStatus.FAILED:
        notify_role(
            channel=Channel.EMAIL,
            role=run.escalate_to,
            incident=incident,
            subject=f"[{incident.model.name}] incident {incident.pk}: automated step "
            f"{run.order} failed",
            body=f"{run.action}: {result.error}",
            dedup_key=f"step-{run.pk}-failed",
        )
    audit.record(
        actor=SYSTEM,
        action="incidents.step_done",
        obj=run,
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


def _step_event(incident: Incident, run: StepRun, what: str) -> None:
    """The timeline line of an automated step that has just been stored."""
    add_event(
        incident,
        kind=EventKind.STEP,
        actor=SYSTEM.label,
        message=f"step {run.order} ({run.action}): {what}",
        data={"step": run.order, "task": run.task, "status": run.status},
    )


def _skip_step(incident: Incident, run: StepRun, now: datetime, reason: str) -> dict:
    """The step's premise failed: it ends skipped with the reason; nothing else is done."""
    run.status = StepStatus.SKIPPED
    run.outcome = {"skipped": reason}
    run.completed_at = now
    run.completed_by = SYSTEM.label
    run.save()
    _step_event(incident, run, f"skipped: {reason}")
    skipped = _step_premise(incident, run).skip(
        reason, obj=run, incident=incident.pk, step=run.order, step_task=run.task
    )
    incident_resolve_if_finished(incident, actor=SYSTEM)
    return {**skipped, "step": run.order, "task": run.task, "outcome": run.outcome}


# --- overdue human steps --------------------------------------------------------------------


def steps_escalate_overdue(*, now: datetime | None = None) -> int:
    """Page and email the escalation role of every overdue waiting step, once per step.

    Immediate steps (deadline 0) are not reminded: their roles were paged when they started
    waiting, and a reminder a minute later would be a second page for the same event.
    """
    now = now or timezone.now()
    due = list(
        StepRun.objects.filter(status=StepStatus.WAITING, due_at__lt=now, escalated_at__isnull=True)
        .exclude(due_at__lte=F("incident__created_at"))
        .order_by("due_at", "id")
        .values_list("incident_id", "pk")
    )
    count = 0
    for incident_id, pk in due:
        with transaction.atomic():
            incident = lock_incident(incident_id)
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
    # one notice, paged and emailed
    notice = {"role": run.escalate_to, "incident": incident, "subject": subject, "body": body}
    page, _ = notify_role(
        channel=Channel.PAGE,
        dedup_key=f"step-{run.pk}-overdue-page",
        incident_key=incident_key(incident),
        **notice,
    )
    email, _ = notify_role(
        channel=Channel.EMAIL, dedup_key=f"step-{run.pk}-overdue-email", **notice
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
