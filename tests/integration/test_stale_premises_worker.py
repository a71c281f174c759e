"""Issue 16 with a real Celery worker on PostgreSQL and Redis: stale premises are skipped.

Each case commits the state a task is enqueued for (the tasks go to Redis through the platform's
own after-commit enqueues, or as the platform sends them), then the transition that invalidates
it commits, and only then does a worker (``-Q urgent,monitoring,default``, this run's database,
MLflow store and artifact cache) start and run everything queued. Each stale task must end
skipped with its ``task.skipped`` audit event; no outage incident, no page to anyone not paged
by the alert itself, no alert, no rollback.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from governance import audit
from governance.models import AuditEvent, Lifecycle
from governance.premises import AUDIT_ACTION
from incidents.models import Incident, IncidentKind, Notification, Rollback
from monitoring.models import Alert, MonitorRun
from tests.celery_workers import broker_url, start_worker, stop_workers, worker_environment
from tests.integration import test_stale_premises as matrix
from tests.serving.helpers import promote_patch

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def redis_queue() -> Iterator[str]:
    """An empty Redis database before the set-up enqueues anything."""
    import redis

    broker = broker_url()
    redis.Redis.from_url(broker).flushdb()
    yield broker


def run_worker(log: Path):
    """A worker on every queue this run's tasks go to, its INFO log in ``log``."""
    return start_worker(
        name=f"stale-{os.getpid()}",
        queues="urgent,monitoring,default",
        concurrency=2,
        env=worker_environment(
            SERVING_OUTAGE_HOOK="incidents.outage.report_outage", LOG_LEVEL="INFO"
        ),
        log=log,
        loglevel="INFO",
    )


def skips_by(task: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=AUDIT_ACTION, actor=f"system:{task}"))


# task -> skip events the cases below produce at least (the platform's own enqueues add more
# stale ones: the verification of 1.0.0 queued at its promotion finds it retired by 1.0.1)
EXPECTED = {
    "serving.verify_promotion": 1,
    "incidents.run_rollback": 1,
    "incidents.run_playbook": 1,
    "monitoring.execute_run": 1,
    "serving.record_shadow_evaluation": 1,
    "incidents.deliver_notifications": 2,
}


def test_stale_tasks_run_by_a_real_worker_are_skipped_and_page_no_one(
    redis_queue, mlflow_models, tmp_path
):
    from monitoring.runs import enqueue_runs
    from serving.signals import enqueue_shadow_evaluation

    # verification x rollback (the issue): 1.0.1 promoted (its verification queued), rolled back
    issue = matrix.build(mlflow_models)
    matrix.rollback(issue)
    # rollback task x promotion: the ML Lead's rollback of 1.0.1 is queued, 1.0.2 is promoted
    superseded = matrix.build(mlflow_models)
    matrix.rollback_prepare(superseded)
    promote_patch(mlflow_models, superseded.model, "1.0.2", seed=2)
    # playbook step x rollback: a critical alert's playbook queued, then 1.0.1 rolled back
    playbook = matrix.build(mlflow_models)
    matrix.playbook_prepare(playbook)
    matrix.rollback(playbook)
    # monitoring run x rollback
    monitored = matrix.build(mlflow_models)
    matrix.monitoring_prepare(monitored)
    enqueue_runs([monitored.context["run"]])
    matrix.rollback(monitored)
    # shadow evaluation x rollback of the live version it shadows
    shadowed = matrix.build(mlflow_models)
    matrix.shadow_prepare(shadowed)
    enqueue_shadow_evaluation(shadowed.context["candidate"].pk)
    matrix.rollback(shadowed)
    # overdue reminder x the step completed meanwhile
    reminded = matrix.build(mlflow_models)
    matrix.overdue_prepare(reminded)
    matrix.complete_overdue_step(reminded)

    log = tmp_path / "worker.log"
    worker = run_worker(log)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if all(len(skips_by(t)) >= n for t, n in EXPECTED.items()):
                break
            if worker.poll() is not None:
                pytest.fail(f"the worker exited:\n{log.read_text()[-4000:]}")
            time.sleep(0.25)
        else:
            found = {t: len(skips_by(t)) for t in EXPECTED}
            pytest.fail(f"skips {found} != {EXPECTED}:\n{log.read_text()[-6000:]}")
        time.sleep(1.0)  # let the rest of the queue (verifications of the restored) settle
    finally:
        stop_workers([worker])

    assert all(len(skips_by(t)) >= n for t, n in EXPECTED.items())
    assert not Incident.objects.filter(kind=IncidentKind.OUTAGE).exists()
    # the only pages: the Ethics Officer's, for the two critical alerts that really happened
    pages = Notification.objects.filter(channel="page").exclude(status="skipped")
    assert {p.role for p in pages} <= {"ethics_officer"}, [p.dedup_key for p in pages]
    assert Alert.objects.filter(version=monitored.v2).count() == 0
    assert MonitorRun.objects.get(pk=monitored.context["run"]).status == "skipped"
    # The reminder case's own incident is critical and its version still serves, so its
    # playbook may legitimately roll it back (premise intact) if the worker gets that far; every
    # other rollback here would come from a stale premise: only the superseded one, skipped.
    stale = Rollback.objects.exclude(model=reminded.model)
    assert list(stale.values_list("status", flat=True)) == ["skipped"]
    legit = Rollback.objects.filter(model=reminded.model)
    assert all(r.automatic and r.from_version == reminded.v2 for r in legit)
    candidate = shadowed.context["candidate"]
    assert Lifecycle.objects.get(version=candidate).stage == "staging"
    assert Lifecycle.objects.get(version=issue.v2).stage == "rollback"
    reminders = Notification.objects.filter(pk__in=reminded.context["reminders"])
    assert {n.status for n in reminders} == {"skipped"}
    [verify_skip] = [
        e for e in skips_by("serving.verify_promotion") if e.object_id == str(issue.v2.lifecycle.pk)
    ]
    assert verify_skip.reason.startswith("superseded: 1.0.1 is in rollback")
    assert "1.0.0 serves now" in verify_skip.reason
    assert not Incident.objects.filter(model=issue.model).exists()
    assert (checked := audit.verify()).valid, checked.problem
