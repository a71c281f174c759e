"""Building blocks for lifecycle tests: evidence, approvals and walks between stages."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from itertools import count

import time_machine
from django.db import transaction
from django.utils import timezone

from governance import lifecycle, services
from governance.approvals import approval_record, approvals_void
from governance.audit import Actor
from governance.models import Evaluation, EvidenceKind, Lifecycle
from registry.models import ModelVersion
from tests.factories import ModelVersionFactory, RegisteredModelFactory, UserFactory

SYSTEM = Actor.system("tests")
_n = count()
PEOPLE = {
    "ml_engineer": "peer-engineer",
    "ml_lead": "the-lead",
    "ethics_officer": "the-ethicist",
    "product_manager": "the-pm",
    "ci": "the-ci",
}


def person(role: str, username: str | None = None) -> Actor:
    username = username or PEOPLE[role]
    services.role_grant(username=username, roles=[role], actor=SYSTEM)
    return Actor.for_user(UserFactory(username=username))


def staff_login(client, role: str, username: str | None = None):
    """``client`` logged in to the admin as a staff user holding ``role`` (globally)."""
    actor = person(role, username)
    user = actor.user
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    client.force_login(user)
    return client


def new_version(version: str = "1.0.0", model=None, **kwargs) -> ModelVersion:
    model = model or RegisteredModelFactory()
    return ModelVersionFactory(model=model, version=version, **kwargs)


def evidence(version: ModelVersion, kind: str, *, passed: bool = True) -> Evaluation:
    with transaction.atomic():
        evaluation = Evaluation.objects.create(
            version=version,
            kind=kind,
            passed=passed,
            report={"passed": passed},
            evidence_digest=hashlib.sha256(str(next(_n)).encode()).hexdigest(),
            created_by="tests",
        )
        approvals_void(version=version, reason=f"new evidence: {kind}")
    return evaluation


def approve(version, transition: str, role: str, username: str | None = None, decision="approve"):
    return approval_record(
        version=version,
        transition=transition,
        role=role,
        decision=decision,
        actor=person(role, username),
    )


def step(version, name: str, **kwargs) -> Lifecycle:
    actor = kwargs.pop("actor", None) or person("ml_lead")
    return lifecycle.transition(version=version, name=name, actor=actor, **kwargs)


def stage(version) -> str:
    return Lifecycle.objects.get(version=version).stage


def to_validation(version) -> None:
    evidence(version, EvidenceKind.UNIT_TESTS)
    approve(version, "submit_for_validation", "ml_engineer")
    step(version, "submit_for_validation", actor=person("ci"))


def to_staging(version) -> None:
    to_validation(version)
    evidence(version, EvidenceKind.VALIDATION)
    approve(version, "approve_for_staging", "ml_lead")
    step(version, "approve_for_staging", actor=person("ci"))


def sign_promotion(version) -> None:
    for role in ("ml_lead", "ethics_officer", "product_manager"):
        approve(version, "promote", role)


def to_production_first(version) -> None:
    """A first version: shadow replay stands in for live shadow traffic."""
    to_staging(version)
    evidence(version, EvidenceKind.SHADOW_REPLAY)
    sign_promotion(version)
    step(version, "promote", actor=person("ci"))


def live_and_staged(number: str = "1.1.0") -> tuple[ModelVersion, ModelVersion]:
    """1.0.0 in production and version ``number`` of the same model in staging."""
    v1 = new_version("1.0.0")
    to_production_first(v1)
    staged = new_version(number, model=v1.model)
    to_staging(staged)
    return v1, staged


def promote_successor(previous, version_text: str, *, days_in_shadow: int = 8) -> ModelVersion:
    """Walk a successor of ``previous`` (same model) to production through live shadow mode.

    A MINOR or MAJOR brings its shadow evaluation; a PATCH is fast-tracked without one.
    """
    successor = new_version(version_text, model=previous.model)
    to_staging(successor)
    if successor.semver.bump_from(previous.semver).value != "patch":
        evidence(successor, EvidenceKind.SHADOW)
    sign_promotion(successor)
    later = timezone.now() + timedelta(days=days_in_shadow)
    with time_machine.travel(later, tick=False):
        step(successor, "promote", actor=person("ci"))
    return successor
