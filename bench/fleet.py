"""Fleet benchmark: the daily checks of many live models through real Celery workers.

    .venv/bin/python bench/fleet.py [--models 500] [--rows 100000] [--workers 2] [--concurrency 1]
                                    [--admin-url postgres://postgres@127.0.0.1:5432/postgres]
                                    [--redis-url redis://127.0.0.1:6379/9] [--timeout 900]
                                    [--chunk N] [--profile [PATH]]
                                    [--storage local|s3 | --both] [--endpoint URL]
                                    [--distinct-files]

Runs against a temporary PostgreSQL database (created on ``--admin-url``'s server, dropped at
the end), a temporary var directory and the Redis database of ``--redis-url`` (flushed before and
after: give it one nobody else uses). Set-up, not timed:

- model 0 gets its data through the real services: a 100k-row reference upload (its stored
  profile), ``--rows`` predictions over the 7 days before today (two of the 20 features shifted,
  so every model raises one medium data-drift alert) and their labels;
- models 1..N-1 share model 0's prediction files (manifest rows pointing at the same Parquet
  files, as the issue allows, to spare the disk), its profile and a copy of its label files
  (label files name the prediction batch they label, so each model needs its own). Shared
  files flatter an object store: a worker reads a shared file's footer once and keeps it, where
  in production each model's files are its own and a day's reads find few footers kept.
  ``--distinct-files`` gives each model copies under its own keys (server-side copies on S3,
  hard links locally): the honest comparison, at the price of N x the prediction bytes
  (about 17 MB a model at 100k rows, held in memory by moto);
- every version is put straight into ``production`` (a queryset update, not the lifecycle walk
  the platform requires: this is fixture set-up), and its monitoring and validation policies
  exist, as they do on any day after the first.

Timed: ``monitoring.run_daily_checks`` (what beat sends at 02:00) is enqueued; a worker fans out
one run per (model, check), 3 per model, and the workers execute them (load the window, compute,
store the metric points and alerts, hand the alert to the routing hook). The wall time runs from
the enqueue to the last run's ``finished_at``. With ``--workers 2 --concurrency 1`` there are two
worker processes of one child each (``-c 1``), as on two machines.

Storage (issue 14): ``--storage local`` (the default) keeps the data files in the temporary var
directory; ``--storage s3`` in a prefix of their own in the bucket ``bench-storage`` of an S3
server (``GOVERNANCE_STORAGE_URL=s3://bench-storage/fleet-<pid>``, the workers too): the one of
``--endpoint`` (its bucket must exist), or moto's server started here on a free port
(``bench/storage.py``'s; a Python process on the same cores as the workers and PostgreSQL, whose
CPU seconds during the timed part are a figure of their own). The set-up writes its label copies
through ``platform_core.storage`` under the keys the store uses, so either backend holds them.
``--both`` runs the bench on the local directory, then on the object store, each in a process of
its own, prints both runs' lines (tagged ``storage``), then the S3 wall time with the local one
as its peer and their ratio (goal: within 1.5x).

Every figure is one JSON object per line, as in ``bench/drift.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(1, str(REPO))  # bench.storage

import drift  # noqa: E402  (bench/drift.py: data, version facts, output)
from _common import (  # noqa: E402
    ADMIN_URL,
    create_database,
    drop_database,
    group_cpu,
    start_worker,
    stop_workers,
    wait_ready,
    worker_environment,
)

TARGET_S = 300
SHIFTED = {"x15": 0.8, "x16": 1.0}
REFERENCE_ROWS = 100_000


PEER_UNCHUNKED_S = 105.0  # issue 17's run of the code before the chunked fan-out
S3_TARGET_RATIO = 1.5  # issue 14: the object store within 1.5x of the local directory
S3_BUCKET = "bench-storage"  # bench/storage.py's bucket; each run has a prefix of its own
MOTO_NOTE = "moto's S3 server (Python) on the same 2 cores as the workers and PostgreSQL"
BACKEND = {"storage": "local"}  # tagged on every figure


def emit(bench: str, value, unit: str, **extra) -> None:
    drift.emit(bench, value, unit, **{**extra, **BACKEND})


def set_up(models: int, rows: int, *, distinct: bool = False) -> dict:
    """Create the fleet (see the module docstring); returns what the timed part needs."""
    from datetime import UTC, datetime, timedelta

    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from governance.audit import Actor
    from monitoring.models import BatchKind, DataBatch

    t0 = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    user = get_user_model().objects.create(username="bench")
    actor = Actor.system("bench")
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    version = _first_model(rows, user, actor, start=end - timedelta(days=drift.DAYS))
    # model 0's batches, read before the copies are added
    predictions = list(
        DataBatch.objects.filter(model=version.model, kind=BatchKind.PREDICTIONS).order_by("id")
    )
    labels = list(DataBatch.objects.filter(model=version.model, kind=BatchKind.LABELS))
    versions = _other_models(models, version, user, actor, end)
    for v in versions[1:]:
        _share_batches(v, predictions, labels, distinct=distinct)
    return {"setup_s": time.perf_counter() - t0, "window_end": end}


def _first_model(rows: int, user, actor, *, start):
    """Model 0 with its reference data, ``rows`` shifted predictions and their labels, ingested
    through the real services; its version."""
    from monitoring.ingest import labels_ingest, predictions_ingest, reference_ingest
    from registry.models import ModelVersion, RegisteredModel

    first = RegisteredModel.objects.create(name="fleet-0000")
    version = ModelVersion.objects.create(**drift.version_fields(first, user))
    reference = drift.make_data(REFERENCE_ROWS, seed=1, current=False)
    reference_ingest(
        model_name=first.name,
        version=version.version,
        upload=drift.upload_files(reference, start=start, reference=True),
        actor=actor,
    )
    current = drift.make_data(rows, seed=2, current=True, shifted=SHIFTED)
    predictions, labels = drift.upload_files(current, start=start)
    predictions_ingest(
        model_name=first.name, version=version.version, upload=predictions, actor=actor
    )
    labels_ingest(model_name=first.name, upload=labels, actor=actor)
    return version


def _other_models(models: int, version, user, actor, end) -> list:
    """Models 1.. in production with model 0's reference profile; every model's policies.
    All the versions, model 0's first."""
    from datetime import timedelta

    from django.db import transaction

    from governance.models import Lifecycle, Stage
    from governance.policies import policy_in_force
    from monitoring.models import ReferenceProfile
    from registry.models import ModelVersion, RegisteredModel

    profile = ReferenceProfile.objects.get(version=version)
    with transaction.atomic():
        others = RegisteredModel.objects.bulk_create(
            [RegisteredModel(name=f"fleet-{i:04d}") for i in range(1, models)]
        )
        versions = [
            version,
            *ModelVersion.objects.bulk_create(
                [ModelVersion(**drift.version_fields(m, user)) for m in others]
            ),
        ]
        Lifecycle.objects.bulk_create([Lifecycle(version=v) for v in versions])
        Lifecycle.objects.filter(version__in=versions).update(
            stage=Stage.PRODUCTION, promoted_at=end - timedelta(days=30)
        )
        ReferenceProfile.objects.bulk_create(
            [
                ReferenceProfile(version=v, profile=profile.profile, rows=profile.rows)
                for v in versions[1:]
            ]
        )
    for model in [version.model, *others]:
        policy_in_force("monitoring", model, actor)
        policy_in_force("validation", model, actor)
    return versions


