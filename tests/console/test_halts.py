"""The kill switch page: engage with a reason and a confirmation, release with two people."""

from __future__ import annotations

import pytest
from django.urls import reverse

from governance.models import AuditEvent, RoleGrant
from serving.models import Halt
from tests.factories import RegisteredModelFactory, UserFactory

pytestmark = pytest.mark.django_db


def person(username, role, model=None):
    user = UserFactory(username=username)
    RoleGrant.objects.create(user=user, role=role, model=model)
    return user


@pytest.fixture
def model():
    return RegisteredModelFactory(name="hotspot")


def engage(client, **data):
    return client.post(reverse("console:halt-engage"), data, follow=True).content.decode()


def test_engaging_needs_the_confirmation_then_halts_and_audits(client, model):
    client.force_login(person("lee", "ml_lead"))

    refused = engage(client, scope="hotspot", reason="suspected leak")
    assert "Tick the confirmation box" in refused and not Halt.objects.exists()

    done = engage(client, scope="hotspot", reason="suspected leak", confirm="yes")
    halt = Halt.objects.get(scope="hotspot", released_at__isnull=True)
    assert "Inference of hotspot is halted." in done and halt.engaged_by_label.startswith("lee")
    assert "halt-banner" in done
    assert AuditEvent.objects.filter(action="halt.engaged", actor__startswith="lee").exists()


def test_a_reason_is_required(client, model):
    client.force_login(person("lee", "ml_lead"))
    page = engage(client, scope="hotspot", reason="  ", confirm="yes")
    assert "reason: required" in page and not Halt.objects.exists()


def test_release_needs_an_ml_lead_and_an_ethics_officer_two_people(client, model):
    lead, ethics = person("lee", "ml_lead"), person("olu", "ethics_officer")
    Halt.objects.create(scope="hotspot", reason="leak", engaged_by_label="lee")
    release = reverse("console:halt-release")

    client.force_login(lead)
    first = client.post(release, {"scope": "hotspot", "comment": "ruled out"}, follow=True)
    assert "still needs ethics_officer" in first.content.decode()
    again = client.get(reverse("console:halts")).content.decode()
    assert "Approve the release" not in again  # one approval per person

    client.force_login(ethics)
    page = client.get(reverse("console:halts")).content.decode()
    assert "<strong>lee</strong> as ml_lead" in page and "Still needed: ethics_officer" in page
    second = client.post(release, {"scope": "hotspot", "comment": "agreed"}, follow=True)
    assert "released: predictions resume" in second.content.decode()
    assert Halt.objects.get(scope="hotspot").released_at is not None


def test_who_may_not_halt_sees_no_form_and_the_server_refuses_anyway(client, model):
    client.force_login(person("pia", "product_manager"))
    page = client.get(reverse("console:halts")).content.decode()
    assert "Halt inference" not in page

    refused = engage(client, scope="hotspot", reason="x", confirm="yes")
    assert "needs the &#x27;halt&#x27; permission" in refused and not Halt.objects.exists()


def test_a_per_model_grant_offers_only_that_model_and_no_global_halt(client, model):
    RegisteredModelFactory(name="other")
    client.force_login(person("lee", "ml_lead", model=model))
    page = client.get(reverse("console:halts")).content.decode()
    assert '<option value="hotspot">' in page
    assert 'value="other"' not in page and 'value="global"' not in page
