"""The admin at 1400 px: the lifecycle page's "What you may do" panel spans the page, and neither
that page nor a list page is wider than the window (issue 12's admin defects)."""

from __future__ import annotations

import pytest

from governance.models import RoleGrant
from tests.console.test_version_page import gate_evidence
from tests.factories import RegisteredModelFactory, UserFactory
from tests.governance.lifecycle_helpers import new_version, to_staging

pytestmark = pytest.mark.django_db(transaction=True)


def _width(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth")


@pytest.fixture
def lead(db):
    user = UserFactory(username="lee-lead", is_staff=True)
    RoleGrant.objects.create(user=user, role="ml_lead")
    user.groups.create(name="ml_lead")
    return user


def test_lifecycle_page_actions_panel_is_wide_and_nothing_overflows(
    page, login_as, assert_accessible, shot, lead
):
    model = RegisteredModelFactory(name="hotspot-classifier")
    version = new_version("1.0.0", model=model)
    to_staging(version)
    gate_evidence(version, auc=0.79, passed=True)
    login_as(page, lead)

    page.goto(f"/admin/governance/lifecycle/{version.lifecycle.pk}/change/")
    panel = page.locator("#lifecycle-actions")
    shot(page, "admin-lifecycle")
    assert panel.bounding_box()["width"] > 600
    assert _width(page) <= 1400


def test_list_pages_are_not_clipped(page, login_as, shot, lead):
    model = RegisteredModelFactory(name="hotspot-classifier")
    versions = [new_version(f"1.{i}.0", model=model) for i in range(3)]
    to_staging(versions[0])  # audit events and approvals to list
    login_as(page, lead)
    for path, name in [
        ("/admin/registry/modelversion/", "admin-versions"),
        ("/admin/governance/lifecycle/", "admin-lifecycles"),
        ("/admin/governance/auditevent/", "admin-audit"),
    ]:
        page.goto(path)
        shot(page, name)
        assert _width(page) <= 1400, f"{path} is {_width(page)} px wide"
        results = page.locator("#changelist-form .results")
        inner = results.evaluate("e => [e.scrollWidth, e.clientWidth]")
        assert inner[0] <= inner[1], f"{path}: the list is cut at {inner[1]} of {inner[0]} px"
