"""Benchmark of the serving gateway against the plain alternatives, on this machine, in one run.

    .venv/bin/python bench/serving.py [--seconds 10] [--clients 4] [--no-peers]

Everything runs on localhost in a fresh var directory (SQLite, a local MLflow store), or on the
database named by DATABASE_URL. A 20-feature logistic regression is logged to MLflow and
registered; version 1.0.0 is walked to production and a PATCH 1.0.1 to staging (so the gateway
shadows it). Then:

- in-process: the bare model call (sklearn ``predict_proba`` on a DataFrame, the pyfunc's
  ``predict``, and the gateway's fast path), and one full gateway request through the gateway's
  WSGI entry (``config.wsgi_gateway``: ``serving.fast_path`` over Django's handler) without a
  network (authentication, routing, halt check, validation, thresholds,
  logging, shadow hand-off); the governance overhead is the difference; the same request with
  one scoped halt engaged beside none, and a refused one (``--only-scoped-halt``: just these);
- ``gunicorn config.wsgi_gateway:application -w 2`` on a free port, 4 concurrent keep-alive clients
  (``http.client``, threads): throughput, p50 and p99 for 1-instance and 100-instance requests;
- swap latency, committed promotion (and rollback, a restore from warm standby) to the first
  response from the new version, with the failed requests counted; halt latency, committed halt
  to the first 503, and release to the first 200 again;
- the prediction log: the gunicorn workers write a Parquet spool, a Celery worker (``-c 1``, on
  the same machine, running meanwhile) ingests it into the monitoring store; after a clean
  shutdown, every prediction served is accounted for once the worker has drained the spool;
- peers under the same load: a plain WSGI app (no framework: the floor) under the same gunicorn,
  and ``mlflow models serve -w 2`` for the same model, with keep-alive and with
  ``Connection: close``, each measured right before and right after the gateway's phase of the
  same size (the ratios use the mean of the two: the machine's load moves between phases); every
  phase also gives the server's CPU per request.

Prints one JSON object per figure per line: ``{"bench": ..., "value": ..., "unit": ..., ...}``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# This file is bench/serving.py: its directory must not shadow the ``serving`` app.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO))

from bench import _common  # noqa: E402
from bench._common import emit, free_port, group_cpu, percentile  # noqa: E402

VENV_BIN = REPO / ".venv" / "bin"
FEATURES = [f"f{i}" for i in range(20)]
MODEL = "bench-gateway"
WORKERS = 2  # every server measured: gunicorn -w 2 (the gateway, the plain app), mlflow -w 2

SETTINGS = """
from config.settings.dev import *  # noqa: F403

DEBUG = False
# Keep database connections between requests (the embedded SQLite default has none: opening and
# closing a WAL connection per request costs ~5 ms here).
DATABASES["default"]["CONN_MAX_AGE"] = 600  # noqa: F405
# The worker ingests the prediction spool while the load runs, not after it (default 60 s).
SERVING_LOG_INGEST_SECONDS = 5.0
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {"serving.log": {"level": "ERROR"}},
}
"""

PLAIN_WSGI = '''
"""The floor: a WSGI app with no framework, no auth, no logging: parse, predict, answer."""
import json, os
import mlflow.pyfunc
import numpy as np

_model = mlflow.pyfunc.load_model(os.environ["BENCH_MODEL_PATH"])
_raw = _model.get_raw_model()
_features = json.loads(os.environ["BENCH_FEATURES"])


def app(environ, start_response):
    size = int(environ.get("CONTENT_LENGTH") or 0)
    body = json.loads(environ["wsgi.input"].read(size))
    X = np.array([[row[f] for f in _features] for row in body["instances"]], dtype=float)
    scores = _raw.predict_proba(X)[:, 1].tolist()
    out = json.dumps({"predictions": [{"score": s, "prediction": int(s >= 0.5)} for s in scores]})
    data = out.encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(data)))])
    return [data]
'''


CPU_PER_REQUEST: dict[tuple[str, int], float] = {}
PLAIN: dict[int, list[dict]] = {}  # instances -> the plain app's phases around the gateway's
MLFLOW: dict[int, list[dict]] = {}  # instances -> MLflow's best mode before and after it
THROUGHPUT: dict[tuple[str, int], float] = {}  # (server, instances) -> req/s, for the ratios


# --- set-up -------------------------------------------------------------------------------------


# What docker-compose's ``gateway`` service runs (``config.settings.gateway``): the predict URLs
# only, no sessions, messages or admin; dev settings otherwise (no TLS redirect, local paths).
GATEWAY_SERVICE = """
from config.gateway import gateway_settings

