"""Building blocks for incident tests: a model with v1 in warm standby and v2 live, alerts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

import time_machine
from django.utils import timezone

from governance.audit import Actor
from governance.models import EvidenceKind, Lifecycle
from monitoring import runs
from monitoring.models import Alert
from tests.governance.lifecycle_helpers import (
    evidence,
    new_version,
    person,
    sign_promotion,
    step,
    to_production_first,
    to_staging,
)

SYSTEM = Actor.system("tests")
_windows = count()


def promote_successor(previous, version_text: str):
    successor = new_version(version_text, model=previous.model)
    to_staging(successor)
    evidence(successor, EvidenceKind.SHADOW)
    sign_promotion(successor)
    with time_machine.travel(timezone.now() + timedelta(days=8), tick=True):
        step(successor, "promote", actor=person("ci"))
    return successor


def live_pair():
    """(v1 in warm standby, v2 in production) of one model."""
    v1 = new_version("1.0.0")
    to_production_first(v1)
    v2 = promote_successor(v1, "1.1.0")
    return v1, v2


def live_single():
    version = new_version("1.0.0")
    to_production_first(version)
    return version


def stage(version) -> str:
    return Lifecycle.objects.get(version=version).stage


def alert_on(version, check: str = "fairness", severity: str = "critical") -> Alert:
    """A committed alert of a fresh monitor run (one run per window, so alerts never collide)."""
    window_end = datetime(2026, 3, 1, tzinfo=UTC) - timedelta(days=next(_windows))
    run = runs.run_create(
        model=version.model,
        version=version,
        check=check,
        window_end=window_end,
        trigger="schedule",
        actor=SYSTEM,
    )
    return alert_of(run, severity)


def alert_of(run, severity: str) -> Alert:
    """An alert of ``run`` (its model, version, check and window) with placeholder numbers."""
    return Alert.objects.create(
        run=run,
        model=run.model,
        version=run.version,
        kind=run.kind,
        severity=severity,
        metric="m",
        value=1.0,
        threshold=0.5,
        window_start=run.window_start,
        window_end=run.window_end,
    )
