"""Playbook steps: ``automated`` (what the platform performs, by task name) and ``human`` (what
people complete, with their decisions). ``incidents.playbook_engine`` runs them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from governance.audit import Actor

from ..models import Incident, StepRun

SYSTEM = Actor.system("incidents.playbooks")


@dataclass
class StepResult:
    """What an automated action did: the step's new status, its outcome and a timeline line."""

    status: str
    outcome: dict
    message: str
    due_at: datetime | None = None
    error: str = ""


def is_immediate(run: StepRun, incident: Incident) -> bool:
    """A step whose deadline is 0 ("immediately"): due the moment the incident opened."""
    return run.due_at is not None and run.due_at <= incident.created_at
