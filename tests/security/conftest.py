"""A world to attack: a target model with a live version, a halt, an incident, an alert and a
monitor run, another model, and one API token (or login) per actor.

Actors: ``anonymous``; ``no_grants`` (a user with a token and no role); ``revoked`` (held ml_lead
on the target, then lost the grant and the token; its ``is_staff`` flag is left behind, as in the
probe); and for each role ``ROLE@target`` (a grant on the target model only), ``ROLE@other`` (a
grant on the other model only) and ``ROLE@global`` (a global grant).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import Client
from rest_framework.test import APIClient

from governance import services
from governance.audit import Actor
from governance.roles import Role
from incidents.models import Incident
from monitoring.models import Alert, MonitorRun
from registry.models import ModelVersion
from tests.factories import RegisteredModelFactory
from tests.governance.lifecycle_helpers import new_version, person, to_production_first
from tests.incidents.helpers import alert_on

SYSTEM = Actor.system("tests")
TARGET = "tgt-hotspot"
OTHER = "oth-burglary"
# Strings that exist only in the target's rows: a body carrying one has shown target data.
TARGET_DESCRIPTION = "tgt-secret-description-5d81"
HALT_REASON = "tgt-secret-halt-reason-91c2"
ROLES = list(Role.values)
SCOPES = ("target", "other", "global")
ACTORS = ["anonymous", "no_grants", "revoked"] + [f"{r}@{s}" for r in ROLES for s in SCOPES]


@dataclass
class World:
    version: ModelVersion
    other: ModelVersion
    incident: Incident
    step_order: int
    alert: Alert
    run: MonitorRun
    tokens: dict[str, str] = field(default_factory=dict)
    users: dict[str, object] = field(default_factory=dict)

    @property
    def markers(self) -> list[str]:
        """Target-only strings; the model's name is added by the caller when not in the URL."""
        return [TARGET_DESCRIPTION, HALT_REASON, self.version.artifact_digest]

    def api(self, actor: str) -> APIClient:
        client = APIClient()
        if actor in self.tokens:
            client.credentials(HTTP_AUTHORIZATION=f"Token {self.tokens[actor]}")
        return client

    def browser(self, actor: str) -> Client:
        client = Client()
        if actor in self.users:
            client.force_login(self.users[actor])
        return client


def _silence_broker(patch: pytest.MonkeyPatch) -> None:
    patch.setattr("platform_core.tasking.send", lambda *a, **k: "")
    for target in (
        "serving.signals.enqueue_verification",
        "serving.signals.enqueue_warm_standby",
        "serving.signals.enqueue_shadow_evaluation",
        "serving.log.enqueue_ingest",
    ):
        patch.setattr(target, lambda *a, **k: None)
    patch.setattr("incidents.notifications.enqueue_delivery", lambda countdown=None: None)


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch):
    """Task enqueues are recorded, never sent: the matrix is about answers, not workers."""
    _silence_broker(monkeypatch)


def _reset_gateway() -> None:
    from serving import access, background, cache, generation, loader, log, router, shadow

    shadow.drain()
    shadow.clear()
    background.drain()
    for module in (router, loader, cache, log, access):
        module.clear()
    generation.reset()


@pytest.fixture(autouse=True)
def _cold_gateway(settings, tmp_path):
    settings.SERVING_LOG_FLUSH_SECONDS = 0
    settings.VAR_DIR = tmp_path
    _reset_gateway()
    yield
    _reset_gateway()


def _actor_user(actor: str):
    role, _, scope = actor.partition("@")
    username = actor.replace("@", "-at-").replace("_", "-")
    model = {"target": TARGET, "other": OTHER, "global": None}[scope]
    services.role_grant(username=username, roles=[role], model_name=model, actor=SYSTEM)
    return get_user_model().objects.get(username=username)


