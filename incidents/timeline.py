"""Appending to an incident's timeline (inside the caller's transaction)."""

from __future__ import annotations

from django.utils import timezone

from .models import Incident, IncidentEvent


def add_event(
    incident: Incident, *, kind: str, actor: str, message: str, data: dict | None = None
) -> IncidentEvent:
    return IncidentEvent.objects.create(
        incident=incident,
        at=timezone.now(),
        actor=actor[:200],
        kind=kind,
        message=message,
        data=data or {},
    )
