"""What the production-data tests share: the first day of their records and the version whose
three features are two numbers and a category."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.factories import ModelVersionFactory

T0 = datetime(2026, 1, 5, tzinfo=UTC)
# f3 is categorical (the records give it letters)
MIXED = {"f1": "number", "f2": "number", "f3": "string"}


def mixed_version(**fields):
    """A version over ``MIXED`` (f1, f2 numbers, f3 a string), with any other ``fields``."""
    return ModelVersionFactory(feature_list=list(MIXED), feature_types=MIXED, **fields)
