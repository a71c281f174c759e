"""How an incident ends: resolved once every playbook step is finished, then reviewed.

``incident_resolve_if_finished`` is called by whatever finishes a step (the playbook engine, a
person, a completed rollback); the post-incident review step is due 48 hours after the
resolution or after a completed rollback (spec 5.2). Everything runs inside the caller's
transaction, which holds the model and incident locks.
"""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Max
from django.utils import timezone

from governance import audit
from governance.audit import Actor
from governance.roles import Role
from monitoring.alerts import alerts_resolve_with_incident

from .models import (
    ACTIVE_STATUSES,
    OPEN_STEP_STATUSES,
    Channel,
    EventKind,
    Incident,
    IncidentStatus,
    Notification,
    RollbackStatus,
    StepRun,
    StepStatus,
)
from .notifications import notify_role
from .paging import incident_key
from .timeline import add_event

REVIEW_AFTER = timedelta(hours=48)
REVIEW_ROLES = [Role.ML_ENGINEER.value, Role.ML_LEAD.value, Role.ETHICS_OFFICER.value]
IN_FLIGHT_ROLLBACK = (RollbackStatus.REQUESTED, RollbackStatus.SWITCHED, RollbackStatus.VERIFIED)


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
    resolved_roles = resolve_pages(incident)
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


def resolve_pages(incident: Incident) -> list[str]:
    """One PagerDuty ``resolve`` per role paged on the incident, with the trigger's key."""
    paged = (
        Notification.objects.filter(incident=incident, channel=Channel.PAGE, event="trigger")
        .exclude(incident_key="")
        .order_by("role", "incident_key")
        .values_list("role", "incident_key")
        .distinct()
    )
    default_key = incident_key(incident)
    roles = []
    for role, key in paged:
        suffix = "" if key == default_key else f"-{key}"
        _, created = notify_role(
            channel=Channel.PAGE,
            role=role,
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


def incident_set_reviewed(incident: Incident, *, note: str, actor: Actor) -> None:
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
        resolve_pages(incident)
    audit.record(
        actor=actor,
        action="incidents.status_changed",
        obj=incident,
        before={"status": previous},
        after={"status": incident.status, "review_notes": note},
        reason=note,
    )
