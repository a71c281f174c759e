"""Shared fixtures: real MLflow models, API clients holding scoped tokens."""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import date

import numpy as np
import pandas as pd
import pytest
from rest_framework.test import APIClient

from governance import services
from governance.audit import Actor

SYSTEM = Actor.system("tests")
FEATURES = ["f1", "f2", "f3"]


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Only localhost: anything else crossing the network is a bug in a test."""
    real_connect = socket.socket.connect

    def guarded(sock, address):
        host = address[0] if isinstance(address, tuple) else address
        if (
            isinstance(host, str)
            and host not in {"127.0.0.1", "localhost", "::1"}
            and "/" not in host
        ):
            raise RuntimeError(f"tests may not reach {host}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(autouse=True)
def _seeded_data_after_flush(request):
    """A transactional test's flush empties every table, the playbooks a data migration seeded
    included: put them back so every test starts from what ``migrate`` gives a real install."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None or not marker.kwargs.get("transaction"):
        return
    request.getfixturevalue("transactional_db")
    from incidents.models import Playbook

    if not Playbook.objects.exists():
        import importlib

        from django.apps import apps

        importlib.import_module("incidents.migrations.0003_seed_playbooks").seed(apps, None)


@pytest.fixture(scope="session")
def mlflow_models():
    """A factory of real MLflow model versions, logged once per name for the session."""
    from sklearn.linear_model import LogisticRegression

    from demo.mlflow_logging import log_sklearn_model
    from tests.serving.helpers import log_fitted

    cache: dict[tuple[str, int], str] = {}

    def make(name: str = "session-base", seed: int = 0) -> str:
        if (name, seed) not in cache:
            rng = np.random.default_rng(seed)
            frame = pd.DataFrame(rng.normal(size=(200, 3)), columns=FEATURES)
            labels = (frame["f1"] + rng.normal(scale=0.5, size=200) > 0).astype(int)
            model = LogisticRegression().fit(frame, labels)
            cache[(name, seed)] = log_fitted(log_sklearn_model, model, frame, name=name, seed=seed)
        return cache[(name, seed)]

    return make


@pytest.fixture
def engineer(db):
    services.role_grant(username="erin", roles=["ml_engineer"], actor=SYSTEM)
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(username="erin")


@pytest.fixture
def api_client(db) -> Callable[..., APIClient]:
    """``api_client("ci")`` is a client whose token holds the given roles (global by default)."""

    def make(
        *roles: str,
        username: str | None = None,
        model: str | None = None,
        scope: list[str] | None = None,
    ) -> APIClient:
        username = username or "-".join(roles or ("nobody",)) + "-user"
        if roles:
            services.role_grant(
                username=username, roles=list(roles), model_name=model, actor=SYSTEM
            )
        else:
            from django.contrib.auth import get_user_model

            get_user_model().objects.get_or_create(username=username)
        _, token = services.token_create(username=username, roles=scope, actor=SYSTEM)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        return client

    return make


def _seed(version: str) -> int:
    """One MLflow model version per platform version string (MLflow versions are not shared)."""
    major, minor, patch = (
        int(p) if p.isdigit() else 0 for p in (version.split(".") + ["0"] * 3)[:3]
    )
    return major * 1_000_000 + minor * 1_000 + patch


@pytest.fixture
def version_body(mlflow_models, engineer) -> Callable[..., dict]:
    def make(version: str = "1.0.0", *, model: str = "hotspot", **overrides) -> dict:
        """A body for ``model``: its MLflow version is logged under the same name (a platform
        model is backed only by the MLflow registered model of its name)."""
        body = {
            "version": version,
            "mlflow_uri": mlflow_models(model, seed=_seed(version)),
            "training_data_hash": "sha256:" + "0f" * 32,
            "training_data_start": str(date(2025, 1, 1)),
            "training_data_end": str(date(2025, 12, 31)),
            "hyperparameters": {"C": 1.0},
            "metrics": {"auc": 0.81},
            "feature_list": FEATURES,
            "thresholds": {"decision": 0.5},
            "responsible_engineer": engineer.username,
            "model_card": {"intended_use": "Ranking grid cells for review", "owners": ["erin"]},
        }
        body.update(overrides)
        return body

    return make


def pytest_configure(config):
    # registered here, not in pyproject.toml: bin/install reinstalls whenever pyproject changes
    config.addinivalue_line(
        "markers",
        "one_leg(leg='sqlite'): needs neither the run's database nor its broker; when bin/test "
        "runs both legs (TEST_LEGS), only the named leg runs it",
    )


def pytest_report_header(config):
    from tests.depth import DEPTH

    return f"test depth: {DEPTH} (TEST_DEPTH=deep runs the exhaustive proofs: tests/depth.py)"


# Modules that never touch the run's database or broker (pure computations, or a subprocess that
# drops DATABASE_URL and CELERY_BROKER_URL for a database of its own): marked ``one_leg``, so when
# bin/test runs both legs at once only one of them runs these (see ``_one_leg``).
ONE_LEG_MODULES = (
    "tests/analytics/",
    "tests/demo/test_bin_demo.py",
    "tests/demo/test_data.py",
    "tests/demo/test_demo_command.py",
    "tests/governance/test_csv_safe.py",
    "tests/governance/test_deploy_settings.py",
    "tests/registry/test_semver.py",
    "tests/test_bench_console.py",
    "tests/test_bench_feedback.py",
    "tests/test_code_shape.py",
    "tests/test_import_graph.py",
)
DATABASE_FIXTURES = {"db", "transactional_db", "django_db_setup", "live_server"}


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.postgres`` tests run only when the suite runs on PostgreSQL; ``one_leg``
    tests run in one leg of bin/test's two."""
    from django.conf import settings

    on_postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    _one_leg(config, items, "postgresql" if on_postgres else "sqlite")
    if on_postgres:
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (set DATABASE_URL)")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


def _one_leg(config, items, leg: str) -> None:
    """``one_leg(leg="sqlite")``: the test proves the same on either database, so when bin/test
    runs both legs (``TEST_LEGS`` names them) the other leg deselects it; any other run (one
    database, a developer's pytest) runs it. A marked test that asks for the database is an error:
    it would then be proven on one database only."""
    import os

    legs = os.environ.get("TEST_LEGS", "").split()
    keep, dropped = [], []
    for item in items:
        path = item.path.as_posix()
        if any(f"/{module}" in path for module in ONE_LEG_MODULES):
            item.add_marker(pytest.mark.one_leg)
        marker = item.get_closest_marker("one_leg")
        if marker is None:
            keep.append(item)
            continue
        uses = DATABASE_FIXTURES & set(getattr(item, "fixturenames", ()))
        if uses or item.get_closest_marker("django_db"):
            raise pytest.UsageError(
                f"{item.nodeid} is one_leg but uses the database ({sorted(uses) or 'django_db'})"
            )
        runs_in = marker.kwargs.get("leg", marker.args[0] if marker.args else "sqlite")
        elsewhere = leg in legs and runs_in in legs and runs_in != leg
        (dropped if elsewhere else keep).append(item)
    if dropped and keep:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(autouse=True)
def _audit_checkpoints_per_test(settings, tmp_path):
    """Checkpoints live outside the database, so a test's rollback does not remove them: each
    test gets an empty checkpoint store of its own."""
    settings.AUDIT_CHECKPOINT_DIR = tmp_path / "audit-checkpoints"
