"""Issue 10, finding 13: the demo's machine account is not staff and has no password."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from demo.management.commands.demo import DEMO_PASSWORD, Command
from tests.conftest import SYSTEM

pytestmark = pytest.mark.django_db


def seed_users():
    Command()._users(SYSTEM)


def test_ci_bot_is_not_staff_and_cannot_log_into_the_admin(client):
    seed_users()
    bot = get_user_model().objects.get(username="ci-bot")
    assert not bot.is_staff and not bot.is_superuser
    assert not bot.has_usable_password()
    response = client.post(
        "/admin/login/?next=/admin/", {"username": "ci-bot", "password": DEMO_PASSWORD}
    )
    assert response.status_code == 200  # the form again, with its error
    assert "_auth_user_id" not in client.session


def test_demo_people_still_log_in_with_the_demo_password(client):
    seed_users()
    assert get_user_model().objects.get(username="erin-engineer").is_staff
    response = client.post(
        "/admin/login/?next=/admin/", {"username": "erin-engineer", "password": DEMO_PASSWORD}
    )
    assert response.status_code == 302
    assert "_auth_user_id" in client.session


def test_a_ci_bot_made_staff_by_an_older_demo_is_demoted_on_the_next_run():
    user = get_user_model().objects.create_user("ci-bot", password=DEMO_PASSWORD, is_staff=True)
    seed_users()
    user.refresh_from_db()
    assert not user.is_staff and not user.has_usable_password()
