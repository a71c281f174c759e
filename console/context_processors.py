"""What every page shows: the halts in force that the user may know about (the red banner),
and how much waits for the user (the count beside My work)."""

from __future__ import annotations

from . import selectors
from .work import nav_work


def halts(request) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    names = list(selectors.readable_models(user).values_list("name", flat=True))
    return {"engaged_halts": selectors.active_halts(names)}


def work(request) -> dict:
    """The count beside My work: a fixed number of queries (``console.work``)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    work = getattr(request, "my_work", None) or nav_work(user)  # My work made the whole list
    return {"work_count": work.count, "may_read_audit": work.may_read_audit}
