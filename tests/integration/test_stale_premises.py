"""Issue 16: a delayed task re-checks its premise under the model lock before it acts.

Each delayed task is enqueued for a state (``prepare``), a transition that can invalidate its
premise commits (promotion, rollback, restore, halt, release, retire, archive, a step completed,
the incident resolved), then the task runs - in process, through its Celery wrapper. A task whose
premise no longer holds ends ``skipped`` with the reason (a ``task.skipped`` audit event) and
nothing else happens: no incident, no page or other outbox row, no alert, no state change, no
outage report. Transitions that leave the premise intact (a halt does not stop a verification or
a monitoring run) are checked to let the task act as before, which also shows the set-up is one
where acting would be visible. The same interleavings with a real worker on PostgreSQL and Redis
are in ``test_stale_premises_worker.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import pytest
import time_machine
from django.utils import timezone

from governance.audit import Actor
from governance.models import AuditEvent, Evaluation, EvidenceKind, Lifecycle
from governance.premises import AUDIT_ACTION
from incidents.models import Incident, IncidentKind, Notification, Rollback, StepRun
from monitoring.models import Alert, MetricPoint, MonitorRun
from registry.models import ModelVersion
from tests.governance.lifecycle_helpers import (
    new_version,
    person,
    sign_promotion,
    step,
    to_staging,
)
from tests.serving.helpers import FEATURES, live, promote_patch

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")


@dataclass
class World:
    """1.0.0 in warm standby, the PATCH 1.0.1 promoted over it (its verification enqueued)."""

    v1: ModelVersion
    v2: ModelVersion
    context: dict = field(default_factory=dict)

    @property
    def model(self):
        return self.v2.model


def build(mlflow_models) -> World:
    v1 = live(mlflow_models, "1.0.0", seed=0)
    v2 = promote_patch(mlflow_models, v1.model, "1.0.1", seed=1)
    return World(v1, v2)


# --- the transitions ------------------------------------------------------------------------


def promote_newer(w: World, version: str = "1.0.2") -> ModelVersion:
    newer = new_version(version, model=w.model)
    to_staging(newer)
    sign_promotion(newer)
    step(newer, "promote", actor=person("ci"))
    return newer


def rollback(w: World) -> None:
    """start_rollback of 1.0.1 and restore of 1.0.0, one transaction (what the task does)."""
    step(w.v2, "start_rollback", comment="rolled back by the ML Lead", actor=person("ml_lead"))


def archive(w: World) -> None:
    rollback(w)
    step(w.v2, "complete_rollback", comment="1.0.0 verified serving", actor=person("ml_lead"))


def retire(w: World) -> None:
    step(w.v2, "retire", comment="withdrawn by the ML Lead", actor=person("ml_lead"))


def halt(w: World) -> None:
    from serving.halt import halt_engage

    halt_engage(scope=w.model.name, reason="drill", actor=person("ml_lead"))


def release(w: World) -> None:
    from serving.halt import halt_release_approve

    halt(w)
    halt_release_approve(scope=w.model.name, actor=person("ml_lead"), comment="drill over")
    halt_release_approve(scope=w.model.name, actor=person("ethics_officer"), comment="over")


def archive_standby(w: World) -> None:
    """Three newer versions serve in turn: 1.0.0 drops out of the last three, to cold archive."""
    for version in ("1.0.2", "1.0.3", "1.0.4"):
        promote_newer(w, version)


def resolve_by_rollback(w: World) -> None:
    """A second critical alert rolls 1.0.1 back (the incident is then mitigating), then the
    incident is resolved (set-up only: resolving by completing steps is tested in
    tests/incidents) while its playbook task still waits in the queue."""
    from incidents.rollback import rollback_run

    rolled = critical_alert(w)["rollback"]
    assert rollback_run(rolled) == "completed"
    assert Incident.objects.get(pk=w.context["incident"]).status == "mitigating"
    Incident.objects.filter(pk=w.context["incident"]).update(status="resolved")


def complete_overdue_step(w: World) -> None:
    from incidents.steps.human import step_complete

    run = StepRun.objects.get(pk=w.context["step"])
    role = run.roles[0]
    step_complete(
        incident_id=run.incident_id,
        order=run.order,
        note="done meanwhile",
        actor=person(role, f"stale-{role}"),
    )


def nothing(w: World) -> None:
    """The control: no transition, the premise holds."""


TRANSITIONS: dict[str, Callable[[World], object]] = {
    "promotion": promote_newer,
    "rollback": rollback,
    "restore": rollback,  # restore of 1.0.0 commits with the rollback of 1.0.1
    "archive": archive,
    "retire": retire,
    "halt": halt,
    "release": release,
    "archive_standby": archive_standby,
    "incident_resolved": resolve_by_rollback,
    "step_completed": complete_overdue_step,
    "none": nothing,
}


# --- the tasks: prepare (the state the task is enqueued for), then run ----------------------


def verify_prepare(w: World) -> None:
    assert Lifecycle.objects.get(version=w.v2).stage == "production"


def verify_run(w: World):
    from serving import tasks

    return tasks.verify_promotion.apply(args=[w.v2.pk]).get()


def standby_prepare(w: World) -> None:
    from serving import standby

    w.context["listed"] = standby.warm_versions(w.model.pk)
    assert [v.version for v in w.context["listed"]] == ["1.0.0"]


def standby_run(w: World, monkeypatch):
    from serving import standby, tasks

    # the task listed the standby versions, then the transition committed
    monkeypatch.setattr(standby, "warm_versions", lambda model_id: w.context["listed"])
    return tasks.warm_standby.apply(args=[w.model.pk]).get()


def shadow_prepare(w: World) -> None:
    from serving.shadow_evaluation import shadow_premise_now

    candidate = new_version("1.1.0", model=w.model)
    to_staging(candidate)  # shadows 1.0.1
    w.context["candidate"] = candidate
    w.context["premise"] = shadow_premise_now(candidate.pk)


def shadow_run(w: World):
    from serving import tasks

    candidate = w.context["candidate"]
    with time_machine.travel(timedelta(days=8)):
        return tasks.record_shadow_evaluation.apply(
            args=[candidate.pk], kwargs=w.context["premise"]
        ).get()


def _records(rng, n: int, *, shift: float, prefix: str, start) -> list[dict]:
    x = rng.normal(size=(n, len(FEATURES)))
    x[:, 1] += shift
    score = 1 / (1 + np.exp(-x[:, 0]))
    return [
        {
            "prediction_id": f"{prefix}-{i}",
            "timestamp": (start + timedelta(minutes=i % 600)).isoformat(),
            "features": dict(zip(FEATURES, map(float, x[i]), strict=True)),
            "score": float(score[i]),
            "label": int(score[i] > 0.5),
        }
        for i in range(n)
    ]


def monitoring_prepare(w: World) -> None:
    """1.0.1 logged 800 predictions with f2 drifted; its scheduled data-drift run is due."""
    from monitoring import runs
    from monitoring.ingest import predictions_ingest, reference_ingest

    rng = np.random.default_rng(16)
    end = timezone.now().replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=12)
    name, version = w.model.name, w.v2.version
    reference = _records(rng, 800, shift=0.0, prefix="ref", start=start - timedelta(days=30))
    reference_ingest(model_name=name, version=version, records=reference, actor=SYSTEM)
    rows = [
        {k: v for k, v in r.items() if k != "label"}
        for r in _records(rng, 800, shift=1.5, prefix="p", start=start)
    ]
    predictions_ingest(model_name=name, version=version, records=rows, actor=SYSTEM)
    run = runs.run_create(
        model=w.model,
        version=w.v2,
        check="data_drift",
        window_end=end,
        trigger="schedule",
        actor=SYSTEM,
    )
    w.context["run"] = run.pk


def monitoring_run(w: World):
    from monitoring import tasks

    return tasks.execute_run.apply(args=[w.context["run"]]).get()


def critical_alert(w: World) -> dict:
    """A critical concept-drift alert on 1.0.1: a playbook-1 incident, critical, whose step 6
    rolls the live version back at once (a second one within 24 h: the automatic rollback)."""
    from incidents.alert_response import route_alert
    from tests.incidents.helpers import alert_on

    return route_alert(alert_on(w.v2, check="concept_drift", severity="critical"))


def playbook_prepare(w: World) -> None:
    """A critical alert on 1.0.1 opens an incident; its automated steps are due."""
    w.context["incident"] = critical_alert(w)["incident"]


def playbook_run(w: World):
    from incidents import tasks

    return tasks.run_playbook.apply(args=[w.context["incident"]]).get()


def overdue_prepare(w: World) -> None:
    """A human step of the incident is overdue: its reminder (page and email) is in the outbox."""
    from incidents.playbook_engine import steps_escalate_overdue

    playbook_prepare(w)
    waiting = StepRun.objects.filter(
        incident_id=w.context["incident"], status="waiting", is_review=False
    )
    run = next(r for r in waiting.order_by("order") if not r.decisions and r.roles)
    w.context["step"] = run.pk
    assert steps_escalate_overdue(now=run.due_at + timedelta(minutes=1)) >= 1
    w.context["reminders"] = list(
        Notification.objects.filter(dedup_key__startswith=f"step-{run.pk}-overdue").values_list(
            "pk", flat=True
        )
    )
    assert len(w.context["reminders"]) == 2


def overdue_run(w: World):
    from incidents import tasks

    return tasks.deliver_notifications.apply().get()


def rollback_prepare(w: World) -> None:
    """An ML Lead asks for the rollback of 1.0.1; the task is enqueued, not yet run."""
    from incidents.manual_rollback import rollback_manual

    _, requested = rollback_manual(
        model_name=w.model.name, reason="suspected leak", actor=person("ml_lead")
    )
    w.context["rollback"] = requested.pk


def rollback_run(w: World):
    from incidents import tasks

    return tasks.run_rollback.apply(args=[w.context["rollback"]]).get()


def outage_prepare(w: World) -> None:
    """The gateway saw 1.0.1 fail; its outage report waits in a background thread."""


def outage_run(w: World):
    from incidents.outage import report_outage

    return report_outage(
        model=w.model.name, version="1.0.1", kind="predict_error", detail="ValueError: boom"
    )


@dataclass(frozen=True)
class Task:
    name: str
    prepare: Callable[[World], None]
    run: Callable[..., object]
    invalidated_by: tuple[str, ...]
    holds_after: tuple[str, ...] = ()  # transitions that leave the premise intact


TASKS = [
    Task(
        "serving.verify_promotion",
        verify_prepare,
        verify_run,
        ("promotion", "rollback", "archive", "retire"),
        ("halt", "release"),
    ),
    Task("serving.warm_standby", standby_prepare, standby_run, ("restore", "archive_standby")),
    Task(
        "serving.record_shadow_evaluation",
        shadow_prepare,
        shadow_run,
        ("promotion", "rollback", "archive", "retire"),
    ),
    Task(
        "monitoring.execute_run",
        monitoring_prepare,
        monitoring_run,
        ("promotion", "rollback", "archive", "retire"),
        ("none", "halt"),
    ),
    Task(
        "incidents.run_playbook",
        playbook_prepare,
        playbook_run,
        ("promotion", "rollback", "archive", "incident_resolved"),
    ),
    Task("incidents.deliver_notifications", overdue_prepare, overdue_run, ("step_completed",)),
    Task("incidents.run_rollback", rollback_prepare, rollback_run, ("promotion", "retire")),
    Task(
        "incidents.outage_report",
        outage_prepare,
        outage_run,
        ("promotion", "rollback", "archive", "retire"),
    ),
]
CASES = [
    pytest.param(task, transition, True, id=f"{task.name}-x-{transition}")
    for task in TASKS
    for transition in task.invalidated_by
] + [
    pytest.param(task, transition, False, id=f"{task.name}-after-{transition}-still-acts")
    for task in TASKS
    for transition in task.holds_after
]


def effects(w: World) -> dict:
    """Everything a stale task must not change: incidents, outbox, alerts, stages, evidence."""
    return {
        "incidents": sorted(Incident.objects.values_list("pk", "status")),
        "notifications": sorted(Notification.objects.values_list("pk", "status")),
        "alerts": Alert.objects.count(),
        "points": MetricPoint.objects.count(),
        "rollbacks": sorted(Rollback.objects.values_list("pk", "status")),
        "stages": sorted(
            Lifecycle.objects.filter(version__model=w.model).values_list(
                "version__version", "stage", "archive"
            )
        ),
        "evaluations": Evaluation.objects.filter(kind=EvidenceKind.SHADOW).count(),
        "lifecycle_events": AuditEvent.objects.filter(action__startswith="lifecycle.").count(),
    }


def skipped_results(task: Task, result) -> list[dict]:
    """The skips a task reported: its result, or for the tasks returning a status or counts
    (a run's or a rollback's status, the outbox's counts) the audit events they wrote."""
    if result == "skipped" or (isinstance(result, dict) and isinstance(result.get("skipped"), int)):
        count = 1 if result == "skipped" else result["skipped"]
        events = AuditEvent.objects.filter(action=AUDIT_ACTION).order_by("-id")[:count]
        return [
            {"status": "skipped", "reason": e.reason, "premise": e.after["premise"]} for e in events
        ]
    results = result if isinstance(result, list) else [result]
    return [r for r in results if isinstance(r, dict) and r.get("status") == "skipped"]


@pytest.mark.parametrize(("task", "transition", "invalidates"), CASES)
def test_a_delayed_task_after_a_transition(
    task, transition, invalidates, mlflow_models, monkeypatch, outages
):
    w = build(mlflow_models)
    task.prepare(w)
    TRANSITIONS[transition](w)
    before = effects(w)
    skips_before = AuditEvent.objects.filter(action=AUDIT_ACTION).count()

    run = task.run
    result = run(w, monkeypatch) if run is standby_run else run(w)

    if not invalidates:
        assert not skipped_results(task, result)
        assert effects(w) != before  # the control: the task acts where its premise holds
        assert outages == []
        return
    skips = skipped_results(task, result)
    assert skips, result
    assert all(s["reason"] and s["premise"] for s in skips)
    assert outages == []
    after = effects(w)
    if task.name == "incidents.run_playbook":  # the steps end skipped, nothing else moves
        assert after == before
        statuses = dict(
            StepRun.objects.filter(incident_id=w.context["incident"], automated=True).values_list(
                "task", "status"
            )
        )
        assert statuses["rollback_when_critical"] == "skipped"
    elif task.name == "incidents.deliver_notifications":
        reminders = Notification.objects.filter(pk__in=w.context["reminders"])
        assert {n.status for n in reminders} == {"skipped"}
        assert not any(n.delivery_attempts.exists() for n in reminders)
    elif task.name == "monitoring.execute_run":
        assert after == before
        assert MonitorRun.objects.get(pk=w.context["run"]).status == "skipped"
    elif task.name == "incidents.run_rollback":
        assert after["stages"] == before["stages"]
        assert after["notifications"] == before["notifications"]  # nobody paged
        assert Rollback.objects.get(pk=w.context["rollback"]).status == "skipped"
    else:
        assert after == before
    if task.name != "serving.warm_standby":  # the cache changes no audited state
        event = AuditEvent.objects.filter(action=AUDIT_ACTION).order_by("-id").first()
        assert AuditEvent.objects.filter(action=AUDIT_ACTION).count() > skips_before
        assert event.actor == f"system:{task.name}"
        assert event.reason == skips[-1]["reason"]


# --- the scenario, and the interleavings inside a task ------------------------------


def test_a_rollback_seconds_after_a_promotion_opens_no_incident_and_pages_no_one(
    mlflow_models, api_client, outages
):
    """1.0.0 live, 1.0.1 promoted, the ML Lead rolls back through the API, then the delayed
    verification of 1.0.1 runs: it is skipped as superseded, and nobody is paged."""
    from incidents.rollback import rollback_run
    from serving import gateway, tasks

    w = build(mlflow_models)
    lead = api_client("ml_lead", username="lee-lead")
    answer = lead.post(
        f"/api/v1/models/{w.model.name}/rollback/", {"reason": "wrong threshold"}, format="json"
    )
    assert answer.status_code == 202, answer.content
    assert rollback_run(Rollback.objects.get().pk) == "completed"
    code, body = gateway.serve(w.model.name, {"instances": [dict.fromkeys(FEATURES, 0.0)]})
    assert (code, body["version"]) == (200, "1.0.0")

    result = tasks.verify_promotion.apply(args=[w.v2.pk]).get()

    assert result["status"] == "skipped"
    assert result["reason"].startswith("superseded: 1.0.1 is in retired")
    assert "1.0.0 serves now" in result["reason"]
    assert not Incident.objects.filter(kind=IncidentKind.OUTAGE).exists()
    assert not Notification.objects.filter(channel="page").exists()
    assert outages == []
    event = AuditEvent.objects.get(action=AUDIT_ACTION)
    assert event.actor == "system:serving.verify_promotion"
    assert event.after["premise"].startswith("1.0.1 is the live version of")


def test_a_rollback_committed_while_the_probe_runs_is_superseded_not_an_outage(
    mlflow_models, monkeypatch, outages
):
    """The interleaving of the issue: the task found 1.0.1 live, the rollback committed, the
    probe was answered by 1.0.0. The second check under the model lock calls it superseded."""
    from serving import gateway, tasks

    w = build(mlflow_models)
    real_serve = gateway.serve

    def serve_after_a_rollback(*args, **kwargs):
        if Lifecycle.objects.get(version=w.v2).stage == "production":
            rollback(w)
        return real_serve(*args, **kwargs)

    monkeypatch.setattr(gateway, "serve", serve_after_a_rollback)
    result = tasks.verify_promotion.apply(args=[w.v2.pk]).get()

    assert result["status"] == "skipped" and result["answered_by"] == "1.0.0"
    assert result["reason"].startswith("superseded: 1.0.1 is in rollback")
    assert "answered by 1.0.0" in result["reason"]
    assert outages == [] and not Incident.objects.exists()
    assert Lifecycle.objects.get(version=w.v1).stage == "production"  # not begin_monitoring'd


def _mlflow_state(version) -> tuple[str, list[str]]:
    from registry import mlflow_bridge

    found = mlflow_bridge.client().get_model_version(version.mlflow_name, version.mlflow_version)
    return found.tags.get(mlflow_bridge.STAGE_TAG), sorted(found.aliases or [])


def test_the_mlflow_mirror_writes_the_stage_of_now_even_when_a_rollback_commits_mid_write(
    mlflow_models, monkeypatch
):
    """The mirror of 1.0.1 enqueued at its promotion reads production; the rollback commits
    (and mirrors 1.0.0) while it writes. The mirror reads the stage again and repairs: 1.0.1
    shows rollback, the production alias is back on 1.0.0."""
    from governance.services import mlflow_mirror
    from registry import mlflow_bridge

    w = build(mlflow_models)
    real_mirror = mlflow_bridge.mirror_stage
    interleaved = []

    def mirror_while_rolling_back(name, version, **kwargs):
        if not interleaved:
            interleaved.append(True)
            rollback(w)
            mlflow_mirror(version_id=w.v1.pk)  # the rollback's own mirror, after its commit
            mlflow_mirror(version_id=w.v2.pk)
        return real_mirror(name, version, **kwargs)

    monkeypatch.setattr(mlflow_bridge, "mirror_stage", mirror_while_rolling_back)
    mlflow_mirror(version_id=w.v2.pk)

    assert _mlflow_state(w.v2) == ("rollback", [])
    assert _mlflow_state(w.v1) == ("production", ["production"])
