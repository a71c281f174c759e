"""Issue 10, finding 13 and "the proof": production settings refuse weak keys and pass
``check --deploy`` with no warning and nothing silenced."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from config.secret_key import weak_key_reason

ROOT = Path(__file__).resolve().parents[2]


def run_manage(key: str, *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    # DJANGO_ALLOW_ASYNC_UNSAFE: the browser harness sets it in this process (tests/browser)
    dropped = {"DATABASE_URL", "CELERY_BROKER_URL", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"}
    dropped.add("DJANGO_ALLOW_ASYNC_UNSAFE")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env |= {
        "DJANGO_SETTINGS_MODULE": "config.settings.prod",
        "DJANGO_SECRET_KEY": key,
        "AUDIT_HMAC_KEY": secrets.token_urlsafe(48),
        "GOVERNANCE_VAR_DIR": str(tmp_path),
        "DJANGO_STATIC_ROOT": str(tmp_path / "static"),
    }
    return subprocess.run(
        [sys.executable, "-m", "django", "check", *args],
        cwd=ROOT,
        env=env | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "key",
    [
        "",
        "short-but-random-" + secrets.token_urlsafe(8),
        "a" * 50,
        "ab" * 40,
        "abcde" * 12,
        "django-insecure-" + secrets.token_urlsafe(64),
    ],
)
def test_weak_secret_keys_are_refused(key):
    assert weak_key_reason(key) is not None


@pytest.mark.parametrize(
    "key",
    [
        secrets.token_urlsafe(64),
        secrets.token_hex(32),
        "".join(
            secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789!@#$%^&*(-_=+)") for _ in range(50)
        ),
    ],
)
def test_random_secret_keys_are_accepted(key):
    assert weak_key_reason(key) is None


def test_prod_settings_refuse_to_load_with_a_low_entropy_key(tmp_path):
    done = run_manage("a" * 50, tmp_path=tmp_path)
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr and "not random enough" in done.stderr


@pytest.mark.slow
def test_check_deploy_with_the_production_settings_is_clean(tmp_path):
    done = run_manage(
        secrets.token_urlsafe(64), "--deploy", "--fail-level", "WARNING", tmp_path=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues (0 silenced)." in done.stdout
