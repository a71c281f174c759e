"""End to end on PostgreSQL and Redis: the daily schedule's task, executed by a real Celery worker.

A window with drift injected into two known features raises exactly one medium data-drift alert
naming them; a clean window raises none; a version without reference data gets a failed run
with its reason. The worker is a separate process reading the committed test database.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from governance.audit import Actor
from monitoring.ingest import labels_ingest, predictions_ingest, reference_ingest
from monitoring.models import Alert, MonitorRun, RunStatus
from tests.celery_workers import broker_url, start_worker, stop_workers, worker_environment
from tests.governance.lifecycle_helpers import new_version, to_production_first

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]
FEATURES = [f"x{i}" for i in range(5)]
CI = Actor.system("tests")


def _records(rng, n: int, *, start, shift: dict[str, float], prefix: str) -> list[dict]:
    x = rng.normal(size=(n, len(FEATURES)))
    for name, delta in shift.items():
        x[:, FEATURES.index(name)] += delta
    # scores depend on x0 and x2 only, so drifting x1 and x3 moves no prediction
    score = 1 / (1 + np.exp(-(x[:, 0] - 0.5 * x[:, 2])))
    label = (rng.random(n) < score).astype(int)
    group = rng.choice(["north", "south"], size=n)
    seconds = rng.uniform(0, 6.9 * 86400, size=n)
    return [
        {
            "prediction_id": f"{prefix}-{i}",
            "timestamp": (start + timedelta(seconds=float(seconds[i]))).isoformat(),
            "features": dict(zip(FEATURES, map(float, x[i]), strict=True)),
            "score": float(score[i]),
            "sensitive": {"area": str(group[i])},
            "_label": int(label[i]),
        }
        for i in range(n)
    ]


def _live_version(name: str):
    from tests.factories import RegisteredModelFactory

    version = new_version("1.0.0", model=RegisteredModelFactory(name=name), feature_list=FEATURES)
    to_production_first(version)
    return version


def _ingest(version, records, *, reference: bool) -> None:
    model = version.model.name
    if reference:
        rows = [
            {**{k: v for k, v in r.items() if k != "_label"}, "label": r["_label"]} for r in records
        ]
        reference_ingest(model_name=model, version=version.version, records=rows, actor=CI)
        return
    rows = [{k: v for k, v in r.items() if k != "_label"} for r in records]
    predictions_ingest(model_name=model, version=version.version, records=rows, actor=CI)
    labels = [{"prediction_id": r["prediction_id"], "label": r["_label"]} for r in records]
    labels_ingest(model_name=model, records=labels, actor=CI)


@pytest.fixture
def worker(tmp_path):
    import redis

    redis.Redis.from_url(broker_url()).flushdb()
    name = f"e2e-{os.getpid()}"
    log = tmp_path / "worker.log"
    process = start_worker(
        name=name,
        queues="monitoring,default,urgent",
        concurrency=2,
        env=worker_environment(),
        log=log,
    )
    process.log = log
    yield process
    stop_workers([process])


def test_daily_schedule_through_a_real_worker_raises_exactly_the_expected_alerts(worker):
    rng = np.random.default_rng(42)
    window_end = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    start = window_end - timedelta(days=7)
    drifted, clean, broken = (_live_version(n) for n in ("e2e-drifted", "e2e-clean", "e2e-broken"))
    for version in (drifted, clean):
        _ingest(
            version,
            _records(
                rng, 4000, start=start - timedelta(days=60), shift={}, prefix=f"ref-{version.pk}"
            ),
            reference=True,
        )
    _ingest(
        drifted,
        _records(rng, 3000, start=start, shift={"x1": 1.0, "x3": -1.0}, prefix="d"),
        reference=False,
    )
    _ingest(clean, _records(rng, 3000, start=start, shift={}, prefix="c"), reference=False)
    _ingest(broken, _records(rng, 3000, start=start, shift={}, prefix="b"), reference=False)

    from monitoring.tasks import run_daily_checks

    run_daily_checks.delay()
    deadline = time.monotonic() + 120
    expected_runs = 3 * 3
    while time.monotonic() < deadline:
        done = MonitorRun.objects.exclude(status__in=[RunStatus.PENDING, RunStatus.RUNNING])
        if done.count() >= expected_runs:
            break
        if worker.poll() is not None:
            pytest.fail(f"the worker exited: {worker.log.read_text()[-4000:]}")
        time.sleep(0.5)
    runs = {(r.model.name, r.kind): r for r in MonitorRun.objects.select_related("model")}
    assert len(runs) == expected_runs, [(k, r.status) for k, r in runs.items()]

    alerts = list(Alert.objects.select_related("model"))
    assert [(a.model.name, a.kind, a.severity) for a in alerts] == [
        ("e2e-drifted", "data_drift", "medium")
    ]
    assert {f["feature"] for f in alerts[0].details["features"]} == {"x1", "x3"}
    assert alerts[0].feature in {"x1", "x3"} and alerts[0].value > 0.2
    assert all(
        runs[("e2e-clean", check)].status == RunStatus.SUCCEEDED
        for check in ("data_drift", "prediction_drift", "fairness")
    )
    failed = runs[("e2e-broken", "data_drift")]
    assert failed.status == RunStatus.FAILED and "reference" in failed.reason
