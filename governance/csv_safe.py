"""CSV for people: cells a spreadsheet would run as a formula are escaped (OWASP CSV injection).

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is a formula to
Excel, LibreOffice and Google Sheets (``=HYPERLINK(...)``, ``=cmd|...``), and audit reasons,
model descriptions and feature values are typed by other people. Such a cell gets a leading
``'``: spreadsheets show the text as written, and a reader of the raw file sees why. Numbers
are written as numbers (a negative score stays ``-0.5``); only text is escaped. Every CSV the
platform writes for a person goes through ``safe_cell`` (or ``writer``/``rows_to_csv``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """``value`` as a CSV cell: text starting like a formula gets a leading ``'``.

    ``None`` becomes an empty cell, booleans and numbers pass as they are (a negative number
    is data, not a formula), anything else is written as its text.
    """
    if value is None:
        return ""
    if isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else str(value)
    if text.startswith(FORMULA_PREFIXES):
        return "'" + text
    return text


class SafeWriter:
    """``csv.writer`` whose every cell goes through ``safe_cell``."""

    def __init__(self, stream, **kwargs: Any) -> None:
        self._writer = csv.writer(stream, **kwargs)

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._writer.writerow([safe_cell(v) for v in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def writer(stream, **kwargs: Any) -> SafeWriter:
    return SafeWriter(stream, **kwargs)


def rows_to_csv(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    """The whole CSV text of ``header`` and ``rows``, formula cells escaped."""
    out = io.StringIO()
    w = writer(out)
    w.writerow(header)
    w.writerows(rows)
    return out.getvalue()
