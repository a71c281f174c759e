"""Incidents in the admin: staff roll back and complete playbook steps through the services the
API uses, and see only the entry points their roles allow."""

from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from governance import services as governance_services
from governance.models import AuditEvent
from incidents.alert_response import route_alert
from incidents.models import Incident, IncidentKind, Rollback, StepStatus
from incidents.playbook_engine import playbook_advance
from incidents.steps.human import step_complete
from serving.halt import active_halt
from tests.governance.lifecycle_helpers import SYSTEM, person
from tests.incidents.helpers import alert_on, live_pair, stage

pytestmark = pytest.mark.django_db

ROLLBACK_ADD = "/admin/incidents/rollback/add/"
INCIDENTS = "/admin/incidents/incident/"


def login(client, role: str, username: str):
    actor = person(role, username)
    client.force_login(actor.user)
    return actor


def incident_page(client, incident) -> str:
    response = client.get(reverse("admin:incidents_incident_change", args=[incident.pk]))
    assert response.status_code == 200
    return response.content.decode()


def step_url(incident, order: int) -> str:
    return reverse("admin:incidents_incident_step_complete", args=[incident.pk, order])


def step_form_action(incident, order: int) -> str:
    return f'action="{step_url(incident, order)}"'


def opened(check: str = "concept_drift", severity: str = "high"):
    """An incident of the live v2 (playbook 1 for high, 2 for critical) after its automated
    steps ran."""
    _, v2 = live_pair()
    route_alert(alert_on(v2, check, severity))
    incident = Incident.objects.get()
    playbook_advance(incident.pk)
    return incident, v2


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


# --- manual rollback ------------------------------------------------------------------------


def test_an_ml_lead_rolls_back_from_the_admin_and_lands_on_the_new_incident(
    client, enqueued, django_capture_on_commit_callbacks
):
    _, v2 = live_pair()
    lead = login(client, "ml_lead", "lena-lead")
    listing = client.get(INCIDENTS).content.decode()
    assert f'href="{ROLLBACK_ADD}"' in listing
    form = client.get(ROLLBACK_ADD).content.decode()
    assert f'<option value="{v2.model.name}">{v2.model.name} (live: 1.1.0' in form

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            ROLLBACK_ADD,
            {"model": v2.model.name, "reason": "scores look inverted since this morning"},
            follow=True,
        )

    rollback = Rollback.objects.get()
    incident = rollback.incident
    assert (rollback.from_version, rollback.automatic) == (v2, False)
    assert rollback.reason == "scores look inverted since this morning"
    assert (incident.kind, incident.version) == (IncidentKind.MANUAL_ROLLBACK, v2)
    assert response.redirect_chain[-1][0] == reverse(
        "admin:incidents_incident_change", args=[incident.pk]
    )
    assert any(
        f"Rollback {rollback.pk} of {v2.model.name} 1.1.0 requested" in m
        for m in messages_of(response)
    )
    event = AuditEvent.objects.get(action="incidents.rollback_requested")
    assert event.actor == lead.label == "lena-lead"
    assert event.reason == "scores look inverted since this morning"
    assert enqueued["rollback"] == [rollback.pk]
    assert f"rollback {rollback.pk}" in response.content.decode()  # the incident links it


def test_a_rollback_without_a_reason_is_refused_on_the_form_and_nothing_happens(client):
    _, v2 = live_pair()
    login(client, "ml_lead", "lena-lead")

    response = client.post(ROLLBACK_ADD, {"model": v2.model.name, "reason": "  "})

    assert response.status_code == 200
    assert response.context["form"].errors["reason"]
    assert not Rollback.objects.exists() and not Incident.objects.exists()


def test_a_second_rollback_of_the_same_version_shows_the_conflict_on_the_form(client):
    _, v2 = live_pair()
    login(client, "ml_lead", "lena-lead")
    client.post(ROLLBACK_ADD, {"model": v2.model.name, "reason": "first"})
    assert "already rolled back or being rolled back" in client.get(ROLLBACK_ADD).content.decode()

    response = client.post(ROLLBACK_ADD, {"model": v2.model.name, "reason": "second"})

    assert response.status_code == 200
    assert (
        f"Not rolled back: {v2.model.name} 1.1.0 is already being rolled back"
        in response.content.decode()
    )
    assert Rollback.objects.count() == 1 and Incident.objects.count() == 1


def test_someone_without_the_rollback_permission_has_no_entry_point_and_gets_403(client):
    _, v2 = live_pair()
    login(client, "ml_engineer", "erin")
    incident, _ = Incident.objects.get_or_create(
        kind=IncidentKind.PERFORMANCE,
        severity="high",
        model=v2.model,
        version=v2,
        defaults={"title": "drift", "opened_by": "tests"},
    )

    assert "Roll back" not in client.get(INCIDENTS).content.decode()
    assert "Roll back" not in incident_page(client, incident)
    assert "Roll back a model" not in client.get("/admin/incidents/rollback/").content.decode()
    assert client.get(ROLLBACK_ADD).status_code == 403
    refused = client.post(ROLLBACK_ADD, {"model": v2.model.name, "reason": "because"})

    assert refused.status_code == 403
    assert not Rollback.objects.exists()
    assert stage(v2) == "production"


