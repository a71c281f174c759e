"""POST .../transitions/ and .../approvals/: 200 with the new stage, 409 with reasons, 403 first."""

import pytest

from governance.models import EvidenceKind
from governance.services import token_create
from tests.governance.lifecycle_helpers import SYSTEM, evidence, new_version, person

pytestmark = pytest.mark.django_db


@pytest.fixture
def version():
    return new_version("1.0.0")


def client_for(role: str, username: str):
    from rest_framework.test import APIClient

    person(role, username)
    _, token = token_create(username=username, actor=SYSTEM)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def url(version, tail: str) -> str:
    return f"/api/v1/models/{version.model.name}/versions/{version.version}/{tail}/"


def test_transition_refused_lists_every_unmet_condition(version):
    ci = client_for("ci", "ci-bot")
    response = ci.post(url(version, "transitions"), {"transition": "submit_for_validation"})
    assert response.status_code == 409
    assert response.json()["reasons"] == [
        "no unit_tests evidence has been submitted",
        "needs an approval from a ml_engineer",
    ]


def test_approval_then_transition_returns_the_new_stage(version):
    evidence(version, EvidenceKind.UNIT_TESTS)
    peer = client_for("ml_engineer", "peer")
    approval = peer.post(
        url(version, "approvals"),
        {
            "transition": "submit_for_validation",
            "role": "ml_engineer",
            "decision": "approve",
            "comment": "reviewed PR 42",
        },
    )
    assert approval.status_code == 201, approval.json()
    assert approval.json()["user"] == "peer" and approval.json()["voided"] is False
    ci = client_for("ci", "ci-bot")
    response = ci.post(url(version, "transitions"), {"transition": "submit_for_validation"})
    assert response.status_code == 200, response.json()
    assert response.json()["stage"] == "validation"
    listed = peer.get(url(version, "approvals")).json()["results"]
    assert [a["comment"] for a in listed] == ["reviewed PR 42"]


def test_authorization_is_checked_before_state(version):
    pm = client_for("product_manager", "pm")
    response = pm.post(url(version, "transitions"), {"transition": "promote"})
    assert response.status_code == 403
    response = pm.post(
        url(version, "approvals"),
        {"transition": "promote", "role": "ml_lead", "decision": "approve"},
    )
    assert response.status_code == 403


def test_ci_tokens_never_approve(version):
    ci = client_for("ci", "ci-bot")
    response = ci.post(
        url(version, "approvals"),
        {"transition": "submit_for_validation", "role": "ml_engineer", "decision": "approve"},
    )
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"transition": "fly"}, "transition"),
        ({"transition": "promote", "role": "wizard", "decision": "approve"}, "role"),
        ({"transition": "promote", "role": "ml_lead", "decision": "maybe"}, "decision"),
        ({"transition": "retire", "role": "ml_lead", "decision": "approve"}, "transition"),
    ],
)
def test_bad_approval_bodies_name_the_field(version, body, field):
    lead = client_for("ml_lead", "lead")
    response = lead.post(url(version, "approvals"), body)
    assert response.status_code == 400
    assert field in response.json()["errors"]


def test_unknown_transition_is_400(version):
    response = client_for("ci", "ci-bot").post(url(version, "transitions"), {"transition": "fly"})
    assert response.status_code == 400 and "transition" in response.json()["errors"]
