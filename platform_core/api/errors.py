"""One error shape for the whole API: ``{"detail": ..., "errors": {field: [...]}}``.

No answer names a server path: every message passes through ``scrub_paths`` (an exception from
MLflow or the filesystem often carries the artifact store's or the cache's absolute path).
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponseServerError, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from platform_core.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    NotFound,
    Unavailable,
)

logger = logging.getLogger(__name__)

# Top-level directories of a server's filesystem; an absolute path under one is never echoed.
_ROOTS = (
    "tmp|var|home|usr|etc|opt|root|srv|app|proc|dev|mnt|run|work|lib|lib64|bin|sbin|boot|"
    "private|Users|nix|snap|data"
)
_PATH = re.compile(
    r"(?:file:/{0,2})?(?<![\w.:/])/(?:" + _ROOTS + r")(?![\w.-])(?:/[^\s'\",;:)\]}]*)?"
    r"|file:/{1,3}[^\s'\",;)\]}]+"
    r"|\b[A-Za-z]:\\[^\s'\",;)\]}]+"
)
REDACTED = "<server path>"


def _configured_roots() -> list[str]:
    roots = {str(settings.BASE_DIR), str(getattr(settings, "VAR_DIR", "")), sys.prefix}
    for name in ("MLFLOW_ARTIFACT_ROOT", "ARTIFACT_CACHE_DIR", "STATIC_ROOT"):
        value = getattr(settings, name, None)
        if value:
            roots.add(str(Path(value)))
    return sorted((r for r in roots if len(r) > 1), key=len, reverse=True)


def scrub_paths(value):
    """``value`` (a message, or lists/dicts of them) with every server path replaced."""
    if isinstance(value, str):
        for root in _configured_roots():
            value = re.sub(re.escape(root) + r"[^\s'\",;)\]}]*", REDACTED, value)
        return _PATH.sub(REDACTED, value)
    if isinstance(value, dict):
        return {key: scrub_paths(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_paths(item) for item in value]
    return value


def _scrubbed(response: Response | None) -> Response | None:
    if response is not None and isinstance(response.data, dict | list):
        response.data = scrub_paths(response.data)
    return response


_STATUS = {
    InvalidInput: status.HTTP_400_BAD_REQUEST,
    Forbidden: status.HTTP_403_FORBIDDEN,
    NotFound: status.HTTP_404_NOT_FOUND,
    Conflict: status.HTTP_409_CONFLICT,
    Unavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
}


def exception_handler(exc, context):
    return _scrubbed(_handle(exc, context))


def _handle(exc, context):
    if isinstance(exc, RequestDataTooBig):  # Django alone would answer with an HTML 400
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        detail = f"The body is larger than the {limit} bytes accepted as JSON"
        if getattr(context.get("view"), "takes_file_upload", False):
            detail += (
                "; upload the records as a CSV or Parquet file instead (multipart/form-data, "
                "field 'file')."
            )
        else:
            detail += "; send less in one request."
        return Response({"detail": detail}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, DomainError):
        code = next((s for cls, s in _STATUS.items() if isinstance(exc, cls)), 400)
        body: dict = {"detail": str(exc)}
        if isinstance(exc, InvalidInput):
            body = {"detail": "Invalid input.", "errors": exc.errors}
        if isinstance(exc, Conflict):
            body["reasons"] = exc.reasons
        return Response(body, status=code)
    if isinstance(exc, exceptions.ValidationError):
        errors = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        return Response({"detail": "Invalid input.", "errors": errors}, status=400)
    return drf_exception_handler(exc, context)


def server_error(request, *args, **kwargs):
    """Django's 500 handler: a fixed message, JSON for the API; the exception stays in the log."""
    if request.path.startswith("/api/"):
        return JsonResponse(
            {"detail": "Internal server error. It has been logged; retrying will not help."},
            status=500,
        )
    return HttpResponseServerError(
        "<!doctype html><title>Server error</title><h1>Server error (500)</h1>"
        "<p>It has been logged.</p>",
        content_type="text/html",
    )


def not_found(request, exception=None):
    """Django's 404 handler: the API's JSON error shape under /api/ (a path no route matches,
    e.g. a non-integer id), Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse(
            {"detail": f"No API endpoint or object at {request.path}: check the path and ids."},
            status=404,
        )
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)