_gateway = gateway_settings(INSTALLED_APPS, MIDDLEWARE, REST_FRAMEWORK, TEMPLATES)  # noqa: F405
INSTALLED_APPS = _gateway["INSTALLED_APPS"]
MIDDLEWARE = _gateway["MIDDLEWARE"]
REST_FRAMEWORK = _gateway["REST_FRAMEWORK"]
TEMPLATES = _gateway["TEMPLATES"]
ROOT_URLCONF = _gateway["ROOT_URLCONF"]
"""


def prepare_environment(workdir: Path, *, web: bool = False) -> None:
    extra = os.environ.get("BENCH_GATEWAY_SETTINGS", "")  # e.g. "SERVING_LOG_BATCH_SIZE = 20000"
    lines = [line.strip() for line in extra.split(";") if line.strip()]
    parts = [SETTINGS, *([] if web else [GATEWAY_SERVICE]), *lines, ""]
    (workdir / "bench_serving_settings.py").write_text("\n".join(parts))
    (workdir / "bench_plain_wsgi.py").write_text(PLAIN_WSGI)
    os.environ.setdefault("GOVERNANCE_VAR_DIR", str(workdir / "var"))
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench_serving_settings"
    os.environ["PYTHONPATH"] = os.pathsep.join([str(workdir), str(REPO)])
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    sys.path[:0] = [str(workdir), str(REPO)]
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def log_model(seed: int) -> str:
    return _common.log_model(MODEL, seed, features=FEATURES, rows=2000, run_name=f"bench-{seed}")


def register(version: str, uri: str, engineer: str):
    return _common.register(
        MODEL, version, uri, features=FEATURES, engineer=engineer, use="benchmark"
    )


def setup_models() -> dict:
    """1.0.0 live, 1.0.1 staged and signed (the shadow; promoted during the swap benchmark)."""
    from governance import services
    from governance.audit import Actor
    from tests.governance.lifecycle_helpers import sign_promotion, to_production_first, to_staging

    system = Actor.system("bench")
    services.role_grant(username="bench-engineer", roles=["ml_engineer"], actor=system)
    services.model_register(name=MODEL, actor=system)
    v1 = register("1.0.0", log_model(1), "bench-engineer")
    to_production_first(v1)
    v2 = register("1.0.1", log_model(2), "bench-engineer")
    to_staging(v2)
    sign_promotion(v2)
    services.role_grant(username="bench-ci", roles=["ci"], actor=system)
    _, token = services.token_create(username="bench-ci", actor=system)
    return {"v1": v1, "v2": v2, "token": token}


def instances(n: int, seed: int = 0) -> list[dict]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [dict(zip(FEATURES, row.tolist(), strict=True)) for row in rng.normal(size=(n, 20))]


# --- in-process figures -------------------------------------------------------------------------


def timed(fn, *, n: int, warm: int = 50) -> list[float]:
    for _ in range(warm):
        fn()
    out = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def wsgi_requester(token: str):
    """``request(body, expect="200")``: one predict through the gateway's WSGI entry, no network."""
    from django.core.handlers.wsgi import WSGIHandler

    from serving.fast_path import PredictFastPath

    handler = PredictFastPath(WSGIHandler())  # config.wsgi_gateway's (off with --web settings)
    path, auth = f"/api/v1/predict/{MODEL}/", f"Token {token}"

    def request(body: bytes, expect: str = "200") -> bytes:
        status, _, data = _common.wsgi_post(
            handler, path, body, host="127.0.0.1", HTTP_AUTHORIZATION=auth
        )
        assert status.startswith(expect), (status, data[:300])
        return data

    return request


def in_process(ctx: dict, *, profile: bool = False) -> None:
    """The bare model calls, then one gateway request in-process, for 1 and 100 instances."""
    from registry import mlflow_bridge
    from serving import log, shadow

    v1 = ctx["v1"]
    import mlflow.pyfunc

    pyfunc = mlflow.pyfunc.load_model(str(mlflow_bridge.cache_path(v1.artifact_digest)))
    bare_predict(pyfunc)
    request = wsgi_requester(ctx["token"])
    for size in (1, 100):
        gateway_in_process(request, pyfunc, v1, size, profile=profile)
    shadow.drain()
    log.clear()  # the in-process requests are not part of what gunicorn must account for


def bare_predict(pyfunc) -> None:
    """The model alone: sklearn's ``predict_proba`` and the pyfunc's ``predict``, p50."""
    import pandas as pd

    raw = pyfunc.get_raw_model()
    for size in (1, 100):
        frame = pd.DataFrame(instances(size), columns=FEATURES)
        sk = timed(lambda f=frame: raw.predict_proba(f), n=2000)
        pf = timed(lambda f=frame: pyfunc.predict(f), n=2000)
        emit(
            "bare_predict_sklearn",
            round(statistics.median(sk), 3),
            "ms",
            instances=size,
            note="sklearn predict_proba on a DataFrame, p50",
        )
        emit(
            "bare_predict_pyfunc",
            round(statistics.median(pf), 3),
            "ms",
            instances=size,
            note="mlflow pyfunc predict (schema enforcement included), p50",
        )


