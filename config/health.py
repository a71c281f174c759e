"""Liveness (``/healthz``: the process answers) and readiness (``/readyz``: each dependency)."""

from __future__ import annotations

import time

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET


@require_GET
def healthz(request):
    return JsonResponse({"status": "ok"})


def _timed(check) -> dict:
    started = time.perf_counter()
    try:
        detail = check() or "ok"
        ok = True
    except Exception as exc:  # report, never raise: this endpoint exists to describe failures
        detail, ok = f"{type(exc).__name__}: {exc}", False
    return {"ok": ok, "detail": detail, "ms": round((time.perf_counter() - started) * 1000, 1)}


def _database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return connection.vendor


def _broker() -> str:
    from config.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        return conn.transport_cls if isinstance(conn.transport_cls, str) else "connected"


def _mlflow() -> str:
    from registry import mlflow_bridge

    mlflow_bridge.ping()
    return settings.MLFLOW_TRACKING_URI.split("://")[0]


def _serving() -> dict:
    from serving.readiness import serving_status

    return serving_status(load=True)


@require_GET
def readyz(request):
    checks = {"database": _timed(_database), "broker": _timed(_broker), "mlflow": _timed(_mlflow)}
    ready = all(c["ok"] for c in checks.values())
    try:
        models = _serving()
    except Exception as exc:  # the gateway's state is reported, never allowed to break readiness
        models = {"error": f"{type(exc).__name__}: {exc}"}
    return JsonResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks, "models": models},
        status=200 if ready else 503,
    )