def _share_batches(v, prediction_batches: list, label_batches: list, *, distinct: bool) -> None:
    """``v`` reads model 0's prediction files (``distinct``: copies of them under its own keys);
    its label files are copies whose batch ids point at its own prediction batches."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from monitoring.models import BatchKind, DataBatch
    from monitoring.store.files import COMPRESSION, DATA_DIR
    from platform_core import storage

    copies = DataBatch.objects.bulk_create(
        [
            DataBatch(
                model_id=v.model_id,
                version=v,
                kind=BatchKind.PREDICTIONS,
                day=b.day,
                path=_copy_object(b.path, v.model.name) if distinct else b.path,  # model 0's
                rows=b.rows,
                size=b.size,
                digest=b.digest,
                source=b.source,
                created_by="bench",
            )
            for b in prediction_batches
        ]
    )
    renumber = {b.pk: c.pk for b, c in zip(prediction_batches, copies, strict=True)}
    rows_out = []
    for batch in label_batches:
        day, table = batch.day, _label_table(batch)
        old = table.column("batch").to_numpy()
        new = pa.array([renumber[int(b)] for b in old], type=pa.int64())
        copy = table.set_column(table.column_names.index("batch"), "batch", new)
        # the key the store itself uses (monitoring/<model>/labels/day=.../<uuid>.parquet),
        # written through the storage in force: a local directory or the object store
        key = f"{DATA_DIR}/{v.model.name}/{BatchKind.LABELS}/day={day.isoformat()}"
        key = f"{key}/{uuid.uuid4().hex}.parquet"
        sink = pa.BufferOutputStream()
        pq.write_table(copy, sink, compression=COMPRESSION)
        data = sink.getvalue().to_pybytes()
        digest = storage.current().put(key, data, digest=True)
        rows_out.append(
            DataBatch(
                model_id=v.model_id,
                version=v,
                kind=BatchKind.LABELS,
                day=day,
                path=key,
                rows=copy.num_rows,
                size=len(data),
                digest=f"sha256:{digest}",
                source="bench",
                created_by="bench",
            )
        )
    DataBatch.objects.bulk_create(rows_out)


def _copy_object(key: str, model_name: str) -> str:
    """A copy of model 0's object ``key`` under ``model_name``'s own key, as the store would
    have written it: the object store copies it server-side (CopyObject); a local directory
    hard-links it (the same bytes, and, like a copy just written, in the page cache)."""
    from platform_core import storage

    day = key.rsplit("/", 2)[-2]
    copy = f"monitoring/{model_name}/predictions/{day}/{uuid.uuid4().hex}.parquet"
    store = storage.current()
    if store.remote:
        store.fs.copy_file(store.path(key), store.path(copy))
    else:
        target = store.local_path(copy)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(store.local_path(key), target)
    return copy


_label_tables: dict = {}


def _label_table(batch):
    """Model 0's label file of ``batch``, read once (from either backend)."""
    from monitoring.store.files import read_table

    if batch.pk not in _label_tables:
        _label_tables[batch.pk] = read_table(batch.path)
    return _label_tables[batch.pk]


