"""Links of long tables without a ``reverse()`` per row.

The overview links every model, its live version and its incidents, the alerts page every
alert's version and actions: 200-300 ``{% url %}`` tags, a third of the overview's template time
(bench/console.py, bench/profiles/). ``PathTemplate`` reverses a URL name once with placeholder
arguments and fills each row's values in, quoted the way ``reverse()`` quotes them, so the paths
are the same strings ``{% url %}`` would give (tests/console/test_paths.py compares them).
"""

from __future__ import annotations

from functools import cache
from urllib.parse import quote

from django.urls import NoReverseMatch, get_script_prefix, reverse
from django.utils.regex_helper import _lazy_re_compile

# The characters reverse() leaves unquoted (django.urls.resolvers: RFC 3986 sub-delims, "/~:@").
_SAFE = "!$&'()*+,;=" + "/~:@"
_PLACEHOLDER = "9182736{}4554637"  # digits: int and str converters take them, quote() keeps them
_SEGMENT = _lazy_re_compile(r"[^/]+\Z")  # what a <str:...> or <int:...> argument must match


class PathTemplate:
    """``reverse(name, args=...)`` for many rows: ``PathTemplate("console:model")("m-1")``."""

    def __init__(self, viewname: str, arity: int) -> None:
        self.viewname = viewname
        placeholders = [_PLACEHOLDER.format(i) for i in range(arity)]
        path = reverse(viewname, args=placeholders)
        self._parts = path.split(_PLACEHOLDER.format(0))
        for i in range(1, arity):
            head, *rest = self._parts[-1].split(_PLACEHOLDER.format(i))
            self._parts[-1:] = [head, *rest]
        if len(self._parts) != arity + 1:
            raise ValueError(f"{viewname}: each argument must appear once in its path")

    def __call__(self, *args: object) -> str:
        values = [str(a) for a in args]
        if any(not _SEGMENT.match(v) for v in values):  # what reverse() would refuse
            raise NoReverseMatch(f"{self.viewname} with arguments {values!r}")
        out = [self._parts[0]]
        for value, part in zip(values, self._parts[1:], strict=True):
            out += [quote(value, safe=_SAFE), part]
        return "".join(out)


def path_template(viewname: str, arity: int) -> PathTemplate:
    """One template per URL name and script prefix (the prefix reverse() puts in front is the
    request's; URL patterns do not change at run time)."""
    return _cached(viewname, arity, get_script_prefix())


@cache
def _cached(viewname: str, arity: int, prefix: str) -> PathTemplate:
    return PathTemplate(viewname, arity)
