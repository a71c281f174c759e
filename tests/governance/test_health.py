import pytest
from django.contrib.auth import get_user_model

from governance import services
from tests.conftest import SYSTEM

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client):
    """The details of /readyz are for staff holding a role (anonymous callers get a status)."""
    services.role_grant(username="ops", roles=["oncall"], actor=SYSTEM)
    client.force_login(get_user_model().objects.get(username="ops"))
    return client


def test_healthz_answers_without_authentication(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_reports_each_dependency(staff, mlflow_models):
    mlflow_models()
    response = staff.get("/readyz")
    body = response.json()
    assert set(body["checks"]) == {"database", "broker", "mlflow"}
    assert body["checks"]["database"]["ok"] and body["checks"]["mlflow"]["ok"]
    assert response.status_code == (200 if body["checks"]["broker"]["ok"] else 503)


def test_readyz_says_503_when_mlflow_is_unreachable(staff, settings):
    settings.MLFLOW_TRACKING_URI = settings.MLFLOW_REGISTRY_URI = "http://127.0.0.1:9"
    response = staff.get("/readyz")
    assert response.status_code == 503
    assert not response.json()["checks"]["mlflow"]["ok"]


def test_openapi_schema_documents_the_registry_endpoints(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    assert "/api/v1/models/{name}/versions/" in schema["paths"]


def test_swagger_ui_is_served_locally(client):
    page = client.get("/api/docs/")
    assert page.status_code == 200
    assert b"cdn" not in page.content.lower() and b"swagger-ui" in page.content
