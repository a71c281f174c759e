"""Issue 10, finding 9: password logins are locked after repeated failures; Argon2 hashes."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.utils import timezone

from governance import services
from tests.conftest import SYSTEM

pytestmark = pytest.mark.django_db
LOGIN = "/admin/login/"
PASSWORD = "a-correct-horse-battery"


@pytest.fixture
def lead(db):
    services.role_grant(username="lee", roles=["ml_lead"], actor=SYSTEM)
    user = get_user_model().objects.get(username="lee")
    user.set_password(PASSWORD)
    user.save()
    return user


def attempt(client, password: str, username: str = "lee", addr: str = "10.0.0.1"):
    return client.post(
        LOGIN,
        {"username": username, "password": password, "next": "/admin/"},
        REMOTE_ADDR=addr,
    )


def logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_the_right_password_is_refused_after_too_many_failures_until_the_cool_off(
    client, lead, settings
):
    settings.AXES_FAILURE_LIMIT = 3
    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for _ in range(3):
            assert attempt(client, "wrong").status_code in (200, 429)
        locked = attempt(client, PASSWORD)
        assert locked.status_code == 429
        assert b"Login locked" in locked.content and b"lee" in locked.content
        assert not logged_in(client)

        clock.shift(timedelta(minutes=5))  # still within the cool-off
        assert attempt(client, PASSWORD).status_code == 429
        assert not logged_in(client)

        clock.shift(timedelta(minutes=16))  # the cool-off has passed
        response = attempt(client, PASSWORD)
        assert response.status_code == 302
        assert logged_in(client)


def test_the_lock_is_per_username_and_address(client, lead, settings):
    settings.AXES_FAILURE_LIMIT = 2
    for _ in range(2):
        attempt(client, "wrong", addr="10.0.0.1")
    assert attempt(client, PASSWORD, addr="10.0.0.1").status_code == 429
    # the same user from another address is not locked out by someone else's guessing
    assert attempt(client, PASSWORD, addr="10.0.0.2").status_code == 302


def test_fewer_failures_than_the_limit_do_not_lock(client, lead, settings):
    settings.AXES_FAILURE_LIMIT = 5
    for _ in range(4):
        attempt(client, "wrong")
    assert attempt(client, PASSWORD).status_code == 302


def test_production_hashes_passwords_with_argon2_first(settings):
    from config.settings import base

    assert base.PASSWORD_HASHERS[0] == "django.contrib.auth.hashers.Argon2PasswordHasher"
    settings.PASSWORD_HASHERS = base.PASSWORD_HASHERS
    assert make_password("x" * 12).startswith("argon2$")