def measure(models: int, timeout: float, workers: list[subprocess.Popen]) -> dict:
    from django.db.models import Max, Min
    from django.utils import timezone

    from monitoring.models import Alert, MonitorRun, RunStatus
    from monitoring.tasks import run_daily_checks

    expected = models * 3
    enqueued_at = timezone.now()
    t0 = time.monotonic()
    run_daily_checks.delay()
    done = 0
    while time.monotonic() - t0 < timeout:
        done = MonitorRun.objects.exclude(status__in=[RunStatus.PENDING, RunStatus.RUNNING]).count()
        if done >= expected:
            break
        if any(w.poll() is not None for w in workers):
            raise RuntimeError("a worker exited during the run")
        time.sleep(0.5)
    runs = MonitorRun.objects.all()
    span = runs.aggregate(
        created_first=Min("created_at"),
        created_last=Max("created_at"),
        first_started=Min("started_at"),
        last=Max("finished_at"),
    )
    statuses: dict[str, int] = {}
    durations: dict[str, list[float]] = {}
    tasks: dict[tuple, float] = {}  # runs claimed together (one task): claim to last finish
    for version, kind, status, started, finished, reason in runs.values_list(
        "version_id", "kind", "status", "started_at", "finished_at", "reason"
    ):
        statuses[f"{kind}:{status}"] = statuses.get(f"{kind}:{status}", 0) + 1
        if started and finished:
            seconds = (finished - started).total_seconds()
            durations.setdefault(kind, []).append(seconds)
            tasks[version, started] = max(tasks.get((version, started), 0.0), seconds)
        if status == RunStatus.FAILED and len(statuses) < 20:
            print(f"failed run ({kind}): {reason}", file=sys.stderr)
    last = span["last"] or timezone.now()
    return {
        "expected": expected,
        "done": done,
        "finished": done >= expected,
        "wall_s": (last - enqueued_at).total_seconds(),
        "fanout_s": ((span["created_last"] or enqueued_at) - enqueued_at).total_seconds(),
        "first_run_s": ((span["first_started"] or enqueued_at) - enqueued_at).total_seconds(),
        "statuses": statuses,
        "durations": durations,
        "busy_s": sum(tasks.values()),
        "tasks": len(tasks),
        "alerts": Alert.objects.count(),
        "alerts_by_kind": {
            kind: Alert.objects.filter(kind=kind).count()
            for kind in set(Alert.objects.values_list("kind", flat=True))
        },
    }


