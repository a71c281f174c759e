"""Found by Schemathesis on PostgreSQL: a NUL inside a JSON string and a UTC offset beyond what
PostgreSQL represents both reached the database as 500s. Both are a 400 naming the problem."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


@pytest.fixture
def lead(api_client):
    return api_client("ml_lead", username="lee")


def test_a_nul_inside_a_json_string_is_a_400_on_every_json_endpoint(lead):
    for url, body in [
        ("/api/v1/models/", {"name": "a\u0000b"}),
        ("/api/v1/models/m/predictions/", {"version": "1.0.0", "records": [{"x": {"k\u0000": 1}}]}),
    ]:
        response = lead.post(url, body, format="json")
        assert response.status_code == 400, (url, response.content)
        assert "NUL" in response.json()["detail"]


def test_a_string_that_only_spells_a_backslash_u_is_not_taken_for_a_nul(lead):
    response = lead.post("/api/v1/models/", {"name": "x", "description": "\\u0000"}, format="json")
    assert "NUL" not in response.content.decode()


def test_an_audit_instant_with_an_offset_postgres_cannot_store_is_a_400(api_client):
    client = api_client("auditor", username="audrey")
    for value in ("0310-06-23T19:35:45-19:03", "0055-08-16T08:33:24Z", "9999-12-31T23:59:59+00:00"):
        response = client.get("/api/v1/audit/", {"until": value})
        assert response.status_code == 400, value
        assert "until" in response.json()["errors"]
    ok = client.get("/api/v1/audit/", {"since": "2026-01-01T00:00:00+14:00"})
    assert ok.status_code == 200
