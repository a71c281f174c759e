"""Set-up shared by the benches that need a database of their own and a logged, registered model.

Imported as ``bench._common`` (the repository on ``sys.path``) or as ``_common`` (``bench/`` on
it, as ``bench/fleet.py`` has it): plain functions, Django and MLflow imported only when called.
"""

from __future__ import annotations

# The PostgreSQL server on which the benches that need one create (and drop) their database.
ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"


# --- output ---------------------------------------------------------------------------------------


def emit(bench: str, value, unit: str, peer=None, peer_value=None, **extra) -> None:
    """One figure as a JSON line on stdout (what bench/README.md's tables quote), with the
    machine's one-minute load unless the figure names its own."""
    import json
    import os

    line = {"bench": bench, "value": value, "unit": unit, "peer": peer, "peer_value": peer_value}
    line.update(extra)
    line.setdefault("load1", round(os.getloadavg()[0], 2))
    print(json.dumps(line), flush=True)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile of ``values`` (NaN for none)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wsgi_post(app, path: str, body: bytes, *, host: str = "testserver", **environ) -> tuple:
    """POST ``body`` (JSON) straight into the WSGI ``app``, no server and no network: the
    gateway's entry as gunicorn calls it. ``environ`` adds or overrides keys (headers as
    ``HTTP_*``). Returns (status line, headers, body)."""
    import io
    import sys

    env = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": host,
        "SERVER_PORT": "80",
        "HTTP_HOST": host,
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        **environ,
    }
    got = []
    chunks = app(env, lambda status, headers: got.append((status, headers)))
    data = b"".join(chunks)
    if hasattr(chunks, "close"):
        chunks.close()
    status, headers = got[0]
    return status, headers, data


# --- databases and models -------------------------------------------------------------------------


def create_database(admin_url: str, name: str) -> str:
    """A new, empty PostgreSQL database next to ``admin_url``'s; its URL."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{admin_url.rsplit('/', 1)[0]}/{name}"


def drop_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def log_model(name: str, seed: int, *, features: list[str], rows: int, run_name: str) -> str:
    """A logistic regression on ``rows`` random rows, logged to MLflow as ``name``; its URI."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from demo.mlflow_logging import log_sklearn_model
    from registry import mlflow_bridge

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, len(features))), columns=features)
    weights = rng.normal(size=len(features))
    labels = (frame.to_numpy() @ weights + rng.normal(size=rows) > 0).astype(int)
    return log_sklearn_model(
        LogisticRegression().fit(frame, labels),
        registered_name=name,
        input_example=frame.head(3),
        params={"C": 1.0},
        metrics={"auc": 0.8},
        experiment_id=mlflow_bridge.ensure_experiment(),
        run_name=run_name,
    ).uri


def register(model: str, version: str, uri: str, *, features: list[str], engineer: str, use: str):
    """Register ``uri`` as ``version`` of ``model`` (by the system actor ``bench``)."""
    from datetime import date

    from governance import services
    from governance.audit import Actor
    from registry.services import VersionSpec

    return services.version_register(
        model_name=model,
        spec=VersionSpec(
            version=version,
            mlflow_uri=uri,
            training_data_hash="sha256:" + "ab" * 32,
            training_data_start=date(2025, 1, 1),
            training_data_end=date(2025, 12, 31),
            responsible_engineer=engineer,
            feature_list=features,
            thresholds={"decision": 0.5},
            model_card={"intended_use": use, "owners": [engineer]},
        ),
        actor=Actor.system("bench"),
    )


def worker_environment(database_url: str, var: str, redis_url: str, **extra: str) -> dict:
    """The process environment of a bench and of the Celery workers it starts (dev settings)."""
    import os

    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.dev",
        "DJANGO_DEBUG": "false",
        "DATABASE_URL": database_url,
        "GOVERNANCE_VAR_DIR": var,
        "CELERY_BROKER_URL": redis_url,
        "LOG_LEVEL": "WARNING",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        **extra,
    }


# --- Celery workers started as child processes (the benches and the end-to-end tests) -----------


