import pytest

pytestmark = pytest.mark.django_db


def test_healthz_answers_without_authentication(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_reports_each_dependency(client, mlflow_models):
    mlflow_models()
    response = client.get("/readyz")
    body = response.json()
    assert set(body["checks"]) == {"database", "broker", "mlflow"}
    assert body["checks"]["database"]["ok"] and body["checks"]["mlflow"]["ok"]
    assert response.status_code == (200 if body["checks"]["broker"]["ok"] else 503)


def test_readyz_says_503_when_mlflow_is_unreachable(client, settings):
    settings.MLFLOW_TRACKING_URI = settings.MLFLOW_REGISTRY_URI = "http://127.0.0.1:9"
    response = client.get("/readyz")
    assert response.status_code == 503
    assert not response.json()["checks"]["mlflow"]["ok"]


def test_openapi_schema_documents_the_registry_endpoints(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    assert "/api/v1/models/{name}/versions/" in schema["paths"]


def test_swagger_ui_is_served_locally(client):
    page = client.get("/api/docs/")
    assert page.status_code == 200
    assert b"cdn" not in page.content.lower() and b"swagger-ui" in page.content
