"""Issue 14: three "hosts" that share only PostgreSQL, Redis, the object store and MLflow.

A gateway (docker-compose.yml's gateway command and settings, under gunicorn), a monitoring worker
(``-Q monitoring,default``) and an urgent worker (``-Q urgent``) run as separate processes, each
with a local directory and artifact cache of its own, ``GOVERNANCE_STORAGE_URL`` pointing at the
local S3 server and ``MLFLOW_TRACKING_URI`` at an ``mlflow server``: no host reads another's
files. Predictions served by the gateway reach the store through the object store's spool, are
ingested and checked for fairness on the monitoring worker; its two critical alerts roll 1.0.1
back on the urgent worker (which loads 1.0.0 into a cold cache to verify it), and the gateway
then answers from 1.0.0, a version its own cache never held. This process plays the web host: it
registers, labels and reads.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import redis
import yaml
from django.conf import settings
from django.utils import timezone

from bench.storage import free_port
from governance import audit, services
from governance.audit import Actor
from incidents.models import Rollback
from incidents.rollback import TERMINAL
from monitoring.ingest import labels_ingest
from monitoring.models import Alert, DataBatch
from monitoring.runs import enqueue_runs, run_create
from tests import celery_workers as workers
from tests.serving import helpers as serving_helpers
from tests.serving.helpers import FEATURES, live, promote_patch
from tests.storage_backends import use_backend

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]
SYSTEM = Actor.system("tests")
SERVED = 240  # per group: enough labelled records for a conclusive fairness breach


@pytest.fixture
def object_store(settings, tmp_path):
    yield from use_backend("s3", settings, tmp_path / "web")


@pytest.fixture
def mlflow_server(settings, tmp_path, monkeypatch):
    """An ``mlflow server`` of its own (SQLite store, proxied artifacts), as compose runs it.

    Every host, this one included, reaches MLflow over HTTP only; this host's artifact cache
    starts empty, and the serving helpers' memo of fetched models (made against the suite's
    file store) is set aside.
    """
    home = tmp_path / "mlflow-server"
    home.mkdir()
    port = free_port()
    log = home / "server.log"
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1", "--serve-artifacts"]
    command += ["--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}"]
    command += ["--artifacts-destination", str(home / "artifacts")]
    process = subprocess.Popen(
        command, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow server did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        settings.MLFLOW_TRACKING_URI = settings.MLFLOW_REGISTRY_URI = url
        settings.ARTIFACT_CACHE_DIR = tmp_path / "web" / "artifact-cache"
        monkeypatch.setattr(serving_helpers, "_fetched", {})
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # uvicorn waits for keep-alive clients: no need here
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def server_models(name: str = "session-base", seed: int = 0) -> str:
    """The ``mlflow_models`` factory, logging to the server instead of the suite's store."""
    return serving_helpers._log_model(name, FEATURES, seed)


def host_environment(name: str, root: Path) -> dict[str, str]:
    """A host's environment: its own directory and cache; the shared database, broker, store."""
    home = root / name
    home.mkdir(parents=True)
    return workers.worker_environment(
        GOVERNANCE_VAR_DIR=str(home),
        ARTIFACT_CACHE_DIR=str(home / "artifact-cache"),
        GOVERNANCE_STORAGE_URL=settings.STORAGE_URL,
        AWS_ENDPOINT_URL=settings.STORAGE_S3_ENDPOINT,
        AWS_REGION=settings.STORAGE_S3_REGION,
        AWS_ACCESS_KEY_ID=settings.STORAGE_S3_ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=settings.STORAGE_S3_SECRET_KEY,
        SERVING_LOG_FLUSH_SECONDS="0.2",
        SERVING_LOG_INGEST_SECONDS="0",
    )


COMPOSE = yaml.safe_load((settings.BASE_DIR / "docker-compose.yml").read_text())["services"]


def compose_gateway_command(port: int) -> list[str]:
    """docker-compose.yml's gateway command (its WSGI app and settings), on a local port."""
    command = list(COMPOSE["gateway"]["command"])
    assert command[:2] == ["gunicorn", "config.wsgi_gateway:application"], command
    return [
        str(Path(sys.executable).parent / "gunicorn"),
        command[1],
        "-w",
        "1",
        "--threads",
        "4",
        "-b",
        f"127.0.0.1:{port}",
    ]


def compose_queues(service: str) -> str:
    """The queues docker-compose.yml's ``service`` consumes (its ``-Q`` argument)."""
    command = COMPOSE[service]["command"]
    return command[command.index("-Q") + 1]


