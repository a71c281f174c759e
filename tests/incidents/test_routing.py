"""Alert routing: incidents per playbook, joining, paging; concurrency on PostgreSQL."""

import pytest

from incidents.alert_response import route_alert
from incidents.models import Incident, Notification, Rollback
from monitoring.models import ReviewItem
from tests.concurrency import race
from tests.incidents.helpers import alert_on, live_pair, stage


@pytest.mark.django_db
def test_high_alert_opens_a_playbook_1_incident_and_an_alert_of_the_same_kind_joins_it():
    _, v2 = live_pair()
    first = alert_on(v2, "concept_drift", "high")
    assert route_alert(first)["action"] == "opened"
    assert stage(v2) == "degraded"
    incident = Incident.objects.get()
    assert (incident.kind, incident.playbook, incident.status) == ("performance", "1", "open")
    page = Notification.objects.get()
    assert (page.channel, page.role) == ("page", "ml_lead")
    second = alert_on(v2, "concept_drift", "high")
    joined = route_alert(second)
    assert joined["default"].startswith("nothing") and joined["incident"] == incident.pk
    assert (joined["action"], joined["rollback"]) == ("joined", None)
    assert route_alert(second)["action"] == "already routed"  # a retried hand-off
    assert Incident.objects.count() == 1 and set(incident.alerts.all()) == {first, second}
    assert Notification.objects.count() == 1  # paged once per incident and role
    # and the timeline says so: one page, not one per alert
    assert incident.events.filter(kind="notification", message__startswith="paging").count() == 1
    assert not Rollback.objects.exists()
    fairness = route_alert(alert_on(v2, "fairness", "critical"))
    assert fairness["action"] == "opened" and Incident.objects.count() == 2


@pytest.mark.django_db
def test_medium_alert_goes_to_the_review_queue_without_an_incident():
    _, v2 = live_pair()
    alert = alert_on(v2, "data_drift", "medium")
    assert route_alert(alert) == {"default": "queued"}
    assert ReviewItem.objects.filter(alert=alert).exists() and not Incident.objects.exists()
    assert stage(v2) == "production"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_routing_of_two_critical_alerts_starts_exactly_one_rollback(enqueued):
    _, v2 = live_pair()
    alerts = [alert_on(v2), alert_on(v2)]
    outcomes, errors = race(lambda i: route_alert(alerts[i]), len(alerts))
    assert errors == []
    assert Rollback.objects.count() == 1
    assert sorted(o["rollback"] is not None for o in outcomes) == [False, True]
    assert enqueued["rollback"] == [Rollback.objects.get().pk]
    assert Incident.objects.count() == 1 and Incident.objects.get().alerts.count() == 2


@pytest.mark.django_db
def test_an_alert_on_a_version_that_does_not_serve_opens_no_incident():
    from tests.governance.lifecycle_helpers import new_version, to_validation

    version = new_version()
    to_validation(version)
    outcome = route_alert(alert_on(version, "fairness", "critical"))
    assert outcome["action"].startswith("no incident") and not Incident.objects.exists()
    assert stage(version) == "validation"
