"""Query parameters of the monitoring endpoints, parsed strictly: a bad one is a 400 naming it.

Lenient parsers turned ``?since=nan`` into ``NaT`` and then a 500; these accept only what they
document.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from platform_core.errors import InvalidInput

from . import store

# ISO 8601 as a person or a client library writes it: a date, or a date-time with optional
# seconds, fraction and offset. Anything else (nan, NaT, inf, now, 1e9, a 5-digit year) is a 400.
_ISO_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}"
    r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?(?:Z|z|[+-]\d{2}(?::?\d{2})?)?)?",
    re.ASCII,
)
_DIGITS = re.compile(r"\d{1,12}", re.ASCII)
EARLIEST_QUERY = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_QUERY = datetime(2200, 1, 1, tzinfo=UTC)


def query_datetime(params, name: str) -> datetime | None:
    """A strictly parsed ISO 8601 query parameter, in UTC (naive: UTC); 400 naming it."""
    text = params.get(name)
    if text is None or text == "":
        return None
    message = (
        "must be an ISO 8601 date or date-time, e.g. 2026-01-05 or 2026-01-05T10:00:00Z, "
        f"between {EARLIEST_QUERY.year} and {LATEST_QUERY.year}"
    )
    text = text.strip()
    if not _ISO_DATETIME.fullmatch(text):
        raise InvalidInput({name: message})
    try:
        value = datetime.fromisoformat(text.replace(",", "."))
    except ValueError:  # month 13, day 32, hour 25...
        raise InvalidInput({name: message}) from None
    value = store.as_utc(value)
    if not EARLIEST_QUERY <= value < LATEST_QUERY:
        raise InvalidInput({name: message})
    return value


def query_text(params, name: str, *, max_length: int = 100) -> str | None:
    """A plain text query parameter: printable, at most ``max_length`` characters; 400 naming it."""
    text = params.get(name)
    if text is None or text == "":
        return None
    if len(text) > max_length or not text.isprintable():
        raise InvalidInput({name: f"must be printable text of at most {max_length} characters"})
    return text


def query_count(params, name: str, *, minimum: int, maximum: int | None = None) -> int | None:
    """A whole number parameter (digits only, no sign, space or exponent); 400 naming it."""
    text = params.get(name)
    if text is None or text == "":
        return None
    value = int(text) if _DIGITS.fullmatch(text) else None
    if value is None or value < minimum or (maximum is not None and value > maximum):
        bound = f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"
        raise InvalidInput({name: f"must be a whole number {bound}"})
    return value
