"""The OpenAPI schema publishes the pinned response fields (tests/api_contract.py), in order."""

from __future__ import annotations

import pytest
from drf_spectacular.generators import SchemaGenerator

from tests.api_contract import RESPONSE_FIELDS

pytestmark = pytest.mark.one_leg  # builds the schema only: no database, no broker


@pytest.fixture(scope="module")
def components() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)["components"]["schemas"]


@pytest.mark.parametrize("component", sorted(RESPONSE_FIELDS))
def test_the_schema_publishes_the_pinned_fields_in_order(components, component):
    assert tuple(components[component]["properties"]) == RESPONSE_FIELDS[component]
