"""The version page (with a comparison) and the audit page, drawn in Chromium at 1400 px:
accessible, and nothing wider than the window."""

from __future__ import annotations

import pytest

from governance.models import RoleGrant
from tests.console.test_version_page import gate_evidence
from tests.factories import RegisteredModelFactory, UserFactory
from tests.governance.lifecycle_helpers import new_version, to_staging

pytestmark = pytest.mark.django_db(transaction=True)


def _no_sideways_scroll(page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1400, f"{page.url} is {width} px wide"


@pytest.fixture
def lead(db):
    user = UserFactory(username="lee-lead", is_staff=True)
    RoleGrant.objects.create(user=user, role="ml_lead")
    return user


@pytest.fixture
def two_versions():
    model = RegisteredModelFactory(name="hotspot-classifier")
    old = new_version(
        "1.0.0",
        model=model,
        hyperparameters={"max_depth": 4, "learning_rate": 0.1},
        metrics={"auc": 0.7912, "brier": 0.18123},
        thresholds={"decision": 0.5},
        feature_list=["incidents_lag_1w", "calls_for_service_lag_1w", "population_density"],
    )
    new = new_version(
        "1.1.0",
        model=model,
        hyperparameters={"max_depth": 5, "learning_rate": 0.1},
        metrics={"auc": 0.8034, "brier": 0.17},
        thresholds={"decision": 0.45},
        feature_list=["incidents_lag_1w", "calls_for_service_lag_1w", "streetlight_outages"],
    )
    to_staging(old)
    gate_evidence(old, auc=0.79, passed=True)
    gate_evidence(new, auc=0.64, passed=False)
    return old, new


def test_version_page_and_its_comparison(
    page, login_as, assert_accessible, shot, lead, two_versions
):
    _, new = two_versions
    login_as(page, lead)

    page.goto(f"/console/models/hotspot-classifier/versions/{new.version}/")
    assert page.get_by_role("heading", level=1).inner_text().startswith("hotspot-classifier 1.1.0")
    assert_accessible(page)
    _no_sideways_scroll(page)
    shot(page, "version-page")

    page.get_by_label("Compare with", exact=True).select_option("1.0.0")
    page.get_by_role("button", name="Compare").click()
    page.wait_for_url("**?with=1.0.0")
    assert page.get_by_text("+ added").first.is_visible()
    assert page.locator("tr.diff").count() >= 3
    assert_accessible(page)
    _no_sideways_scroll(page)
    shot(page, "version-compare")
    assert page.js_errors == []


def test_audit_page_filter(page, login_as, assert_accessible, shot, lead, two_versions):
    login_as(page, lead)
    page.goto("/console/audit/")
    assert_accessible(page)
    shot(page, "audit-page")

    page.get_by_label("Action").select_option("approval.approved")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**action=approval.approved**")
    rows = page.locator("table.audit > tbody > tr")
    assert rows.count() >= 1
    assert all("approved" in t for t in rows.all_inner_texts())
    assert_accessible(page)
    _no_sideways_scroll(page)
    shot(page, "audit-filtered")
    assert page.js_errors == []
