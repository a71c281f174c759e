"""``Idempotency-Key`` for CI POSTs: a retry with the same key gets the first response back.

The key is claimed before the view runs: a row (``in_progress``) is inserted and committed in a
transaction of its own, and the unique constraint on (user, key) lets exactly one of two concurrent
requests through. The other gets 409 with ``Retry-After`` while the first runs, and the stored
response once it is done. A request that fails (an exception, a 4xx or 5xx) releases its claim so a
retry runs again; a claim left by a crashed process expires after ``IDEMPOTENCY_CLAIM_TIMEOUT``.

The claim only protects when the view is not already inside a transaction (``ATOMIC_REQUESTS`` is
off): only then does its commit make it visible to the other request.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from functools import wraps

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response

from ..models import IdempotencyRecord

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
IN_PROGRESS_DETAIL = "a request with this Idempotency-Key is still being processed; retry later"
RETRY_AFTER_SECONDS = 2
_CLAIM_ATTEMPTS = 3

IDEMPOTENCY_HEADER = OpenApiParameter(
    HEADER,
    str,
    OpenApiParameter.HEADER,
    required=False,
    description=(
        "A retry with the same key returns the first (successful) response and changes nothing. "
        "While a request with the key still runs, another gets 409 with Retry-After; the same "
        "key with a different body is 422. A request that fails releases its key."
    ),
)


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


def _in_progress() -> Response:
    response = Response({"detail": IN_PROGRESS_DETAIL}, status=409)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def _reused(key: str) -> Response:
    return Response(
        {
            "detail": f"{HEADER} '{key}' was already used for a different request; "
            "use a new key for a new request."
        },
        status=422,
    )


def _claim(request, key: str, digest: str) -> str | Response:
    """The claim token when this request may run; otherwise the answer to give instead."""
    now = timezone.now()
    IdempotencyRecord.objects.filter(
        Q(state=IdempotencyRecord.DONE)
        | Q(claimed_at__lt=now - settings.IDEMPOTENCY_CLAIM_TIMEOUT),
        user=request.user,
        created_at__lt=now - settings.IDEMPOTENCY_TTL,
    ).delete()
    token = uuid.uuid4().hex
    for _ in range(_CLAIM_ATTEMPTS):
        try:
            with transaction.atomic():
                IdempotencyRecord.objects.create(
                    key=key,
                    user=request.user,
                    method=request.method,
                    path=request.path[:500],
                    request_digest=digest,
                    state=IdempotencyRecord.IN_PROGRESS,
                    claim=token,
                    claimed_at=now,
                )
            return token
        except IntegrityError:
            pass
        previous = IdempotencyRecord.objects.filter(user=request.user, key=key).first()
        if previous is None:
            continue  # released between our insert and this read: try to claim it again
        if previous.request_digest != digest:
            return _reused(key)
        if previous.state == IdempotencyRecord.DONE:
            response = Response(previous.body, status=previous.status_code)
            response["Idempotent-Replayed"] = "true"
            return response
        if previous.claimed_at >= now - settings.IDEMPOTENCY_CLAIM_TIMEOUT:
            return _in_progress()
        # The holder crashed (its claim is older than any request may run): take it over.
        taken = IdempotencyRecord.objects.filter(
            pk=previous.pk, state=IdempotencyRecord.IN_PROGRESS, claim=previous.claim
        ).update(claim=token, claimed_at=now)
        if taken:
            logger.warning("took over the expired claim of %s '%s'", HEADER, key)
            return token
    return _in_progress()


def _release(request, key: str, token: str) -> None:
    """Let a retry run again. If even this fails, the claim expires after the timeout."""
    try:
        IdempotencyRecord.objects.filter(
            user=request.user, key=key, claim=token, state=IdempotencyRecord.IN_PROGRESS
        ).delete()
    except Exception:
        logger.warning("could not release %s '%s'", HEADER, key, exc_info=True)


def _complete(request, key: str, token: str, response) -> None:
    try:
        stored = IdempotencyRecord.objects.filter(
            user=request.user, key=key, claim=token, state=IdempotencyRecord.IN_PROGRESS
        ).update(
            state=IdempotencyRecord.DONE,
            claim="",
            status_code=response.status_code,
            body=response.data,
        )
    except Exception:  # the change itself committed: answer it; the claim expires later
        logger.warning("could not store the response for %s '%s'", HEADER, key, exc_info=True)
        return
    if not stored:
        logger.warning("the claim of %s '%s' was taken over before it completed", HEADER, key)


def idempotent(view_method):
    """Wrap a POST (or PUT) handler. Only successful responses are kept: failures change nothing
    anyway. The wrapper documents the header itself, so every idempotent operation's schema
    names it and none can forget to; an ``@extend_schema`` above it adds to that."""

    @wraps(view_method)
    def wrapper(self, request, *args, **kwargs):
        key = request.headers.get(HEADER, "").strip()
        if not key or not request.user.is_authenticated:
            return view_method(self, request, *args, **kwargs)
        if len(key) > 200:
            return Response(
                {"detail": "Invalid input.", "errors": {HEADER: ["must be at most 200 chars"]}},
                status=400,
            )
        claimed = _claim(request, key, _digest(request))
        if isinstance(claimed, Response):
            return claimed
        try:
            response = view_method(self, request, *args, **kwargs)
        except BaseException:
            _release(request, key, claimed)
            raise
        if 200 <= response.status_code < 300:
            _complete(request, key, claimed, response)
        else:
            _release(request, key, claimed)
        return response

    return extend_schema(parameters=[IDEMPOTENCY_HEADER])(wrapper)
