"""Query parameters parsed strictly: a malformed value is a 400 naming the parameter, never a
silently ignored filter or a 500 from the database.

One rule per kind of value, for every endpoint: lenient parsers once turned ``?since=nan`` into
``NaT`` and a 500, and accepted ``+5`` here but not there; these accept only what they document.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

from platform_core.errors import InvalidInput

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}
_DIGITS = re.compile(r"\d{1,12}", re.ASCII)
# ISO 8601 as a person or a client library writes it: a date, or a date-time with optional
# seconds, fraction and offset. Anything else (nan, NaT, inf, now, 1e9, a 5-digit year) is a 400.
_ISO_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}"
    r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?(?:Z|z|[+-]\d{2}(?::?\d{2})?)?)?",
    re.ASCII,
)
# An unencoded '+' of a UTC offset arrives as a space: "...T14:00:00 02:00".
_SPACE_FOR_PLUS = re.compile(r"(\d\d:\d\d(?::\d\d(?:[.,]\d+)?)?) (\d\d:?\d\d)$", re.ASCII)
EARLIEST_QUERY = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_QUERY = datetime(2200, 1, 1, tzinfo=UTC)
DATETIME_RULE = (
    "must be an ISO 8601 date or date-time, e.g. 2026-01-05 or 2026-01-05T10:00:00Z, "
    f"between {EARLIEST_QUERY.year} and {LATEST_QUERY.year}"
)


def int_param(
    params, name: str, *, default: int | None = None, minimum: int = 0, maximum: int | None = None
) -> int | None:
    """A whole number in ``[minimum, maximum]`` written with digits only (no sign, space,
    fraction or exponent); absent or empty gives ``default``."""
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    value = int(raw) if _DIGITS.fullmatch(raw) else None
    if value is None or value < minimum or (maximum is not None and value > maximum):
        bound = f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"
        raise InvalidInput({name: f"must be a whole number {bound}"})
    return value


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


def text_param(params, name: str, *, max_length: int = 100) -> str | None:
    """Plain text: printable, at most ``max_length`` characters; absent or empty gives None."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > max_length or not raw.isprintable():
        raise InvalidInput({name: f"must be printable text of at most {max_length} characters"})
    return raw


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
    """An ISO 8601 date or date-time in UTC (naive ones and bare dates are UTC) from 1970 to
    2200, so that nothing the database cannot hold reaches a query; absent gives None."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    text = _SPACE_FOR_PLUS.sub(r"\1+\2", raw.strip())
    if not _ISO_DATETIME.fullmatch(text):
        raise InvalidInput({name: DATETIME_RULE})
    try:
        value = datetime.fromisoformat(text.replace(",", "."))
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError):  # month 13, hour 25, year 1 at +14:00...
        raise InvalidInput({name: DATETIME_RULE}) from None
    if not EARLIEST_QUERY <= value < LATEST_QUERY:
        raise InvalidInput({name: DATETIME_RULE})
    return value
