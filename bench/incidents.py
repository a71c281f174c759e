"""Rollback and halt drills: a real Celery worker on Redis, PostgreSQL, real MLflow models.

    .venv/bin/python bench/incidents.py [--drills 20] [--concurrency 2]
                                        [--admin-url postgres://postgres@127.0.0.1:5432/postgres]
                                        [--redis-url redis://127.0.0.1:6379/4]

Runs against a temporary PostgreSQL database (created on ``--admin-url``'s server, dropped at the
end), a temporary var directory (its own MLflow store and artifact cache) and the Redis database
of ``--redis-url`` (flushed before and after: give it one nobody else uses). One worker,
``celery -A config worker -Q urgent,default -c 2``, as in production.

Set-up, not timed: ``--drills`` models, each with two logistic regressions logged to MLflow and
registered through ``version_register`` (distinct artifacts, so every restore loads its own model
from the warm-standby cache on disk), 1.0.0 walked to production and a PATCH 1.0.1 promoted over
it (1.0.0 goes to warm standby), through the lifecycle with the test suite's evidence and
approval helpers. The worker verifies each promotion (1.0.1 enters ``monitoring``).

Each drill, one model at a time, with this process acting as a gateway that serves the model
(``serving.gateway.serve``, the code path of the predict API; not logged):

- a first critical fairness alert is written and routed (incident, page; the version degrades);
  the worker drains what it enqueued;
- **rollback**: a second critical alert is committed; the clock starts. It is routed (as the
  monitoring task's hook does), which creates the rollback and enqueues it on ``urgent``; the
  worker switches (start_rollback + restore), verifies 1.0.0 with a real prediction through its
  own gateway and completes. The clock stops at the first prediction of this process's gateway,
  polled every 10 ms, answered by 1.0.0 (not stale);
- **halt**: the model's halt is engaged by an ML Lead (``serving.halt.halt_engage``; the clock
  starts before the call, so its commit is included) and stops at the first refused prediction
  (503, ``halted``) of the same gateway, polled every millisecond.

With ``--cold-cache`` (issue 14), the worker has an artifact cache of its own, and after the
set-up both caches are emptied and the worker restarted: every restore and this gateway's swap
load 1.0.0 from MLflow, as on a host that never held it (``rollback_to_v1_serving_cold_cache``).

Every figure is one JSON object per line, as in the other benches, with the specification's limit
(``spec_limit_s``) and the issue's target beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# This file is bench/incidents.py: its directory must not shadow the ``incidents`` app.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO))

from bench import _common  # noqa: E402
from bench._common import (  # noqa: E402
    ADMIN_URL,
    create_database,
    drop_database,
    emit,
    percentile,
    worker_environment,
)

FEATURES = [f"f{i}" for i in range(10)]
PROBE = {"instances": [dict.fromkeys(FEATURES, 0.25)]}
ROLLBACK_SPEC_S, ROLLBACK_TARGET_S = 300.0, 5.0
HALT_SPEC_S, HALT_TARGET_S = 60.0, 1.0


def mlflow_redeploy_seconds(model_uri: str, runs: int = 3) -> tuple[list[float], list[float]]:
    """The plain alternatives: to our rollback, start ``mlflow models serve`` on v(n-1) and wait
    for its first answer (what a team without a gateway does to go back a version); to our halt,
    stop that server (SIGTERM) and wait for the first refused request."""
    import socket
    import urllib.request

    venv_bin = Path(sys.executable).parent
    body = json.dumps(
        {"dataframe_split": {"columns": FEATURES, "data": [[0.25] * len(FEATURES)]}}
    ).encode()
    timings: list[float] = []
    stops: list[float] = []
    for _ in range(runs):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        started = time.perf_counter()
        server = subprocess.Popen(
            _common.mlflow_serve_command(venv_bin, model_uri, port),
            env={**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            while time.perf_counter() - started < 180:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/invocations",
                    data=body,
                    headers={"Content-Type": "application/json"},
                )
                try:
                    with urllib.request.urlopen(request, timeout=5) as answer:
                        if answer.status == 200:
                            timings.append(time.perf_counter() - started)
                            break
                except OSError:
                    time.sleep(0.05)
        finally:
            stopping = time.perf_counter()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGTERM)
            while time.perf_counter() - stopping < 60:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        time.sleep(0.005)
                except OSError:
                    stops.append(time.perf_counter() - stopping)
                    break
            server.wait(timeout=30)
    return timings, stops


# --- set-up ---------------------------------------------------------------------------------------


def log_model(name: str, seed: int) -> str:
    return _common.log_model(name, seed, features=FEATURES, rows=1000, run_name=f"{name}-{seed}")


def register(model: str, version: str, uri: str):
    return _common.register(
        model, version, uri, features=FEATURES, engineer="bench-engineer", use="rollback drill"
    )


def set_up(drills: int) -> list[tuple]:
    """``drills`` models, each (v1 in warm standby, v2 live); see the module docstring."""
    from django.core.management import call_command

    from governance import services
    from governance.audit import Actor
    from tests.governance.lifecycle_helpers import (
        person,
        sign_promotion,
        step,
        to_production_first,
        to_staging,
    )

    call_command("migrate", verbosity=0, interactive=False)
    system = Actor.system("bench")
    services.role_grant(username="bench-engineer", roles=["ml_engineer"], actor=system)
    pairs = []
    for i in range(drills):
        name = f"drill-{i:02d}"
        services.model_register(name=name, actor=system)
        v1 = register(name, "1.0.0", log_model(name, seed=2 * i + 1))
        to_production_first(v1)
        v2 = register(name, "1.0.1", log_model(name, seed=2 * i + 2))
        to_staging(v2)
        sign_promotion(v2)
        step(v2, "promote", actor=person("ci"))
        pairs.append((v1, v2))
    return pairs


# --- the worker -----------------------------------------------------------------------------------


def drain(broker, timeout: float = 60.0) -> None:
    """Until the worker has nothing queued or running (Redis lists and the unacked hash)."""
    deadline = time.monotonic() + timeout
    quiet = 0
    while time.monotonic() < deadline:
        busy = broker.llen("urgent") + broker.llen("default") + broker.hlen("unacked")
        quiet = quiet + 1 if busy == 0 else 0
        if quiet >= 3:
            return
        time.sleep(0.05)
    raise RuntimeError("the worker did not drain its queues in time")


# --- drills ---------------------------------------------------------------------------------------


def served(model: str) -> tuple[int, dict]:
    from serving import gateway

    return gateway.serve(model, PROBE, record=False)


def poll(model: str, done, *, interval: float, timeout: float) -> float | None:
    """perf_counter() at the end of the first answer for which ``done(code, body)`` holds."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        code, body = served(model)
        if done(code, body):
            return time.perf_counter()
        time.sleep(interval)
    return None


