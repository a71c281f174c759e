"""Benchmark of the object-store backend against the local directory, on this machine, in one run.

    .venv/bin/python bench/storage.py [--rows 1000000] [--repeats 3] [--endpoint URL]

The same window (``--rows`` predictions with labels over 7 days, 20 features, one sensitive
attribute: ``bench/drift.py``'s data) is ingested through the real services twice, once into a
local directory and once into an S3 bucket (``GOVERNANCE_STORAGE_URL=s3://...``), then:

- ``load_window`` of the whole window and of each check's columns, from each backend (median of
  ``--repeats`` after a cold pass); the S3 figure's ``peer`` is the local one, the goal is a
  ratio within 2x;
- one real monitor run per daily check and concept drift (``runs.run_execute``, trigger manual)
  on the S3 backend, with its per-run costs: CPU seconds (this process), database writes
  (INSERT/UPDATE/DELETE statements), object-store requests (counted from the S3 server's request
  log) and bytes read (the Parquet column chunks and footers the window needs). These are the
  inputs of docs/scaling.md's capacity model;
- a version's three daily checks executed together, as the schedule sends them
  (``runs.runs_execute``: one window load), cold (no footer kept by the process) and warm, with
  the object store's requests by kind (HEAD, GET, LIST, PUT...).

The S3 server is moto's (``moto_server``, a dev dependency), started on a free port with its
request log in the work directory, unless ``--endpoint`` names another one (then requests are
not counted). The database is a temporary SQLite file. Every figure is one JSON object per line.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))

from bench._common import free_port  # noqa: E402

BUCKET = "bench-storage"
WRITES = re.compile(r"^\s*(INSERT|UPDATE|DELETE)\b", re.IGNORECASE)


class S3Server:
    """moto's server on a free port; its request log counts the requests a phase makes."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "moto.log"
        command = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1"]
        self.process = subprocess.Popen(
            [*command, "-p", str(self.port)],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},  # each request's log line at once
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"moto_server did not start:\n{self.log.read_text()}")

    def requests(self) -> int:
        """Requests served so far (one log line each)."""
        return sum(self.requests_by_kind().values())

    def requests_by_kind(self) -> dict[str, int]:
        """Requests served so far by kind (``request_kinds`` of the request log)."""
        return request_kinds(self.log.read_text(errors="replace"))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


ANSI = re.compile(r"\x1b\[[0-9;]*m")  # werkzeug colours some lines
REQUEST_LINE = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) (/[^ ?"]*)(\?[^ "]*)? HTTP')


