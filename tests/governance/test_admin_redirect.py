"""Issue 10, finding 12: the approval form's ``next`` never leaves the site."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from tests.governance.lifecycle_helpers import new_version, person

pytestmark = pytest.mark.django_db
INBOX = "/admin/governance/lifecycle/inbox/"


@pytest.fixture
def approver(client):
    person("ml_engineer", "peer")
    client.force_login(get_user_model().objects.get(username="peer"))
    return client


def decide(client, version, next_url: str):
    return client.post(
        f"/admin/governance/lifecycle/{version.lifecycle.pk}/decide/",
        {
            "transition": "submit_for_validation",
            "role": "ml_engineer",
            "decision": "approve",
            "next": next_url,
        },
    )


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/phish",
        "//evil.example/phish",
        "http://testserver.evil.example/",
        "javascript:alert(1)",
        "https:///evil.example",
        "\\\\evil.example",
    ],
)
def test_a_next_url_off_the_site_is_refused_for_the_inbox(approver, target):
    response = decide(approver, new_version(), target)
    assert response.status_code == 302
    assert response["Location"] == INBOX


def test_a_next_url_on_the_site_is_followed(approver):
    version = new_version()
    here = f"/admin/governance/lifecycle/{version.lifecycle.pk}/change/"
    response = decide(approver, version, here)
    assert response["Location"] == here
