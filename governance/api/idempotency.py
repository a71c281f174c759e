"""``Idempotency-Key`` for CI POSTs: a retry with the same key gets the first response back."""

from __future__ import annotations

import hashlib
import json
from functools import wraps

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.response import Response

from ..models import IdempotencyRecord

HEADER = "Idempotency-Key"


def _digest(request) -> str:
    """Method, path, body and the bytes of any uploaded file: a different file is a new request."""
    data = request.data
    fields = (
        {k: v for k, v in data.items() if k not in request.FILES}
        if hasattr(data, "items")
        else data
    )
    digest = hashlib.sha256(f"{request.method} {request.path}\n".encode())
    digest.update(json.dumps(fields, sort_keys=True, default=str).encode())
    for name in sorted(request.FILES):
        upload = request.FILES[name]
        digest.update(f"\n{name}:".encode())
        for chunk in upload.chunks():
            digest.update(chunk)
        upload.seek(0)
    return digest.hexdigest()


def idempotent(view_method):
    """Wrap a POST handler. Only successful responses are kept: failures change nothing anyway."""

    @wraps(view_method)
    def wrapper(self, request, *args, **kwargs):
        key = request.headers.get(HEADER, "").strip()
        if not key:
            return view_method(self, request, *args, **kwargs)
        if len(key) > 200:
            return Response(
                {"detail": "Invalid input.", "errors": {HEADER: ["must be at most 200 chars"]}},
                status=400,
            )
        digest = _digest(request)
        fresh_after = timezone.now() - settings.IDEMPOTENCY_TTL
        IdempotencyRecord.objects.filter(user=request.user, created_at__lt=fresh_after).delete()
        previous = IdempotencyRecord.objects.filter(user=request.user, key=key).first()
        if previous is not None:
            if previous.request_digest != digest:
                return Response(
                    {
                        "detail": f"{HEADER} '{key}' was already used for a different request; "
                        "use a new key for a new request."
                    },
                    status=422,
                )
            response = Response(previous.body, status=previous.status_code)
            response["Idempotent-Replayed"] = "true"
            return response
        response = view_method(self, request, *args, **kwargs)
        if 200 <= response.status_code < 300:
            try:
                with transaction.atomic():
                    IdempotencyRecord.objects.create(
                        key=key,
                        user=request.user,
                        method=request.method,
                        path=request.path[:500],
                        request_digest=digest,
                        status_code=response.status_code,
                        body=response.data,
                    )
            except IntegrityError:
                pass  # a concurrent retry stored it first; both responses describe the same result
        return response

    return wrapper
