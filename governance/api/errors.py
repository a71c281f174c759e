"""One error shape for the whole API: ``{"detail": ..., "errors": {field: [...]}}``."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from registry.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound, Unavailable

_STATUS = {
    InvalidInput: status.HTTP_400_BAD_REQUEST,
    Forbidden: status.HTTP_403_FORBIDDEN,
    NotFound: status.HTTP_404_NOT_FOUND,
    Conflict: status.HTTP_409_CONFLICT,
    Unavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
}


def exception_handler(exc, context):
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
