"""Console pages at fleet scale: server time and query count of every page.

    .venv/bin/python bench/console.py [--models 100] [--versions 20] [--days 365]
                                      [--requests 40] [--database-url postgres://...]

Seeds a throwaway database (a SQLite file in a temporary var directory, or ``--database-url``,
which must point at an empty database nobody else uses: it is migrated and filled) with
``--models`` models of ``--versions`` versions each (the newest live, the three before it in warm
standby, the rest retired), a year of daily monitor runs of the six checks for the version live
that day with their metric points (20 features: 21 drift points, a fairness breakdown of four
groups, calibration bins...), alerts (most resolved, some open), incidents with running
playbooks, two engaged halts and audit events. Everything is written with ``bulk_create`` except
what only a service can write consistently (grants, incidents, audit chain). Progress goes to
stderr.

Then, signed in as an ML Lead with a global grant, each page of ``PAGES`` is requested
``--requests`` times through ``django.test.Client`` (after 3 warm-up requests): p50 and p95 of
the server time and the number of queries of one request. A page whose path does not resolve to
a console view (one not built yet) is skipped with a note on stderr.

The peer figure is the same page on a second database seeded with 1 model x 1 version x 7 days
(run in a child process of this script): time and queries should not grow with the fleet.
One JSON object per figure per line on stdout, as in the other benches:
``{"bench": "console", "page": ..., "value": p50, "unit": "ms", "p95": ..., "queries": ...,
"peer": ..., "peer_value": ..., "peer_p95": ..., "peer_queries": ..., ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO))

TARGET_P95_MS = 150.0
FEATURES = [f"feature_{i:02d}" for i in range(20)]
GROUPS = ["north", "south", "east", "west"]
CHECKS = [
    "data_drift",
    "prediction_drift",
    "fairness",
    "concept_drift",
    "calibration",
    "label_drift",
]
BENCH_USER = "bench-lead"
# (name, path template): the path is resolved before any request; {model}, {version} and
# {incident} are filled from the seeded data.
PAGES = [
    ("overview", "/console/"),
    ("overview-rows", "/console/overview/rows/"),
    ("alerts", "/console/alerts/"),
    ("halts", "/console/halts/"),
    ("model", "/console/models/{model}/"),
    ("model-series", "/console/models/{model}/series.json"),
    ("version", "/console/models/{model}/versions/{version}/"),
    ("documentation", "/console/models/{model}/versions/{version}/documentation/"),
    # the same page with the audit chain's verification cache emptied before each request (every
    # event walked, as every build did before the cache), and holding a prefix 100 events below
    # the head (what a build walks when 100 events were recorded since the last one)
    ("documentation-uncached", "/console/models/{model}/versions/{version}/documentation/"),
    ("documentation-incremental", "/console/models/{model}/versions/{version}/documentation/"),
    ("incident", "/console/incidents/{incident}/"),
    ("work", "/console/work/"),
    ("audit", "/console/audit/"),
]


def note(message: str) -> None:
    print(f"[console bench {time.monotonic() - STARTED:6.1f}s] {message}", file=sys.stderr)


STARTED = time.monotonic()


def points_for(kind: str, day: int) -> list[tuple[str, str, str, float]]:
    """The points a run of ``kind`` keeps (shaped like monitoring/checks.py's)."""
    wobble = (day % 17) / 100
    if kind == "data_drift":
        rows = [("psi", f, "", 0.02 + wobble + i / 1000) for i, f in enumerate(FEATURES)]
        return [*rows, ("max_psi", "", "", 0.06 + wobble)]
    if kind == "fairness":
        rows = [("equalized_odds_difference", "area", "", 0.04 + wobble)]
        rows.append(("demographic_parity_difference", "area", "", 0.03 + wobble))
        for g in GROUPS:
            rows += [
                ("fpr", "area", f"area={g}", 0.1 + wobble),
                ("fnr", "area", f"area={g}", 0.2 - wobble),
                ("n", "area", f"area={g}", 1000.0),
            ]
        return rows
    if kind == "calibration":
        bins = [("bin_gap", "", f"bin={b}", 0.01 + wobble / 10) for b in range(10)]
        return [("ece", "", "", 0.02 + wobble / 10), ("p_value", "", "", 0.4), *bins]
    if kind == "concept_drift":
        return [("auc", "", "", 0.8 - wobble / 10), ("relative_drop", "", "", wobble / 10)]
    return [("statistic", "", "", 0.05 + wobble), ("p_value", "", "", 0.3)]


@dataclass
class Fleet:
    """The seeded models, their versions (oldest first) and monitoring policies by model id."""

    registered: list
    by_model: dict[int, list]
    policies: dict[int, object]
    first_day: datetime


def seed(models: int, versions: int, days: int) -> dict:
    """Fill the database; return what the page paths need."""
    from governance import services
    from governance.audit import Actor
    from monitoring.models import Alert

    system = Actor.system("bench/console.py")
    services.role_grant(username=BENCH_USER, roles=["ml_lead"], actor=system)
    services.role_grant(username="bench-engineer", roles=["ml_engineer"], actor=system)
    fleet = seed_fleet(models, versions, days)
    note(f"{models * days * len(CHECKS):,} monitor runs with their metric points")
    total_points, alerts = seed_runs(fleet, versions, days)
    Alert.objects.bulk_create(alerts, batch_size=2000)
    note(f"{len(alerts):,} alerts, incidents on every tenth model, two halts")
    incident = seed_incidents_and_halts(fleet, system)
    seed_audit(fleet.registered, system)
    target = fleet.registered[0]
    return {
        "model": target.name,
        "version": fleet.by_model[target.pk][-1].version,
        "incident": incident.pk if incident else 0,
        "metric_points": total_points,
        "runs": models * days * len(CHECKS),
    }


def seed_fleet(models: int, versions: int, days: int) -> Fleet:
    """The models, their versions with model cards and lifecycles, and their policies."""
    from governance.models import Lifecycle
    from monitoring.models import MonitoringPolicy
    from monitoring.policies import MONITORING
    from registry.models import ModelCard, ModelVersion, RegisteredModel

    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first_day = today - timedelta(days=days)
    note(f"{models} models x {versions} versions")
    registered = RegisteredModel.objects.bulk_create(
        RegisteredModel(name=f"model-{m:03d}", description="bench model") for m in range(models)
    )
    all_versions = ModelVersion.objects.bulk_create(
        version_rows(registered, versions, days, first_day), batch_size=2000
    )
    ModelCard.objects.bulk_create(
        (ModelCard(version=v, intended_use="Benchmark") for v in all_versions), batch_size=2000
    )
    lifecycles = []
    for v in all_versions:
        age = versions - 1 - v.minor
        stage, archive = (
            ("production", "") if age == 0 else ("retired", "warm" if age <= 3 else "cold")
        )
        lifecycles.append(
            Lifecycle(version=v, stage=stage, archive=archive, stage_entered_at=v.created_at)
        )
    Lifecycle.objects.bulk_create(lifecycles, batch_size=2000)
    policies = {
        p.model_id: p
        for p in MonitoringPolicy.objects.bulk_create(
            MonitoringPolicy(model=m, version=1, values=MONITORING.defaults()) for m in registered
        )
    }
    by_model: dict[int, list] = {}
    for v in all_versions:
        by_model.setdefault(v.model_id, []).append(v)
    return Fleet(registered, by_model, policies, first_day)


def version_rows(registered: list, versions: int, days: int, first_day: datetime) -> list:
    """``versions`` unsaved versions of each model, spread over the period."""
    from django.contrib.auth import get_user_model

    from registry.models import ModelVersion

    engineer = get_user_model().objects.get(username="bench-engineer")
    rows = []
    for model in registered:
        for v in range(versions):
            rows.append(
                ModelVersion(
                    model=model,
                    version=f"1.{v}.0",
                    major=1,
                    minor=v,
                    patch=0,
                    mlflow_name=model.name,
                    mlflow_version=str(v + 1),
                    artifact_uri=f"models:/{model.name}/{v + 1}",
                    artifact_digest=f"sha256:{model.pk:032x}{v:032x}",
                    flavor="sklearn",
                    training_data_hash="sha256:" + "ab" * 32,
                    training_data_start=date(2025, 1, 1),
                    training_data_end=date(2025, 12, 31),
                    feature_list=FEATURES,
                    feature_types=dict.fromkeys(FEATURES, "number"),
                    thresholds={"decision": 0.5},
                    metrics={"auc": 0.8},
                    responsible_engineer=engineer,
                    created_at=first_day + timedelta(days=v * days // versions),
                )
            )
    return rows


def seed_runs(fleet: Fleet, versions: int, days: int) -> tuple[int, list]:
    """Every model's daily runs with their metric points; (points stored, unsaved alerts)."""
    models = len(fleet.registered)
    total_points = 0
    alerts = []
    for index, model in enumerate(fleet.registered):
        runs, points = store_runs(fleet, model, versions, days)
        total_points += points
        alerts += alerts_for(index, model, runs, days)
        if (index + 1) % max(1, models // 10) == 0 or index + 1 == models:
            note(f"  {index + 1}/{models} models, {total_points:,} metric points")
    return total_points, alerts


def store_runs(fleet: Fleet, model, versions: int, days: int) -> tuple[list, int]:
    """One model's runs of every check each day, for the version live that day, and their
    points, in one transaction; (the stored runs, day by day, the number of points)."""
    from django.db import transaction

    from monitoring.models import MetricPoint, MonitorRun
    from monitoring.runs import metric_points

    mine = fleet.by_model[model.pk]
    runs = []
    for day in range(days):
        version = mine[min(day * versions // days, versions - 1)]
        start = fleet.first_day + timedelta(days=day)
        for kind in CHECKS:
            runs.append(
                MonitorRun(
                    model=model,
                    version=version,
                    kind=kind,
                    window_start=start - timedelta(days=7),
                    window_end=start + timedelta(days=1),
                    policy=fleet.policies[model.pk],
                    status="succeeded",
                    rows=5000,
                    created_at=start + timedelta(days=1),
                    finished_at=start + timedelta(days=1, minutes=1),
                )
            )
    with transaction.atomic():
        runs = MonitorRun.objects.bulk_create(runs, batch_size=5000)
        points = [
            point
            for day, run in enumerate(runs)
            for point in metric_points(run, points_for(run.kind, day // len(CHECKS)))
        ]
        MetricPoint.objects.bulk_create(points, batch_size=5000)
    return runs, len(points)


def alerts_for(index: int, model, runs: list, days: int) -> list:
    """An alert every 30 days (resolved), the last ones open: data drift, and on every tenth
    model a critical fairness alert."""
    from monitoring.models import Alert

    alerts = []
    for i, run in enumerate(runs):
        day, kind = divmod(i, len(CHECKS))
        recent = day >= days - 3
        if not (
            (kind == 0 and (day % 30 == 29 or recent)) or (kind == 2 and recent and index % 10 == 0)
        ):
            continue
        alerts.append(
            Alert(
                run=run,
                model=model,
                version=run.version,
                kind=run.kind,
                severity="critical" if run.kind == "fairness" else "medium",
                metric="max_psi" if run.kind == "data_drift" else "equalized_odds_difference",
                value=0.31,
                threshold=0.2,
                window_start=run.window_start,
                window_end=run.window_end,
                status="open" if recent else "resolved",
                created_at=run.finished_at,
            )
        )
    return alerts


def seed_incidents_and_halts(fleet: Fleet, system):
    """An incident on every tenth model (through the service) and two halts; the last incident."""
    from django.db import transaction

    from incidents.models import IncidentKind
    from incidents.services import incident_open
    from registry.models import RegisteredModel
    from serving.models import Halt

    incident = None
    for index, model in enumerate(fleet.registered):
        if index % 10:
            continue
        with transaction.atomic():
            RegisteredModel.objects.select_for_update().get(pk=model.pk)
            incident = incident_open(
                model=model,
                kind=IncidentKind.FAIRNESS,
                severity="critical",
                title=f"Fairness breach on {model.name}",
                version=fleet.by_model[model.pk][-1],
                actor=system,
                message="bench",
            )
    for model in fleet.registered[1:3]:
        Halt.objects.create(scope=model.name, reason="bench halt", engaged_by_label="bench")
    return incident


def seed_audit(registered: list, system) -> None:
    """Up to 10,000 audit events (100 per model), in the chain."""
    from django.db import transaction

    from governance import audit

    models = len(registered)
    events = min(10_000, models * 100)
    note(f"{events:,} audit events")
    with transaction.atomic():
        for i in range(events):
            audit.record(
                actor=system,
                action="bench.event",
                object_type="model",
                object_id=str(i),
                model_name=registered[i % models].name,
                after={"i": i},
            )


def _forget_verified() -> None:
    from governance import audit

    audit.forget_verified()


def _verified_but_the_last_100() -> None:
    from governance import audit
    from governance.models import AuditChainHead

    audit.forget_verified()
    head = AuditChainHead.objects.get(pk=1).seq
    audit.verify_through(max(1, head - 100))


# Run before each request of the page (not timed).
PREPARE = {
    "documentation-uncached": _forget_verified,
    "documentation-incremental": _verified_but_the_last_100,
}


def measure(context: dict, requests: int, profile_dir: str = "") -> dict[str, dict]:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.urls import Resolver404, resolve

    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(get_user_model().objects.get(username=BENCH_USER))
    figures: dict[str, dict] = {}
    for name, template in PAGES:
        path = template.format(**context)
        try:
            match = resolve(path)
        except Resolver404:
            match = None
        if match is None or match.namespace != "console":
            note(f"skipped {name}: {path} is not a console page in this checkout")
            continue
        prepare = PREPARE.get(name, lambda: None)
        for _ in range(3):
            prepare()
            response = client.get(path)
        if response.status_code != 200:
            note(f"skipped {name}: {path} answered {response.status_code}")
            continue
        executed = []

        def count(execute, sql, params, many, context, executed=executed):
            executed.append(sql)
            return execute(sql, params, many, context)

        prepare()
        with connection.execute_wrapper(count):
            client.get(path)
        timings, cpu = [], []
        for _ in range(requests):
            prepare()
            started, started_cpu = time.perf_counter(), time.process_time()
            client.get(path)
            timings.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - started_cpu) * 1000)
        if profile_dir:
            profile(client, path, requests, Path(profile_dir) / f"{name}.txt", prepare)
        figures[name] = {
            "path": path,
            "value": round(statistics.median(timings), 1),
            "p95": round(statistics.quantiles(timings, n=20, method="inclusive")[18], 1),
            "queries": len(executed),
            # CPU time of this process (SQLite runs in it): what the page costs whatever else
            # the machine is doing; the wall time above includes waiting for a core.
            "cpu_p50": round(statistics.median(cpu), 1),
            "cpu_p95": round(statistics.quantiles(cpu, n=20, method="inclusive")[18], 1),
        }
    return figures


def profile(client, path: str, requests: int, out: Path, prepare=lambda: None) -> None:
    """Write where ``requests`` requests of ``path`` spend their time (cumulative, then own)."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    for _ in range(requests):
        prepare()
        profiler.enable()
        client.get(path)
        profiler.disable()
    text = io.StringIO()
    text.write(f"{path}: {requests} requests\n\n== the project's own functions, cumulative ==\n")
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(
        "^" + re.escape(str(REPO)) + r"/(?!\.venv/)", 40
    )
    text.write("\n== everything, by own time ==\n")
    pstats.Stats(profiler, stream=text).strip_dirs().sort_stats("tottime").print_stats(30)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text.getvalue())


def run(args) -> dict:
    """Seed and measure in this process (its settings come from the environment set by main)."""
    import django

    django.setup()
    from django.core.management import call_command

    note("migrating")
    call_command("migrate", verbosity=0)
    saved = Path(os.environ["GOVERNANCE_VAR_DIR"]) / "console-bench-context.json"
    if args.var_dir and saved.exists():
        context = json.loads(saved.read_text())
        note(f"reusing the database seeded in {args.var_dir}")
    else:
        started = time.perf_counter()
        context = seed(args.models, args.versions, args.days)
        context["seed_s"] = round(time.perf_counter() - started, 1)
        if args.var_dir:
            saved.write_text(json.dumps(context))
    note(f"seeded in {context['seed_s']:.0f} s; measuring {args.requests} requests per page")
    return {**context, "pages": measure(context, args.requests, args.profile_dir)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--versions", type=int, default=20)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--database-url", default="", help="an empty throwaway database")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument(
        "--var-dir",
        default="",
        help="keep the seeded SQLite database in this directory and reuse it on the next run "
        "(the scale arguments must match; delete the directory to reseed)",
    )
    parser.add_argument(
        "--profile-dir",
        default="",
        help="also profile each page (cProfile, --requests requests) and write a summary per page",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def set_environment(args: argparse.Namespace) -> Path:
    """Settings of this process and its child: the var directory (made) and the database."""
    if args.var_dir:
        workdir = Path(args.var_dir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="console-bench-"))
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings.dev",
        DJANGO_DEBUG="false",
        GOVERNANCE_VAR_DIR=str(workdir),
        MLFLOW_DISABLE_TELEMETRY="true",
        AUDIT_HMAC_KEY="console-bench-audit-key-not-a-secret-0123456789",
    )
    os.environ.pop("CELERY_BROKER_URL", None)  # enqueues stay in the temporary var directory
    if args.database_url:
        os.environ["DATABASE_URL"] = args.database_url
    else:
        os.environ.pop("DATABASE_URL", None)
    return workdir


def measure_peer(requests: int) -> dict:
    """The pages' figures on 1 model x 1 version x 7 days, from a child process (SQLite)."""
    note("peer: 1 model x 1 version x 7 days (child process)")
    child = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            "--models",
            "1",
            "--versions",
            "1",
            "--days",
            "7",
            "--requests",
            str(requests),
        ],
        env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return json.loads(child.stdout.strip().splitlines()[-1])["pages"]


def report(args: argparse.Namespace, ours: dict, peer: dict) -> None:
    """One JSON line per page, with the peer's figures beside, then the seeding time."""
    scale = {
        "models": args.models,
        "versions": args.versions,
        "days": args.days,
        "runs": ours["runs"],
        "metric_points": ours["metric_points"],
        "requests": args.requests,
        "database": "postgresql" if args.database_url else "sqlite",
    }
    for name, figure in ours["pages"].items():
        line = {
            "bench": "console",
            "page": name,
            "value": figure["value"],
            "unit": "ms",
            "p95": figure["p95"],
            "queries": figure["queries"],
            "cpu_p50": figure["cpu_p50"],
            "cpu_p95": figure["cpu_p95"],
            "target_p95_ms": TARGET_P95_MS,
            "peer": "same page, 1 model x 1 version x 7 days (SQLite)",
            "peer_value": peer.get(name, {}).get("value"),
            "peer_p95": peer.get(name, {}).get("p95"),
            "peer_queries": peer.get(name, {}).get("queries"),
            "peer_cpu_p50": peer.get(name, {}).get("cpu_p50"),
            "path": figure["path"],
            **scale,
            "load1": round(os.getloadavg()[0], 2),
        }
        print(json.dumps(line), flush=True)
    print(
        json.dumps({"bench": "console.seed", "value": ours["seed_s"], "unit": "s", **scale}),
        flush=True,
    )


def main() -> None:
    args = parse_args()
    workdir = set_environment(args)
    try:
        if args.child:
            print(json.dumps(run(args)))
            return
        peer = {} if args.no_peer else measure_peer(args.requests)
        report(args, run(args), peer)
    finally:
        if not args.var_dir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
