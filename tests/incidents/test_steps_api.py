"""The steps API: completing playbook steps, incident detail with steps, the playbooks list."""

import pytest

from governance.models import AuditEvent
from incidents.alert_response import route_alert
from incidents.models import Incident, Notification, Rollback
from incidents.playbook_engine import playbook_advance
from serving.halt import active_halt
from tests.incidents.helpers import alert_on, live_pair

pytestmark = pytest.mark.django_db


def step_url(incident, order: int) -> str:
    return f"/api/v1/incidents/{incident.pk}/steps/{order}/complete/"


def opened(check: str = "concept_drift", severity: str = "high"):
    """An incident of the live v2 whose automated steps have run."""
    _, v2 = live_pair()
    route_alert(alert_on(v2, check, severity))
    incident = Incident.objects.get()
    playbook_advance(incident.pk)
    return incident, v2


def test_a_data_engineer_completes_the_verification_step_and_an_ml_engineer_may_not(api_client):
    incident, _ = opened()
    refused = api_client("ml_engineer", username="erin").post(
        step_url(incident, 2), {"note": "looks fine"}, format="json"
    )
    assert refused.status_code == 403
    assert "data_engineer" in refused.json()["detail"]

    response = api_client("data_engineer", username="dana").post(
        step_url(incident, 2), {"note": "no nulls, schema unchanged"}, format="json"
    )

    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["order"], body["status"], body["note"]) == (
        2,
        "done",
        "no nulls, schema unchanged",
    )
    assert body["completed_by"].startswith("dana") and body["completed_at"]
    event = AuditEvent.objects.get(action="incidents.step_completed")
    assert (event.before["status"], event.after["status"]) == ("waiting", "done")
    assert event.actor.startswith("dana")


def test_a_grant_for_another_model_does_not_complete_steps_of_this_one(api_client):
    incident, _ = opened()
    _, other = live_pair()
    client = api_client("data_engineer", username="dana", model=other.model.name)
    response = client.post(step_url(incident, 2), {"note": "fine"}, format="json")
    assert response.status_code == 404  # as GET: the incident's model is not even named
    assert incident.model.name not in response.json()["detail"]
    mine = api_client("data_engineer", username="dora", model=incident.model.name)
    assert mine.post(step_url(incident, 2), {"note": "fine"}, format="json").status_code == 200


def test_a_token_scoped_away_from_the_role_cannot_complete(api_client):
    incident, _ = opened()
    client = api_client("data_engineer", "ml_engineer", username="dual", scope=["ml_engineer"])
    assert client.post(step_url(incident, 2), {"note": "x"}, format="json").status_code == 403


def test_invalid_bodies_are_400_naming_the_fields(api_client):
    incident, _ = opened()
    lead = api_client("ml_lead", username="lead-1")
    unknown = lead.post(step_url(incident, 6), {"note": "x", "colour": "red"}, format="json")
    assert unknown.status_code == 400 and set(unknown.json()["errors"]) == {"colour"}
    missing = lead.post(step_url(incident, 6), {}, format="json")
    assert missing.status_code == 400 and "note" in missing.json()["errors"]
    blank = lead.post(step_url(incident, 6), {"note": " "}, format="json")
    assert blank.status_code == 400
    assert set(blank.json()["errors"]) == {"note", "decision"}
    assert "rollback, no_rollback" in blank.json()["errors"]["decision"][0]
    wrong = lead.post(step_url(incident, 6), {"note": "x", "decision": "maybe"}, format="json")
    assert wrong.status_code == 400 and "maybe" in wrong.json()["errors"]["decision"][0]
    assert lead.post(step_url(incident, 99), {"note": "x"}, format="json").status_code == 404
    assert lead.post("/api/v1/incidents/999999/steps/2/complete/", {"note": "x"}).status_code == 404


