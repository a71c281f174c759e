"""The console driven as people use it: every demo role, a promotion signed in the admin, the
kill switch engaged and released by two people, an alert acknowledged, the overview by keyboard.

Every console page visited must pass axe-core (no serious or critical violation); every page
visited is saved as a screenshot (``shot``).
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model

from demo.management.commands.demo import USERS
from governance import services
from governance.models import EvidenceKind, Lifecycle
from serving.models import Halt
from tests.conftest import SYSTEM
from tests.governance.lifecycle_helpers import evidence, new_version, to_staging
from tests.incidents.helpers import alert_on, live_single

pytestmark = pytest.mark.django_db(transaction=True)
CONSOLE = ["/console/", "/console/alerts/", "/console/halts/"]


def demo_people() -> dict[str, object]:
    """The demo's people, with the demo's global grants (``manage.py demo`` does the same)."""
    people = {}
    for username, roles in USERS.items():
        if not roles or "ci" in roles:
            continue
        services.role_grant(username=username, roles=roles, actor=SYSTEM)
        people[username] = get_user_model().objects.get(username=username)
    return people


def visit(page, path: str, assert_accessible, shot, name: str) -> None:
    page.goto(path)
    assert page.get_by_role("heading", level=1).first.is_visible(), f"{name}: no h1"
    assert_accessible(page)
    shot(page, name)


def switch_to(page, login_as, user) -> None:
    page.context.clear_cookies()
    login_as(page, user)


def test_every_demo_role_sees_accessible_console_pages(page, login_as, assert_accessible, shot):
    version = live_single()
    alert_on(version, "fairness", "critical")
    alert_on(version, "data_drift", "medium")
    Halt.objects.create(scope=version.model.name, reason="suspected leak", engaged_by_label="lee")
    for username, user in demo_people().items():
        switch_to(page, login_as, user)
        for path in CONSOLE:
            slug = path.strip("/").replace("/", "-")
            visit(page, path, assert_accessible, shot, f"role-{username}-{slug}")
            assert username in page.locator("header").inner_text()
            # every role that may see the model sees the halt banner on every page
            assert page.get_by_role("alert").filter(has_text="Inference halted").is_visible()
    assert page.js_errors == []


def test_a_promotion_signed_by_three_roles_in_the_admin_moves_the_stage(page, login_as, shot):
    people = demo_people()
    version = new_version("1.0.0")
    to_staging(version)
    evidence(version, EvidenceKind.SHADOW_REPLAY)
    lifecycle = Lifecycle.objects.get(version=version)
    url = f"/admin/governance/lifecycle/{lifecycle.pk}/change/"

    for username, role in [
        ("lee-lead", "ml_lead"),
        ("olu-ethics", "ethics_officer"),
        ("pia-pm", "product_manager"),
    ]:
        switch_to(page, login_as, people[username])
        page.goto(url)
        sign = page.locator("#lifecycle-actions form").filter(
            has_text=re.compile(rf"Sign promote as {role}")
        )
        sign.get_by_placeholder("comment").fill(f"{role} agrees")
        sign.get_by_role("button", name="Approve").click()
        page.wait_for_load_state()
        assert "Decision recorded." in page.content(), username
        shot(page, f"promotion-signed-by-{username}")

    switch_to(page, login_as, people["lee-lead"])
    page.goto(url)
    page.locator("#lifecycle-actions").get_by_role("button", name="promote").click()
    page.wait_for_load_state()
    assert "promote done" in page.content()
    assert re.search(r"Stage:?\s*Production", page.locator(".field-stage").inner_text())
    shot(page, "promotion-done")
    lifecycle.refresh_from_db()
    assert lifecycle.stage == "production"


def test_the_kill_switch_is_engaged_by_one_person_and_released_by_two(
    page, login_as, assert_accessible, shot
):
    people = demo_people()
    model = live_single().model.name
    switch_to(page, login_as, people["lee-lead"])
    visit(page, "/console/halts/", assert_accessible, shot, "halt-before")

    page.get_by_label("Model", exact=True).select_option(model)
    page.get_by_label("Reason (required, audited)").fill("suspected data leak")
    page.get_by_label(re.compile("I understand")).check()
    page.get_by_role("button", name="Halt inference").click()
    page.wait_for_load_state()
    banner = page.get_by_role("alert").filter(has_text="Inference halted")
    assert model in banner.inner_text() and "suspected data leak" in banner.inner_text()
    assert_accessible(page)
    shot(page, "halt-engaged")

    page.get_by_label("Why it is safe to resume").fill("leak ruled out")
    page.get_by_role("button", name="Approve the release").click()
    page.wait_for_load_state()
    assert "still needs ethics_officer" in page.content()
    assert page.get_by_role("button", name="Approve the release").count() == 0  # once a person
    assert_accessible(page)
    shot(page, "halt-release-first-approval")

    switch_to(page, login_as, people["olu-ethics"])
    visit(page, "/console/halts/", assert_accessible, shot, "halt-release-second-person")
    assert "Still needed: ethics_officer" in page.content()
    page.get_by_label("Why it is safe to resume").fill("agreed with the ML Lead")
    page.get_by_role("button", name="Approve the release").click()
    page.wait_for_load_state()
    assert "released: predictions resume" in page.content()
    assert page.get_by_role("alert").filter(has_text="Inference halted").count() == 0
    assert_accessible(page)
    shot(page, "halt-released")
    assert Halt.objects.get(scope=model).released_at is not None


def test_an_alert_is_acknowledged_on_the_alerts_page(page, login_as, assert_accessible, shot):
    people = demo_people()
    alert = alert_on(live_single(), "data_drift", "medium")
    switch_to(page, login_as, people["erin-engineer"])
    visit(page, "/console/alerts/", assert_accessible, shot, "alerts-before")

    number = page.get_by_role("cell", name=str(alert.pk), exact=True)
    row = page.get_by_role("row").filter(has=number)
    row.get_by_role("button", name="Acknowledge").click()
    page.wait_for_load_state()

    assert "acknowledged by erin-engineer" in page.content()
    assert_accessible(page)
    shot(page, "alerts-acknowledged")
    alert.refresh_from_db()
    assert alert.status == "acknowledged"


def test_the_overview_works_with_the_keyboard_alone(page, login_as, assert_accessible, shot):
    people = demo_people()
    model = live_single().model.name
    login_as(page, people["lee-lead"])
    visit(page, "/console/", assert_accessible, shot, "keyboard-overview")

    for _ in range(40):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            "() => ({text: document.activeElement.textContent.trim(),"
            " visible: document.activeElement.matches(':focus-visible'),"
            " outline: getComputedStyle(document.activeElement).outlineStyle})"
        )
        assert focused["visible"] and focused["outline"] != "none", focused
        if focused["text"] == model:
            break
    else:
        pytest.fail(f"Tab never reached the link to {model}")
    shot(page, "keyboard-model-link-focused")

    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert model in page.url
    assert page.get_by_role("heading", level=1).first.is_visible()
    shot(page, "keyboard-model-page")