def gateway_in_process(request, pyfunc, v1, size: int, *, profile: bool) -> None:
    """The gateway's scorer, a full request through its WSGI entry and the overhead between
    them (and against a bare pyfunc predict), for requests of ``size`` instances."""
    import pandas as pd

    from serving import loader, shadow

    body = json.dumps({"instances": instances(size)}).encode()
    request(body)
    model = loader.loaded(v1.artifact_digest)
    X = pd.DataFrame(instances(size), columns=FEATURES).to_numpy()
    scorer = timed(lambda x=X, m=model: m.score(x, tuple(FEATURES)), n=2000)
    full = timed(lambda b=body: request(b), n=2000)
    shadow.drain()
    p50_full, p50_scorer = statistics.median(full), statistics.median(scorer)
    emit(
        "gateway_scorer",
        round(p50_scorer, 3),
        "ms",
        instances=size,
        fast_path=model.fast is not None,
        note="the model call the gateway makes, p50",
    )
    emit(
        "gateway_in_process",
        round(p50_full, 3),
        "ms",
        instances=size,
        p99=round(percentile(full, 99), 3),
        note="one request through the gateway's WSGI entry, no network, p50",
    )
    emit(
        "gateway_overhead",
        round(p50_full - p50_scorer, 3),
        "ms",
        instances=size,
        target="<= 1.5 ms at p50 (issue 17)" if size == 100 else "< 2 ms at p50",
        peer="gateway_in_process p50, gateway_scorer p50",
        peer_value=[round(p50_full, 3), round(p50_scorer, 3)],
        note="auth + routing + halt check + validation + thresholds + logging + shadow "
        "hand-off: in-process p50 minus the scorer's p50",
    )
    frame = pd.DataFrame(instances(size), columns=FEATURES)
    pf = timed(lambda f=frame: pyfunc.predict(f), n=500)
    emit(
        "gateway_vs_bare_pyfunc",
        round(p50_full - statistics.median(pf), 3),
        "ms",
        instances=size,
        note="in-process gateway p50 minus a bare pyfunc predict p50",
    )
    if profile:
        profile_requests(lambda b=body: request(b), size)


