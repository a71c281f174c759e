"""Paging a role about an incident: one page per incident, person and event.

Every page about an incident goes through ``page_role``, whose dedup key is
``incident-{pk}-page-{role}`` for the incident itself (the alert that opened it, the halt that
opened or came with it, the playbook's "notify" step: one event for the person paged) and
``incident-{pk}-page-{role}-{event}`` for a later event the person must act on again (a new halt
within the incident). So the alert router, the ethics check and the playbook can each ask, and
the person is paged once. The outbox (``incidents.notifications``) falls back to email when a
page cannot be sent.
"""

from __future__ import annotations

from .models import Channel, EventKind, Incident, Notification, StepRun
from .notifications import notify_role
from .timeline import add_event


def incident_key(incident: Incident) -> str:
    """The paging service's key for the incident: every page about it, its overdue steps
    included, triggers (and later resolves) that one incident there."""
    return f"incident-{incident.pk}"


def page_key(incident: Incident, role: str, event: str = "") -> str:
    return f"incident-{incident.pk}-page-{role}" + (f"-{event}" if event else "")


def role_paged(incident: Incident, role: str) -> bool:
    """Whether ``role`` was already paged about the incident itself."""
    return Notification.objects.filter(dedup_key=page_key(incident, role)).exists()


def page_role(
    incident: Incident,
    *,
    role: str,
    subject: str,
    body: str,
    actor: str,
    event: str = "",
    data: dict | None = None,
) -> tuple[Notification, bool]:
    """Write the page (inside the caller's transaction) and note it on the timeline once;
    returns (the outbox row, whether it is new)."""
    notification, created = notify_role(
        channel=Channel.PAGE,
        role=role,
        incident=incident,
        subject=subject,
        body=body,
        dedup_key=page_key(incident, role, event),
        incident_key=incident_key(incident),
    )
    if created:
        add_event(
            incident,
            kind=EventKind.NOTIFICATION,
            actor=actor,
            message=f"paging {role}: {subject}",
            data={**(data or {}), "role": role, "notification": notification.pk},
        )
    return notification, created


def page_step_roles(incident: Incident, run: StepRun, *, actor: str) -> None:
    """A step due immediately (deadline 0) pages its roles when it starts waiting; a role paged
    about the incident already is not paged again (the same event for that person)."""
    for role in run.roles:
        page_role(
            incident,
            role=role,
            subject=f"[{incident.model.name}] incident {incident.pk}: act now: {run.action}",
            body=f"Playbook {incident.playbook} step {run.order}: {run.action}.",
            actor=actor,
        )
