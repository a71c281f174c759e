"""Fixtures shared by the registry API tests."""

import pytest


@pytest.fixture
def ci(api_client):
    """A CI client that has just created the model ``hotspot`` through the API (a test module
    may define its own ``ci`` for another set-up)."""
    client = api_client("ci")
    assert client.post("/api/v1/models/", {"name": "hotspot"}).status_code == 201
    return client