def drill(v1, v2, broker) -> dict:
    from incidents.alert_response import route_alert
    from incidents.models import Rollback
    from serving.halt import halt_engage
    from tests.governance.lifecycle_helpers import person
    from tests.incidents.helpers import alert_on

    name = v2.model.name
    assert served(name)[1].get("version") == v2.version, "v2 must serve before the drill"
    route_alert(alert_on(v2, "fairness", "critical"))
    drain(broker)
    assert served(name)[1].get("version") == v2.version, "one critical alert rolls nothing back"

    second = alert_on(v2, "fairness", "critical")  # committed: the clock starts
    started = time.perf_counter()
    routed = route_alert(second)
    if routed.get("rollback") is None:
        raise RuntimeError(f"the second critical alert started no rollback: {routed}")
    v1_serves = poll(
        name,
        lambda code, body: code == 200 and not body["stale"] and body["version"] == v1.version,
        interval=0.01,
        timeout=ROLLBACK_SPEC_S,
    )
    deadline = time.monotonic() + 60
    rollback = Rollback.objects.get(pk=routed["rollback"])
    while rollback.status not in {"completed", "failed", "no_standby"}:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
        rollback.refresh_from_db()
    if rollback.status != "completed":
        raise RuntimeError(f"rollback {rollback.pk}: {rollback.status} {rollback.last_error}")

    def since_alert(at) -> float:
        return (at - second.created_at).total_seconds()

    lead = person("ml_lead")  # before the clock: a grant moves every route's generation
    drain(broker)
    served(name)  # the gateway serves traffic all the time: its route is current
    halt_started = time.perf_counter()
    halt_engage(scope=name, reason="drill: ethics hard limit", actor=lead)
    halt_returned = time.perf_counter()
    refused = poll(
        name,
        lambda code, body: code == 503 and body.get("halted") is True,
        interval=0.001,
        timeout=HALT_SPEC_S,
    )
    return {
        "rollback_s": None if v1_serves is None else v1_serves - started,
        "switched_s": since_alert(rollback.switched_at),
        "verified_s": since_alert(rollback.verified_at),
        "completed_s": since_alert(rollback.completed_at),
        "attempts": rollback.attempts,
        "verification": rollback.verification,
        "halt_s": None if refused is None else refused - halt_started,
        "halt_call_s": halt_returned - halt_started,
    }


