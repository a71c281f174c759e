"""Building blocks for incident tests: a model with v1 in warm standby and v2 live, alerts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

from governance.models import Lifecycle
from monitoring import runs
from monitoring.models import Alert
from tests.factories import alert_of
from tests.governance.lifecycle_helpers import (
    SYSTEM,
    new_version,
    promote_successor,
    to_production_first,
)

_windows = count()


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
