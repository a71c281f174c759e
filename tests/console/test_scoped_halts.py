"""Scoped halts in the console: engaged with a condition, shown on the overview, the banner, the
kill switch and the incident page, released by two people naming the same condition."""

from __future__ import annotations

import pytest
from django.urls import reverse

from governance.models import AuditEvent, Lifecycle, Stage
from incidents.models import Incident
from serving.models import Halt
from tests.console.test_halts import engage, person
from tests.factories import ModelVersionFactory, RegisteredModelFactory

pytestmark = pytest.mark.django_db
WHERE = {"field": "sensitive.district", "op": "in", "value": ["harbour"]}


@pytest.fixture
def model():
    model = RegisteredModelFactory(name="hotspot")
    version = ModelVersionFactory(model=model, version="1.0.0")
    Lifecycle.objects.filter(version=version).update(stage=Stage.PRODUCTION)  # set-up only
    return model


def test_engaging_with_a_condition_makes_a_scoped_halt_and_audits_it(client, model):
    client.force_login(person("lee", "ml_lead"))

    page = engage(
        client,
        scope="hotspot",
        where="sensitive.district in harbour",
        reason="fpr far above the others",
        confirm="yes",
    )

    halt = Halt.objects.get(scope="hotspot", released_at__isnull=True)
    assert halt.where == WHERE
    assert "Inference of hotspot where sensitive.district in {&quot;harbour&quot;} is halted." in (
        page
    )
    assert "halt-banner" in page and "where <code>sensitive.district in" in page
    assert AuditEvent.objects.get(action="halt.engaged").after["where"] == WHERE
    # the whole halt stays on offer: a scoped halt does not stand in for it
    assert '<option value="hotspot">hotspot</option>' in page


def test_a_condition_naming_no_feature_is_refused_naming_the_field(client, model):
    client.force_login(person("lee", "ml_lead"))
    page = engage(client, scope="hotspot", where="district in harbour", reason="x", confirm="yes")
    assert "where.field: &#x27;district&#x27; is not a feature" in page
    assert not Halt.objects.exists()
    unreadable = engage(client, scope="hotspot", where="f1 ~ 2", reason="x", confirm="yes")
    assert "write FIELD OP VALUE" in unreadable and not Halt.objects.exists()


def test_the_overview_shows_the_model_partly_halted_with_the_condition(client, model):
    client.force_login(person("lee", "ml_lead"))
    Halt.objects.create(
        scope="hotspot", where=WHERE, where_key="k", reason="harbour fpr", engaged_by_label="lee"
    )

    page = client.get(reverse("console:overview")).content.decode()

    assert "health-partly-halted" in page and "health-halted" not in page
    assert "halted where <code>sensitive.district in {&quot;harbour&quot;}</code>" in page


def test_release_names_the_condition_and_needs_two_people(client, model):
    lead, ethics = person("lee", "ml_lead"), person("olu", "ethics_officer")
    client.force_login(lead)
    engage(client, scope="hotspot", where="f1 > 2", reason="drill", confirm="yes")
    halts = client.get(reverse("console:halts")).content.decode()
    assert '<input type="hidden" name="where" value="f1 &gt; 2">' in halts
    release = reverse("console:halt-release")

    first = client.post(release, {"scope": "hotspot", "where": "f1 > 2", "comment": "ok"})
    assert first.status_code == 302
    client.force_login(ethics)
    second = client.post(
        release, {"scope": "hotspot", "where": "f1 > 2", "comment": "agreed"}, follow=True
    )

    assert "The halt of hotspot where f1 &gt; 2 is released" in second.content.decode()
    assert Halt.objects.get().released_at is not None
    assert AuditEvent.objects.filter(action="halt.released").count() == 1


def test_the_incident_page_says_which_requests_are_halted(client, model):
    client.force_login(person("olu", "ethics_officer"))
    halt = Halt.objects.create(
        scope="hotspot", where=WHERE, where_key="k", reason="breach", engaged_by_label="system"
    )
    incident = Incident.objects.create(
        model=model,
        kind="ethics",
        severity="critical",
        title="breach",
        halt=halt,
        opened_by="tests",
    )

    page = client.get(reverse("console:incident", args=[incident.pk])).content.decode()

    assert "for the requests where <code>sensitive.district in" in page
    assert "(the others are served)" in page
