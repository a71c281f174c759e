"""``bench/feedback.py`` still runs against the check it measures and finds the runaway loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_feedback_bench_measures_the_check_and_its_peer_on_a_small_window():
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    env.setdefault("AUDIT_HMAC_KEY", "bench-test-key")
    out = subprocess.run(
        [sys.executable, "bench/feedback.py", "--rows", "40000", "--cells", "50", "--repeats", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (figure,) = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert figure["bench"] == "feedback_loop_check" and figure["fired"] is True
    assert figure["value"] > 0 and figure["peer_value"] > 0 and figure["ratio"] > 1.5
