"""One read rule for a superuser in the browser: the console's lists, its model page and the
registry pages agree (they did not: model page yes, overview and alerts empty, incident 404).
The API stays role-based: a superuser without a role grant holds no API role and is refused."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from governance.models import Lifecycle, Stage
from governance.roles import Role
from governance.selectors import readable_models
from tests.factories import ModelVersionFactory, RegisteredModelFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_live_models():
    names = []
    for name in ("alpha-model", "beta-model"):
        version = ModelVersionFactory(model=RegisteredModelFactory(name=name), version="1.0.0")
        Lifecycle.objects.filter(version=version).update(stage=Stage.MONITORING)  # set-up only
        names.append(name)
    return names


def test_a_superuser_reads_every_model_on_every_console_and_registry_page(client, two_live_models):
    admin = UserFactory(username="root-admin", is_staff=True, is_superuser=True)
    client.force_login(admin)
    overview = client.get("/console/").content.decode()
    registry = client.get("/registry/").content.decode()
    for name in two_live_models:
        assert name in overview
        assert name in registry
        assert client.get(f"/console/models/{name}/").status_code == 200
    api = APIClient()
    api.force_authenticate(admin)
    assert api.get("/api/v1/models/").status_code == 403


def test_a_token_narrowed_to_roles_reads_only_what_those_roles_grant(two_live_models):
    admin = UserFactory(is_staff=True, is_superuser=True)
    assert readable_models(admin).count() == 2
    assert readable_models(admin, scopes=[Role.ML_ENGINEER]).count() == 0


def test_an_inactive_superuser_or_a_plain_user_reads_nothing(two_live_models):
    assert readable_models(UserFactory(is_superuser=True, is_active=False)).count() == 0
    assert readable_models(UserFactory(is_staff=True)).count() == 0
