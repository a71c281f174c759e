"""``bench/console.py`` still runs against the code it measures (a merge once broke it unseen)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_console_bench_measures_every_page_on_a_tiny_fleet(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    tiny = ["--models", "2", "--versions", "2", "--days", "3", "--requests", "2", "--no-peer"]
    out = subprocess.run(
        [sys.executable, "bench/console.py", *tiny],
        cwd=ROOT,
        env={**env, "GOVERNANCE_VAR_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    figures = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    measured = {f["page"] for f in figures if f.get("bench") == "console"}
    every = {"overview", "overview-rows", "alerts", "halts", "model", "model-series", "version"}
    assert every | {"incident", "work", "audit", "documentation"} <= measured
    assert all(f["queries"] > 0 and f["value"] > 0 for f in figures if "queries" in f)
