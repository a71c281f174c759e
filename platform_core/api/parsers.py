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
# The fast path works on UTF-8 bytes: every byte but brackets, quotes and backslashes is deleted
# in one C pass (a multi-byte character's bytes are all >= 0x80, never one of those), and the
# string literals are cut out of the few marks left instead of the whole body.
_MARKS = b'[]{}"\\'
_NOT_MARK = bytes(sorted(set(range(256)) - set(_MARKS)))


def max_depth() -> int:
    return int(getattr(settings, "JSON_MAX_DEPTH", 32))


def json_depth(text: str) -> int:
    """How deep arrays and objects nest in ``text`` (0 for a scalar), counted iteratively."""
    marks = text.encode("utf-8", "surrogatepass").translate(None, _NOT_MARK)
    if b"\\" not in marks:
        # No escapes: a string literal is a quote, anything but a quote, a quote; what lies
        # outside them is every other piece between quotes (and the tail of an unclosed one).
        # Usually no string holds a bracket: every pair of quotes is adjacent among the marks.
        brackets = marks.replace(b'""', b"")
        if b'"' in brackets:
            pieces = marks.split(b'"')
            outside = pieces[::2] if len(pieces) % 2 else [*pieces[::2], pieces[-1]]
            brackets = b"".join(outside)
    else:  # an escaped quote or backslash inside a string: the full scan of the text
        brackets = _NOT_BRACKET.sub("", _STRING.sub("", text)).encode("ascii")
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where((codes == _OPEN[0]) | (codes == _OPEN[1]), 1, -1)
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
