"""Separation of duties (issue 10, finding 3): nobody signs off a version they registered, are the
responsible engineer of, or submitted evidence for; the engineer must hold ml_engineer on the model.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from governance import services
from governance.approvals import evidence_digest
from governance.audit import Actor
from governance.models import Approval, Evaluation, Lifecycle
from registry.models import ModelVersion

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")
MODEL = "hotspot"
VERSIONS = f"/api/v1/models/{MODEL}/versions/"


def url(version: str, tail: str) -> str:
    return f"{VERSIONS}{version}/{tail}/"


def sign(client, version: str, transition: str = "submit_for_validation", **extra):
    body = {"transition": transition, "role": "ml_engineer", "decision": "approve", **extra}
    return client.post(url(version, "approvals"), body, format="json")


def move(client, version: str, transition: str = "submit_for_validation"):
    return client.post(url(version, "transitions"), {"transition": transition}, format="json")


def stage(version: str) -> str:
    return Lifecycle.objects.get(version__model__name=MODEL, version__version=version).stage


@pytest.fixture
def ci(api_client):
    services.model_register(name=MODEL, actor=SYSTEM)
    return api_client("ci", username="ci-bot")


def unit_tests(client, version: str):
    response = client.post(
        url(version, "evaluations"),
        {"kind": "unit_tests", "passed": True, "summary": "12 passed"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    return response


def test_the_registrant_cannot_approve_by_naming_someone_else_as_engineer(
    ci, api_client, version_body
):
    """The probe exactly: erin registers 3.0.0 naming eli, then signs it off herself."""
    erin = api_client("ml_engineer", username="erin")
    eli = api_client("ml_engineer", username="eli")
    registered = erin.post(
        VERSIONS, version_body("3.0.0", responsible_engineer="eli"), format="json"
    )
    assert registered.status_code == 201, registered.json()
    unit_tests(ci, "3.0.0")

    refused = sign(erin, "3.0.0")
    assert refused.status_code == 403
    assert "separation of duties" in refused.json()["detail"]
    assert "you registered it" in refused.json()["detail"]
    assert move(erin, "3.0.0").status_code == 409
    assert stage("3.0.0") == "development"

    named = sign(eli, "3.0.0", decision="reject")  # rejecting is a sign-off too
    assert named.status_code == 403 and "responsible engineer" in named.json()["detail"]

    peer = api_client("ml_engineer", username="peer")
    assert sign(peer, "3.0.0").status_code == 201
    assert move(erin, "3.0.0").status_code == 200
    assert stage("3.0.0") == "validation"
    assert list(Approval.objects.values_list("user__username", flat=True)) == ["peer"]


def test_whoever_submitted_evidence_cannot_approve(ci, api_client, version_body):
    """pat ran a pipeline by hand with a CI grant, lost it, and now reviews as an engineer."""
    assert ci.post(VERSIONS, version_body("1.0.0"), format="json").status_code == 201
    pat_pipeline = api_client("ci", username="pat", model=MODEL)
    unit_tests(pat_pipeline, "1.0.0")
    assert Evaluation.objects.get().submitted_by.username == "pat"
    services.role_revoke(username="pat", roles=["ci"], model_name=MODEL, actor=SYSTEM)

    pat = api_client("ml_engineer", username="pat")
    refused = sign(pat, "1.0.0")
    assert refused.status_code == 403
    assert "you submitted evidence for it" in refused.json()["detail"]


def test_the_owner_of_the_ci_token_that_registered_is_the_registrant(ci, api_client, version_body):
    """The person behind a pipeline's token is unknown: its owner answers for it, whichever of
    their tokens they sign with."""
    pipeline = api_client("ci", username="ops", model=MODEL, scope=["ci"])
    assert pipeline.post(VERSIONS, version_body("1.0.0"), format="json").status_code == 201
    assert ModelVersion.objects.get().registered_by.username == "ops"
    unit_tests(ci, "1.0.0")
    services.role_revoke(username="ops", roles=["ci"], model_name=MODEL, actor=SYSTEM)

    human = api_client("ml_engineer", username="ops")  # a second, unscoped token of ops
    refused = sign(human, "1.0.0")
    assert refused.status_code == 403 and "you registered it" in refused.json()["detail"]
    assert not Approval.objects.exists()


def test_a_sign_off_recorded_before_the_rule_does_not_count(ci, api_client, version_body):
    erin = api_client("ml_engineer", username="erin")
    api_client("ml_engineer", username="eli")
    body = version_body("1.0.0", responsible_engineer="eli")
    assert erin.post(VERSIONS, body, format="json").status_code == 201
    unit_tests(ci, "1.0.0")
    version = ModelVersion.objects.get()
    Approval.objects.create(  # as the old rule let it through
        version=version,
        transition="submit_for_validation",
        role="ml_engineer",
        user=get_user_model().objects.get(username="erin"),
        decision="approve",
        artifact_digest=version.artifact_digest,
        evidence_digest=evidence_digest(version),
    )
    refused = move(ci, "1.0.0")
    assert refused.status_code == 409
    assert (
        "needs an approval from a ml_engineer (erin: not counted, separation of duties)"
        in refused.json()["reasons"]
    )


@pytest.mark.parametrize(
    "grant",
    [
        pytest.param({"roles": ["ml_lead"]}, id="another-role"),
        pytest.param({"roles": ["ml_engineer"], "model_name": "other"}, id="another-model"),
        pytest.param(None, id="no-role-at-all"),
    ],
)
def test_the_responsible_engineer_must_hold_ml_engineer_on_the_model(ci, version_body, grant):
    services.model_register(name="other", actor=SYSTEM)
    if grant is None:
        get_user_model().objects.create(username="bob")
    else:
        services.role_grant(username="bob", actor=SYSTEM, **grant)
    response = ci.post(VERSIONS, version_body("1.0.0", responsible_engineer="bob"), format="json")
    assert response.status_code == 400
    message = " ".join(response.json()["errors"]["responsible_engineer"])
    assert "'bob' does not hold the ml_engineer role for hotspot" in message
    assert not ModelVersion.objects.exists()


def test_a_per_model_ml_engineer_grant_is_enough(ci, version_body):
    services.role_grant(username="bob", roles=["ml_engineer"], model_name=MODEL, actor=SYSTEM)
    response = ci.post(VERSIONS, version_body("1.0.0", responsible_engineer="bob"), format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["responsible_engineer"] == "bob"


def test_an_inactive_engineer_is_refused(ci, version_body, engineer):
    engineer.is_active = False
    engineer.save(update_fields=["is_active"])
    response = ci.post(VERSIONS, version_body("1.0.0"), format="json")
    assert response.status_code == 400
    assert "responsible_engineer" in response.json()["errors"]


def test_the_admin_offers_no_sign_off_to_the_registrant(ci, api_client, version_body, client):
    erin = api_client("ml_engineer", username="erin")
    api_client("ml_engineer", username="eli")
    body = version_body("1.0.0", responsible_engineer="eli")
    assert erin.post(VERSIONS, body, format="json").status_code == 201
    lifecycle = Lifecycle.objects.get()
    client.force_login(get_user_model().objects.get(username="erin"))
    html = client.get(f"/admin/governance/lifecycle/{lifecycle.pk}/change/").content.decode()
    assert "Sign <b>submit_for_validation</b>" not in html
    assert "separation of duties" in html and "you registered it" in html
    inbox = client.get("/admin/governance/lifecycle/inbox/").content.decode()
    assert str(lifecycle.version) not in inbox

    posted = client.post(
        f"/admin/governance/lifecycle/{lifecycle.pk}/decide/",
        {"transition": "submit_for_validation", "role": "ml_engineer", "decision": "approve"},
        follow=True,
    )
    assert "separation of duties" in posted.content.decode().lower()
    assert not Approval.objects.exists()

    api_client("ml_engineer", username="peer")
    client.force_login(get_user_model().objects.get(username="peer"))
    html = client.get(f"/admin/governance/lifecycle/{lifecycle.pk}/change/").content.decode()
    assert "Sign <b>submit_for_validation</b> as <b>ml_engineer</b>" in html


def test_evidence_recorded_before_the_field_gets_its_submitter_from_the_audit_log():
    """The migration's backfill: otherwise a version in flight could be signed off by whoever
    submitted its evidence before the upgrade."""
    import importlib

    from django.apps import apps

    from governance import audit
    from tests.factories import ModelVersionFactory

    backfill = importlib.import_module(
        "governance.migrations.0005_evaluation_submitted_by"
    ).submitters_from_audit
    version = ModelVersionFactory()
    pat = get_user_model().objects.create(username="pat")
    kinds = {"unit_tests": Actor.for_user(pat), "shadow": Actor.for_user(pat)}
    kinds["validation"] = Actor.system("pipeline")
    for kind, actor in kinds.items():
        evaluation = Evaluation.objects.create(
            version=version, kind=kind, passed=True, report={}, evidence_digest=kind
        )
        audit.record(actor=actor, action="evaluation.recorded", obj=evaluation)
    backfill(apps, None)
    submitters = dict(Evaluation.objects.values_list("kind", "submitted_by__username"))
    assert submitters == {"unit_tests": "pat", "shadow": None, "validation": None}