def test_a_lead_of_one_model_may_pick_only_that_model(client):
    _, mine = live_pair()
    _, other = live_pair()
    login(client, "ml_engineer", "mona")
    governance_services.role_grant(
        username="mona", roles=["ml_lead"], model_name=mine.model.name, actor=SYSTEM
    )
    form = client.get(ROLLBACK_ADD).content.decode()
    assert f'value="{mine.model.name}"' in form and f'value="{other.model.name}"' not in form

    response = client.post(ROLLBACK_ADD, {"model": other.model.name, "reason": "not mine"})

    assert response.status_code == 200 and response.context["form"].errors["model"]
    assert not Rollback.objects.exists()


# --- playbook steps -------------------------------------------------------------------------


def test_an_ml_engineer_completes_an_assigned_step_from_the_incident_page(client):
    incident, _ = opened()
    login(client, "ml_engineer", "erin")
    page = incident_page(client, incident)
    assert step_form_action(incident, 3) in page  # PSI analysis: the ML engineer's
    assert step_form_action(incident, 2) not in page  # data quality: the data engineer's

    response = client.post(
        step_url(incident, 3), {"note": "PSI 0.31 on income, 0.05 elsewhere"}, follow=True
    )

    step = incident.steps.get(order=3)
    assert (step.status, step.completed_by, step.note) == (
        "done",
        "erin",
        "PSI 0.31 on income, 0.05 elsewhere",
    )
    event = AuditEvent.objects.get(action="incidents.step_completed")
    assert event.actor == "erin" and event.after["step"] == 3
    assert "Step 3 (Check for data drift (PSI analysis)) completed." in messages_of(response)
    page = response.content.decode()
    assert "PSI 0.31 on income" in page and step_form_action(incident, 3) not in page


def test_a_decision_not_to_roll_back_without_justification_shows_the_error_and_changes_nothing(
    client,
):
    incident, v2 = opened()
    login(client, "ml_lead", "lena-lead")
    page = incident_page(client, incident)
    assert '<option value="no_rollback">no_rollback</option>' in page
    assert 'placeholder="required for no_rollback"' in page

    response = client.post(
        step_url(incident, 6),
        {"note": "drop is seasonal", "decision": "no_rollback", "justification": ""},
        follow=True,
    )

    assert (
        "Step 6 not completed: justification: required: why the live version is not rolled back"
        in messages_of(response)
    )
    step = incident.steps.get(order=6)
    assert (step.status, step.decision, step.note) == (StepStatus.WAITING, "", "")
    assert not AuditEvent.objects.filter(action="incidents.step_completed").exists()
    assert stage(v2) == "degraded" and not Rollback.objects.exists()


def test_a_conditional_step_can_be_closed_as_not_applicable(client):
    incident, _ = opened()
    login(client, "ml_lead", "lena-lead")
    assert '<option value="not_applicable">not_applicable</option>' in incident_page(
        client, incident
    )

    client.post(step_url(incident, 4), {"note": "no data drift", "decision": "not_applicable"})

    assert incident.steps.get(order=4).status == StepStatus.SKIPPED


def test_a_user_holding_none_of_the_steps_roles_sees_no_form_and_a_direct_post_is_refused(client):
    incident, _ = opened()
    login(client, "product_manager", "pam")
    page = incident_page(client, incident)
    assert "Complete step" not in page

    response = client.post(step_url(incident, 3), {"note": "I checked"})

    assert response.status_code == 403
    assert incident.steps.get(order=3).status == StepStatus.WAITING
    assert not AuditEvent.objects.filter(action="incidents.step_completed").exists()


def test_a_role_held_for_another_model_gives_no_form_on_this_incident(client):
    incident, _ = opened()
    _, other = live_pair()
    login(client, "product_manager", "pam")
    governance_services.role_grant(
        username="pam", roles=["ml_engineer"], model_name=other.model.name, actor=SYSTEM
    )
    assert step_form_action(incident, 3) not in incident_page(client, incident)
    assert client.post(step_url(incident, 3), {"note": "x"}).status_code == 403


def test_the_incident_page_shows_due_times_overdue_steps_and_who_completed_what(client):
    incident, _ = opened()
    dana = person("data_engineer", "dana")
    step_complete(incident_id=incident.pk, order=2, note="schema unchanged", actor=dana)
    login(client, "ml_engineer", "erin")
    due = incident.steps.get(order=3).due_at

    with time_machine.travel(due + timedelta(minutes=5), tick=False):
        page = incident_page(client, incident)

    row = page.split('id="step-3"')[1].split("</tr>")[0]
    assert timezone.localtime(due).strftime("%Y-%m-%d %H:%M") in row and "overdue" in row
    done = page.split('id="step-2"')[1].split("</tr>")[0]
    assert "dana" in done and "schema unchanged" in done and "overdue" not in done
    assert "This incident engaged no halt." in page


def test_an_ethics_officer_halts_from_the_incident_page_and_the_page_links_the_halt(client):
    incident, v2 = opened("fairness", "critical")
    login(client, "ethics_officer", "olu")
    page = incident_page(client, incident)
    assert '<option value="halt">halt</option>' in page
    assert '<option value="rollback">' not in page  # an Ethics Officer may not roll back

    response = client.post(
        step_url(incident, 4),
        {"note": "group B false positives doubled", "decision": "halt"},
        follow=True,
    )

    halt = active_halt(v2.model.name)
    assert halt is not None and halt.engaged_by_label == "olu"
    incident.refresh_from_db()
    assert incident.halt == halt
    assert reverse("admin:serving_halt_change", args=[halt.pk]) in response.content.decode()
