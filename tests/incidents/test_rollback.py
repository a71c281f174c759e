"""Automatic and manual rollback: exactly once, v(n-1) restored and verified serving through
the gateway (real MLflow models), review scheduled."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from governance import audit
from governance.models import Archive, Lifecycle
from incidents import rollback as rollback_service
from incidents import tasks
from incidents.alert_response import route_alert
from incidents.models import Incident, Notification, Rollback
from tests.incidents.helpers import alert_on, live_pair, live_single, stage

pytestmark = pytest.mark.django_db


def test_two_critical_alerts_roll_back_exactly_once_to_the_previous_version_and_schedule_review(
    django_capture_on_commit_callbacks, enqueued, serving_pair
):
    v1, v2 = serving_pair
    first = route_alert(alert_on(v2))
    assert first["action"] == "opened" and first["rollback"] is None
    assert stage(v2) == "degraded" and not Rollback.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        second = route_alert(alert_on(v2))
    assert second["action"] == "joined" and second["rollback"] is not None
    assert enqueued["rollback"] == [second["rollback"]]
    assert route_alert(alert_on(v2))["rollback"] is None  # a third alert: never twice
    rollback = Rollback.objects.get()

    assert tasks.run_rollback.apply(args=[rollback.pk]).get() == "completed"
    rollback.refresh_from_db()
    assert (rollback.from_version, rollback.to_version) == (v2, v1)
    assert rollback.switched_at and rollback.verified_at and rollback.completed_at
    assert rollback.verification.startswith("gateway: 1.0.0 scored a probe of 3 features")
    assert stage(v1) == "production"
    rolled = Lifecycle.objects.get(version=v2)
    assert rolled.stage == "retired" and rolled.archive == Archive.COLD
    incident = Incident.objects.get()
    assert incident.kind == "fairness" and incident.playbook == "2"
    assert incident.alerts.count() == 3 and incident.status == "mitigating"  # steps still wait
    due = incident.review_due_at - timezone.now()
    assert timedelta(hours=47) < due <= timedelta(hours=48)
    messages = list(incident.events.values_list("message", flat=True))
    assert any(m.startswith("switched:") for m in messages)
    assert any(m.startswith("completed:") for m in messages)
    page = Notification.objects.get(channel="page", role="ethics_officer", event="trigger")
    assert page.dedup_key == f"incident-{incident.pk}-page-ethics_officer"
    assert audit.verify().valid


def test_one_critical_alert_alone_does_not_roll_back():
    _, v2 = live_pair()
    assert route_alert(alert_on(v2))["rollback"] is None
    assert not Rollback.objects.exists() and stage(v2) == "degraded"


def test_the_policy_sets_how_many_critical_alerts_roll_back():
    _, v2 = live_pair()
    from governance.audit import Actor
    from governance.policies import policy_publish

    tests = Actor.system("tests")
    policy_publish("monitoring", v2.model, {"critical_alerts_for_rollback": 3}, tests)
    assert route_alert(alert_on(v2))["rollback"] is None
    assert route_alert(alert_on(v2))["rollback"] is None
    assert route_alert(alert_on(v2))["rollback"] is not None


def test_a_retried_rollback_task_does_not_roll_back_twice(serving_pair):
    v1, v2 = serving_pair
    route_alert(alert_on(v2))
    rollback = Rollback.objects.get(pk=route_alert(alert_on(v2))["rollback"])
    # The worker dies after the switch committed: the redelivered task resumes from "switched".
    assert rollback_service._advance(rollback.pk, task_id="t1") == "switched"
    assert stage(v2) == "rollback" and stage(v1) == "production"
    assert rollback_service.rollback_run(rollback.pk, task_id="t2") == "completed"
    assert rollback_service.rollback_run(rollback.pk, task_id="t3") == "completed"
    assert tasks.run_rollback.apply(args=[rollback.pk]).get() == "completed"
    assert stage(v1) == "production" and stage(v2) == "retired"
    from governance.models import AuditEvent

    actions = list(AuditEvent.objects.values_list("action", flat=True))
    assert actions.count("lifecycle.start_rollback") == 1
    assert actions.count("lifecycle.restore") == 1
    assert actions.count("lifecycle.complete_rollback") == 1
    assert audit.verify().valid


def test_without_a_standby_version_nothing_switches_and_the_ml_lead_is_paged():
    version = live_single()
    route_alert(alert_on(version))
    rollback_id = route_alert(alert_on(version))["rollback"]
    assert rollback_service.rollback_run(rollback_id) == "no_standby"
    assert stage(version) == "degraded"
    incident = Incident.objects.get()
    assert incident.rollbacks.get().status == "no_standby"
    assert any("no warm-standby" in m for m in incident.events.values_list("message", flat=True))
    page = Notification.objects.get(role="ml_lead", channel="page")
    assert page.incident == incident and "no warm-standby" in page.subject
    assert rollback_service.rollback_run(rollback_id) == "no_standby"  # retried: unchanged


def test_manual_rollback_api_returns_202_with_the_incident_and_403_for_ci(api_client, serving_pair):
    v1, v2 = serving_pair
    url = f"/api/v1/models/{v2.model.name}/rollback/"
    refused = api_client("ci").post(url, {"reason": "bias spike"})
    assert refused.status_code == 403
    lead = api_client("ml_lead", username="lead-1")
    assert lead.post(url, {}).status_code == 400
    response = lead.post(url, {"reason": "bias spike on northgate"})
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["kind"] == "manual_rollback" and body["version"] == "1.0.1"
    assert body["rollbacks"][0]["status"] == "requested"
    assert lead.post(url, {"reason": "again"}).status_code == 409
    rollback_service.rollback_run(body["rollbacks"][0]["id"])
    assert stage(v1) == "production" and stage(v2) == "retired"
    detail = lead.get(f"/api/v1/incidents/{body['id']}/").json()
    assert detail["rollbacks"][0]["status"] == "completed" and detail["review_due_at"]
    listed = lead.get("/api/v1/incidents/", {"model": v2.model.name, "status": "mitigating"})
    assert [i["id"] for i in listed.json()["results"]] == [body["id"]]
    assert lead.get("/api/v1/incidents/", {"status": "open"}).json()["results"] == []


def test_rollback_management_command_runs_the_rollback(engineer, serving_pair):
    from tests.governance.lifecycle_helpers import person

    v1, v2 = serving_pair
    lead = person("ml_lead", "cmd-lead")
    call_command("rollback", v2.model.name, reason="outage", user=lead.user.username)
    assert stage(v1) == "production" and stage(v2) == "retired"
    with pytest.raises(CommandError, match="rollback"):
        call_command("rollback", v2.model.name, reason="x", user=engineer.username)


def test_verification_scores_a_real_prediction_of_the_restored_version_through_the_gateway(
    serving_pair,
):
    from serving import gateway
    from tests.serving.helpers import pyfunc_scores

    v1, v2 = serving_pair
    route_alert(alert_on(v2))
    rollback_id = route_alert(alert_on(v2))["rollback"]
    assert rollback_service._advance(rollback_id, task_id="t1") == "switched"
    assert rollback_service._advance(rollback_id, task_id="t1") == "verified"
    rollback = Rollback.objects.get(pk=rollback_id)
    expected = pyfunc_scores(v1, [{"f1": 0.0, "f2": 0.0, "f3": 0.0}])[0]
    assert f"score {expected:.6g}" in rollback.verification
    assert " ms (attempt 1 of 5)" in rollback.verification
    event = rollback.incident.events.get(message__startswith="verified:")
    assert event.data["score"] == pytest.approx(expected) and event.data["latency_ms"] >= 0
    code, body = gateway.serve(
        v1.model.name, {"instances": [{"f1": 1, "f2": 0, "f3": 0}]}, record=False
    )
    assert (code, body["version"], body["stale"]) == (200, "1.0.0", False)


def test_a_restored_version_that_cannot_load_fails_the_rollback_and_pages_the_ml_lead():
    # live_pair's versions have no artifact anywhere: the gateway cannot score v1.
    _, v2 = live_pair()
    route_alert(alert_on(v2))
    rollback_id = route_alert(alert_on(v2))["rollback"]
    assert rollback_service.rollback_run(rollback_id) == "failed"
    rollback = Rollback.objects.get(pk=rollback_id)
    assert rollback.verified_at is None and not rollback.verification
    assert "1.0.0 did not serve a probe through the gateway" in rollback.last_error
    assert "(5 attempts)" in rollback.last_error
    assert stage(v2) == "rollback"  # never archived without a verified v(n-1)
    page = Notification.objects.get(role="ml_lead", channel="page")
    assert "rollback failed" in page.subject and "did not serve" in page.body
    assert rollback_service.rollback_run(rollback_id) == "failed"  # retried: unchanged


def test_verification_retries_briefly_until_the_gateway_serves_the_restored_version(
    serving_pair, monkeypatch
):
    from serving import gateway

    _, v2 = serving_pair
    real_serve, calls = gateway.serve, []

    def not_seen_yet(model_name, payload, **kwargs):
        calls.append(kwargs)
        if len(calls) < 3:  # the routing generation of the switch not seen yet
            return 200, {"version": v2.version, "stale": False, "predictions": []}
        return real_serve(model_name, payload, **kwargs)

    monkeypatch.setattr(gateway, "serve", not_seen_yet)
    route_alert(alert_on(v2))
    rollback_id = route_alert(alert_on(v2))["rollback"]
    assert rollback_service.rollback_run(rollback_id) == "completed"
    assert "(attempt 3 of 5)" in Rollback.objects.get(pk=rollback_id).verification
    assert all(c == {"record": False, "ignore_halt": True} for c in calls)


def test_a_halted_model_still_rolls_back_and_stays_halted(serving_pair):
    from serving import gateway
    from serving.halt import halt_engage
    from tests.governance.lifecycle_helpers import person

    v1, v2 = serving_pair
    halt_engage(scope=v2.model.name, reason="ethics breach", actor=person("ml_lead"))
    route_alert(alert_on(v2))
    rollback_id = route_alert(alert_on(v2))["rollback"]
    assert rollback_service.rollback_run(rollback_id) == "completed"
    assert stage(v1) == "production" and stage(v2) == "retired"
    code, body = gateway.serve(
        v1.model.name, {"instances": [{"f1": 0, "f2": 0, "f3": 0}]}, record=False
    )
    assert code == 503 and body["halted"] is True


# --- one way to open an incident, one audit event per request, a typed "no standby" -----------


def test_an_automatic_rollback_request_is_audited_like_a_manual_one(serving_pair):
    _, v2 = serving_pair
    route_alert(alert_on(v2))
    rollback_id = route_alert(alert_on(v2))["rollback"]

    from governance.models import AuditEvent

    [event] = AuditEvent.objects.filter(action="incidents.rollback_requested")
    assert event.object_id == str(rollback_id)
    assert event.actor == "system:incidents.alert_response"
    assert event.after["automatic"] is True and event.after["version"] == "1.0.1"
    assert "2 critical alerts on 1.0.1" in event.reason
    assert audit.verify().valid


def test_a_manual_rollback_opens_its_incident_as_every_incident_opens(serving_pair):
    _, v2 = serving_pair
    from governance.models import AuditEvent
    from incidents.manual_rollback import rollback_manual
    from tests.governance.lifecycle_helpers import person

    lead = person("ml_lead", "lee")
    incident, rollback = rollback_manual(
        model_name=v2.model.name, reason="bias spike on northgate", actor=lead
    )

    opened = incident.events.get(kind="opened")
    # incidents.services writes the opening event: why, and the playbook the kind runs (none)
    assert opened.message == f"manual rollback of {v2.model.name} 1.0.1: bias spike on northgate"
    assert opened.data == {"playbook": ""} and opened.actor == lead.label
    [event] = AuditEvent.objects.filter(action="incidents.rollback_requested")
    assert (event.actor, event.after["automatic"]) == (lead.label, False)
    assert rollback.requested_by == lead.label[:200]


def test_no_standby_is_recognised_by_its_type_not_by_the_words_of_its_message(monkeypatch):
    from governance import lifecycle
    from platform_core.errors import Conflict, NoStandbyVersion

    version = live_single()
    route_alert(alert_on(version))
    rollback_id = route_alert(alert_on(version))["rollback"]
    with pytest.raises(NoStandbyVersion) as refused:
        lifecycle.transition(
            version=version, name="start_rollback", actor=rollback_service.SYSTEM, automatic=True
        )
    assert isinstance(refused.value, Conflict)  # still a 409 wherever it reaches the API

    def reworded(**kwargs):
        raise NoStandbyVersion("nothing to restore", reasons=["v(n-1) was retired"])

    monkeypatch.setattr(rollback_service.lifecycle_rules, "transition", reworded)
    assert rollback_service.rollback_run(rollback_id) == "no_standby"
    assert Rollback.objects.get().last_error == "nothing to restore v(n-1) was retired"
