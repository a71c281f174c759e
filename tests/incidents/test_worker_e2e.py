"""End to end on PostgreSQL and Redis: automatic rollback executed by real Celery workers.

Two critical alerts committed in this process open one incident and one rollback; a separate
worker process (``-Q urgent,default``, reading the committed test database and the same MLflow
store and artifact cache) switches, verifies v(n-1) with a real prediction through the gateway
and completes. Then this process's own gateway answers from v(n-1). A second test kills the
worker with SIGKILL while the rollback holds the ``switched`` status (the drill knob
``INCIDENTS_ROLLBACK_PAUSE_AFTER_SWITCH`` holds it there) and checks that the redelivered task
(``acks_late``, a 2 s visibility timeout) completes it exactly once on a fresh worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from governance import audit
from governance.models import Archive, AuditEvent, Lifecycle
from incidents.alert_response import route_alert
from incidents.models import Incident, Rollback
from incidents.rollback import TERMINAL
from tests.celery_workers import (
    broker_url,
    start_worker,
    stop_workers,
    wait_ready,
    worker_environment,
)
from tests.incidents.helpers import alert_on, stage

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]
PROBE = {"instances": [{"f1": 0.3, "f2": -0.2, "f3": 1.0}]}


@pytest.fixture
def enqueued():
    """Overrides the package's recording fixture: here tasks really go to the broker."""
    return None


class Workers:
    """Celery worker processes started by a test, each in its own process group."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.started: list[tuple[subprocess.Popen, Path]] = []

    def start(self, *, concurrency: int = 2, **env: str) -> subprocess.Popen:
        """Flush the Redis database (no task from the set-up runs), start a worker, wait for it."""
        import redis

        if not self.started:
            redis.Redis.from_url(broker_url()).flushdb()
        index = len(self.started)
        name = f"e2e-incidents-{os.getpid()}-{index}"
        log = self.log_dir / f"worker-{index}.log"
        process = start_worker(
            name=name,
            queues="urgent,default",
            concurrency=concurrency,
            env=worker_environment(**env),
            log=log,
        )
        self.started.append((process, log))
        try:
            wait_ready({name: process}, timeout=60)
        except RuntimeError as exc:
            pytest.fail(f"{exc}:\n{self.output(process)}")
        return process

    def output(self, process: subprocess.Popen) -> str:
        log = next(path for p, path in self.started if p is process)
        return log.read_text()[-4000:]

    @staticmethod
    def kill(process: subprocess.Popen) -> None:
        """SIGKILL the worker's whole process group (main process and pool children)."""
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        stop_workers([process for process, _ in self.started], timeout=20)


@pytest.fixture
def workers(transactional_db, tmp_path) -> Iterator[Workers]:
    """Started workers are stopped before the database is flushed."""
    broker_url()
    started = Workers(tmp_path)
    yield started
    started.stop_all()


def wait_for(condition: Callable[[], object], *, timeout: float, what: str, workers=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    logs = "\n".join(workers.output(p) for p, _ in workers.started) if workers else ""
    pytest.fail(f"timed out waiting for {what}\n{logs}")


def served_version(model_name: str) -> str | None:
    """The version this process's gateway answers with (a real prediction, not logged)."""
    from serving import gateway

    code, body = gateway.serve(model_name, PROBE, record=False)
    return body.get("version") if code == 200 and not body.get("stale") else None


def audit_actions(prefix: str) -> list[str]:
    return list(
        AuditEvent.objects.filter(action__startswith=prefix)
        .order_by("id")
        .values_list("action", flat=True)
    )


def assert_rolled_back_once(v1, v2) -> Rollback:
    rollback = Rollback.objects.get()
    assert (rollback.status, rollback.from_version, rollback.to_version) == ("completed", v2, v1)
    assert rollback.verification.startswith("gateway: 1.0.0 scored a probe")
    assert stage(v1) in {"production", "monitoring"}
    rolled = Lifecycle.objects.get(version=v2)
    assert (rolled.stage, rolled.archive) == ("retired", Archive.COLD)
    assert audit_actions("incidents.rollback_") == [
        "incidents.rollback_requested",  # automatic, by the alert's response
        "incidents.rollback_switched",
        "incidents.rollback_verified",
        "incidents.rollback_completed",
    ]
    lifecycle = audit_actions("lifecycle.")
    for action in ("lifecycle.start_rollback", "lifecycle.restore", "lifecycle.complete_rollback"):
        assert lifecycle.count(action) == 1, lifecycle
    incident = Incident.objects.get(pk=rollback.incident_id)
    assert incident.review_due_at is not None
    assert abs(incident.review_due_at - rollback.completed_at - timedelta(hours=48)) < timedelta(
        minutes=1
    )
    assert served_version(v1.model.name) == "1.0.0"
    assert (checked := audit.verify()).valid, checked.problem
    return rollback


def test_two_critical_alerts_roll_back_once_through_a_real_worker_and_v1_serves(
    workers, serving_pair
):
    v1, v2 = serving_pair
    assert served_version(v2.model.name) == "1.0.1"
    workers.start()

    first = route_alert(alert_on(v2))
    second = route_alert(alert_on(v2))
    assert first["rollback"] is None and second["rollback"] is not None

    wait_for(
        lambda: Rollback.objects.filter(status__in=TERMINAL).exists(),
        timeout=45,
        what="the rollback to finish",
        workers=workers,
    )
    rollback = assert_rolled_back_once(v1, v2)
    assert rollback.attempts == 3  # switch, verify, complete: one task run, no retry
    incident = Incident.objects.get()
    assert incident.alerts.count() == 2 and incident.status == "mitigating"  # human steps wait


def test_a_worker_killed_mid_rollback_is_redelivered_and_completes_exactly_once(
    workers, serving_pair
):
    v1, v2 = serving_pair
    drill = {"CELERY_VISIBILITY_TIMEOUT": "2"}
    first = workers.start(concurrency=1, INCIDENTS_ROLLBACK_PAUSE_AFTER_SWITCH="30", **drill)
    route_alert(alert_on(v2))
    route_alert(alert_on(v2))

    wait_for(
        lambda: Rollback.objects.filter(status="switched").exists(),
        timeout=30,
        what="the switch",
        workers=workers,
    )
    switched_seen = time.monotonic()
    workers.kill(first)
    rollback = Rollback.objects.get()
    assert rollback.status == "switched" and rollback.attempts == 1
    assert stage(v2) == "rollback" and stage(v1) in {"production", "monitoring"}
    # The fresh worker restores unacknowledged messages older than the visibility timeout
    # when it starts: let that age pass first.
    time.sleep(max(0.0, switched_seen + 2.5 - time.monotonic()))
    workers.start(**drill)

    wait_for(
        lambda: Rollback.objects.filter(status__in=TERMINAL).exists(),
        timeout=45,
        what="the redelivered rollback to finish",
        workers=workers,
    )
    rollback = assert_rolled_back_once(v1, v2)
    assert rollback.attempts >= 2 and rollback.task_id  # the same message, run again