def start_worker(
    *, name: str, queues: str, concurrency: int, env: dict, log, loglevel: str = "WARNING"
):
    """A Celery worker of this project named ``name@<host>``, reading ``queues``, its output in
    the file ``log`` (None: its warnings and errors on this process's stderr). It gets a
    process group of its own, so that ``stop_workers`` reaches its pool children only."""
    import subprocess
    import sys
    from pathlib import Path

    command = [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queues]
    command += ["-c", str(concurrency), "--loglevel", loglevel]
    command += ["--without-gossip", "--without-mingle", "-n", f"{name}@%h"]
    return subprocess.Popen(
        command,
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        stdout=log.open("w") if log is not None else subprocess.DEVNULL,
        stderr=subprocess.STDOUT if log is not None else None,
        start_new_session=True,
    )


def wait_ready(workers: dict, timeout: float = 120) -> None:
    """Until every worker (``{name: process}``) answers a ping; RuntimeError naming the one that
    exited, or those that did not answer in time."""
    import socket
    import time

    from config.celery import app

    # Asked by node name, with a limit, a ping returns as soon as they all answer (a broadcast
    # otherwise waits out its whole timeout, a second per call).
    nodes = [f"{name}@{socket.gethostname()}" for name in workers]
    answered: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, process in workers.items():
            if process.poll() is not None:
                raise RuntimeError(f"the worker {name} exited during start-up")
        replies = app.control.ping(destination=nodes, limit=len(nodes), timeout=1.0)
        answered = {node.split("@")[0] for reply in replies for node in reply}
        if set(workers) <= answered:
            return
        time.sleep(0.25)
    raise RuntimeError(f"the workers {sorted(set(workers) - answered)} did not answer a ping")


def stop_workers(workers, timeout: float = 30) -> None:
    """SIGTERM each worker's process group (only the processes started here), SIGKILL after
    ``timeout`` seconds."""
    import contextlib
    import os
    import signal
    import subprocess

    live = [w for w in workers if w is not None]
    for worker in live:
        if worker.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGTERM)
    for worker in live:
        try:
            worker.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


def group_cpu(*pgids: int) -> float:
    """CPU seconds used so far by the live processes of these process groups (from /proc:
    a worker and its pool children, a gunicorn and its workers)."""
    import os
    from pathlib import Path

    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in pgids:  # pgrp; utime and stime follow at 11 and 12
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def mlflow_serve_command(venv_bin, model_uri: str, port: int) -> list[str]:
    """The peer the benches compare with: ``mlflow models serve`` with two workers, local env."""
    command = [str(venv_bin / "mlflow"), "models", "serve", "-m", model_uri]
    return [*command, "-h", "127.0.0.1", "-p", str(port), "-w", "2", "--env-manager", "local"]


def profiled(work, path, *, title: str) -> str:
    """Run ``work()`` under cProfile and write its summary to ``path`` (``write_profile``);
    returns the path relative to the repository, for the bench's JSON line."""
    import cProfile
    import os
    from pathlib import Path

    profiler = cProfile.Profile()
    profiler.enable()
    work()
    profiler.disable()
    write_profile(profiler, path, title=f"{title} (load1 {os.getloadavg()[0]:.2f})")
    return str(Path(path).resolve().relative_to(Path(__file__).resolve().parent.parent))


def write_profile(profiler, path, *, title: str, lines: int = 35) -> None:
    """A cProfile's summary as text beside the bench (``bench/profiles/``): by own time, then by
    cumulative time. Relative costs stay valid on a loaded machine where wall-clock figures do not.
    """
    import io
    import os
    import pstats
    from pathlib import Path

    out = io.StringIO()
    out.write(f"{title}\n\n")
    for key in ("tottime", "cumulative"):
        stats = pstats.Stats(profiler, stream=out)
        stats.strip_dirs().sort_stats(key).print_stats(lines)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if raw := os.environ.get("BENCH_PROFILE_RAW"):  # a directory for the pstats files too
        profiler.dump_stats(str(Path(raw) / f"{target.stem}.prof"))
    text = out.getvalue()
    target.write_text("\n".join(line.rstrip() for line in text.splitlines()) + "\n")
