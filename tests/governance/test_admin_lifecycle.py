"""The lifecycle admin offers only what the logged-in user may do, and acts through services."""

import pytest
from django.contrib.auth import get_user_model

from governance.models import EvidenceKind
from tests.governance.lifecycle_helpers import evidence, new_version, person, stage

pytestmark = pytest.mark.django_db


def login(client, role: str, username: str):
    person(role, username)
    client.force_login(get_user_model().objects.get(username=username))
    return client


def page(client, version):
    return client.get(
        f"/admin/governance/lifecycle/{version.lifecycle.pk}/change/"
    ).content.decode()


def test_engineer_sees_the_submit_button_and_the_code_review_decision(client):
    version = new_version()
    html = page(login(client, "ml_engineer", "peer"), version)
    assert 'value="submit_for_validation"' in html
    assert "Sign <b>submit_for_validation</b> as <b>ml_engineer</b>" in html
    assert 'value="promote"' not in html


def test_product_manager_sees_no_transition_buttons(client):
    version = new_version()
    assert "None of your roles can move this version" in page(
        login(client, "product_manager", "pm"), version
    )


def test_inbox_and_buttons_record_the_decision_and_move_the_stage(client):
    version = new_version()
    evidence(version, EvidenceKind.UNIT_TESTS)
    login(client, "ml_engineer", "peer")
    inbox = client.get("/admin/governance/lifecycle/inbox/").content.decode()
    assert str(version) in inbox
    client.post(
        f"/admin/governance/lifecycle/{version.lifecycle.pk}/decide/",
        {"transition": "submit_for_validation", "role": "ml_engineer", "decision": "approve"},
    )
    response = client.post(
        f"/admin/governance/lifecycle/{version.lifecycle.pk}/transition/",
        {"transition": "submit_for_validation"},
        follow=True,
    )
    assert stage(version) == "validation"
    assert b"submit_for_validation done" in response.content


def test_a_refused_transition_shows_its_reasons(client):
    version = new_version()
    login(client, "ml_engineer", "peer")
    response = client.post(
        f"/admin/governance/lifecycle/{version.lifecycle.pk}/transition/",
        {"transition": "submit_for_validation"},
        follow=True,
    )
    assert b"no unit_tests evidence has been submitted" in response.content
    assert stage(version) == "development"


def test_the_action_forms_are_not_nested_in_the_admin_form(client):
    """Browsers ignore a form inside another: the buttons would submit the change form."""
    from html.parser import HTMLParser

    class Forms(HTMLParser):
        def __init__(self):
            super().__init__()
            self.depth, self.nested = 0, []

        def handle_starttag(self, tag, attrs):
            if tag == "form":
                if self.depth:
                    self.nested.append(dict(attrs).get("action"))
                self.depth += 1

        def handle_endtag(self, tag):
            if tag == "form":
                self.depth -= 1

    version = new_version()
    parser = Forms()
    html = page(login(client, "ml_engineer", "peer"), version)
    parser.feed(html)

    assert 'value="submit_for_validation"' in html
    assert parser.nested == []
