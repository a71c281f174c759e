"""Alerts are acknowledged and resolved by people (who, when, why; audited), and resolved with
their incident."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from rest_framework.test import APIClient

from governance import audit, services
from governance.models import AuditEvent
from incidents.alert_response import route_alert
from incidents.models import Incident
from incidents.resolution import incident_resolved
from monitoring.alerts import alert_acknowledge, alert_resolve
from monitoring.models import Alert
from platform_core.errors import Conflict, Forbidden, InvalidInput
from tests.factories import RegisteredModelFactory
from tests.governance.lifecycle_helpers import person
from tests.incidents.helpers import SYSTEM, alert_on, live_pair, live_single

pytestmark = pytest.mark.django_db


def api_as(username: str) -> APIClient:
    client = APIClient()
    client.force_authenticate(user=get_user_model().objects.get(username=username))
    return client


def test_acknowledge_then_resolve_records_who_when_and_why_and_audits_both():
    alert = alert_on(live_single(), "data_drift", "medium")
    engineer = person("ml_engineer", "erin")

    alert_acknowledge(alert_id=alert.pk, actor=engineer, note="looking at x3")
    alert_resolve(alert_id=alert.pk, actor=engineer, note="upstream feed fixed")

    alert.refresh_from_db()
    assert alert.status == "resolved" and alert.note == "upstream feed fixed"
    assert alert.acknowledged_by.startswith("erin") and alert.resolved_by.startswith("erin")
    assert alert.acknowledged_at <= alert.resolved_at
    actions = list(
        AuditEvent.objects.filter(object_id=str(alert.pk), action__startswith="monitoring.alert_")
        .order_by("seq")
        .values_list("action", flat=True)
    )
    assert actions == ["monitoring.alert_acknowledged", "monitoring.alert_resolved"]
    assert audit.verify().valid


def test_resolving_needs_a_reason_the_permission_and_happens_once():
    alert = alert_on(live_single(), "data_drift", "medium")
    with pytest.raises(InvalidInput, match="note"):
        alert_resolve(alert_id=alert.pk, actor=person("ml_engineer", "erin"), note=" ")
    with pytest.raises(Forbidden, match="handle_alerts"):
        alert_resolve(alert_id=alert.pk, actor=person("product_manager", "pia"), note="fine")
    alert_resolve(alert_id=alert.pk, actor=person("ml_lead", "lee"), note="fine")
    with pytest.raises(Conflict, match="already resolved"):
        alert_acknowledge(alert_id=alert.pk, actor=person("ml_lead", "lee"))


def test_a_resolved_incident_resolves_its_alerts_with_an_audit_event_each():
    _, v2 = live_pair()
    first, second = alert_on(v2, "concept_drift", "high"), alert_on(v2, "concept_drift", "high")
    route_alert(first)
    route_alert(second)
    incident = Incident.objects.get()
    assert set(incident.alerts.values_list("status", flat=True)) == {"open"}

    with transaction.atomic():
        Incident.objects.filter(pk=incident.pk).update(status="resolved")
        incident.refresh_from_db()
        incident_resolved(incident, actor=SYSTEM, previous_status="open")

    statuses = set(
        Alert.objects.filter(pk__in=[first.pk, second.pk]).values_list("status", flat=True)
    )
    assert statuses == {"resolved"}
    assert Alert.objects.get(pk=first.pk).note == f"resolved with incident {incident.pk}"
    assert AuditEvent.objects.filter(action="monitoring.alert_resolved").count() == 2
    incident_resolved(incident, actor=SYSTEM)  # again: nothing new
    assert AuditEvent.objects.filter(action="monitoring.alert_resolved").count() == 2


def test_the_api_acknowledges_and_resolves_and_names_the_missing_note():
    alert = alert_on(live_single(), "data_drift", "medium")
    person("ml_lead", "lee")
    client = api_as("lee")

    missing = client.post(f"/api/v1/alerts/{alert.pk}/resolve/", {}, format="json")
    acked = client.post(f"/api/v1/alerts/{alert.pk}/acknowledge/", {}, format="json")
    resolved = client.post(
        f"/api/v1/alerts/{alert.pk}/resolve/", {"note": "false alarm"}, format="json"
    )

    assert missing.status_code == 400 and "note" in missing.json()["errors"]
    assert acked.status_code == 200 and acked.json()["status"] == "acknowledged"
    assert resolved.status_code == 200 and resolved.json()["resolved_by"].startswith("lee")


def test_the_api_hides_alerts_of_models_without_a_grant_and_refuses_readers():
    alert = alert_on(live_single(), "data_drift", "medium")
    other = RegisteredModelFactory(name="other-model")
    services.role_grant(username="scoped", roles=["ml_lead"], model_name=other.name, actor=SYSTEM)
    person("product_manager", "pia")

    hidden = api_as("scoped").post(f"/api/v1/alerts/{alert.pk}/resolve/", {"note": "x"})
    refused = api_as("pia").post(f"/api/v1/alerts/{alert.pk}/acknowledge/", {"note": "x"})

    assert hidden.status_code == 404
    assert refused.status_code == 403 and "handle_alerts" in refused.json()["detail"]
    assert Alert.objects.get(pk=alert.pk).status == "open"
