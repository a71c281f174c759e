"""JSON bodies with a nesting limit, checked without recursion before anything parses them.

``json.loads`` and every serializer after it recurse once per level: a body nested 3000 deep
ended in ``RecursionError`` (a 500). The depth is measured on the text itself (strings removed,
then a running sum over the brackets), so the check cannot itself overflow the stack.
"""

from __future__ import annotations

import io
import re

import numpy as np
from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# A JSON string literal (escapes included); the unrolled form keeps the regex linear.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_OPEN = np.frombuffer(b"[{", dtype=np.uint8)


def max_depth() -> int:
    return int(getattr(settings, "JSON_MAX_DEPTH", 32))


def json_depth(text: str) -> int:
    """How deep arrays and objects nest in ``text`` (0 for a scalar), counted iteratively."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    if not brackets:
        return 0
    codes = np.frombuffer(brackets.encode("ascii"), dtype=np.uint8)
    steps = np.where(np.isin(codes, _OPEN), 1, -1)
    return int(np.cumsum(steps).max())


def depth_error(text: str) -> str | None:
    """The message for a body nested beyond ``JSON_MAX_DEPTH``, or None when it is within."""
    limit = max_depth()
    # A body with fewer brackets than the limit cannot exceed it: skip the scan.
    if text.count("[") + text.count("{") <= limit:
        return None
    if json_depth(text) <= limit:
        return None
    return (
        f"JSON parse error - the body nests arrays or objects deeper than {limit} levels "
        "(JSON_MAX_DEPTH)."
    )


class DepthLimitedJSONParser(JSONParser):
    """DRF's JSON parser, refusing bodies nested deeper than ``JSON_MAX_DEPTH`` with a 400."""

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        if stream is None:
            return super().parse(stream, media_type, parser_context)
        raw = stream.read()
        request = parser_context.get("request")
        django_request = getattr(request, "_request", None)
        if not getattr(django_request, "json_depth_checked", False):
            encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
            try:
                text = raw.decode(encoding)
            except (UnicodeDecodeError, LookupError) as exc:
                raise ParseError(f"JSON parse error - the body is not valid {encoding}") from exc
            if message := depth_error(text):
                raise ParseError(message)
        return super().parse(io.BytesIO(raw), media_type, parser_context)
