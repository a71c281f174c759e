"""Issue 10, finding 10: /readyz tells an anonymous caller ready or not, and nothing else."""

from __future__ import annotations

import pytest

from config import health
from governance import services
from tests.conftest import SYSTEM
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh():
    health.clear_cache()
    yield
    health.clear_cache()


def test_an_anonymous_caller_gets_a_bare_status(client, mlflow_models):
    mlflow_models()
    response = client.get("/readyz")
    assert response.json() == {"status": "ok" if response.status_code == 200 else "unavailable"}


def test_an_anonymous_caller_gets_a_bare_503(client, settings):
    settings.MLFLOW_TRACKING_URI = settings.MLFLOW_REGISTRY_URI = "http://127.0.0.1:9"
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable"}


def test_anonymous_readiness_never_loads_models(client, monkeypatch):
    def load(*args, **kwargs):
        raise AssertionError("an anonymous probe built a route")

    monkeypatch.setattr(health, "_serving", load)
    assert "models" not in client.get("/readyz").json()


def test_staff_with_a_role_see_the_details(client):
    services.role_grant(username="ops", roles=["oncall"], actor=SYSTEM)
    from django.contrib.auth import get_user_model

    client.force_login(get_user_model().objects.get(username="ops"))
    body = client.get("/readyz").json()
    assert set(body["checks"]) == {"database", "broker", "mlflow"}
    assert "models" in body


def test_staff_without_any_grant_get_the_bare_status(client):
    client.force_login(UserFactory(username="leftover", is_staff=True))
    assert set(client.get("/readyz").json()) == {"status"}


def test_staff_with_a_grant_on_one_model_only_get_the_bare_status(client):
    # the details name every model and its digest: only a global role may read them
    from tests.factories import RegisteredModelFactory

    RegisteredModelFactory(name="one-model")
    services.role_grant(username="scoped", roles=["oncall"], model_name="one-model", actor=SYSTEM)
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(username="scoped")
    user.is_staff = True
    user.save()
    client.force_login(user)
    assert set(client.get("/readyz").json()) == {"status"}


def test_a_probe_with_the_configured_token_sees_the_details(client, settings):
    settings.READYZ_DETAIL_TOKEN = "probe-secret-123"
    body = client.get("/readyz", HTTP_AUTHORIZATION="Bearer probe-secret-123").json()
    assert "checks" in body
    wrong = client.get("/readyz", HTTP_AUTHORIZATION="Bearer nope").json()
    assert set(wrong) == {"status"}


def test_parallel_probes_share_one_run_of_the_checks(client, settings, monkeypatch):
    settings.READYZ_CACHE_SECONDS = 3600
    runs = []
    real = health._database
    monkeypatch.setattr(health, "_database", lambda: runs.append(1) or real())
    for _ in range(8):
        client.get("/readyz")
    assert len(runs) == 1
