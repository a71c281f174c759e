"""The browser harness: a real sign-in through the form, the overview drawn and accessible."""

from __future__ import annotations

import pytest
from django.contrib.auth.hashers import make_password

from governance.models import RoleGrant
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def test_form_login_lands_on_an_accessible_overview(page, assert_accessible, shot):
    user = UserFactory(username="lee-lead", is_staff=True, password=make_password("s3cret-pass"))
    RoleGrant.objects.create(user=user, role="ml_lead")

    page.goto("/admin/login/?next=/console/")
    page.get_by_label("Username").fill("lee-lead")
    page.get_by_label("Password").fill("s3cret-pass")
    page.get_by_role("button", name="Log in").click()

    page.wait_for_url("**/console/")
    assert page.get_by_role("heading", level=1).first.is_visible()
    assert_accessible(page)
    shot(page, "overview-empty")
    assert page.js_errors == []


def test_login_as_skips_the_form(page, login_as):
    user = UserFactory(username="olu-ethics", is_staff=True)
    RoleGrant.objects.create(user=user, role="ethics_officer")

    login_as(page, user)
    page.goto("/console/")

    assert "olu-ethics" in page.content()
