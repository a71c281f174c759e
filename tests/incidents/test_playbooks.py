"""Playbooks as running workflows: automated steps, human steps, escalation, resolution, edits."""

import json
from datetime import timedelta

import pytest
import time_machine
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from governance import audit
from governance.models import AuditEvent
from incidents import playbook_engine, tasks
from incidents.alert_response import route_alert
from incidents.models import (
    EventKind,
    Incident,
    IncidentKind,
    Notification,
    Playbook,
    PlaybookStep,
    Rollback,
    StepRun,
)
from incidents.playbook_editing import playbook_step_create, playbook_step_update
from incidents.playbook_engine import playbook_advance, playbook_start, steps_escalate_overdue
from incidents.resolution import incident_resolved
from incidents.steps.human import step_complete
from incidents.timeline import add_event
from platform_core.errors import Conflict, Forbidden, InvalidInput
from serving.models import StalePrediction
from tests.concurrency import race
from tests.factories import UserFactory
from tests.governance.lifecycle_helpers import person
from tests.incidents.helpers import SYSTEM, alert_on, live_pair

pytestmark = pytest.mark.django_db


def statuses(incident) -> dict[int, str]:
    return dict(incident.steps.values_list("order", "status"))


def audit_count(action: str) -> int:
    return AuditEvent.objects.filter(action=action).count()


def performance_incident():
    """A high concept-drift alert on the live v2 opens a playbook-1 incident."""
    _, v2 = live_pair()
    route_alert(alert_on(v2, "concept_drift", "high"))
    return Incident.objects.get(), v2


def fairness_incident():
    _, v2 = live_pair()
    route_alert(alert_on(v2, "fairness", "critical"))
    return Incident.objects.get(), v2


def outage_incident(version):
    """What the gateway's outage hook does: an outage incident running playbook 3."""
    with transaction.atomic():
        incident = Incident.objects.create(
            kind=IncidentKind.OUTAGE,
            severity="high",
            playbook="3",
            title=f"outage of {version.model.name}",
            model=version.model,
            version=version,
            opened_by="system:serving",
        )
        add_event(
            incident,
            kind=EventKind.OPENED,
            actor="system:serving",
            message=f"{version.version} predict_failed: ValueError: boom",
            data={"kind": "predict_failed"},
        )
        playbook_start(incident, actor=SYSTEM)
    return incident


def test_playbook_1_runs_its_automated_steps_and_human_steps_do_not_block_them(
    django_capture_on_commit_callbacks, enqueued
):
    _, v2 = live_pair()
    with django_capture_on_commit_callbacks(execute=True):
        route_alert(alert_on(v2, "concept_drift", "high"))
    incident = Incident.objects.get()
    assert enqueued["playbook"] == [incident.pk]
    assert set(statuses(incident).values()) == {"pending", "waiting"}

    results = tasks.run_playbook.apply(args=[incident.pk]).get()

    assert [(r["step"], r["status"]) for r in results] == [(1, "done"), (6, "waiting")]
    raised = incident.steps.get(order=1)
    assert raised.outcome["alerts"][0] | {"alert": None} == {
        "alert": None,
        "kind": "concept_drift",
        "severity": "high",
        "version": v2.version,
        "metric": "m",
        "feature": "",
        "value": 1.0,
        "threshold": 0.5,
    }
    assert raised.completed_at and raised.attempts == 1
    rollback_step = incident.steps.get(order=6)
    assert rollback_step.roles == ["ml_lead"] and rollback_step.decisions == [
        "rollback",
        "no_rollback",
    ]
    assert abs(rollback_step.due_at - timezone.now()) < timedelta(minutes=1)
    assert not Rollback.objects.exists()  # high: a person decides
    assert statuses(incident) == {
        1: "done",
        2: "waiting",
        3: "waiting",
        4: "waiting",
        5: "waiting",
        6: "waiting",
        7: "waiting",
        8: "waiting",
    }
    assert incident.events.filter(kind="step", message__startswith="step 1").exists()
    assert audit_count("incidents.step_done") == 2
    assert audit.verify().valid