def scoped_halt(ctx: dict, *, rounds: int = 10, n: int = 200) -> None:
    """The gateway's p50 with one scoped halt engaged against none, and a refusal's p50.

    In-process (the gateway's WSGI entry, no network), one instance per request. The scoped halt
    (``f0 > 100``) matches none of the served requests, so both sides serve the same work, one
    plus the predicate's evaluation. The halt is engaged and released (two approvals) ``rounds``
    times, blocks of ``n`` requests each side in ABBA order after a warm-up per block (the route
    is rebuilt at each switch), so the drift of a shared machine falls on both sides alike.
    """
    import logging

    from governance import services
    from governance.audit import Actor
    from serving import log, shadow
    from serving.halt import halt_engage, halt_release_approve

    system = Actor.system("bench")
    lead, ethics = (
        Actor.for_user(
            services.role_grant(username=name, roles=[role], actor=system)[0].user,
            request_id="bench",
        )
        for name, role in (("bench-lead", "ml_lead"), ("bench-ethics", "ethics_officer"))
    )
    where = {"field": "f0", "op": "gt", "value": 100}
    request = wsgi_requester(ctx["token"])
    served = json.dumps({"instances": instances(1, seed=7)}).encode()
    refused = json.dumps({"instances": [{**instances(1, seed=7)[0], "f0": 200.0}]}).encode()
    quiet = logging.getLogger("django.request")  # it logs every 5xx: the refusals here

    samples: dict[bool, list[float]] = {False: [], True: []}
    refusals: list[float] = []
    for i in range(rounds):
        for engaged in (False, True) if i % 2 == 0 else (True, False):
            if engaged:
                halt_engage(scope=MODEL, reason="bench: scoped halt", actor=lead, where=where)
            samples[engaged] += timed(lambda: request(served), n=n, warm=20)
            if engaged:
                quiet.disabled = True
                try:
                    refusals += timed(lambda: request(refused, "503"), n=n // 2, warm=5)
                finally:
                    quiet.disabled = False
                halt_release_approve(scope=MODEL, actor=lead, where=where, comment="bench")
                halt_release_approve(scope=MODEL, actor=ethics, where=where, comment="bench")
    shadow.drain()
    log.clear()
    no_halt, scoped = statistics.median(samples[False]), statistics.median(samples[True])
    emit(
        "gateway_scoped_halt_p50",
        round(scoped, 3),
        "ms",
        no_halt_p50=round(no_halt, 3),
        difference=round(scoped - no_halt, 3),
        target="within 0.3 ms of no halt",
        requests_each=len(samples[True]),
        note="in-process p50 of a served 1-instance request with one scoped halt (f0 > 100) "
        f"engaged on the model, beside the same request with no halt ({rounds} ABBA rounds)",
    )
    emit(
        "gateway_scoped_halt_refusal_p50",
        round(statistics.median(refusals), 3),
        "ms",
        served_p50_same_halt=round(scoped, 3),
        p99=round(percentile(refusals, 99), 3),
        note="in-process p50 of a request the scoped halt refuses (503 naming the instance), "
        "beside a served request under the same halt",
    )


def profile_requests(send, size: int, n: int = 3000) -> None:
    """cProfile of ``n`` in-process requests: ``bench/profiles/gateway_<size>.txt``."""
    from serving import shadow

    def work() -> None:
        for _ in range(n):
            send()
        shadow.drain()

    path = _common.profiled(
        work,
        REPO / "bench" / "profiles" / f"gateway_{size}.txt",
        title=f"bench/serving.py --profile: {n} in-process predict requests of {size} "
        "instance(s) through the gateway's WSGI entry",
    )
    emit("profile", path, "file", instances=size, requests=n)


# --- servers ------------------------------------------------------------------------------------


class Server:
    def __init__(self, name: str, cmd: list[str], port: int, env: dict | None = None, ready=None):
        self.name, self.cmd, self.port = name, cmd, port
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (open while the server runs)
            prefix=f"bench-{name}-", suffix=".log", delete=False
        )
        self.process = subprocess.Popen(
            cmd,
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
        )
        self.ready_path = ready or "/healthz"

    def wait(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: see {self.log.name}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", self.ready_path)
                conn.getresponse().read()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not start: see {self.log.name}")

    def stop(self) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # our own process group, started above
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


SERVED: dict[str, int] = {}  # live predictions the gateway answered, per version
_served_lock = threading.Lock()
_VERSION = re.compile(rb'"version":"([^"]+)"')


def _count_served(data: bytes) -> None:
    if b'"stale":true' in data:
        return
    match = _VERSION.search(data)
    if match is not None:
        with _served_lock:
            version = match.group(1).decode()
            SERVED[version] = SERVED.get(version, 0) + data.count(b'"prediction_id"')


class Client:
    def __init__(self, port: int, *, keepalive: bool = True):
        self.port, self.keepalive = port, keepalive
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, path: str, body: bytes, headers: dict) -> tuple[int, bytes]:
        if not self.keepalive:
            headers = {**headers, "Connection": "close"}
        for attempt in range(2):
            try:
                self.conn.request("POST", path, body, headers)
                response = self.conn.getresponse()
                data = response.read()
                if not self.keepalive or response.will_close:
                    self.conn.close()
                if response.status == 200 and path.startswith("/api/v1/predict/"):
                    _count_served(data)
                return response.status, data
            except (ConnectionError, http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt:
                    raise
        raise AssertionError("unreachable")


def load(
    port: int,
    path: str,
    body: bytes,
    headers: dict,
    *,
    clients: int,
    seconds: float,
    keepalive: bool = True,
    warmup: float = 1.0,
    cpu_of=None,
) -> dict:
    """``cpu_of``: the server's CPU seconds so far (its process group); with it the result has
    ``cpu_ms_per_request`` over the measured seconds, a figure the machine's load moves less."""
    stop = threading.Event()
    measuring = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients

    def run(i: int) -> None:
        client = Client(port, keepalive=keepalive)
        while not stop.is_set():
            started = time.perf_counter()
            try:
                status, _ = client.post(path, body, headers)
                ok = status == 200
            except Exception:
                ok = False
            if measuring.is_set():
                latencies[i].append((time.perf_counter() - started) * 1000)
                errors[i] += 0 if ok else 1

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(warmup)
    cpu = cpu_of() if cpu_of else 0.0
    client_cpu = time.process_time()  # this process: the client threads
    measuring.set()
    started = time.perf_counter()
    time.sleep(seconds)
    measuring.clear()
    elapsed = time.perf_counter() - started
    cpu = cpu_of() - cpu if cpu_of else None
    client_cpu = time.process_time() - client_cpu
    stop.set()
    for thread in threads:
        thread.join()
    every = [x for part in latencies for x in part]
    return {
        "clients": clients,
        "cpu_ms_per_request": round(1000 * cpu / max(len(every), 1), 3) if cpu_of else None,
        "client_cpu_ms_per_request": round(1000 * client_cpu / max(len(every), 1), 3),
        "requests": len(every),
        "errors": sum(errors),
        "throughput": round(len(every) / elapsed, 1),
        "p50": round(percentile(every, 50), 2),
        "p99": round(percentile(every, 99), 2),
    }


def warm_up(port: int, path: str, body: bytes, headers: dict, *, clients: int = 4) -> None:
    """Until every worker has loaded the models: 50 requests in a row under 50 ms each."""
    deadline = time.monotonic() + 120
    fast = 0
    with contextlib.ExitStack() as stack:
        pool = [Client(port) for _ in range(clients)]
        stack.callback(lambda: [c.conn.close() for c in pool])
        while fast < 50 and time.monotonic() < deadline:
            results: list[float] = []

            def one(client: Client, out: list[float]) -> None:
                started = time.perf_counter()
                client.post(path, body, headers)
                out.append(time.perf_counter() - started)

            threads = [threading.Thread(target=one, args=(c, results)) for c in pool]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            fast = fast + len(results) if max(results) < 0.05 else 0


def phase(server: Server, path: str, body: bytes, headers: dict, args, **options) -> dict:
    """One load phase against ``server``: ``args.clients`` clients for ``args.seconds``, with the
    CPU of the server's process group (``load``'s options may be overridden)."""
    options = {"cpu_of": lambda: group_cpu(server.process.pid), **options}
    return load(
        server.port, path, body, headers, clients=args.clients, seconds=args.seconds, **options
    )


def report_load(server: str, size: int, result: dict, **extra) -> None:
    common = {"server": server, "instances": size, "clients": result["clients"], "workers": WORKERS}
    common.update(extra)
    key = (server, size)
    THROUGHPUT[key] = max(THROUGHPUT.get(key, 0.0), result["throughput"])
    if result.get("cpu_ms_per_request") is not None:
        CPU_PER_REQUEST[key] = result["cpu_ms_per_request"]
    emit(
        "throughput",
        result["throughput"],
        "req/s",
        **common,
        errors=result["errors"],
        requests=result["requests"],
        cpu_ms_per_request=result.get("cpu_ms_per_request"),
        client_cpu_ms_per_request=result.get("client_cpu_ms_per_request"),
    )
    emit("latency_p50", result["p50"], "ms", **common)
    emit("latency_p99", result["p99"], "ms", **common)


# --- swap and halt --------------------------------------------------------------------------------


class Observer:
    """Clients hammering predict; each response noted with its start, end, status and version."""

    def __init__(self, port: int, token: str, clients: int):
        self.port, self.token = port, token
        self.stop = threading.Event()
        self.seen: list[tuple[float, float, int, str | None]] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(clients)]
        self.body = json.dumps({"instances": instances(1)}).encode()

    def run(self) -> None:
        client = Client(self.port)
        headers = {"Authorization": f"Token {self.token}", "Content-Type": "application/json"}
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                status, data = client.post(f"/api/v1/predict/{MODEL}/", self.body, headers)
                version = json.loads(data).get("version") if status == 200 else None
            except Exception:
                status, version = 0, None
            with self.lock:
                self.seen.append((started, time.monotonic(), status, version))

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def measure(self, committed: float, wanted, unwanted, *, settle: float = 1.0) -> dict:
        """Latency: commit to the end of the first request started after it that shows ``wanted``.

        Violations: requests started after the commit that still show ``unwanted``; failures:
        answers that are neither, from half a second before the commit to ``settle`` after.
        """
        time.sleep(settle)
        with self.lock:
            after = [r for r in self.seen if r[0] >= committed]
            window = [r for r in self.seen if committed - 0.5 <= r[1] <= committed + settle]
        hits = [end for start, end, status, version in after if wanted(status, version)]
        return {
            "latency_ms": round((min(hits) - committed) * 1000, 1) if hits else None,
            "violations": sum(1 for _, _, s, v in after if unwanted(s, v)),
            "failed_requests": sum(
                1 for _, _, s, v in window if not wanted(s, v) and not unwanted(s, v)
            ),
            "requests": len(window),
        }