class Hosts:
    def __init__(self, root: Path):
        self.root = root
        self.processes: dict[str, tuple[subprocess.Popen, Path]] = {}

    def worker(self, name: str, queues: str) -> None:
        log = self.root / f"{name}.log"
        process = workers.start_worker(
            name=f"{name}-{os.getpid()}",
            queues=queues,
            concurrency=1,
            env=host_environment(name, self.root),
            log=log,
        )
        self.processes[name] = (process, log)

    def gateway(self) -> int:
        port = free_port()  # the bench's helper
        log = self.root / "gateway.log"
        process = subprocess.Popen(
            compose_gateway_command(port),
            cwd=settings.BASE_DIR,
            env={
                **host_environment("gateway", self.root),
                "DJANGO_SETTINGS_MODULE": COMPOSE["gateway"]["environment"][
                    "DJANGO_SETTINGS_MODULE"
                ],
                "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
                "DJANGO_SECURE_SSL_REDIRECT": "false",
            },
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes["gateway"] = (process, log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
                return port
            except OSError:
                if process.poll() is not None:
                    break
                time.sleep(0.25)
        pytest.fail(f"the gateway did not start:\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(
            f"--- {name}\n{log.read_text()[-3000:]}" for name, (_, log) in self.processes.items()
        )

    def stop(self) -> None:
        workers.stop_workers([p for p, _ in self.processes.values()], timeout=20)


@pytest.fixture
def hosts(transactional_db, object_store, tmp_path):
    workers.broker_url()
    started = Hosts(tmp_path)
    yield started
    started.stop()


def wait_for(condition, *, timeout: float, what: str, hosts: Hosts):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}\n{hosts.logs()}")


def post(port: int, model: str, token: str, body: dict) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/predict/{model}/",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def cached(host: str, root: Path, version) -> bool:
    """Whether ``host``'s own artifact cache holds ``version`` (entries are named by digest)."""
    return (root / host / "artifact-cache" / version.artifact_digest.replace(":", "-")).exists()


def test_served_on_one_host_checked_on_another_rolled_back_on_a_third(
    mlflow_server, hosts, tmp_path
):
    v1 = live(server_models, "1.0.0", seed=0)
    v2 = promote_patch(server_models, v1.model, "1.0.1", seed=1)
    assert v1.mlflow_uri.startswith("models:/") and mlflow_server == settings.MLFLOW_TRACKING_URI
    model = v2.model.name
    services.role_grant(username="gateway-ci", roles=["ci"], actor=SYSTEM)
    _, token = services.token_create(username="gateway-ci", roles=None, actor=SYSTEM)
    # the set-up's own tasks (verification, warm standby) are dropped: every cache starts cold
    redis.Redis.from_url(workers.broker_url()).flushdb()
    hosts.worker("monitoring", compose_queues("worker"))
    hosts.worker("urgent", compose_queues("worker-urgent"))
    port = hosts.gateway()
    workers.wait_ready(
        {f"{n}-{os.getpid()}": hosts.processes[n][0] for n in ("monitoring", "urgent")}
    )

    # the gateway serves 1.0.1: the north is always flagged, the south never (labels are coins)
    ids = []
    for area, f1 in (("north", 4.0), ("south", -4.0)):
        for start in range(0, SERVED, 60):
            rows = [{"f1": f1, "f2": 0.01 * i, "f3": 1.0} for i in range(start, start + 60)]
            body = post(port, model, token, {"instances": rows, "sensitive": [{"area": area}] * 60})
            assert body["version"] == "1.0.1"
            ids += [p["prediction_id"] for p in body["predictions"]]
    assert not (tmp_path / "web" / "serving").exists()  # no spool on this host ...

    def ingested() -> int:  # ... the monitoring worker ingested the gateway's objects
        return sum(
            DataBatch.objects.filter(version=v2, source="gateway").values_list("rows", flat=True)
        )

    wait_for(lambda: ingested() == len(ids), timeout=60, what="the ingestion", hosts=hosts)
    coins = np.random.default_rng(14).integers(0, 2, size=len(ids))
    labels = [{"prediction_id": i, "label": int(c)} for i, c in zip(ids, coins, strict=True)]
    labels_ingest(model_name=model, records=labels, actor=SYSTEM)
    assert cached("gateway", tmp_path, v2)
    assert not any(cached(host, tmp_path, v1) for host in ("gateway", "urgent", "monitoring"))

    # two fairness runs (two windows) on the monitoring worker: two critical alerts
    end = timezone.now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    runs = [
        run_create(
            model=v2.model,
            version=v2,
            check="fairness",
            window_end=end + timedelta(hours=h),
            trigger="manual",
            actor=SYSTEM,
        ).pk
        for h in (0, 1)
    ]
    enqueue_runs(runs)
    wait_for(
        lambda: Rollback.objects.filter(status__in=TERMINAL).exists(),
        timeout=120,
        what="the rollback",
        hosts=hosts,
    )

    assert Alert.objects.filter(version=v2, severity="critical").count() == 2
    rollback = Rollback.objects.get()
    assert (rollback.status, rollback.to_version) == ("completed", v1), hosts.logs()
    assert rollback.verification.startswith("gateway: 1.0.0 scored a probe")
    assert cached("urgent", tmp_path, v1)  # it loaded 1.0.0 from MLflow into its cold cache
    probe = {"instances": [{"f1": 0.3, "f2": -0.2, "f3": 1.0}]}
    answer = wait_for(
        lambda: (b := post(port, model, token, probe))["version"] == "1.0.0" and b,
        timeout=30,
        what="the gateway to serve 1.0.0",
        hosts=hosts,
    )
    assert not answer.get("stale") and cached("gateway", tmp_path, v1)
    assert (checked := audit.verify()).valid, checked.problem