def _build_objects() -> World:
    """The target's objects without the actors (the fuzzer brings its own token)."""
    from incidents.alert_response import route_alert
    from monitoring import runs
    from serving.halt import halt_engage

    target_model = RegisteredModelFactory(name=TARGET, description=TARGET_DESCRIPTION)
    digest = "sha256:" + hashlib.sha256(TARGET.encode()).hexdigest()
    version = new_version("1.0.0", model=target_model, artifact_digest=digest)
    to_production_first(version)
    other = new_version("1.0.0", model=RegisteredModelFactory(name=OTHER))
    to_production_first(other)

    alert = alert_on(version, check="concept_drift", severity="high")
    route_alert(alert)
    incident = Incident.objects.get(model=target_model)
    step = incident.steps.filter(status="waiting").order_by("order").first()
    run = runs.run_create(
        model=target_model,
        version=version,
        check="data_drift",
        window_end=alert.window_end,
        trigger="api",
        actor=SYSTEM,
    )
    halt_engage(scope=TARGET, reason=HALT_REASON, actor=person("ml_lead"))

    return World(
        version=version,
        other=other,
        incident=incident,
        step_order=step.order if step else 1,
        alert=alert,
        run=run,
    )


def _add_actors(w: World) -> None:
    for actor in ACTORS[3:]:
        w.users[actor] = _actor_user(actor)
    w.users["no_grants"] = get_user_model().objects.create(username="no-grants", is_staff=False)
    services.role_grant(username="revoked-lead", roles=["ml_lead"], model_name=TARGET, actor=SYSTEM)
    revoked = get_user_model().objects.get(username="revoked-lead")
    services.role_revoke(
        username="revoked-lead", roles=["ml_lead"], model_name=TARGET, actor=SYSTEM
    )
    w.users["revoked"] = revoked
    for actor, user in w.users.items():
        instance, w.tokens[actor] = services.token_create(username=user.username, actor=SYSTEM)
    services.token_revoke(key_prefix=instance.token_key, actor=SYSTEM)
    w.users["revoked"].refresh_from_db()


@contextmanager
def _module_transaction(django_db_blocker) -> Iterator[None]:
    """A transaction around a module, rolled back when the module ends.

    Each test's own ``db`` transaction nests inside it as a savepoint (pytest-django leaves
    out ``TestCase``'s class-level setup for exactly this), so whatever a test writes is undone
    before the next one and every test still starts from the same rows: setUpTestData's
    semantics, paid once per module instead of once per test.
    """
    with django_db_blocker.unblock():
        outer = transaction.atomic()
        outer.__enter__()
    try:
        yield
    finally:
        with django_db_blocker.unblock():
            transaction.set_rollback(True)
            outer.__exit__(None, None, None)


@contextmanager
def _as_in_a_test(django_db_blocker, tmp_path: Path) -> Iterator[None]:
    """A module build runs under a test's stand-ins: database access, no broker, cold gateway."""
    from django.test import override_settings

    with (
        django_db_blocker.unblock(),
        pytest.MonkeyPatch.context() as patch,
        override_settings(SERVING_LOG_FLUSH_SECONDS=0, VAR_DIR=tmp_path),
    ):
        _silence_broker(patch)
        _reset_gateway()
        try:
            yield
        finally:
            _reset_gateway()


@pytest.fixture(scope="module")
def _module_objects(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[World]:
    with _module_transaction(django_db_blocker):
        with _as_in_a_test(django_db_blocker, tmp_path_factory.mktemp("security-objects")):
            built = _build_objects()
        yield built


@pytest.fixture(scope="module")
def _module_world(_module_objects, django_db_blocker, tmp_path_factory) -> World:
    with _as_in_a_test(django_db_blocker, tmp_path_factory.mktemp("security-actors")):
        _add_actors(_module_objects)
    return _module_objects


@pytest.fixture
def objects(_module_objects, db) -> World:
    """The target's objects, built once per module (read them; writes end with the test)."""
    return _fresh(_module_objects)


@pytest.fixture
def world(_module_world, db) -> World:
    """The objects and one user and token per actor, built once per module."""
    return _fresh(_module_world)


def _fresh(w: World) -> World:
    """A copy whose rows are reloaded: nothing a previous test cached on them carries over."""
    return World(
        version=ModelVersion.objects.get(pk=w.version.pk),
        other=ModelVersion.objects.get(pk=w.other.pk),
        incident=Incident.objects.get(pk=w.incident.pk),
        step_order=w.step_order,
        alert=Alert.objects.get(pk=w.alert.pk),
        run=MonitorRun.objects.get(pk=w.run.pk),
        tokens=dict(w.tokens),
        users={a: get_user_model().objects.get(pk=u.pk) for a, u in w.users.items()},
    )


@pytest.fixture(autouse=True)
def _quiet_refusals():
    """Thousands of expected 403s: Django's per-refusal warning with traceback only costs time."""
    import logging

    logger = logging.getLogger("django.request")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)