def test_playbook_2_pages_the_ethics_officer_exactly_once():
    person("ethics_officer")
    incident, _ = fairness_incident()
    assert Notification.objects.filter(role="ethics_officer", channel="page").count() == 1

    results = playbook_advance(incident.pk)

    assert [(r["step"], r["status"]) for r in results] == [(1, "done"), (2, "done")]
    pages = Notification.objects.filter(role="ethics_officer", channel="page")
    assert pages.count() == 1
    assert pages.get().dedup_key == f"incident-{incident.pk}-page-ethics_officer"
    notified = incident.steps.get(order=2).outcome
    assert notified["already_paged"] is True and notified["recipients"] == ["the-ethicist"]
    assert incident.steps.get(order=1).outcome["alerts"][0]["kind"] == "fairness"


def test_playbook_3_documents_the_stale_fallback_and_pages_on_call():
    _, v2 = live_pair()
    for key in ("a" * 64, "b" * 64):
        StalePrediction.objects.create(
            model_name=v2.model.name,
            instance_key=key,
            version=v2.version,
            prediction_id=key[:8],
            score=0.7,
            prediction=1,
        )
    incident = outage_incident(v2)

    results = playbook_advance(incident.pk)

    assert [(r["step"], r["status"]) for r in results] == [(1, "done"), (2, "done"), (3, "done")]
    outcomes = {s.order: s.outcome for s in incident.steps.all()}
    assert outcomes[1]["alerts"] == [] and "predict_failed" in outcomes[1]["opened"]["message"]
    assert outcomes[2] == {
        "model": v2.model.name,
        "stale_predictions": 2,
        "halt_active": False,
        "halt": None,
    }
    page = Notification.objects.get(role="oncall", channel="page")
    assert page.dedup_key == f"incident-{incident.pk}-page-oncall"
    assert page.incident_key == f"incident-{incident.pk}"
    assert statuses(incident) == {
        1: "done",
        2: "done",
        3: "done",
        4: "waiting",
        5: "waiting",
        6: "waiting",
    }
    assert incident.steps.get(order=4).due_at == incident.created_at + timedelta(minutes=30)


def test_rollback_when_critical_requests_exactly_one_rollback_of_the_live_version(
    django_capture_on_commit_callbacks, enqueued
):
    incident, v2 = performance_incident()
    Incident.objects.filter(pk=incident.pk).update(severity="critical")

    with django_capture_on_commit_callbacks(execute=True):
        playbook_advance(incident.pk)
        playbook_advance(incident.pk)

    rollback = Rollback.objects.get()
    assert (rollback.from_version, rollback.automatic, rollback.incident) == (v2, True, incident)
    assert enqueued["rollback"] == [rollback.pk]
    step = incident.steps.get(order=6)
    assert step.status == "done" and step.outcome["rollback"] == rollback.pk
    incident.refresh_from_db()
    assert incident.status == "mitigating"


def test_a_redelivered_run_playbook_task_does_no_step_twice():
    person("ethics_officer")
    incident, _ = fairness_incident()
    first_step = incident.steps.get(order=1)
    # The worker committed step 1, then died; the task is redelivered twice.
    assert playbook_engine._run_step(incident.pk, first_step.pk)["status"] == "done"
    assert playbook_engine._run_step(incident.pk, first_step.pk) is None

    assert [r["step"] for r in tasks.run_playbook.apply(args=[incident.pk]).get()] == [2]
    assert tasks.run_playbook.apply(args=[incident.pk]).get() == []

    assert audit_count("incidents.step_done") == 2
    assert incident.steps.get(order=1).attempts == 1
    assert incident.events.filter(kind="step", message__startswith="step 1 ").count() == 1
    assert Notification.objects.filter(role="ethics_officer").count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_workers_advancing_the_same_playbook_do_each_step_once():
    person("ethics_officer")
    incident, _ = fairness_incident()
    results, errors = race(lambda _: playbook_advance(incident.pk), 2)

    assert errors == []
    assert sorted(r["step"] for done in results for r in done) == [1, 2]
    assert audit_count("incidents.step_done") == 2
    assert Notification.objects.filter(role="ethics_officer", channel="page").count() == 1
    assert audit.verify().valid