def main() -> int:
    args = _arguments()
    if args.both:
        return _both(args)
    BACKEND["storage"] = args.storage
    server = None
    try:
        if args.storage == "s3" and not args.endpoint:
            server = _start_s3()
            args.endpoint = server.endpoint
            args.s3_server_pid = server.process.pid
            args.s3_server_log = str(server.log)
        result = _run(args)
    finally:
        if server is not None:
            server.stop()
            shutil.rmtree(server.log.parent, ignore_errors=True)
    _report(args, result)
    return 0 if result["finished"] else 1


def _start_s3():
    """moto's server on a free port (``bench/storage.py``'s), its bucket created."""
    from bench.storage import S3Server, create_bucket

    server = S3Server(Path(tempfile.mkdtemp(prefix="bench-fleet-moto-")))
    try:
        create_bucket(server.endpoint)
    except BaseException:
        server.stop()
        raise
    return server


def s3_environment(endpoint: str) -> dict:
    """The storage settings of the bench and its workers on the object store (a prefix of this
    run's own in ``S3_BUCKET``, which must exist)."""
    return {
        "GOVERNANCE_STORAGE_URL": f"s3://{S3_BUCKET}/fleet-{os.getpid()}",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_REGION": "us-east-1",
    }


def _both(args: argparse.Namespace) -> int:
    """The local directory, then the object store, each in a process of its own (its own
    database and settings); their lines as they come, then the S3 wall time with the local one
    as its peer."""
    forwarded = [
        *("--models", str(args.models), "--rows", str(args.rows)),
        *("--workers", str(args.workers), "--concurrency", str(args.concurrency)),
        *("--admin-url", args.admin_url, "--redis-url", args.redis_url),
        *("--timeout", str(args.timeout)),
        *(("--chunk", str(args.chunk)) if args.chunk is not None else ()),
        *(("--distinct-files",) if args.distinct_files else ()),
    ]
    server = None if args.endpoint else _start_s3()
    endpoint = args.endpoint or server.endpoint
    figures: dict[str, dict] = {}
    moto_cpu = None
    codes = []
    try:
        for backend in ("local", "s3"):
            command = [sys.executable, __file__, *forwarded, "--storage", backend]
            if backend == "s3":
                command += ["--endpoint", endpoint]
                if server is not None:
                    command += ["--s3-server-pid", str(server.process.pid)]
                    command += ["--s3-server-log", str(server.log)]
                    moto_cpu = group_cpu(server.process.pid)
            child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
            for line in child.stdout:
                print(line, end="", flush=True)
                with contextlib.suppress(ValueError):
                    figure = json.loads(line)
                    figures[f"{figure['bench']}:{figure.get('storage')}"] = figure
            codes.append(child.wait())
            if backend == "s3" and server is not None:
                moto_cpu = group_cpu(server.process.pid) - moto_cpu
    finally:
        if server is not None:
            server.stop()
            shutil.rmtree(server.log.parent, ignore_errors=True)
    local = figures.get("fleet_daily_checks_wall:local")
    s3 = figures.get("fleet_daily_checks_wall:s3")
    if not (local and s3):
        print("a backend's run gave no wall time", file=sys.stderr)
        return 1
    ratio = s3["value"] / local["value"] if local["value"] else None
    cpu = {b: figures.get(f"fleet_worker_cpu:{b}", {}).get("value") for b in ("local", "s3")}
    timed_moto = figures.get("fleet_s3_server_cpu:s3", {}).get("value")
    drift.emit(
        "fleet_daily_checks_wall_s3_vs_local",
        s3["value"],
        "s",
        peer="local_directory (the same bench just before, same process tree and machine)",
        peer_value=local["value"],
        ratio=round(ratio, 2) if ratio else None,
        target_ratio=S3_TARGET_RATIO,
        met=bool(ratio and ratio <= S3_TARGET_RATIO and s3["finished"] and local["finished"]),
        models=args.models,
        workers=s3["workers"],
        worker_cpu_s={"s3": cpu["s3"], "local": cpu["local"]},
        s3_server=MOTO_NOTE if server is not None else endpoint,
        s3_server_cpu_s=timed_moto,
        s3_server_cpu_with_setup_s=round(moto_cpu, 1) if moto_cpu is not None else None,
        load_avg=[round(x, 2) for x in os.getloadavg()],
    )
    return 0 if all(c == 0 for c in codes) and ratio is not None else 1


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=500)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--admin-url", default=ADMIN_URL)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the runs")
    parser.add_argument(
        "--chunk",
        type=int,
        default=None,
        help="MONITORING_FAN_OUT_CHUNK (live versions per fan-out task; 0: one task creates "
        "every run, the fan-out before issue 17)",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const=str(BENCH / "profiles" / "fleet_workers.txt"),
        default=None,
        help="sample the workers with py-spy (PY_SPY or py-spy on PATH) during the timed part "
        "and write their summary (default bench/profiles/fleet_workers.txt)",
    )
    parser.add_argument(
        "--storage",
        choices=("local", "s3"),
        default="local",
        help="where the platform keeps its data files: a temporary local directory, or an "
        "S3 bucket (GOVERNANCE_STORAGE_URL=s3://...)",
    )
    parser.add_argument(
        "--both",
        action="store_true",
        help="run on the local directory, then on the object store, and compare the wall times",
    )
    parser.add_argument(
        "--endpoint",
        default="",
        help="the S3 server for --storage s3 / --both, whose bucket bench-storage exists "
        "(default: moto's server on a free port, started and stopped here)",
    )
    parser.add_argument(
        "--distinct-files",
        action="store_true",
        help="give every model copies of model 0's prediction files under its own keys, so no "
        "worker reads another model's footer from its cache (as in production, where each "
        "model's files are its own); by default they share model 0's files",
    )
    parser.add_argument("--s3-server-pid", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--s3-server-log", default="", help=argparse.SUPPRESS)
    return parser.parse_args()


def workers_cpu_s(workers: list[subprocess.Popen]) -> float:
    """CPU seconds (user + system) used so far by the workers and their pool children."""
    return group_cpu(*(w.pid for w in workers))


def database_commits(name: str) -> int:
    """Transactions committed in the bench's database so far (``pg_stat_database``; the
    statistics collector lags by up to half a second)."""
    from django.db import connection

    time.sleep(0.6)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", [name])
        return int(cursor.fetchone()[0])


def _start_py_spy(workers: list[subprocess.Popen], profile: str | None) -> list:
    """py-spy sampling every worker process and its pool children (raw collapsed stacks)."""
    if not profile:
        return []
    spy = os.environ.get("PY_SPY") or shutil.which("py-spy")
    if not spy:
        raise SystemExit("--profile needs py-spy: set PY_SPY or put py-spy on PATH")
    spies = []
    for i, worker in enumerate(workers):
        out = Path(tempfile.gettempdir()) / f"fleet-spy-{os.getpid()}-{i}.txt"
        command = [spy, "record", "--subprocesses", "--idle", "-r", "100", "--format", "raw"]
        command += ["-o", str(out), "-p", str(worker.pid)]
        spies.append((subprocess.Popen(command, stdout=subprocess.DEVNULL), out))
    time.sleep(1.0)  # attached before the clock starts
    return spies


def _stop_py_spy(spies: list, profile: str | None) -> None:
    import signal

    if not spies:
        return
    for process, _ in spies:
        process.send_signal(signal.SIGINT)
    for process, _ in spies:
        process.wait(timeout=60)
    stacks = []
    for _, out in spies:
        if out.exists():
            stacks += out.read_text().splitlines()
            if raw := os.environ.get("BENCH_PROFILE_RAW"):  # keep the stacks too
                shutil.copy(out, Path(raw) / out.name)
            out.unlink()
    path = Path(profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        summarise_stacks(
            stacks, title=f"bench/fleet.py --profile (py-spy, load1 {os.getloadavg()[0]:.2f})"
        )
    )
    emit("profile", str(path.resolve()), "file")


def summarise_stacks(lines: list[str], *, title: str, top: int = 40) -> str:
    """Collapsed py-spy stacks (``frame;frame;... count``) of the workers' pool processes while
    they run tasks, as three tables: each function's share of those samples where it is on the
    stack (inclusive), at its top (own), and the project's innermost frame over every sample
    waiting on PostgreSQL (``psycopg``: queries, commits and lock waits)."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    database: dict[str, int] = {}
    total = 0
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or "fast_trace_task" not in stack:
            continue  # the workers' main processes, and the pool waiting for a task
        n = int(count)
        total += n
        frames = [_frame(f) for f in stack.split(";") if f and not f.startswith("process ")]
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        if any("psycopg/" in f for f in frames):
            mine = [f for f in frames if f.endswith(".py)") and "/" in f and _ours(f)]
            key = " < ".join(reversed(mine[-3:])) or "?"
            database[key] = database.get(key, 0) + n
    out = [title, f"samples while running tasks: {total} (every pool process, waits included)"]
    for name, table in (("inclusive", inclusive), ("own", own), ("PostgreSQL wait by", database)):
        out += ["", f"--- {name} share of those samples ---"]
        rows = [(f, n) for f, n in table.items() if table is not inclusive or n < total]
        for frame, n in sorted(rows, key=lambda kv: -kv[1])[:top]:  # (Celery's frames: all)
            out.append(f"{100 * n / max(total, 1):6.1f} %  {frame}")
    return "\n".join(out) + "\n"


def _ours(frame: str) -> bool:
    where = frame.rsplit("(", 1)[-1]
    return where.split("/", 1)[0] in {
        "monitoring",
        "governance",
        "registry",
        "incidents",
        "platform_core",
        "analytics",
    }


def _frame(frame: str) -> str:
    """``function (path/to/file.py:line)`` as ``function (file.py)``: lines merged."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", f"{REPO}/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})"


def _run(args: argparse.Namespace) -> dict:
    """A database and var dir of its own, the fleet, the workers, the timed part; all removed
    afterwards, whatever happens."""
    name = f"bench_fleet_{os.getpid()}"
    var = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    database_url = create_database(args.admin_url, name)
    extra = {}
    if args.chunk is not None:
        extra["MONITORING_FAN_OUT_CHUNK"] = str(args.chunk or 1_000_000)
    if args.storage == "s3":
        extra.update(s3_environment(args.endpoint))
    env = worker_environment(database_url, str(var), args.redis_url, **extra)
    os.environ.update(env)
    import redis

    broker = redis.Redis.from_url(args.redis_url)
    broker.flushdb()
    workers: list[subprocess.Popen] = []
    try:
        drift.setup_django("config.settings.dev")
        fleet = set_up(args.models, args.rows, distinct=args.distinct_files)
        emit(
            "fleet_setup",
            round(fleet["setup_s"], 1),
            "s",
            models=args.models,
            rows=args.rows,
            distinct_files=args.distinct_files,
            note="not timed below: migrate, ingest model 0, share its files with the others",
        )
        from django.db import connections

        connections.close_all()
        names = [f"fleet{i}-{os.getpid()}" for i in range(args.workers)]
        workers = [
            start_worker(
                name=name,
                queues="monitoring,default,urgent",
                concurrency=args.concurrency,
                env=env,
                log=None,
            )
            for name in names
        ]
        wait_ready(dict(zip(names, workers, strict=True)))
        spies = _start_py_spy(workers, args.profile)
        server = (args.s3_server_pid,) if args.s3_server_pid else ()
        cpu0, commits0 = workers_cpu_s(workers), database_commits(name)
        server0, requests0 = group_cpu(*server), s3_requests(args.s3_server_log)
        try:
            result = measure(args.models, args.timeout, workers)
        finally:
            _stop_py_spy(spies, args.profile)
        result["worker_cpu_s"] = workers_cpu_s(workers) - cpu0
        result["s3_server_cpu_s"] = group_cpu(*server) - server0 if server else None
        if requests0 is not None:
            time.sleep(0.5)  # the server's last log lines
            after = s3_requests(args.s3_server_log) or {}
            result["s3_requests"] = {
                k: n - requests0.get(k, 0)
                for k, n in sorted(after.items())
                if n > requests0.get(k, 0)
            }
        result["commits"] = database_commits(name) - commits0
    finally:
        stop_workers(workers)
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        with contextlib.suppress(Exception):
            broker.flushdb()
        drop_database(args.admin_url, name)
        shutil.rmtree(var, ignore_errors=True)
        if args.storage == "s3":
            _remove_prefix(env["GOVERNANCE_STORAGE_URL"])
    return result


def s3_requests(log: str) -> dict[str, int] | None:
    """Requests the S3 server has served so far, by kind (its request log), if it is ours."""
    if not log:
        return None
    from bench.storage import request_kinds

    return request_kinds(Path(log).read_text(errors="replace"))


def _remove_prefix(url: str) -> None:
    """The run's objects (a long-lived S3 server keeps them otherwise)."""
    with contextlib.suppress(Exception):
        from platform_core import storage

        store = storage.current()
        if store.remote and store.url == url:
            store.fs.delete_dir(store.base)


def _report(args: argparse.Namespace, result: dict) -> None:
    wall, done, expected = result["wall_s"], result["done"], result["expected"]
    rate = done / wall if wall > 0 else 0.0
    label = f"{args.workers}x-c{args.concurrency}"
    emit(
        "fleet_daily_checks_wall",
        round(wall, 1),
        "s",
        models=args.models,
        runs=expected,
        runs_done=done,
        finished=result["finished"],
        rows_per_window=args.rows,
        workers=label,
        target=TARGET_S if args.models == 500 else None,
        met=(wall <= TARGET_S and result["finished"]) if args.models == 500 else None,
        fanout_s=round(result["fanout_s"], 1),
        first_run_s=round(result["first_run_s"], 1),
        fan_out_chunk=args.chunk,
        peer="the unchunked fan-out of issue 17 (quoted: 500 models, 2 workers, load 1.9-3.4)",
        peer_value=PEER_UNCHUNKED_S if args.models == 500 else None,
        ratio=round(PEER_UNCHUNKED_S / wall, 2) if args.models == 500 and wall else None,
    )
    emit("fleet_runs_per_second", round(rate, 2), "runs/s", workers=label)
    if args.models != 500 or not result["finished"]:
        estimate = 500 * 3 / rate if rate else None
        emit(
            "fleet_500_models_extrapolated",
            round(estimate, 1) if estimate else None,
            "s",
            extrapolated=True,
            basis=f"{done} runs of {args.models} models at {rate:.2f} runs/s",
            target=TARGET_S,
        )
    for kind, values in sorted(result["durations"].items()):
        emit(
            f"fleet_run_{kind}_median",
            round(statistics.median(values), 3),
            "s",
            p95=round(sorted(values)[int(0.95 * (len(values) - 1))], 3),
            runs=len(values),
            note="started_at to finished_at (runs claimed together share started_at): load the "
            "window, compute, commit points and alert",
        )
    busy = result["busy_s"]
    emit(
        "fleet_worker_busy_share",
        round(busy / (wall * args.workers * args.concurrency), 2) if wall else None,
        "fraction",
        tasks=result["tasks"],
        note="sum over the run tasks of claim to last finish / (wall time x worker processes)",
    )
    emit(
        "fleet_worker_cpu",
        round(result["worker_cpu_s"], 1),
        "s",
        per_run_ms=round(1000 * result["worker_cpu_s"] / max(done, 1), 1),
        note="CPU seconds of every worker process during the timed part (robust to load)",
    )
    _report_s3(args, result, done)
    emit(
        "fleet_commits",
        result["commits"],
        "transactions",
        per_run=round(result["commits"] / max(done, 1), 2),
        note="transactions committed in the bench database during the timed part "
        "(each is a WAL flush: about 5 ms here)",
    )
    succeeded = sum(v for k, v in result["statuses"].items() if k.endswith(":succeeded"))
    emit("fleet_runs_succeeded", succeeded, "runs", of=expected, outcomes=result["statuses"])
    emit("fleet_alerts", result["alerts"], "alerts", by_kind=result["alerts_by_kind"])


def _report_s3(args: argparse.Namespace, result: dict, done: int) -> None:
    """The S3 server's share of the timed part: its CPU and the requests it served."""
    if result.get("s3_server_cpu_s") is not None:
        emit(
            "fleet_s3_server_cpu",
            round(result["s3_server_cpu_s"], 1),
            "s",
            per_run_ms=round(1000 * result["s3_server_cpu_s"] / max(done, 1), 1),
            note=f"CPU seconds of {MOTO_NOTE} during the timed part",
        )
    if (requests := result.get("s3_requests")) is not None:
        total = sum(requests.values())
        emit(
            "fleet_s3_requests",
            total,
            "requests",
            per_run=round(total / max(done, 1), 1),
            per_version=round(total / max(args.models, 1), 1),
            by_kind=requests,
            note="requests the S3 server served during the timed part (its request log)",
        )


if __name__ == "__main__":
    sys.exit(main())
