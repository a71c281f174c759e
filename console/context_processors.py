"""What every page shows: the halts in force that the user may know about (the red banner),
and how much waits for the user (the count beside My work).

Both are lazy: read when a template shows them, so a fragment without the navigation (the
overview's refreshed table) costs none of their queries."""

from __future__ import annotations

from functools import cache

from django.utils.functional import SimpleLazyObject

from . import selectors
from .work import nav_work


def halts(request) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}

    def engaged() -> list:
        names = list(selectors.readable_models(user).values_list("name", flat=True))
        return selectors.active_halts(names)

    return {"engaged_halts": SimpleLazyObject(engaged)}


def work(request) -> dict:
    """The count beside My work: a fixed number of queries (``console.work``)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}

    @cache
    def counted():
        return getattr(request, "my_work", None) or nav_work(user)  # My work made the whole list

    return {
        "work_count": SimpleLazyObject(lambda: counted().count),
        "may_read_audit": SimpleLazyObject(lambda: counted().may_read_audit),
    }