def test_an_unknown_task_fails_the_step_naming_the_known_tasks():
    incident, _ = fairness_incident()
    StepRun.objects.filter(incident=incident, order=2).update(task="reboot_the_world")

    results = playbook_advance(incident.pk)

    assert [(r["step"], r["status"]) for r in results] == [(1, "done"), (2, "failed")]
    failed = incident.steps.get(order=2)
    assert "unknown task 'reboot_the_world'" in failed.last_error
    assert "notify_ethics_officer" in failed.last_error and "serve_stale" in failed.last_error
    assert Notification.objects.get(dedup_key=f"step-{failed.pk}-failed").role == "ml_lead"


def test_an_overdue_human_step_escalates_to_the_ml_lead_exactly_once():
    person("ml_lead")
    incident, _ = performance_incident()
    playbook_advance(incident.pk)
    opened = incident.created_at
    verify = incident.steps.get(order=2)  # data engineer, 1 h
    analyse = incident.steps.get(order=3)  # ML engineer, 2 h

    assert steps_escalate_overdue(now=opened + timedelta(minutes=30)) == 0
    assert steps_escalate_overdue(now=opened + timedelta(minutes=61)) == 1  # step 2 now
    assert steps_escalate_overdue(now=opened + timedelta(minutes=62)) == 0
    with time_machine.travel(opened + timedelta(hours=2, minutes=1), tick=False):
        assert tasks.escalate_overdue_steps.apply().get() == 1  # step 3 (2 h)
        assert tasks.escalate_overdue_steps.apply().get() == 0

    verify.refresh_from_db()
    assert verify.escalated_at == opened + timedelta(minutes=61)
    for step in (verify, analyse):
        page = Notification.objects.get(dedup_key=f"step-{step.pk}-overdue-page")
        email = Notification.objects.get(dedup_key=f"step-{step.pk}-overdue-email")
        assert (page.channel, page.role, email.channel, email.role) == (
            "page",
            "ml_lead",
            "email",
            "ml_lead",
        )
        assert page.recipients == ["the-lead"] and "overdue" in page.subject
    assert audit_count("incidents.step_overdue") == 2
    assert incident.events.filter(message__contains="escalated to ml_lead").count() == 2


def test_a_step_due_immediately_is_paged_once_and_never_reminded_as_overdue():
    """Deadline 0 means "immediately": the ML Lead deciding on the rollback (playbook 1 step 6)
    was paged about the incident when the step started waiting; a minute later is no new event."""
    person("ml_lead")
    incident, _ = performance_incident()
    playbook_advance(incident.pk)
    decide = incident.steps.get(order=6)
    assert (decide.status, decide.due_at) == ("waiting", incident.created_at)
    assert decide.outcome["immediate"] is True

    for minutes in (1, 2, 59):  # before the first other deadline (step 2, 1 h)
        steps_escalate_overdue(now=incident.created_at + timedelta(minutes=minutes))

    decide.refresh_from_db()
    assert decide.escalated_at is None
    assert not Notification.objects.filter(dedup_key__startswith=f"step-{decide.pk}-").exists()
    pages = Notification.objects.filter(incident=incident, channel="page", role="ml_lead")
    assert [p.dedup_key for p in pages] == [f"incident-{incident.pk}-page-ml_lead"]


@pytest.mark.parametrize(
    ("playbook", "order", "deadline"),
    [("2", 3, timedelta(hours=1)), ("3", 4, timedelta(minutes=30))],
)
def test_playbooks_2_and_3_escalate_their_first_overdue_human_step_once(playbook, order, deadline):
    person("ml_lead")
    if playbook == "2":
        incident, _ = fairness_incident()
    else:
        incident = outage_incident(live_pair()[1])
    playbook_advance(incident.pk)
    step = incident.steps.get(order=order)
    assert step.due_at == incident.created_at + deadline

    before = steps_escalate_overdue(now=step.due_at - timedelta(seconds=1))
    at = steps_escalate_overdue(now=step.due_at + timedelta(seconds=1))
    again = steps_escalate_overdue(now=step.due_at + timedelta(minutes=5))

    assert (before, at, again) == (0, 1, 0)
    step.refresh_from_db()
    assert step.escalated_at == step.due_at + timedelta(seconds=1)
    page = Notification.objects.get(dedup_key=f"step-{step.pk}-overdue-page")
    assert (page.channel, page.role) == ("page", "ml_lead")


