"""Opening incidents: one entry point for the alert router, the ethics check and the gateway's
outage hook, so every incident starts the same way (opening event, playbook, triggering alert)."""

from __future__ import annotations

from governance.audit import Actor
from registry.models import ModelVersion, RegisteredModel

from .models import ACTIVE_STATUSES, EventKind, Incident, IncidentKind
from .playbook_engine import playbook_start
from .timeline import add_event

# Which playbook of the specification (section 7) each kind of incident runs.
PLAYBOOK = {
    IncidentKind.PERFORMANCE: "1",
    IncidentKind.FAIRNESS: "2",
    IncidentKind.ETHICS: "2",
    IncidentKind.OUTAGE: "3",
}


def incident_active(model: RegisteredModel, kind: str) -> Incident | None:
    """The model's oldest open or mitigating incident of ``kind``: what a new signal joins."""
    return (
        Incident.objects.filter(model=model, kind=kind, status__in=ACTIVE_STATUSES)
        .order_by("created_at", "id")
        .first()
    )


def incident_open(
    *,
    model: RegisteredModel,
    kind: str,
    severity: str,
    title: str,
    version: ModelVersion | None,
    actor: Actor,
    message: str,
    data: dict | None = None,
    alert=None,
) -> Incident:
    """Open an incident running its kind's playbook, inside the caller's transaction (which
    holds the model's row lock, so concurrent signals open one incident, not two)."""
    incident = Incident.objects.create(
        kind=kind,
        severity=severity,
        playbook=PLAYBOOK.get(kind, ""),
        title=title[:300],
        model=model,
        version=version,
        opened_by=actor.label[:200],
    )
    add_event(
        incident,
        kind=EventKind.OPENED,
        actor=actor.label,
        message=message,
        data={**(data or {}), "playbook": incident.playbook},
    )
    if alert is not None:
        incident.alerts.add(alert)
    playbook_start(incident, actor=actor)
    return incident