def summarise(
    name: str, values: list[float], *, spec: float, target: float, note: str, **peer
) -> None:
    met = max(values) <= spec
    common = {"drills": len(values), "spec_limit_s": spec, "target_s": target, **peer}
    emit(
        f"{name}_p50",
        round(statistics.median(values), 3),
        "s",
        **common,
        samples=[round(v, 3) for v in values],
        note=note,
    )
    emit(
        f"{name}_p95",
        round(percentile(values, 95), 3),
        "s",
        **common,
        target_met=percentile(values, 95) < target,
    )
    emit(f"{name}_max", round(max(values), 3), "s", **common, spec_met=met)


def main() -> int:
    args = _arguments()
    results, redeploy, stops = _run(args)
    _report(results, redeploy, stops, suffix="_cold_cache" if args.cold_cache else "")
    return 0


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drills", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--admin-url", default=ADMIN_URL)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/4")
    parser.add_argument("--keep", action="store_true", help="keep the var directory")
    parser.add_argument(
        "--cold-cache",
        action="store_true",
        help="issue 14: the worker and this gateway start the drills with empty artifact caches "
        "of their own (hosts that never held v(n-1)): each restore loads it from MLflow",
    )
    return parser.parse_args()


def _run(args: argparse.Namespace) -> tuple[list[dict], list[float], list[float]]:
    """A database and var dir of its own, the models, a worker, the drills and the peer's
    redeploy and stop times; everything this started is removed afterwards."""
    name = f"bench_incidents_{os.getpid()}"
    var = Path(tempfile.mkdtemp(prefix="bench-incidents-"))
    database_url = create_database(args.admin_url, name)
    env = worker_environment(
        database_url,
        str(var),
        args.redis_url,
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    )
    os.environ.update(env)
    if args.cold_cache:  # the worker's own cache, apart from this process's
        env = {**env, "ARTIFACT_CACHE_DIR": str(var / "worker-artifact-cache")}
    import redis

    broker = redis.Redis.from_url(args.redis_url)
    broker.flushdb()
    worker = None
    results: list[dict] = []
    try:
        import django

        django.setup()
        started = time.perf_counter()
        pairs = set_up(args.drills)
        log = var / "worker.log"
        worker_name = f"drills-{os.getpid()}"
        worker = _common.start_worker(
            name=worker_name,
            queues="urgent,default",
            concurrency=args.concurrency,
            env=env,
            log=log,
        )
        try:
            _common.wait_ready({worker_name: worker})
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}: see {log}") from None
        drain(broker, timeout=300)  # the promotions' verification and warm-standby tasks
        if args.cold_cache:
            worker = _cold_worker(worker, worker_name, env, log, args.concurrency)
        _report_set_up(args, pairs, time.perf_counter() - started)
        for v1, v2 in pairs:
            results.append(drill(v1, v2, broker))
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited: see {log}")
        v1 = pairs[0][0]
        redeploy, stops = mlflow_redeploy_seconds(f"models:/{v1.mlflow_name}/{v1.mlflow_version}")
    finally:
        _common.stop_workers([worker])
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        with contextlib.suppress(Exception):
            broker.flushdb()
        drop_database(args.admin_url, name)
        if not args.keep:
            shutil.rmtree(var, ignore_errors=True)
    return results, redeploy, stops