def swap_and_halt(ctx: dict, port: int, clients: int) -> None:
    from serving.halt import halt_engage, halt_release_approve
    from tests.governance.lifecycle_helpers import person, step

    v1, v2 = ctx["v1"], ctx["v2"]

    def version_is(wanted: str):
        return lambda status, version: status == 200 and version == wanted

    with Observer(port, ctx["token"], clients) as seen:
        step(v2, "promote", actor=person("ci"))
        result = seen.measure(time.monotonic(), version_is("1.0.1"), version_is("1.0.0"))
        emit(
            "swap_latency_promotion",
            result.pop("latency_ms"),
            "ms",
            target="< 1000 ms",
            **result,
            note="commit of promote (1.0.1 was loaded as the shadow) to the first answer of "
            "1.0.1 to a request sent after the commit; violations: requests sent after the "
            "commit answered by 1.0.0",
        )
        step(v2, "start_rollback", comment="bench rollback", actor=person("ml_lead"))
        result = seen.measure(time.monotonic(), version_is("1.0.0"), version_is("1.0.1"))
        emit(
            "swap_latency_rollback",
            result.pop("latency_ms"),
            "ms",
            target="< 1000 ms",
            **result,
            note="commit of start_rollback+restore to the first answer of 1.0.0 (loaded from "
            "warm standby on disk) to a request sent after the commit",
        )
        lead, ethics = person("ml_lead"), person("ethics_officer")
        halt_engage(scope=MODEL, reason="bench halt", actor=lead)
        result = seen.measure(
            time.monotonic(), lambda s, v: s == 503, lambda s, v: s == 200, settle=0.5
        )
        emit(
            "halt_latency",
            result.pop("latency_ms"),
            "ms",
            target="< 1000 ms (specification: 1 minute)",
            **result,
            note="commit of the halt to the first 503 for a request sent after it; violations: "
            "requests sent after the commit that got a prediction",
        )
        halt_release_approve(scope=MODEL, actor=lead)
        halt_release_approve(scope=MODEL, actor=ethics)
        result = seen.measure(
            time.monotonic(), lambda s, v: s == 200, lambda s, v: s == 503, settle=0.5
        )
        emit(
            "halt_release_latency",
            result.pop("latency_ms"),
            "ms",
            **result,
            note="commit of the second release approval to the first 200",
        )
    from serving.standby import warm_standby_refresh

    for entry in warm_standby_refresh(model_id=v1.model_id):
        emit(
            "warm_standby_load",
            entry.get("load_ms"),
            "ms",
            version=entry["version"],
            note="digest check + pyfunc load of a warm-standby artifact from the local cache",
        )


