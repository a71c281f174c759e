"""A scoped halt driven from the console: engaged with a condition, seen on the overview as
partly halted with that condition, released by two people; every page passes axe-core."""

from __future__ import annotations

import re

import pytest

from serving.models import Halt
from tests.browser.test_console_flows import demo_people, switch_to, visit
from tests.incidents.helpers import live_single

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_scoped_halt_is_engaged_shown_and_released_in_the_console(
    page, login_as, assert_accessible, shot
):
    people = demo_people()
    model = live_single().model.name  # features f1, f2, f3
    switch_to(page, login_as, people["lee-lead"])
    visit(page, "/console/halts/", assert_accessible, shot, "scoped-halt-before")

    page.get_by_label("Model", exact=True).select_option(model)
    page.get_by_label(re.compile("Only the requests where")).fill("f1 > 2")
    page.get_by_label("Reason (required, audited)").fill("drift in the high range")
    page.get_by_label(re.compile("I understand")).check()
    page.get_by_role("button", name="Halt inference").click()
    page.wait_for_load_state()
    assert f"Inference of {model} where f1 &gt; 2 is halted." in page.content()
    banner = page.get_by_role("alert").filter(has_text="Inference halted")
    assert "where f1 > 2" in banner.inner_text()
    assert_accessible(page)
    shot(page, "scoped-halt-engaged")

    visit(page, "/console/", assert_accessible, shot, "scoped-halt-overview")
    assert page.locator(".health-partly-halted").first.is_visible()
    assert "halted where f1 > 2" in page.locator("table.overview").inner_text()

    page.goto("/console/halts/")
    page.get_by_label("Why it is safe to resume").fill("range reviewed")
    page.get_by_role("button", name="Approve the release").click()
    page.wait_for_load_state()
    switch_to(page, login_as, people["olu-ethics"])
    visit(page, "/console/halts/", assert_accessible, shot, "scoped-halt-second-person")
    page.get_by_label("Why it is safe to resume").fill("agreed")
    page.get_by_role("button", name="Approve the release").click()
    page.wait_for_load_state()
    assert "where f1 &gt; 2 is released" in page.content()
    assert Halt.objects.get(scope=model).released_at is not None
