"""Issue 10, finding 11: the registry pages show only models a role grant lets the user read."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from governance import services
from tests.conftest import SYSTEM
from tests.factories import ModelVersionFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def models(db):
    return (
        ModelVersionFactory(model__name="alpha", version="1.0.0"),
        ModelVersionFactory(model__name="beta", version="2.0.0"),
    )


def pages(name: str, version: str) -> list[str]:
    return [
        f"/registry/{name}/",
        f"/registry/{name}/{version}/",
        f"/registry/{name}/{version}/card/",
    ]


def login(client, username: str, *roles: str, model: str | None = None):
    if roles:
        services.role_grant(username=username, roles=list(roles), model_name=model, actor=SYSTEM)
    client.force_login(get_user_model().objects.get(username=username))
    return client


def test_a_staff_user_with_zero_grants_sees_no_model(client, models):
    client.force_login(UserFactory(username="leftover", is_staff=True))
    listing = client.get("/registry/")
    assert listing.status_code == 200
    assert b"alpha" not in listing.content and b"beta" not in listing.content
    for path in pages("alpha", "1.0.0"):
        assert client.get(path).status_code == 404, path


def test_a_per_model_grant_shows_that_model_only(client, models):
    login(client, "scoped", "ml_engineer", model="alpha")
    listing = client.get("/registry/").content
    assert b"alpha" in listing and b"beta" not in listing
    for path in pages("alpha", "1.0.0"):
        assert client.get(path).status_code == 200, path
    for path in pages("beta", "2.0.0"):
        assert client.get(path).status_code == 404, path


def test_a_global_grant_shows_every_model(client, models):
    login(client, "reader", "auditor")
    listing = client.get("/registry/").content
    assert b"alpha" in listing and b"beta" in listing
    for path in pages("beta", "2.0.0"):
        assert client.get(path).status_code == 200, path


def test_a_revoked_grant_hides_the_model_at_once(client, models):
    login(client, "scoped", "ml_engineer", model="alpha")
    assert client.get("/registry/alpha/").status_code == 200
    services.role_revoke(username="scoped", roles=["ml_engineer"], model_name="alpha", actor=SYSTEM)
    assert client.get("/registry/alpha/").status_code == 404
    assert b"alpha" not in client.get("/registry/").content


def test_a_ci_grant_is_not_a_console_reader_of_other_models(client, models):
    login(client, "bot", "ci", model="beta")
    assert client.get("/registry/alpha/1.0.0/card/").status_code == 404
    assert client.get("/registry/beta/2.0.0/card/").status_code == 200


def test_anonymous_visitors_are_sent_to_the_login(client, models):
    response = client.get("/registry/alpha/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