def wait_for_ingestion(timeout: float) -> bool:
    """Until the prediction spool is empty (the worker took and ingested every file)."""
    from serving import log

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(log.spool_dir().glob("spool-*")):
            return True
        time.sleep(0.5)
    return False


def logged_by_version() -> dict[str, int]:
    """Predictions in the monitoring store (source gateway) plus any left on disk, per version."""
    from django.db.models import Sum

    from serving import log

    counts: dict[str, int] = {}
    try:
        from monitoring.models import DataBatch

        rows = (
            DataBatch.objects.filter(model__name=MODEL, kind="predictions", source="gateway")
            .values_list("version__version")
            .annotate(n=Sum("rows"))
        )
        counts.update({version: int(n) for version, n in rows})
    except ImportError:
        pass
    counts["(on disk)"] = log.spilled_predictions()
    return counts


# --- main ---------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--no-peers", action="store_true", help="skip the plain WSGI and MLflow")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--only-scoped-halt",
        action="store_true",
        help="set up, print the scoped-halt figures (in-process) and stop",
    )
    parser.add_argument(
        "--profile", action="store_true", help="write bench/profiles/gateway_*.txt (cProfile)"
    )
    parser.add_argument(
        "--web",
        action="store_true",
        help="the web service's settings (every URL, sessions) instead of the gateway service's",
    )
    parser.add_argument(
        "--in-process-only", action="store_true", help="stop after the in-process figures"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    servers: list[Server] = []  # stopped at the end, whatever happens
    try:
        ctx = set_up(workdir, args)
        scoped_halt(ctx)
        if args.only_scoped_halt:
            return
        in_process(ctx, profile=args.profile)
        if args.in_process_only:
            return
        gunicorn_run(ctx, args, servers)
    finally:
        for server in servers:
            server.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def set_up(workdir: Path, args) -> dict:
    """The environment (settings, database) in ``workdir``, then the models; reported."""
    prepare_environment(workdir, web=args.web)
    emit("settings", "web" if args.web else "gateway", "service")
    from django.conf import settings

    # The in-process figures must not write to the store the gunicorn run is checked against.
    settings.SERVING_LOG_FLUSH_SECONDS = 0
    ctx = setup_models()
    emit("setup", 1, "ok", model=MODEL, features=len(FEATURES), live="1.0.0", shadow="1.0.1")
    return ctx


def gunicorn_run(ctx: dict, args, servers: list[Server]) -> None:
    """The gateway under gunicorn with its log worker: the load phases (the peers around each),
    swap and halt, the prediction log after shutdown, and the ratios to the peers."""
    gateway, worker = start_gateway(args, servers)
    load_phases(ctx, args, gateway, worker, servers)
    swap_and_halt(ctx, gateway.port, args.clients)
    prediction_log(gateway, worker, servers)
    if not args.no_peers:
        for size in (1, 100):
            peer_ratios(size)


def gunicorn_command(app: str, port: int, *extra: str) -> list[str]:
    """``gunicorn -w 2`` of the WSGI ``app`` on ``port``, warnings only."""
    command = [str(VENV_BIN / "gunicorn"), app, "-w", str(WORKERS), "-b", f"127.0.0.1:{port}"]
    return [*command, "--log-level", "warning", *extra]


def start_gateway(args, servers: list[Server]) -> tuple[Server, Server]:
    """``gunicorn -w 2`` of the gateway (of the web service with ``--web``) on a free port, and
    the Celery worker that ingests its prediction spool; both in ``servers``, the gateway
    answering."""
    port = free_port()
    app = "config.wsgi:application" if args.web else "config.wsgi_gateway:application"
    gateway = Server("gateway", gunicorn_command(app, port, "--graceful-timeout", "20"), port)
    servers.append(gateway)
    # The worker that ingests the gateway's prediction spool, on the same machine.
    worker = Server(
        "celery-worker",
        [
            str(VENV_BIN / "celery"),
            "-A",
            "config",
            "worker",
            "-Q",
            "default",
            "-c",
            "1",
            "-n",
            "bench@%h",
            "--loglevel",
            "WARNING",
        ],
        0,
    )
    servers.append(worker)
    gateway.wait()
    return gateway, worker


def load_phases(ctx: dict, args, gateway: Server, worker: Server, servers: list[Server]) -> None:
    """The gateway's load phase per size (1 and 100 instances), each with the peers' phases of
    the same size right before and right after it (unless ``--no-peers``); the peers stopped."""
    headers = {"Authorization": f"Token {ctx['token']}", "Content-Type": "application/json"}
    bodies = {n: json.dumps({"instances": instances(n, seed=n)}).encode() for n in (1, 100)}
    warm_up(gateway.port, f"/api/v1/predict/{MODEL}/", bodies[1], headers)
    plain = None if args.no_peers else plain_server(ctx)
    mlflow = None if args.no_peers else mlflow_server(ctx)
    servers.extend(p for p in (plain, mlflow) if p is not None)
    for size, body in bodies.items():
        if plain is not None:  # the peers right before and right after, the same load
            plain_load(plain, size, args)
            mlflow_load(mlflow, size, args)
        gateway_load(gateway, worker, size, body, headers, args)
        if plain is not None:
            mlflow_load(mlflow, size, args)
            plain_load(plain, size, args)
    for peer in (plain, mlflow):
        if peer is not None:
            peer.stop()
            servers.remove(peer)


def gateway_load(
    gateway: Server, worker: Server, size: int, body: bytes, headers: dict, args
) -> None:
    """One load phase of the gateway, reported with the CPU its process groups used."""
    cpu = {s.name: group_cpu(s.process.pid) for s in (gateway, worker)}
    result = phase(gateway, f"/api/v1/predict/{MODEL}/", body, headers, args, warmup=2.0)
    used = {
        f"cpu_s_{s.name}": round(group_cpu(s.process.pid) - cpu[s.name], 1)
        for s in (gateway, worker)
    }
    report_load(
        "gateway",
        size,
        result,
        **used,
        note="gunicorn sync workers; each sees live 1.0.0 and shadows 1.0.1; a Celery "
        "worker (-c 1) ingests the prediction spool meanwhile; cpu_s_*: CPU seconds of "
        "each process group over the warm-up and the measured seconds",
    )


def prediction_log(gateway: Server, worker: Server, servers: list[Server]) -> None:
    """Stop the gateway (SIGTERM), wait for the worker to drain the spool, stop the worker, and
    report its CPU and the predictions served against those logged."""
    code = gateway.stop()
    servers.remove(gateway)
    started = time.monotonic()
    drained = wait_for_ingestion(timeout=180)
    emit(
        "prediction_log_ingested_after_shutdown",
        round(time.monotonic() - started, 1),
        "s",
        drained=drained,
        note="from the gateway's exit until the worker has ingested the whole spool",
    )
    worker_cpu = group_cpu(worker.process.pid)
    worker.stop()
    servers.remove(worker)
    stored = logged_by_version()
    rows = sum(n for version, n in stored.items() if not version.startswith("("))
    emit(
        "prediction_log_worker_cpu",
        round(worker_cpu / max(rows, 1) * 1e6, 2),
        "s per 1M predictions",
        cpu_s=round(worker_cpu, 1),
        predictions=rows,
        note="CPU of the Celery worker over the whole run (start-up included) per "
        "prediction it ingested (live and shadow)",
    )
    emit(
        "prediction_log_at_shutdown",
        stored.get("1.0.0", 0) - SERVED.get("1.0.0", 0),
        "records missing",
        gunicorn_exit=code,
        served_live=SERVED,
        logged=stored,
        note="after a clean shutdown (SIGTERM), live predictions of 1.0.0 logged minus those "
        "the clients received (0: none lost; 1.0.0 never ran as a shadow). 1.0.1 also has "
        "its shadow predictions, logged under the live prediction ids",
    )


def peer_ratios(size: int) -> None:
    """The gateway against MLflow and the plain app, for requests of ``size`` instances."""
    ours = THROUGHPUT.get(("gateway", size))
    cpu_ours = CPU_PER_REQUEST.get(("gateway", size))
    mlflow_ratios(size, ours, cpu_ours)
    plain_ratios(size, ours, cpu_ours)


def phase_means(phases: list[dict]) -> tuple[float | None, float | None]:
    """A peer's phases around the gateway's: their mean throughput and mean CPU ms per request
    (of those that measured it); None where there is none."""
    throughput = [r["throughput"] for r in phases]
    cpus = [r["cpu_ms_per_request"] for r in phases if r["cpu_ms_per_request"]]
    mean_cpu = round(sum(cpus) / len(cpus), 3) if cpus else None
    return (sum(throughput) / len(throughput) if throughput else None), mean_cpu


def mlflow_ratios(size: int, ours: float | None, cpu_ours: float | None) -> None:
    """CPU per request and throughput against MLflow's best mode (the mean of its phases)."""
    best, cpu_mlflow = phase_means(MLFLOW.get(size, []))
    if cpu_ours and cpu_mlflow:
        emit(
            "gateway_vs_mlflow_cpu",
            round(cpu_mlflow / cpu_ours, 2),
            "x",
            instances=size,
            value_ms=cpu_ours,
            peer="mlflow-models-serve",
            peer_value=cpu_mlflow,
            note="MLflow's server CPU per request (its best mode, before and after "
            "the gateway's phase) over the gateway's: the throughput ratio the CPU "
            "allows",
        )
    if ours and best:
        emit(
            "gateway_vs_mlflow",
            round(ours / best, 2),
            "x",
            instances=size,
            peer="mlflow-models-serve",
            peer_value=round(best, 1),
            target=">= 3x (issue 17)" if size == 100 else ">= 1.7x",
            note="gateway throughput over MLflow's best mode (the mean of its "
            "phases right before and after the gateway's)",
        )


def plain_ratios(size: int, ours: float | None, cpu_ours: float | None) -> None:
    """Throughput and CPU per request against the plain WSGI app (the mean of its phases)."""
    plain, cpu_plain = phase_means(PLAIN.get(size, []))
    if ours and plain:
        emit(
            "gateway_vs_plain_wsgi",
            round(ours / plain, 2),
            "fraction",
            instances=size,
            peer="plain-wsgi",
            peer_value=round(plain, 1),
            target=">= 0.85 (issue 17)" if size == 100 else ">= 0.75 (issue 17)",
            note="gateway throughput over the plain WSGI app's under the same "
            "gunicorn (the mean of its phases right before and after the gateway's)",
        )
    if cpu_ours and cpu_plain:
        emit(
            "gateway_vs_plain_wsgi_cpu",
            round(cpu_plain / cpu_ours, 2),
            "fraction",
            instances=size,
            value_ms=cpu_ours,
            peer="plain-wsgi",
            peer_value=cpu_plain,
            note="the plain app's server CPU per request over the gateway's (gunicorn "
            "process groups, measured seconds only; the Celery worker ingesting the "
            "gateway's log is not counted): the throughput ratio the CPU allows, "
            "which the machine's load moves less",
        )


def plain_server(ctx: dict) -> Server:
    """The floor: a plain WSGI app scoring the same model under the same gunicorn, started and
    answering."""
    from registry import mlflow_bridge

    path = str(mlflow_bridge.cache_path(ctx["v1"].artifact_digest))
    port = free_port()
    plain = Server(
        "plain-wsgi",
        gunicorn_command("bench_plain_wsgi:app", port),
        port,
        env={"BENCH_MODEL_PATH": path, "BENCH_FEATURES": json.dumps(FEATURES)},
    )
    _wait_post(port, "/", json.dumps({"instances": instances(1, seed=1)}).encode())
    return plain


def plain_load(plain: Server, size: int, args) -> dict:
    """One load phase of the plain app (the same body as the gateway's), reported."""
    body = json.dumps({"instances": instances(size, seed=size)}).encode()
    result = phase(plain, "/", body, {"Content-Type": "application/json"}, args)
    report_load(
        "plain-wsgi",
        size,
        result,
        note="gunicorn -w 2, no framework, no auth, no logging: the floor; measured right "
        "before and right after the gateway's phase of the same size",
    )
    PLAIN.setdefault(size, []).append(result)
    return result


def mlflow_server(ctx: dict) -> Server:
    """The peer: ``mlflow models serve -w 2`` of the live version's artifact, answering."""
    from registry import mlflow_bridge

    path = str(mlflow_bridge.cache_path(ctx["v1"].artifact_digest))
    port = free_port()
    server = Server(
        "mlflow",
        _common.mlflow_serve_command(VENV_BIN, path, port),
        port,
        env={"PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"},  # it runs uvicorn
        ready="/ping",
    )
    server.wait(timeout=120)
    return server


def mlflow_load(server: Server, size: int, args) -> None:
    """MLflow's load phases of one size, keep-alive and ``Connection: close``, reported; its
    best mode's throughput and CPU per request kept for the ratios."""
    rows = instances(size, seed=size)
    payload = json.dumps(
        {"dataframe_split": {"columns": FEATURES, "data": [[r[f] for f in FEATURES] for r in rows]}}
    ).encode()
    results = []
    for keepalive in (True, False):
        headers = {"Content-Type": "application/json"}
        result = phase(server, "/invocations", payload, headers, args, keepalive=keepalive)
        report_load(
            "mlflow-models-serve",
            size,
            result,
            connection="keep-alive" if keepalive else "close",
            note="measured right before and right after the gateway's phase of the same size",
        )
        results.append(result)
    MLFLOW.setdefault(size, []).append(max(results, key=lambda r: r["throughput"]))


def _wait_post(port: int, path: str, body: bytes, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("POST", path, body, {"Content-Type": "application/json"})
            if conn.getresponse().status == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"nothing answers on port {port}")


if __name__ == "__main__":
    main()