def _cold_worker(worker, worker_name: str, env: dict, log: Path, concurrency: int):
    """Empty both artifact caches and restart the worker (its memory held the warm standby):
    from here on neither host has ever held a 1.0.0."""
    from django.conf import settings

    _common.stop_workers([worker])
    for cache in (Path(env["ARTIFACT_CACHE_DIR"]), Path(settings.ARTIFACT_CACHE_DIR)):
        shutil.rmtree(cache, ignore_errors=True)
    worker = _common.start_worker(
        name=worker_name, queues="urgent,default", concurrency=concurrency, env=env, log=log
    )
    _common.wait_ready({worker_name: worker})
    return worker


def _report_set_up(args: argparse.Namespace, pairs, seconds: float) -> None:
    from governance.models import Lifecycle

    monitoring = Lifecycle.objects.filter(
        version__in=[v2 for _, v2 in pairs], stage="monitoring"
    ).count()
    emit(
        "incident_drills_setup",
        round(seconds, 1),
        "s",
        models=args.drills,
        v2_verified_by_worker=monitoring,
        worker=f"celery -Q urgent,default -c {args.concurrency}",
        note="not timed below: log 2 models per drill to MLflow, register, walk the lifecycle",
    )


def _report(
    results: list[dict], redeploy: list[float], stops: list[float], *, suffix: str = ""
) -> None:
    rollback = [r["rollback_s"] for r in results if r["rollback_s"] is not None]
    if len(rollback) != len(results):
        emit("rollback_not_serving_within_spec", len(results) - len(rollback), "drills")
    summarise(
        f"rollback_to_v1_serving{suffix}",
        rollback,
        spec=ROLLBACK_SPEC_S,
        target=ROLLBACK_TARGET_S,
        peer="mlflow models serve -w 2 started on v(n-1), to its first answer (median of "
        f"{len(redeploy)})",
        peer_value=round(statistics.median(redeploy), 2) if redeploy else None,
        note="second critical alert committed -> first prediction of this process's gateway "
        "answered by 1.0.0; routing, the task on urgent, switch, verification by a real "
        "prediction in the worker, and this gateway's reload of 1.0.0 from warm standby",
    )
    for part in ("switched_s", "verified_s", "completed_s"):
        values = [r[part] for r in results]
        emit(
            f"rollback_{part[:-2]}_after_alert_p50",
            round(statistics.median(values), 3),
            "s",
            max=round(max(values), 3),
            note="database timestamps of the rollback row, from the alert's created_at",
        )
    emit(
        "rollback_task_runs",
        max(r["attempts"] for r in results),
        "attempts (max)",
        note="3 = switch, verify, complete in one run: no retry was needed",
        example_verification=results[0]["verification"] if results else None,
    )
    halts = [r["halt_s"] for r in results if r["halt_s"] is not None]
    summarise(
        "halt_to_first_refusal",
        halts,
        spec=HALT_SPEC_S,
        target=HALT_TARGET_S,
        peer="SIGTERM to mlflow models serve -w 2, to its first refused connection (median of "
        f"{len(stops)}; it stops serving every model of that server, and nothing says why)",
        peer_value=round(statistics.median(stops), 3) if stops else None,
        note="halt_engage called (its commit included) -> first 503 'halted' from this process's "
        "gateway",
    )
    calls = [r["halt_call_s"] for r in results]
    emit(
        "halt_engage_call_p50",
        round(statistics.median(calls), 3),
        "s",
        max=round(max(calls), 3),
        note="of which the halt_engage call itself (checks, halt row, audit event, commit)",
    )


if __name__ == "__main__":
    sys.exit(main())
