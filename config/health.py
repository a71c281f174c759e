"""Liveness (``/healthz``: the process answers) and readiness (``/readyz``: each dependency).

An anonymous caller (a load balancer) learns ready or not, nothing else: model names, versions,
digests and the dependencies' error messages are for authenticated staff or a probe holding
``READYZ_DETAIL_TOKEN``. One result is reused for ``READYZ_CACHE_SECONDS`` and computed by one
caller at a time (single flight), so a burst of probes costs one run of the checks, and only a
detailed probe builds routes (loads models) on a cold worker.
"""

from __future__ import annotations

import hmac
import threading
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


_lock = threading.Lock()
_results: dict[bool, tuple[float, bool, dict]] = {}


def _compute(detailed: bool) -> tuple[bool, dict]:
    checks = {"database": _timed(_database), "broker": _timed(_broker), "mlflow": _timed(_mlflow)}
    ready = all(c["ok"] for c in checks.values())
    if not detailed:
        return ready, {}
    try:
        models = _serving()
    except Exception as exc:  # the gateway's state is reported, never allowed to break readiness
        models = {"error": f"{type(exc).__name__}: {exc}"}
    return ready, {"checks": checks, "models": models}


def _result(detailed: bool) -> tuple[bool, dict]:
    """The readiness result, reused while fresh; one caller per process computes a new one."""
    ttl = float(getattr(settings, "READYZ_CACHE_SECONDS", 5.0))

    def fresh():
        hit = _results.get(detailed)
        return hit if hit is not None and time.monotonic() - hit[0] < ttl else None

    if (hit := fresh()) is not None:
        return hit[1], hit[2]
    with _lock:  # the others wait here and take the result the first one computed
        if (hit := fresh()) is not None:
            return hit[1], hit[2]
        ready, body = _compute(detailed)
        _results[detailed] = (time.monotonic(), ready, body)
        if not detailed:  # a detailed run also answers the bare question
            return ready, body
        _results[False] = (time.monotonic(), ready, {})
        return ready, body


def clear_cache() -> None:
    with _lock:
        _results.clear()


def may_see_details(request) -> bool:
    """Staff holding a global role (the details name every model), superusers, or a probe
    sending the configured bearer token."""
    token = getattr(settings, "READYZ_DETAIL_TOKEN", "")
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer "):
        return hmac.compare_digest(header[len("Bearer ") :].encode(), token.encode())
    user = getattr(request, "user", None)
    if user is None or not (user.is_authenticated and user.is_active and user.is_staff):
        return False
    if user.is_superuser:
        return True
    from governance.models import RoleGrant

    return RoleGrant.objects.filter(user=user, model__isnull=True).exists()


@require_GET
def readyz(request):
    detailed = may_see_details(request)
    ready, details = _result(detailed)
    body = {"status": "ok" if ready else "unavailable"}
    if detailed:
        from platform_core.api.errors import scrub_paths

        body.update(scrub_paths(details))
    return JsonResponse(body, status=200 if ready else 503)
