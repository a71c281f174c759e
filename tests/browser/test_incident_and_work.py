"""The incident page and My work in a browser: a step completed through the form updates the
checklist and the count in the navigation bar; both pages are accessible."""

from __future__ import annotations

import pytest

from incidents.models import StepRun
from tests.console.incident_helpers import grant, no_broker, opened  # noqa: F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_broker")]


def test_an_engineer_completes_a_step_from_my_work(page, login_as, assert_accessible, shot):
    incident = opened(alerts=2)
    erin = grant("erin", "ml_engineer")
    login_as(page, erin)

    page.goto("/console/work/")
    count = page.locator("header .count")
    assert count.inner_text().startswith("3")
    assert page.get_by_role("cell", name="Step 3: Assess impact").first.is_visible()
    assert_accessible(page)
    shot(page, "work")

    page.get_by_role(
        "link", name="Complete Step 3: Assess impact: how many predictions affected?"
    ).click()
    page.wait_for_url(f"**/console/incidents/{incident.pk}/#step-3")
    step = page.locator("#step-3")
    assert "Waiting" in step.inner_text()
    step.get_by_label("What was done or found (required)").fill("312 predictions in the north-east")
    step.get_by_role("button", name="Complete step 3").click()

    page.wait_for_url(f"**/console/incidents/{incident.pk}/#step-3")
    step = page.locator("#step-3")
    assert "Done" in step.inner_text() and "Completed by erin" in step.inner_text()
    assert step.get_by_role("button").count() == 0
    assert page.locator("header .count").inner_text().startswith("2")
    timeline = page.locator("ol.timeline").inner_text()
    assert "erin completed step 3: Assess impact: how many predictions affected?" in timeline
    assert StepRun.objects.get(incident=incident, order=3).status == "done"
    assert_accessible(page)
    shot(page, "incident")
    assert page.js_errors == []


def test_a_reader_sees_the_checklist_without_forms(page, login_as, assert_accessible, shot):
    incident = opened()
    login_as(page, grant("pia", "product_manager"))

    page.goto(f"/console/incidents/{incident.pk}/")

    assert page.locator("ol.checklist > li").count() == 7
    assert page.locator("ol.checklist form").count() == 0
    # the model's charts around the opening are drawn, the opening marked on each
    page.wait_for_selector('[data-series-loaded="yes"]')
    assert page.locator('canvas[data-chart][data-drawn="yes"]').count() == 4
    assert page.js_errors == []
    assert page.locator("header .count").count() == 0
    page.goto("/console/incidents/")
    assert page.get_by_role(
        "link", name=f"Critical fairness incident on {incident.model.name} 1.1.0"
    ).is_visible()
    assert_accessible(page)
    shot(page, "incidents")
