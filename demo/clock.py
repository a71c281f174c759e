"""The demo's clock: history that happened weeks before the seeding, written as it would have been.

A model whose production data starts weeks ago was registered, approved and promoted before that
data, so its audit events, approvals, evidence and stage times must carry those earlier times. The
demo does not edit rows afterwards (the audit chain's digests cover ``created_at``): it runs the
same services with the process clock moved back (``time_machine``, a development dependency that
``bin/install`` installs), so every timestamp, the audit chain's included, is written as the
services write it.

The audit log stays in time order: the clock goes back only when no event in the log is at or after
the start, and only moves forward from there; after the block, time is the real time again, later
than everything written inside it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from governance.models import AuditEvent


class Clock:
    """Moves the back-dated time on between steps (days of review between two stages)."""

    def __init__(self, traveller=None) -> None:
        self._traveller = traveller

    @property
    def back_dated(self) -> bool:
        return self._traveller is not None

    def advance(self, by: timedelta) -> None:
        if self._traveller is not None:
            self._traveller.shift(by)


@contextmanager
def back_dated(start: datetime, say: Callable[[str], None]) -> Iterator[Clock]:
    """Run the block with the clock at ``start`` (ticking), if the audit log allows it.

    A log with an event at or after ``start`` (a database seeded before, or used for something
    else) cannot take earlier events without going out of time order: the block then runs at
    the real time, and says so.
    """
    later = AuditEvent.objects.filter(created_at__gte=start).order_by("seq").first()
    if later is not None:
        say(
            f"the audit log has events from {later.created_at:%Y-%m-%d %H:%M} UTC on: the history "
            f"meant for {start:%Y-%m-%d} is written at today's date instead"
        )
        yield Clock()
        return
    try:
        import time_machine
    except ImportError:  # an install without the development extras
        say(
            "time-machine is not installed (pip install '.[dev]', as bin/install does): the "
            f"history meant for {start:%Y-%m-%d} is written at today's date instead"
        )
        yield Clock()
        return

    say(f"the clock goes back to {start:%Y-%m-%d %H:%M} UTC for the history before the data")
    with time_machine.travel(start, tick=True) as traveller:
        yield Clock(traveller)
