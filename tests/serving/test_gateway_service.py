"""The gateway as its own service: predict, /healthz and /readyz; no admin, console or sessions."""

import json
import os
import secrets
import subprocess
import sys

import pytest
from django.conf import settings as django_settings
from django.test import override_settings
from django.urls import Resolver404, URLPattern, URLResolver, get_resolver, resolve

from config import gateway
from serving import api
from tests.serving.helpers import instances, live, predict

GATEWAY = "config.urls_gateway"


def route_names(patterns, prefix: str = "") -> set[str]:
    """Every named route the URLconf serves (namespaced), walking includes."""
    names = set()
    for p in patterns:
        if isinstance(p, URLResolver):
            ns = f"{prefix}{p.namespace}:" if p.namespace else prefix
            names |= route_names(p.url_patterns, ns)
        elif isinstance(p, URLPattern):
            names.add(f"{prefix}{p.name}")
    return names


def test_the_gateway_urlconf_serves_predict_and_health_only():
    assert route_names(get_resolver(GATEWAY).url_patterns) == {
        "healthz",
        "readyz",
        "serving:predict",
    }
    assert resolve("/api/v1/predict/hotspots/", urlconf=GATEWAY).func.view_class is api.PredictView
    for path in ("/admin/", "/admin/login/", "/registry/", "/api/v1/models/", "/api/v1/halt/"):
        with pytest.raises(Resolver404):
            resolve(path, urlconf=GATEWAY)


def _gateway_settings() -> dict:
    return gateway.gateway_settings(
        django_settings.INSTALLED_APPS,
        django_settings.MIDDLEWARE,
        django_settings.REST_FRAMEWORK,
        django_settings.TEMPLATES,
    )


def test_the_gateway_needs_no_sessions_messages_or_admin():
    derived = _gateway_settings()

    assert not set(derived["INSTALLED_APPS"]) & set(gateway.DROPPED_APPS)
    assert "django.contrib.sessions.middleware.SessionMiddleware" not in derived["MIDDLEWARE"]
    assert derived["REST_FRAMEWORK"]["DEFAULT_AUTHENTICATION_CLASSES"] == [
        "governance.authentication.ScopedTokenAuthentication"
    ]
    assert derived["ROOT_URLCONF"] == GATEWAY


@pytest.mark.django_db
def test_predict_is_served_with_the_gateway_settings_and_a_staff_session_is_not_accepted(
    mlflow_models, ci, client, admin_user
):
    version = live(mlflow_models, seed=61)
    derived = _gateway_settings()
    client.force_login(admin_user)  # a staff session cookie, made by the console

    with override_settings(
        ROOT_URLCONF=GATEWAY,
        MIDDLEWARE=derived["MIDDLEWARE"],
        REST_FRAMEWORK=derived["REST_FRAMEWORK"],
    ):
        served = predict(ci, version.model.name, instances(2))
        by_session = client.post(
            f"/api/v1/predict/{version.model.name}/",
            {"instances": instances(1)},
            content_type="application/json",
        )
        admin = client.get("/admin/")
        health = client.get("/healthz")

    assert served.status_code == 200 and served.json()["version"] == "1.0.0"
    assert by_session.status_code == 401
    assert admin.status_code == 404
    assert health.status_code == 200


@pytest.mark.one_leg  # subprocesses without DATABASE_URL: the same on either leg
def test_the_gateway_settings_load_without_the_consoles_secret_key(tmp_path):
    """What the compose service runs: prod settings minus the console, a key of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL"))}
    env.update(
        GOVERNANCE_VAR_DIR=str(tmp_path),
        DJANGO_SETTINGS_MODULE="config.settings.gateway",
        AUDIT_HMAC_KEY=secrets.token_urlsafe(48),  # the gateway audits outage reports
    )
    script = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps({'apps': s.INSTALLED_APPS, 'middleware': s.MIDDLEWARE, "
        "'urlconf': s.ROOT_URLCONF, 'debug': s.DEBUG, 'key': len(s.SECRET_KEY)}))"
    )
    base = django_settings.BASE_DIR
    shown = subprocess.run(
        [sys.executable, "-c", script], cwd=base, env=env, capture_output=True, text=True
    )
    checked = subprocess.run(
        [sys.executable, "-m", "django", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=base,
        env=env,
        capture_output=True,
        text=True,
    )

    assert shown.returncode == 0, shown.stderr
    loaded = json.loads(shown.stdout.strip().splitlines()[-1])
    assert "django.contrib.admin" not in loaded["apps"]
    assert "django.contrib.sessions" not in loaded["apps"]
    assert not any("session" in m.lower() for m in loaded["middleware"])
    assert loaded["urlconf"] == GATEWAY and loaded["debug"] is False and loaded["key"] >= 50
    assert checked.returncode == 0, checked.stdout + checked.stderr
