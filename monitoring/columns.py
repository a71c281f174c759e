"""How stored prediction and reference files name their columns.

A feature is stored as ``f.<feature>`` and a sensitive attribute as ``s.<attribute>`` (loaded
only on request); the upload format names the latter ``sensitive.<attribute>``
(``governance.records.upload_sensitive_column``). Only this module knows the prefixes.
"""

from __future__ import annotations

FEATURE_PREFIX = "f."
SENSITIVE_PREFIX = "s."


def feature_column(name: str) -> str:
    return FEATURE_PREFIX + name


def is_feature(column: str) -> bool:
    return column.startswith(FEATURE_PREFIX)


def feature_of(column: str) -> str:
    """The feature a ``f.<feature>`` column holds."""
    return column.removeprefix(FEATURE_PREFIX)


def sensitive_column(attribute: str) -> str:
    return SENSITIVE_PREFIX + attribute


def is_sensitive(column: str) -> bool:
    return column.startswith(SENSITIVE_PREFIX)


def attribute_of(column: str) -> str:
    """The sensitive attribute an ``s.<attribute>`` column holds."""
    return column.removeprefix(SENSITIVE_PREFIX)
