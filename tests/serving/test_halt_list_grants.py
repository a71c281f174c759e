"""Issue 10, finding 11: GET /api/v1/halt/ lists global halts and the caller's models' halts."""

from __future__ import annotations

import pytest

from serving.models import Halt
from tests.factories import RegisteredModelFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def halts(db):
    RegisteredModelFactory(name="alpha")
    RegisteredModelFactory(name="beta")
    for scope in ("alpha", "beta", "global"):
        Halt.objects.create(scope=scope, reason=f"{scope} halted", engaged_by_label="tests")


def scopes(client) -> set[str]:
    response = client.get("/api/v1/halt/")
    assert response.status_code == 200
    return {halt["scope"] for halt in response.json()}


def test_a_per_model_grant_lists_that_models_halts_and_the_global_one(api_client, halts):
    assert scopes(api_client("oncall", username="alpha-oncall", model="alpha")) == {
        "alpha",
        "global",
    }


def test_a_global_reader_lists_every_halt(api_client, halts):
    assert scopes(api_client("oncall", username="everywhere")) == {"alpha", "beta", "global"}


def test_a_token_scoped_to_a_role_without_read_on_a_model_does_not_list_it(api_client, halts):
    from governance import services
    from tests.conftest import SYSTEM

    services.role_grant(username="mixed", roles=["ml_lead"], model_name="beta", actor=SYSTEM)
    client = api_client("oncall", username="mixed", model="alpha", scope=["oncall"])
    assert scopes(client) == {"alpha", "global"}


def test_released_halts_are_not_listed(api_client, halts):
    from django.utils import timezone

    Halt.objects.filter(scope="alpha").update(released_at=timezone.now())
    assert scopes(api_client("oncall", username="everywhere")) == {"beta", "global"}