def test_a_decision_not_to_roll_back_needs_a_justification(api_client):
    incident, _ = opened()
    lead = api_client("ml_lead", username="lead-1")
    body = {"note": "looked at it", "decision": "no_rollback"}
    refused = lead.post(step_url(incident, 6), body, format="json")
    assert refused.status_code == 400 and set(refused.json()["errors"]) == {"justification"}

    body["justification"] = "the drop is a known seasonal effect"
    response = lead.post(step_url(incident, 6), body, format="json")

    assert response.status_code == 200, response.json()
    assert response.json()["decision"] == "no_rollback"
    assert response.json()["justification"] == "the drop is a known seasonal effect"
    decision = incident.events.get(kind="decision")
    assert "no_rollback" in decision.message and "seasonal" in decision.message
    assert not Rollback.objects.exists()


def test_a_rollback_decision_starts_exactly_one_rollback(
    api_client, django_capture_on_commit_callbacks, enqueued
):
    incident, v2 = opened()
    lead = api_client("ml_lead", username="lead-1")
    body = {"note": "metric keeps falling", "decision": "rollback"}
    headers = {"HTTP_IDEMPOTENCY_KEY": "decide-1"}

    with django_capture_on_commit_callbacks(execute=True):
        first = lead.post(step_url(incident, 6), body, format="json", **headers)
        replay = lead.post(step_url(incident, 6), body, format="json", **headers)
    again = lead.post(step_url(incident, 6), body, format="json")

    assert first.status_code == 200, first.json()
    assert replay.status_code == 200 and replay.json() == first.json()
    assert again.status_code == 409 and "step 6 is done" in again.json()["detail"]
    rollback = Rollback.objects.get()
    assert (rollback.from_version, rollback.automatic, rollback.incident) == (v2, False, incident)
    assert enqueued["rollback"] == [rollback.pk]
    assert first.json()["outcome"]["rollback"] == rollback.pk
    assert AuditEvent.objects.filter(action="incidents.rollback_requested").count() == 1
    incident.refresh_from_db()
    assert incident.status == "mitigating"


def test_a_rollback_decision_needs_the_rollback_permission(api_client):
    incident, _ = opened("fairness", "critical")
    officer = api_client("ethics_officer", username="eve")
    body = {"note": "bias", "decision": "rollback"}
    response = officer.post(step_url(incident, 4), body, format="json")
    assert response.status_code == 403 and "rollback" in response.json()["detail"]
    assert not Rollback.objects.exists()


def test_a_halt_decision_engages_the_models_halt(api_client):
    incident, v2 = opened("fairness", "critical")
    officer = api_client("ethics_officer", username="eve")
    body = {"note": "selection rate collapsed for one group", "decision": "halt"}

    response = officer.post(step_url(incident, 4), body, format="json")

    assert response.status_code == 200, response.json()
    halt = active_halt(v2.model.name)
    assert halt is not None and halt.reason == body["note"]
    incident.refresh_from_db()
    assert (incident.halt, incident.status) == (halt, "mitigating")
    event = AuditEvent.objects.get(action="incidents.step_completed")
    assert event.after["effect"]["halt"] == halt.pk
    assert AuditEvent.objects.filter(action="halt.engaged").count() == 1
    detail = officer.get(f"/api/v1/incidents/{incident.pk}/").json()
    assert detail["halt"]["id"] == halt.pk and detail["halt"]["released_at"] is None
    from serving import gateway, router

    router.clear()
    status, answer = gateway.serve(v2.model.name, {"instances": [{"f1": 0, "f2": 0, "f3": 0}]})
    assert status == 503 and answer["halted"] is True
    router.clear()


def test_automated_and_finished_steps_cannot_be_completed(api_client):
    incident, _ = opened()
    lead = api_client("ml_lead", username="lead-1")
    automated = lead.post(step_url(incident, 1), {"note": "x"}, format="json")
    assert automated.status_code == 409 and "automated" in automated.json()["detail"]
    skipped = lead.post(
        step_url(incident, 4),
        {"note": "no data drift", "decision": "not_applicable"},
        format="json",
    )
    assert skipped.status_code == 200 and skipped.json()["status"] == "skipped"
    twice = lead.post(step_url(incident, 4), {"note": "again"}, format="json")
    assert twice.status_code == 409 and "skipped" in twice.json()["detail"]


