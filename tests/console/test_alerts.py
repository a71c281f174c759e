"""The alerts page: filter, acknowledge and resolve with a note, for the models one may see."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from monitoring.models import Alert
from tests.factories import RegisteredModelFactory
from tests.governance.lifecycle_helpers import person
from tests.incidents.helpers import alert_on, live_single

pytestmark = pytest.mark.django_db


def login(client, username):
    client.force_login(get_user_model().objects.get(username=username))


def test_filters_and_resolved_alerts_are_hidden_until_asked_for(client):
    version = live_single()
    drift = alert_on(version, "data_drift", "medium")
    fairness = alert_on(version, "fairness", "critical")
    Alert.objects.filter(pk=drift.pk).update(status="resolved")
    person("ml_lead", "lee")
    login(client, "lee")

    default = client.get(reverse("console:alerts")).content.decode()
    medium_all = client.get(reverse("console:alerts"), {"severity": "medium", "status": "all"})
    bogus = client.get(reverse("console:alerts"), {"severity": "nope"})

    assert f"<td>{fairness.pk}</td>" in default and f"<td>{drift.pk}</td>" not in default
    page = medium_all.content.decode()
    assert f"<td>{drift.pk}</td>" in page and f"<td>{fairness.pk}</td>" not in page
    assert bogus.status_code == 200  # an unknown filter value is ignored, not a 500


def test_acknowledge_and_resolve_from_the_page_with_a_note(client):
    alert = alert_on(live_single(), "data_drift", "medium")
    person("ml_engineer", "erin")
    login(client, "erin")
    act = "console:alert-act"

    client.post(reverse(act, args=[alert.pk, "acknowledge"]))
    page = client.post(
        reverse(act, args=[alert.pk, "resolve"]), {"note": "feed fixed"}, follow=True
    ).content.decode()

    alert.refresh_from_db()
    assert alert.status == "resolved" and alert.note == "feed fixed"
    assert f"Alert {alert.pk} resolved." in page


def test_readers_see_no_buttons_and_the_server_refuses_anyway(client):
    alert = alert_on(live_single(), "data_drift", "medium")
    person("product_manager", "pia")
    login(client, "pia")

    page = client.get(reverse("console:alerts")).content.decode()
    refused = client.post(
        reverse("console:alert-act", args=[alert.pk, "resolve"]), {"note": "x"}, follow=True
    ).content.decode()

    assert "Acknowledge" not in page and "handle_alerts" in refused
    assert Alert.objects.get(pk=alert.pk).status == "open"


def test_alerts_of_other_models_are_neither_listed_nor_actionable(client):
    alert = alert_on(live_single(), "data_drift", "medium")
    other = RegisteredModelFactory(name="other")
    from governance import services
    from tests.incidents.helpers import SYSTEM

    services.role_grant(username="scoped", roles=["ml_lead"], model_name=other.name, actor=SYSTEM)
    login(client, "scoped")

    page = client.get(reverse("console:alerts"), {"status": "all"}).content.decode()
    posted = client.post(reverse("console:alert-act", args=[alert.pk, "resolve"]), {"note": "x"})
    unknown_verb = client.post(reverse("console:alert-act", args=[alert.pk, "delete"]))

    assert f"<td>{alert.pk}</td>" not in page
    assert posted.status_code == 404 and unknown_verb.status_code == 404


def test_an_offsite_next_is_not_followed(client):
    alert = alert_on(live_single(), "data_drift", "medium")
    person("ml_lead", "lee")
    login(client, "lee")
    response = client.post(
        reverse("console:alert-act", args=[alert.pk, "acknowledge"]),
        {"next": "https://evil.example/"},
    )
    assert response["Location"] == reverse("console:alerts")


def test_pages_link_to_older_and_newer_alerts_with_the_filters_kept(client, monkeypatch):
    monkeypatch.setattr("console.selectors.ALERT_PAGE_SIZE", 2)
    version = live_single()
    for check in ("data_drift", "fairness", "prediction_drift"):
        alert_on(version, check, "medium")
    person("ml_lead", "lee")
    login(client, "lee")

    first = client.get(reverse("console:alerts"), {"severity": "medium"}).content.decode()
    second = client.get(reverse("console:alerts"), {"severity": "medium", "page": 2})

    assert ">Older</a>" in first and ">Newer</a>" not in first
    assert "severity=medium&amp;page=2" in first
    page = second.content.decode()
    assert ">Newer</a>" in page and ">Older</a>" not in page and "&amp;page=1" in page
    assert page.count("<tr") - 1 == 1  # the header row, then the one alert left