def test_finishing_every_step_resolves_the_incident_and_resolves_each_page_once():
    lead, engineer, data, sme = (
        person("ml_lead"),
        person("ml_engineer"),
        person("data_engineer", "dana"),
        person("domain_sme", "sam"),
    )
    incident, _ = performance_incident()
    playbook_advance(incident.pk)
    done = {2: data, 3: engineer, 5: sme, 7: engineer}
    step_complete(
        incident_id=incident.pk,
        order=4,
        note="no data drift",
        decision="not_applicable",
        actor=lead,
    )
    for order, actor in done.items():
        step_complete(incident_id=incident.pk, order=order, note=f"step {order} done", actor=actor)
    incident.refresh_from_db()
    assert incident.status == "open"  # step 6 still waits for the ML Lead's decision
    with pytest.raises(Conflict, match="step 6"):
        step_complete(incident_id=incident.pk, order=8, note="too early", actor=lead)

    step_complete(
        incident_id=incident.pk,
        order=6,
        note="drop explained by a holiday",
        decision="no_rollback",
        justification="seasonal effect, recovers next week",
        actor=lead,
    )

    incident.refresh_from_db()
    assert incident.status == "resolved" and incident.resolved_at
    assert incident.review_due_at == incident.resolved_at + timedelta(hours=48)
    assert incident.steps.get(order=8).due_at == incident.review_due_at
    assert statuses(incident)[4] == "skipped"
    resolve = Notification.objects.get(event="resolve")
    assert (resolve.role, resolve.channel, resolve.incident_key) == (
        "ml_lead",
        "page",
        f"incident-{incident.pk}",
    )
    assert resolve.dedup_key == f"incident-{incident.pk}-resolve-ml_lead"
    incident_resolved(incident, actor=SYSTEM)  # a second resolution changes nothing
    assert Notification.objects.filter(event="resolve").count() == 1
    assert incident.steps.filter(is_review=True).count() == 1

    step_complete(incident_id=incident.pk, order=8, note="lessons: watch holidays", actor=engineer)
    incident.refresh_from_db()
    assert (incident.status, incident.review_notes) == ("reviewed", "lessons: watch holidays")
    changes = AuditEvent.objects.filter(action="incidents.status_changed").order_by("seq")
    assert [e.after["status"] for e in changes] == ["resolved", "reviewed"]
    assert audit.verify().valid


def test_a_completed_rollback_mitigates_and_adds_the_review_while_human_steps_still_wait(
    mlflow_models,
):
    from incidents.rollback import rollback_run
    from serving import loader, router
    from tests.serving.helpers import live, promote_patch

    router.clear()
    loader.clear()
    person("ethics_officer")
    v1 = live(mlflow_models, "1.0.0", seed=0)
    v2 = promote_patch(mlflow_models, v1.model, "1.0.1", seed=1)
    route_alert(alert_on(v2))
    rollback_id = route_alert(alert_on(v2))["rollback"]
    incident = Incident.objects.get()
    playbook_advance(incident.pk)
    assert not incident.steps.filter(is_review=True).exists()  # playbook 2 has no review step

    assert rollback_run(rollback_id) == "completed"
    assert rollback_run(rollback_id) == "completed"

    incident.refresh_from_db()
    # a rollback mitigates; the incident is resolved only when every step is finished
    assert incident.status == "mitigating" and incident.resolved_at is None
    assert incident.steps.filter(is_review=False, status="waiting").exists()
    review = incident.steps.get(is_review=True)
    assert (review.order, review.status, review.due_at) == (8, "waiting", incident.review_due_at)
    assert review.roles == ["ml_engineer", "ml_lead", "ethics_officer"]
    assert review.action == "Post-incident review within 48 hours"
    assert not Notification.objects.filter(event="resolve").exists()  # pages stay open
    router.clear()
    loader.clear()


