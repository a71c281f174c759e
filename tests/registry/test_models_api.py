"""POST/GET /api/v1/models/: registration, reads, and every error path."""

import pytest
from rest_framework.test import APIClient

from governance.models import AuditEvent
from registry.models import RegisteredModel

pytestmark = pytest.mark.django_db


def test_ci_registers_a_model_and_reads_it_back(api_client):
    ci = api_client("ci")
    created = ci.post("/api/v1/models/", {"name": "hotspot-classifier", "description": "weekly"})
    assert created.status_code == 201, created.json()
    assert created.json()["name"] == "hotspot-classifier"
    assert ci.get("/api/v1/models/hotspot-classifier/").json()["description"] == "weekly"
    names = [m["name"] for m in ci.get("/api/v1/models/").json()["results"]]
    assert names == ["hotspot-classifier"]
    event = AuditEvent.objects.get(action="model.registered")
    assert event.actor.startswith("ci-user (token") and event.model_name == "hotspot-classifier"


def test_description_is_optional(api_client):
    assert api_client("ci").post("/api/v1/models/", {"name": "m1"}).status_code == 201


def test_duplicate_model_name_is_409(api_client):
    ci = api_client("ci")
    ci.post("/api/v1/models/", {"name": "m1"})
    response = ci.post("/api/v1/models/", {"name": "m1"})
    assert response.status_code == 409
    assert "already exists" in response.json()["detail"]


@pytest.mark.parametrize("name", ["Upper", "has space", "-leading", "", "x" * 101, "global"])
def test_invalid_model_names_are_400_naming_the_field(api_client, name):
    response = api_client("ci").post("/api/v1/models/", {"name": name})
    assert response.status_code == 400
    assert "name" in response.json()["errors"]
    assert not RegisteredModel.objects.exists()


def test_unknown_fields_are_refused_by_name(api_client):
    response = api_client("ci").post("/api/v1/models/", {"name": "m1", "owner": "x"})
    assert response.status_code == 400
    assert response.json()["errors"] == {"owner": ["Unknown field."]}


def test_missing_or_wrong_token_is_401():
    assert APIClient().get("/api/v1/models/").status_code == 401
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert client.get("/api/v1/models/").status_code == 401


def test_user_without_roles_is_403(api_client):
    assert api_client().get("/api/v1/models/").status_code == 403


def test_reader_roles_cannot_register(api_client):
    for role in ["auditor", "product_manager", "ethics_officer"]:
        response = api_client(role).post("/api/v1/models/", {"name": "m1"})
        assert response.status_code == 403, role
        assert "register" in response.json()["detail"]
    assert not RegisteredModel.objects.exists()


def test_token_scope_narrows_the_users_roles(api_client):
    narrowed = api_client("ci", "auditor", username="both", scope=["auditor"])
    assert narrowed.get("/api/v1/models/").status_code == 200
    assert narrowed.post("/api/v1/models/", {"name": "m1"}).status_code == 403


def test_per_model_grant_reads_only_that_model(api_client):
    ci = api_client("ci")
    ci.post("/api/v1/models/", {"name": "mine"})
    ci.post("/api/v1/models/", {"name": "theirs"})
    scoped = api_client("ml_engineer", username="scoped", model="mine")
    assert [m["name"] for m in scoped.get("/api/v1/models/").json()["results"]] == ["mine"]
    assert scoped.get("/api/v1/models/mine/").status_code == 200
    assert scoped.get("/api/v1/models/theirs/").status_code == 403
    # registering a new model needs a global grant
    assert scoped.post("/api/v1/models/", {"name": "new"}).status_code == 403


def test_unknown_model_is_404(api_client):
    response = api_client("ci").get("/api/v1/models/nope/")
    assert response.status_code == 404
    assert "nope" in response.json()["detail"]


def test_expired_token_is_401(api_client, db):
    from datetime import timedelta

    from django.utils import timezone
    from knox.models import AuthToken

    client = api_client("ci")
    AuthToken.objects.update(expiry=timezone.now() - timedelta(seconds=1))
    assert client.get("/api/v1/models/").status_code == 401


def test_idempotency_key_replays_the_first_response(api_client):
    ci = api_client("ci")
    first = ci.post("/api/v1/models/", {"name": "m1"}, HTTP_IDEMPOTENCY_KEY="k-1")
    again = ci.post("/api/v1/models/", {"name": "m1"}, HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert RegisteredModel.objects.count() == 1
    assert AuditEvent.objects.filter(action="model.registered").count() == 1


def test_idempotency_key_reused_for_another_request_is_422(api_client):
    ci = api_client("ci")
    ci.post("/api/v1/models/", {"name": "m1"}, HTTP_IDEMPOTENCY_KEY="k-1")
    response = ci.post("/api/v1/models/", {"name": "m2"}, HTTP_IDEMPOTENCY_KEY="k-1")
    assert response.status_code == 422
    assert not RegisteredModel.objects.filter(name="m2").exists()


def test_a_body_over_the_json_limit_is_413_without_advice_the_endpoint_cannot_take(
    api_client, settings
):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 200
    response = api_client("ci").post(
        "/api/v1/models/", {"name": "m1", "description": "x" * 500}, format="json"
    )
    assert response.status_code == 413
    assert "larger than the 200 bytes" in response.json()["detail"]
    assert "CSV or Parquet" not in response.json()["detail"]  # /models/ takes no files
    assert not RegisteredModel.objects.exists()