def request_kinds(log: str) -> dict[str, int]:
    """Requests of a moto server's log by kind: ``HEAD`` (an object's size), ``GET`` (an
    object's bytes, ranged or whole), ``LIST`` (a bucket listing), ``PUT`` (an upload or one
    part of one), ``POST`` (a multipart upload's start or end, a bulk delete), ``DELETE``."""
    counts: dict[str, int] = {}
    for method, path, query in REQUEST_LINE.findall(ANSI.sub("", log)):
        kind = method
        if method == "GET" and (path.count("/") < 2 or path.endswith("/") or "list-type" in query):
            kind = "LIST"
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def kinds_between(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The requests of ``after`` not in ``before`` (two ``requests_by_kind``), by kind."""
    return {k: n - before.get(k, 0) for k, n in sorted(after.items()) if n - before.get(k, 0)}


def configure(backend: str, endpoint: str, workdir: Path) -> None:
    from django.conf import settings

    if backend == "local":
        settings.STORAGE_URL = ""
        settings.VAR_DIR = workdir / "local"
        return
    settings.STORAGE_URL = f"s3://{BUCKET}/data"
    settings.STORAGE_S3_ENDPOINT = endpoint
    settings.STORAGE_S3_REGION = "us-east-1"
    settings.STORAGE_S3_ACCESS_KEY = settings.STORAGE_S3_SECRET_KEY = "bench"


def create_bucket(endpoint: str) -> None:
    from pyarrow import fs

    host = endpoint.split("://", 1)[1]
    client = fs.S3FileSystem(
        access_key="bench",
        secret_key="bench",
        region="us-east-1",
        allow_bucket_creation=True,
        endpoint_override=host,
        scheme=endpoint.split("://", 1)[0],
    )
    client.create_dir(BUCKET)


def window_bytes(window, columns: list[str], with_labels: bool, with_sensitive: bool) -> int:
    """Bytes a load reads: footers and the wanted columns' chunks of the window's files."""
    from monitoring import store
    from monitoring.columns import is_sensitive
    from monitoring.models import BatchKind, DataBatch

    total = 0
    kinds = [BatchKind.PREDICTIONS, *([BatchKind.LABELS] if with_labels else [])]
    batches = DataBatch.objects.filter(version=window.version, kind__in=kinds)
    for path, kind in batches.values_list("path", "kind"):
        meta = store.parquet_file(path).metadata
        total += meta.serialized_size
        if kind == BatchKind.LABELS:
            wanted = {"batch", "row", "label", "label_time"}
        else:
            wanted = {c for c in columns if with_sensitive or not is_sensitive(c)}
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                chunk = group.column(c)
                if chunk.path_in_schema in wanted:
                    total += chunk.total_compressed_size
    return total


def timed_load(window, columns, kwargs, rows: int) -> float:
    """Seconds of one ``load_window`` (the frame is dropped before the next)."""
    started = time.perf_counter()
    size = len(window.load(columns, **kwargs))
    elapsed = time.perf_counter() - started
    if size != rows:
        raise AssertionError(f"loaded {size} rows, expected {rows}")
    return elapsed


def load_figures(args, windows: dict, server: S3Server | None) -> None:
    from bench import drift

    cases = drift._load_cases()
    results: dict[tuple[str, str], float] = {}
    for backend in ("local", "s3"):
        configure(backend, args.endpoint, args.workdir)
        window = windows[backend]
        for name, (columns, kwargs) in cases.items():
            times = [
                timed_load(window, columns, kwargs, args.rows) for _ in range(1 + args.repeats)
            ]
            results[(backend, name)] = statistics.median(times[1:])
            extra = {}
            if backend == "s3":
                local = results[("local", name)]
                ratio = results[(backend, name)] / local
                extra = {
                    "peer": "local_directory",
                    "peer_value": drift.r(local),
                    "ratio": round(ratio, 2),
                    "target_ratio": 2.0,
                    "met": ratio <= 2.0,
                }
                if server is not None:
                    before = server.requests()
                    window.load(columns, **kwargs)
                    extra["requests"] = server.requests() - before
                extra["bytes"] = window_bytes(window, columns, **kwargs)
            drift.emit(
                f"load_window_{drift.tag(args.rows)}_{name}_{backend}",
                drift.r(results[(backend, name)]),
                "s",
                cold=drift.r(times[0]),
                **extra,
            )


def ingest(backend: str, args, server: S3Server | None):
    from datetime import UTC, datetime, timedelta

    from django.contrib.auth import get_user_model

    from bench import drift
    from governance.audit import Actor
    from monitoring.ingest import labels_ingest, predictions_ingest, reference_ingest
    from registry.models import ModelVersion, RegisteredModel

    configure(backend, args.endpoint, args.workdir)
    user, _ = get_user_model().objects.get_or_create(username="bench")
    model = RegisteredModel.objects.create(name=f"bench-storage-{backend}")
    version = ModelVersion.objects.create(**drift.version_fields(model, user))
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=drift.DAYS)
    data = drift.make_data(args.rows, seed=2, current=True)
    predictions, labels = drift.upload_files(data, start=start)
    reference = drift.upload_files(
        drift.make_data(min(args.rows, 100_000), seed=1, current=False), start=start, reference=True
    )
    actor = Actor.system("bench")
    requests = server.requests() if server is not None and backend == "s3" else None
    t0 = time.perf_counter()
    predictions_ingest(
        model_name=model.name, version=version.version, upload=predictions, actor=actor
    )
    labels_ingest(model_name=model.name, upload=labels, actor=actor)
    elapsed = time.perf_counter() - t0
    reference_ingest(model_name=model.name, version=version.version, upload=reference, actor=actor)
    extra = {}
    if requests is not None:
        extra["requests"] = server.requests() - requests
    drift.emit(
        f"ingest_{drift.tag(args.rows)}_predictions_and_labels_{backend}",
        drift.r(elapsed),
        "s",
        **extra,
        note="predictions_ingest + labels_ingest of Parquet uploads (reference not timed)",
    )
    return drift._Window(model, version, start, end)


def run_costs(args, window, server: S3Server | None) -> None:
    """One real monitor run per check on the S3 backend: CPU, database writes, requests."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from bench import drift
    from governance.audit import Actor
    from monitoring.runs import run_create, run_execute

    configure("s3", args.endpoint, args.workdir)
    for hour, check in enumerate(
        ("data_drift", "prediction_drift", "fairness", "concept_drift", "calibration")
    ):
        run = run_create(
            model=window.model,
            version=window.version,
            check=check,
            window_end=window.end,
            trigger="manual",
            actor=Actor.system("bench"),
        )
        requests = server.requests() if server is not None else None
        cpu, wall = time.process_time(), time.perf_counter()
        with CaptureQueriesContext(connection) as queries:
            done = run_execute(run.pk)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        writes = sum(1 for q in queries.captured_queries if WRITES.match(q["sql"]))
        extra = {"requests": server.requests() - requests} if requests is not None else {}
        drift.emit(
            f"run_{check}_{drift.tag(args.rows)}_s3_cpu",
            drift.r(cpu),
            "cpu_s",
            wall_s=drift.r(wall),
            status=done.status,
            db_queries=len(queries.captured_queries),
            db_writes=writes,
            **extra,
            note=f"runs.run_execute of one {check} run over the window, on the S3 backend",
        )
        del hour


DAILY_CHECKS = ("data_drift", "prediction_drift", "fairness")


def group_costs(args, window, server: S3Server | None) -> None:
    """The schedule's task for one version: its three daily checks executed together
    (``runs.runs_execute``: one window load for the three), on the S3 backend, with the object
    store's requests by kind: cold (a worker that never read the window's files: the production
    case, each model's files read once a day) and warm (its footers cached in the process)."""
    from bench import drift
    from governance.audit import Actor
    from monitoring.models import MonitorRun, RunStatus
    from monitoring.runs import run_create, runs_execute
    from platform_core import storage

    configure("s3", args.endpoint, args.workdir)
    runs = [
        run_create(
            model=window.model,
            version=window.version,
            check=check,
            window_end=window.end,
            trigger="manual",  # the version is in no stage: a scheduled run would be skipped
            actor=Actor.system("bench"),
        ).pk  # run_costs' runs of these checks, executed again
        for check in DAILY_CHECKS
    ]
    for cache in ("cold", "warm"):
        if cache == "cold":
            storage.forget_cached()
        MonitorRun.objects.filter(pk__in=runs).update(status=RunStatus.PENDING, started_at=None)
        before = server.requests_by_kind() if server is not None else None
        cpu, wall = time.process_time(), time.perf_counter()
        done = runs_execute(runs)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        extra = {}
        if before is not None:
            time.sleep(0.3)  # the server's last log lines
            kinds = kinds_between(before, server.requests_by_kind())
            extra = {"requests": sum(kinds.values()), "by_kind": kinds}
        drift.emit(
            f"runs_daily_checks_{drift.tag(args.rows)}_s3_{cache}",
            drift.r(cpu),
            "cpu_s",
            wall_s=drift.r(wall),
            statuses=sorted({r.status for r in done}),
            **extra,
            note=f"runs.runs_execute of one version's {len(runs)} daily checks (one task), "
            f"{cache} caches",
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--endpoint", default="", help="an S3 server to use instead of moto's")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    args.workdir = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("CELERY_BROKER_URL", None)
    os.environ["GOVERNANCE_VAR_DIR"] = str(args.workdir / "var")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    server = None
    try:
        if not args.endpoint:
            server = S3Server(args.workdir)
            args.endpoint = server.endpoint
        create_bucket(args.endpoint)
        from bench import drift

        drift.setup_django("config.settings.dev")
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        windows = {backend: ingest(backend, args, server) for backend in ("local", "s3")}
        load_figures(args, windows, server)
        run_costs(args, windows["s3"], server)
        group_costs(args, windows["s3"], server)
    finally:
        if server is not None:
            server.stop()
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
