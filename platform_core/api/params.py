"""Query parameters parsed strictly: a malformed value is a 400 naming the parameter, never a
silently ignored filter or a 500 from the database."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

from platform_core.errors import InvalidInput

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def int_param(
    params, name: str, *, default: int | None = None, minimum: int = 0, maximum: int = 2**31 - 1
) -> int | None:
    """A whole number in ``[minimum, maximum]``; absent or empty gives ``default``."""
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    text = raw.strip()
    if not re.fullmatch(r"[+-]?\d{1,12}", text) or not minimum <= int(text) <= maximum:
        raise InvalidInput({name: f"must be an integer from {minimum} to {maximum}, not '{raw}'"})
    return int(text)


def bool_param(params, name: str, *, default: bool | None = None) -> bool | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidInput({name: f"must be true or false, not '{raw}'"})


def choice_param(params, name: str, choices: Iterable[str]) -> str | None:
    """One of ``choices``; absent or empty gives None."""
    allowed = [str(c) for c in choices]
    raw = params.get(name)
    if not raw:
        return None
    if raw not in allowed:
        raise InvalidInput({name: f"'{raw}' is not one of {', '.join(allowed)}"})
    return raw


def choices_param(params, name: str, choices: Iterable[str]) -> list[str] | None:
    """A comma-separated list of ``choices`` (``?status=open,resolved``); every item checked."""
    allowed = [str(c) for c in choices]
    raw = params.get(name)
    if not raw:
        return None
    items = [item.strip() for item in raw.split(",") if item.strip()]
    unknown = [item for item in items if item not in allowed]
    if unknown or not items:
        raise InvalidInput(
            {name: f"'{', '.join(unknown) or raw}' is not one of {', '.join(allowed)}"}
        )
    return items


def datetime_param(params, name: str) -> datetime | None:
    """An ISO 8601 date or date-time (naive and bare dates are UTC); absent gives None."""
    raw = params.get(name)
    if not raw:
        return None
    # An unencoded '+' of a UTC offset arrives as a space: "...T14:00:00 02:00".
    text = re.sub(r"(\d\d:\d\d(?::\d\d(?:\.\d+)?)?) (\d\d:?\d\d)$", r"\1+\2", raw.strip())
    try:
        parsed = datetime.fromisoformat(text)
        parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)  # year 1 at +14:00 falls off the calendar here, not in SQL
    except (ValueError, OverflowError):
        raise InvalidInput(
            {name: f"'{raw}' is not an ISO 8601 date or datetime, e.g. 2025-06-01T12:00:00Z"}
        ) from None