def test_the_review_comes_last_keeps_its_notes_and_resolution_resolves_the_page_once(api_client):
    incident, _ = opened()
    lead = api_client("ml_lead", username="lead-1")
    engineer = api_client("ml_engineer", username="erin")
    data = api_client("data_engineer", username="dana")
    sme = api_client("domain_sme", username="sam")
    early = engineer.post(step_url(incident, 8), {"note": "review"}, format="json")
    assert early.status_code == 409
    assert any("step 2" in r for r in early.json()["reasons"])

    completions = [
        (data, 2, {"note": "data fine"}),
        (engineer, 3, {"note": "PSI 0.05"}),
        (lead, 4, {"note": "no data drift", "decision": "not_applicable"}),
        (sme, 5, {"note": "new competitor product"}),
        (lead, 6, {"note": "keep", "decision": "no_rollback", "justification": "retraining"}),
        (engineer, 7, {"note": "documented in the registry"}),
    ]
    for client, order, body in completions:
        response = client.post(step_url(incident, order), body, format="json")
        assert response.status_code == 200, (order, response.json())

    detail = lead.get(f"/api/v1/incidents/{incident.pk}/").json()
    assert detail["status"] == "resolved" and detail["review_due_at"]
    resolves = Notification.objects.filter(event="resolve")
    assert list(resolves.values_list("role", "channel")) == [("ml_lead", "page")]
    review = engineer.post(
        step_url(incident, 8), {"note": "root cause: competitor; add a feature"}, format="json"
    )
    assert review.status_code == 200, review.json()
    detail = lead.get(f"/api/v1/incidents/{incident.pk}/").json()
    assert detail["status"] == "reviewed"
    assert detail["review_notes"] == "root cause: competitor; add a feature"
    assert Notification.objects.filter(event="resolve").count() == 1


def test_incident_detail_shows_the_steps_and_the_list_counts_open_steps(api_client):
    incident, _ = opened()
    reader = api_client("auditor", username="audrey")
    detail = reader.get(f"/api/v1/incidents/{incident.pk}/").json()
    steps = {s["order"]: s for s in detail["steps"]}
    assert list(steps) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert steps[1]["automated"] and steps[1]["task"] == "raise" and steps[1]["status"] == "done"
    assert steps[2]["roles"] == ["data_engineer"] and steps[2]["responsible"] == (
        "Data Engineer (1h)"
    )
    assert steps[2]["status"] == "waiting" and steps[2]["due_at"] and not steps[2]["overdue"]
    assert steps[4]["condition"] == "data drift"
    assert steps[6]["decisions"] == ["rollback", "no_rollback"]
    assert detail["halt"] is None
    listing = reader.get("/api/v1/incidents/").json()["results"]
    assert listing[0]["open_steps"] == 7


def test_playbooks_are_listed_with_their_steps(api_client):
    body = api_client("auditor", username="audrey").get("/api/v1/playbooks/").json()
    playbooks = {p["number"]: p for p in body["results"]}
    assert sorted(playbooks) == ["1", "2", "3"]
    outage = playbooks["3"]["steps"]
    assert [s["task"] for s in outage[:3]] == ["raise", "serve_stale", "page_oncall"]
    assert outage[3]["deadline_seconds"] == 1800 and outage[3]["roles"] == ["oncall"]
    assert outage[5]["is_review"] is True
    assert api_client(username="nobody").get("/api/v1/playbooks/").status_code == 403


def test_the_schema_documents_the_step_endpoint(api_client):
    schema = api_client("auditor", username="audrey").get("/api/schema/?format=json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "post" in paths["/api/v1/incidents/{id}/steps/{order}/complete/"]
    assert "/api/v1/playbooks/" in paths
