"""What every page shows: the halts in force that the user may know about (the red banner)."""

from __future__ import annotations

from . import selectors


def halts(request) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    names = list(selectors.readable_models(user).values_list("name", flat=True))
    return {"engaged_halts": selectors.active_halts(names)}