def test_step_completion_checks_role_note_decision_and_status():
    engineer, lead = person("ml_engineer"), person("ml_lead")
    incident, _ = performance_incident()
    playbook_advance(incident.pk)

    with pytest.raises(Forbidden, match="data_engineer"):
        step_complete(incident_id=incident.pk, order=2, note="fine", actor=engineer)
    with pytest.raises(InvalidInput) as missing:
        step_complete(incident_id=incident.pk, order=6, note=" ", actor=lead)
    assert set(missing.value.errors) == {"note", "decision"}
    assert "rollback, no_rollback" in missing.value.errors["decision"][0]
    with pytest.raises(InvalidInput) as unjustified:
        step_complete(
            incident_id=incident.pk, order=6, note="x", decision="no_rollback", actor=lead
        )
    assert set(unjustified.value.errors) == {"justification"}
    with pytest.raises(InvalidInput, match="not offered here; one of: not_applicable"):
        step_complete(incident_id=incident.pk, order=4, note="x", decision="halt", actor=lead)
    with pytest.raises(InvalidInput, match="step 3 takes no decision"):
        step_complete(incident_id=incident.pk, order=3, note="x", decision="halt", actor=engineer)
    with pytest.raises(Conflict, match="automated"):
        step_complete(incident_id=incident.pk, order=1, note="x", actor=lead)
    step_complete(incident_id=incident.pk, order=3, note="PSI below 0.1", actor=engineer)
    with pytest.raises(Conflict, match="step 3 is done"):
        step_complete(incident_id=incident.pk, order=3, note="again", actor=engineer)


def test_playbook_edits_are_audited_and_leave_running_incidents_unchanged():
    lead = person("ml_lead")
    incident, _ = performance_incident()
    before = incident.steps.get(order=2)
    step = PlaybookStep.objects.get(playbook__number="1", order=2)

    playbook_step_update(
        step=step,
        changes={"roles": ["ml_engineer"], "deadline": timedelta(hours=3)},
        actor=lead,
    )

    event = AuditEvent.objects.get(action="incidents.playbook_edited")
    assert event.before["roles"] == ["data_engineer"] and event.after["roles"] == ["ml_engineer"]
    assert event.actor == "the-lead"
    running = incident.steps.get(order=2)
    assert (running.roles, running.due_at) == (["data_engineer"], before.due_at)
    _, other = live_pair()
    route_alert(alert_on(other, "concept_drift", "high"))
    fresh = Incident.objects.exclude(pk=incident.pk).get().steps.get(order=2)
    assert fresh.roles == ["ml_engineer"]
    assert fresh.due_at == fresh.incident.created_at + timedelta(hours=3)


def test_playbook_edits_need_an_editor_and_valid_steps():
    step = PlaybookStep.objects.get(playbook__number="3", order=4)
    with pytest.raises(Forbidden):
        playbook_step_update(step=step, changes={"action": "x"}, actor=person("ml_engineer"))
    lead = person("ml_lead")
    with pytest.raises(InvalidInput) as bad:
        playbook_step_update(
            step=step, changes={"roles": ["wizard"], "order": 5, "colour": "red"}, actor=lead
        )
    assert set(bad.value.errors) == {"colour"}
    with pytest.raises(InvalidInput) as bad:
        playbook_step_update(step=step, changes={"roles": ["wizard"], "order": 5}, actor=lead)
    assert set(bad.value.errors) == {"roles", "order"}
    with pytest.raises(InvalidInput, match="page_oncall"):
        playbook_step_create(
            playbook=step.playbook,
            values={"order": 9, "action": "reboot", "automated": True, "task": "reboot"},
            actor=lead,
        )
    added = playbook_step_create(
        playbook=step.playbook,
        values={
            "order": 9,
            "action": "Tell customers",
            "responsible": "PM",
            "roles": ["product_manager"],
        },
        actor=lead,
    )
    assert added.escalate_to == "ml_lead" and not added.automated
    assert AuditEvent.objects.filter(action="incidents.playbook_edited").count() == 1


