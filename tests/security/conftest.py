"""A world to attack: a target model with a live version, a halt, an incident, an alert and a
monitor run, another model, and one API token (or login) per actor.

Actors: ``anonymous``; ``no_grants`` (a user with a token and no role); ``revoked`` (held ml_lead
on the target, then lost the grant and the token; its ``is_staff`` flag is left behind, as in the
probe); and for each role ``ROLE@target`` (a grant on the target model only), ``ROLE@other`` (a
grant on the other model only) and ``ROLE@global`` (a global grant).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pytest
from django.contrib.auth import get_user_model
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


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch):
    """Task enqueues are recorded, never sent: the matrix is about answers, not workers."""
    monkeypatch.setattr("platform_core.tasking.send", lambda *a, **k: "")
    for target in (
        "serving.signals.enqueue_verification",
        "serving.signals.enqueue_warm_standby",
        "serving.signals.enqueue_shadow_evaluation",
        "serving.log.enqueue_ingest",
    ):
        monkeypatch.setattr(target, lambda *a, **k: None)
    monkeypatch.setattr("incidents.notifications.enqueue_delivery", lambda countdown=None: None)


@pytest.fixture(autouse=True)
def _cold_gateway(settings, tmp_path):
    from serving import access, background, cache, generation, loader, log, router, shadow

    settings.SERVING_LOG_FLUSH_SECONDS = 0
    settings.VAR_DIR = tmp_path

    def reset():
        shadow.drain()
        shadow.clear()
        background.drain()
        for module in (router, loader, cache, log, access):
            module.clear()
        generation.reset()

    reset()
    yield
    reset()


def _actor_user(actor: str):
    role, _, scope = actor.partition("@")
    username = actor.replace("@", "-at-").replace("_", "-")
    model = {"target": TARGET, "other": OTHER, "global": None}[scope]
    services.role_grant(username=username, roles=[role], model_name=model, actor=SYSTEM)
    return get_user_model().objects.get(username=username)


@pytest.fixture
def objects(db) -> World:
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


@pytest.fixture
def world(objects) -> World:
    w = objects
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
    return w


@pytest.fixture(autouse=True)
def _quiet_refusals():
    """Thousands of expected 403s: Django's per-refusal warning with traceback only costs time."""
    import logging

    logger = logging.getLogger("django.request")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)
