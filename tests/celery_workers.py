"""Real Celery workers for the end-to-end tests: a separate process that reads this test's
committed PostgreSQL database, Redis broker, var dir, MLflow store and artifact cache.

The command line, start-up wait and stop are the benches' (``bench/_common.py``), so a test and
a benchmark start the same worker.
"""

from __future__ import annotations

import os

import pytest
from django.conf import settings
from django.db import connection

from bench._common import start_worker, stop_workers, wait_ready

__all__ = ["broker_url", "database_url", "start_worker", "stop_workers", "wait_ready"]


def database_url() -> str:
    """The committed test database, as a URL for a worker process."""
    params = connection.settings_dict
    password = f":{params['PASSWORD']}" if params.get("PASSWORD") else ""
    host = params.get("HOST") or "127.0.0.1"
    port = params.get("PORT") or 5432
    return f"postgres://{params['USER']}{password}@{host}:{port}/{params['NAME']}"


def broker_url() -> str:
    """The Redis broker the workers read; skips the test without one."""
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if not broker.startswith("redis://"):
        pytest.skip("needs CELERY_BROKER_URL=redis://... (bin/test sets it for the PostgreSQL run)")
    return broker


def worker_environment(**extra: str) -> dict[str, str]:
    """The process environment of a worker that sees what this test sees (its audit events link
    with ours: same key and checkpoint directory)."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    return {
        **env,
        "DJANGO_SETTINGS_MODULE": "config.settings.dev",
        "DJANGO_DEBUG": "false",
        "DATABASE_URL": database_url(),
        "GOVERNANCE_VAR_DIR": str(settings.VAR_DIR),
        "AUDIT_HMAC_KEY": settings.AUDIT_HMAC_KEY,
        "AUDIT_CHECKPOINT_DIR": str(settings.AUDIT_CHECKPOINT_DIR),
        "CELERY_BROKER_URL": broker_url(),
        "MLFLOW_TRACKING_URI": settings.MLFLOW_TRACKING_URI,
        "MLFLOW_REGISTRY_URI": settings.MLFLOW_REGISTRY_URI,
        "MLFLOW_ARTIFACT_ROOT": str(settings.MLFLOW_ARTIFACT_ROOT),
        "ARTIFACT_CACHE_DIR": str(settings.ARTIFACT_CACHE_DIR),
        "LOG_LEVEL": "WARNING",
        **extra,
    }