def _step_form(prefix: str, step: PlaybookStep | None, **values) -> dict:
    fields = {
        "order": step.order if step else "",
        "action": step.action if step else "",
        "responsible": step.responsible if step else "",
        "roles": json.dumps(step.roles if step else []),
        "escalate_to": step.escalate_to if step else "ml_lead",
        "automated": step.automated if step else False,
        "task": step.task if step else "",
        "deadline": str(step.deadline) if step and step.deadline is not None else "",
        "condition": step.condition if step else "",
        "decisions": json.dumps(step.decisions if step else []),
        "is_review": step.is_review if step else False,
    } | values
    form = {f"{prefix}-{name}": value for name, value in fields.items() if value is not False}
    form = {k: "on" if v is True else v for k, v in form.items()}
    if step is not None:  # what the rendered form carries (callable defaults: hidden initials)
        form |= {f"{prefix}-id": step.pk, f"{prefix}-playbook": step.playbook_id}
        form |= {
            f"initial-{prefix}-{n}": json.dumps(getattr(step, n)) for n in ("roles", "decisions")
        }
    return form


def test_an_admin_edit_of_a_playbook_goes_through_the_audited_service(client):
    lead = person("ml_lead")
    _, v2 = live_pair()
    running = outage_incident(v2)
    playbook = Playbook.objects.get(number="3")
    steps = list(playbook.steps.order_by("order"))
    data = {
        "name": playbook.name,
        "description": playbook.description,
        "steps-TOTAL_FORMS": len(steps) + 1,
        "steps-INITIAL_FORMS": len(steps),
        "steps-MIN_NUM_FORMS": 0,
        "steps-MAX_NUM_FORMS": 1000,
    }
    for i, step in enumerate(steps):
        changed = {"deadline": "1:00:00"} if step.order == 4 else {}
        data |= _step_form(f"steps-{i}", step, **changed)
    data |= _step_form(
        f"steps-{len(steps)}",
        None,
        order=7,
        action="Tell the customers",
        responsible="Product Manager",
        roles=json.dumps(["product_manager"]),
    )
    data[f"steps-{len(steps)}-playbook"] = playbook.pk
    client.force_login(lead.user)
    url = reverse("admin:incidents_playbook_change", args=[playbook.pk])
    assert "Diagnose: infra vs. model vs. data issue" in client.get(url).content.decode()

    response = client.post(url, data)

    assert response.status_code == 302, response.context["errors"] if response.context else ""
    edits = AuditEvent.objects.filter(action="incidents.playbook_edited").order_by("seq")
    assert edits[0].after["order"] == 4
    assert edits[0].after["deadline"] == "P0DT01H00M00S" and edits[0].actor == "the-lead"
    assert edits[1].before is None and edits[1].after["action"] == "Tell the customers"
    assert PlaybookStep.objects.get(playbook=playbook, order=4).deadline == timedelta(hours=1)
    assert running.steps.get(order=4).due_at == running.created_at + timedelta(minutes=30)
    assert running.steps.count() == 6
    engineer = person("ml_engineer")
    client.force_login(engineer.user)
    assert client.post(url, data).status_code == 403
    admin_user = UserFactory(username="root", is_staff=True, is_superuser=True)
    client.force_login(admin_user)
    page = client.get(reverse("admin:incidents_incident_change", args=[running.pk]))
    assert page.status_code == 200 and "serve_stale" in page.content.decode()


def test_on_call_escalating_an_outage_pages_the_ml_lead():
    person("ml_lead")
    oncall = person("oncall", "olly")
    _, v2 = live_pair()
    incident = outage_incident(v2)
    playbook_advance(incident.pk)

    step = step_complete(
        incident_id=incident.pk,
        order=5,
        note="the artifact store is down, beyond on-call",
        decision="escalate",
        actor=oncall,
    )

    page = Notification.objects.get(
        dedup_key=f"incident-{incident.pk}-page-ml_lead-step-5-escalated"
    )
    assert (page.channel, page.role, page.recipients) == ("page", "ml_lead", ["the-lead"])
    assert step.outcome["paged"] == "ml_lead"
    assert incident.events.filter(kind="decision", message__contains="escalate").exists()
