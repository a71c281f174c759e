"""Request guards that apply before any view: JSON nesting depth and NUL bytes in the query.

Some API views pin their parsers (``parser_classes = [JSONParser, ...]``) and the console pages
are not DRF at all, so the depth limit is enforced here once for every JSON body; the DRF parser
(``platform_core.api.parsers``) skips a request this middleware already checked.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse

from platform_core.api.parsers import depth_error


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


class RequestGuardMiddleware:
    """400 for a JSON body nested beyond ``JSON_MAX_DEPTH`` and for NUL bytes in the URL.

    PostgreSQL refuses NUL in text, so a ``?model=%00`` or ``/models/%00/`` reaching a query was
    a 500.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path:
            return JsonResponse({"detail": "The URL must not contain NUL characters."}, status=400)
        for name, values in request.GET.lists():
            if "\x00" in name or any("\x00" in value for value in values):
                label = name.replace("\x00", "\\x00")
                return JsonResponse(
                    {
                        "detail": "Invalid input.",
                        "errors": {label: ["must not contain NUL characters"]},
                    },
                    status=400,
                )
        has_json_body = request.method in ("POST", "PUT", "PATCH", "DELETE") and _is_json(
            request.META.get("CONTENT_TYPE", "")
        )
        if has_json_body and (message := self._depth_error(request)) is not None:
            return JsonResponse({"detail": message}, status=400)
        return self.get_response(request)

    @staticmethod
    def _depth_error(request) -> str | None:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return None
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if length <= 0 or (limit is not None and length > limit):
            return None  # nothing to read, or the view answers 413 itself
        try:
            body = request.body
        except RequestDataTooBig:
            return None
        request.json_depth_checked = True
        # Undecodable bodies are the parser's to refuse, with its own message.
        text = body.decode(request.encoding or settings.DEFAULT_CHARSET, errors="replace")
        return depth_error(text) or _nul_error(text)


def _nul_error(text: str) -> str | None:
    """A NUL character in any string or key of the body: PostgreSQL stores no text with one, so
    it would reach the database as a 500. Refused here once for every JSON endpoint."""
    if "\\u0000" not in text and "\x00" not in text:
        return None  # the common case costs one scan
    try:
        stack = [json.loads(text)]
    except ValueError:
        return None  # the parser refuses it with its own message
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "JSON strings and keys must not contain NUL characters (\\u0000)."
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None
