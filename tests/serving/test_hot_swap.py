"""Hot swap: a committed promotion or rollback serves from the next request, with no failure."""

import shutil
import threading
import time

import pytest
from django.db import connection, transaction
from rest_framework.test import APIClient

from governance import services
from governance.audit import Actor
from governance.models import AuditEvent, Lifecycle
from registry import mlflow_bridge
from serving import loader, readiness, signals, tasks
from serving.standby import warm_standby_refresh
from tests.governance.lifecycle_helpers import person, sign_promotion, stage, step
from tests.serving.helpers import (
    instances,
    live,
    predict,
    promote_patch,
    rollback,
    staged,
    warm,
)

SYSTEM = Actor.system("tests")
REAL_ENQUEUE_VERIFICATION = signals.enqueue_verification
REAL_ENQUEUE_WARM_STANDBY = signals.enqueue_warm_standby


def hammer(token: str, model: str, stop: threading.Event, results: list, thread: int) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    try:
        while not stop.is_set():
            started = time.monotonic()
            response = predict(client, model, instances(1))
            body = response.json()
            results.append((thread, started, time.monotonic(), response.status_code, body))
    finally:
        connection.close()


def run_under_load(model: str, change, *, threads: int = 4) -> tuple[list, float]:
    """Hammer predict from ``threads`` clients, apply ``change`` (it commits), keep hammering."""
    services.role_grant(username="load-ci", roles=["ci"], actor=SYSTEM)
    _, token = services.token_create(username="load-ci", actor=SYSTEM)
    stop = threading.Event()
    results: list = []
    workers = [
        threading.Thread(target=hammer, args=(token, model, stop, results, i))
        for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    time.sleep(0.5)
    change()
    committed_at = time.monotonic()
    time.sleep(0.7)
    stop.set()
    for worker in workers:
        worker.join()
    return results, committed_at


def assert_clean_swap(results, committed_at, old: str, new: str) -> None:
    assert results, "no request completed"
    failures = [(status, body) for _, _, _, status, body in results if status != 200]
    assert failures == []
    versions = [body["version"] for *_, body in results]
    assert old in versions and new in versions
    first_new = min(end for _, _, end, _, body in results if body["version"] == new)
    late_old = [
        (start, end)
        for _, start, end, _, body in results
        if body["version"] == old and (start > first_new or start > committed_at)
    ]
    assert late_old == [], "a request started after the swap was answered by the old version"
    for thread in {t for t, *_ in results}:
        seen = [
            body["version"] for t, *_, body in sorted(results, key=lambda r: r[1]) if t == thread
        ]
        assert seen == sorted(seen, key=lambda v: v == new), f"thread {thread} went back"


@pytest.mark.django_db(transaction=True)
def test_a_promotion_swaps_versions_under_concurrent_requests_without_a_failed_request(
    mlflow_models, ci
):
    v1 = live(mlflow_models, "1.0.0", seed=21)
    v2 = staged(mlflow_models, v1.model, "1.0.1", seed=22)
    sign_promotion(v2)
    assert predict(ci, v1.model.name, instances()).json()["version"] == "1.0.0"

    results, committed_at = run_under_load(
        v1.model.name, lambda: step(v2, "promote", actor=person("ci"))
    )

    assert_clean_swap(results, committed_at, "1.0.0", "1.0.1")
    print(f"\n{len(results)} requests during the swap, none failed")


@pytest.mark.django_db(transaction=True)
def test_a_rollback_swaps_back_under_concurrent_requests_without_a_failed_request(
    mlflow_models, ci
):
    v1 = live(mlflow_models, "1.0.0", seed=21)
    v2 = promote_patch(mlflow_models, v1.model, "1.0.1", seed=22)
    assert predict(ci, v1.model.name, instances()).json()["version"] == "1.0.1"

    results, committed_at = run_under_load(v1.model.name, lambda: rollback(v2))

    assert_clean_swap(results, committed_at, "1.0.1", "1.0.0")


@pytest.mark.django_db
def test_a_restore_from_warm_standby_loads_in_well_under_a_second(mlflow_models, ci, committed):
    v1 = live(mlflow_models, "1.0.0", seed=21)
    with committed():
        v2 = promote_patch(mlflow_models, v1.model, "1.0.1", seed=22)
    assert predict(ci, v1.model.name, instances()).json()["version"] == "1.0.1"
    assert loader.loaded(v1.artifact_digest) is None  # only live and shadow stay in memory
    shutil.rmtree(mlflow_bridge.cache_path(v1.artifact_digest))

    report = warm_standby_refresh(model_id=v1.model_id)

    assert [(r["version"], r["ok"]) for r in report] == [("1.0.0", True)]
    assert mlflow_bridge.cache_path(v1.artifact_digest).is_dir()
    assert loader.loaded(v1.artifact_digest) is None  # verified loadable, not held
    with committed():
        rollback(v2)
    started = time.perf_counter()
    response = predict(ci, v1.model.name, instances())
    elapsed = time.perf_counter() - started

    assert response.json()["version"] == "1.0.0"
    load = loader.loaded(v1.artifact_digest).load_seconds
    print(
        f"\nrestore: first response from 1.0.0 after {elapsed * 1000:.0f} ms, "
        f"load {load * 1000:.0f} ms"
    )
    assert elapsed < 1.0


@pytest.mark.django_db
def test_only_live_and_shadow_versions_stay_in_memory(mlflow_models, ci, committed):
    v1 = live(mlflow_models, "1.0.0", seed=21)
    with committed():
        v2 = promote_patch(mlflow_models, v1.model, "1.0.1", seed=22)
        v3 = staged(mlflow_models, v1.model, "1.1.0", seed=23)
    warm(ci, v1.model.name)

    assert loader.loaded(v1.artifact_digest) is None
    assert loader.loaded(v2.artifact_digest) is not None
    assert loader.loaded(v3.artifact_digest) is not None


@pytest.mark.django_db
def test_warm_standby_keeps_the_last_three_retired_versions(mlflow_models):
    v = live(mlflow_models, "1.0.0", seed=21)
    for patch, seed in [(1, 22), (2, 23), (3, 24), (4, 25)]:
        promote_patch(mlflow_models, v.model, f"1.0.{patch}", seed=seed)

    report = tasks.warm_standby.apply(args=[v.model_id]).get()

    assert [r["version"] for r in report] == ["1.0.3", "1.0.2", "1.0.1"]
    assert all(r["ok"] and r["load_ms"] < 1000 for r in report)


@pytest.mark.django_db
def test_a_promotion_enqueues_verification_and_warm_standby_after_commit(
    mlflow_models, committed, enqueued
):
    v1 = live(mlflow_models, "1.0.0", seed=21)
    enqueued.clear()
    v2 = staged(mlflow_models, v1.model, "1.0.1", seed=22)
    sign_promotion(v2)
    with pytest.raises(RuntimeError), transaction.atomic():
        step(v2, "promote", actor=person("ci"))
        raise RuntimeError("rolled back")
    assert enqueued == []

    with committed():
        step(v2, "promote", actor=person("ci"))

    assert enqueued == [("verify", v2.pk), ("warm", v1.model_id)]


def test_the_enqueue_names_the_tasks_and_settings_route_them_to_the_urgent_queue(monkeypatch):
    from config.celery import app

    sent = []
    monkeypatch.setattr(
        "platform_core.tasking.send",
        lambda name, args=(), kwargs=None, **options: sent.append((name, args, options)),
    )
    REAL_ENQUEUE_VERIFICATION(7)
    REAL_ENQUEUE_WARM_STANDBY(3)
    assert [(name, args) for name, args, _ in sent] == [
        ("serving.verify_promotion", (7,)),
        ("serving.warm_standby", (3,)),
    ]
    assert all("queue" not in options for _, _, options in sent)  # settings choose it
    queues = {app.amqp.router.route({}, name, args, {})["queue"].name for name, args, _ in sent}
    assert queues == {"urgent"}


@pytest.mark.django_db
def test_the_gateway_verifies_a_promoted_version_by_a_real_prediction_then_monitoring_begins(
    mlflow_models,
):
    v1 = live(mlflow_models, "1.0.0", seed=21)
    assert stage(v1) == "production"

    result = tasks.verify_promotion.apply(args=[v1.pk]).get()

    assert result["verified"] is True and 0 <= result["score"] <= 1
    assert stage(v1) == "monitoring"
    event = AuditEvent.objects.filter(action="lifecycle.begin_monitoring").get()
    assert event.actor == "system:serving gateway"
    again = readiness.verify_promotion(version_id=v1.pk)
    assert again["status"] == "skipped" and again["version"] == "1.0.0"
    assert again["reason"] == "1.0.0 was verified already (it is in monitoring)"


@pytest.mark.django_db
def test_a_promoted_version_that_cannot_serve_stays_in_production_and_is_reported(
    mlflow_models, settings, outages
):
    v1 = live(mlflow_models, "1.0.0", seed=21)
    shutil.rmtree(mlflow_bridge.cache_path(v1.artifact_digest))
    settings.MLFLOW_TRACKING_URI = settings.MLFLOW_REGISTRY_URI = "http://127.0.0.1:9"

    with pytest.raises(readiness.NotServing):
        readiness.verify_promotion(version_id=v1.pk)

    assert Lifecycle.objects.get(version=v1).stage == "production"
    from serving import background

    background.drain()
    assert [o["kind"] for o in outages] == ["not_verified"]
