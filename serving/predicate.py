"""The predicate of a scoped halt: which requests of one model a halt refuses.

A predicate is one comparison over one request field, stored as JSON::

    {"field": "population_density", "op": "gt", "value": 5000}
    {"field": "sensitive.neighbourhood", "op": "in", "value": ["harbour"]}

``field`` is a feature of the model's serving version (a number in every instance) or
``sensitive.<attribute>``, a sensitive attribute the request carries beside the instances
(``"sensitive": [{...}, ...]``; a string or a number). ``op`` is one of ``in``, ``not_in``, ``eq``,
``lt``, ``le``, ``gt``, ``ge``, ``between`` (both ends included). ``Where.text`` renders it for
people (``population_density > 5000``, ``sensitive.neighbourhood in {"harbour"}``);
``parse_where`` reads that form back (the ``--where`` of ``manage.py halt`` and the console).

Evaluation is fail-closed: an instance whose field is missing or of the wrong type cannot be
evaluated and is refused with the matching ones, never served by mistake.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from platform_core.errors import InvalidInput

SENSITIVE_PREFIX = "sensitive."
OPS = ("in", "not_in", "eq", "lt", "le", "gt", "ge", "between")
_SYMBOLS = {"eq": "==", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
MAX_VALUES = 100
_MISSING = object()


MAX_TEXT = 200  # characters of a field name or a string value


def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool); an int too large for a float is not one."""
    if type(value) is float:
        return math.isfinite(value)
    return type(value) is int and -(2**1023) < value < 2**1023


def _number(value: int | float) -> int | float:
    """One spelling per number (5000 and 5000.0 are the same predicate, hence the same halt)."""
    as_float = float(value)
    return int(as_float) if as_float.is_integer() and abs(as_float) < 2**53 else as_float


def _literal(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


@dataclass(frozen=True)
class Where:
    """A validated predicate, normalised (sets sorted, numbers in one spelling)."""

    field: str
    op: str
    value: Any  # a scalar; a tuple for in / not_in; (low, high) for between

    @property
    def attribute(self) -> str | None:
        """The sensitive attribute it reads, or None for a feature."""
        return self.field[len(SENSITIVE_PREFIX) :] if self.is_sensitive else None

    @property
    def is_sensitive(self) -> bool:
        return self.field.startswith(SENSITIVE_PREFIX)

    def to_dict(self) -> dict[str, Any]:
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {"field": self.field, "op": self.op, "value": value}

    @property
    def key(self) -> str:
        """The halt's identity among the model's scoped halts (sha256 of the canonical JSON)."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def text(self) -> str:
        if self.op in ("in", "not_in"):
            values = ", ".join(_literal(v) for v in self.value)
            return f"{self.field} {'in' if self.op == 'in' else 'not in'} {{{values}}}"
        if self.op == "between":
            low, high = self.value
            return f"{self.field} between {_literal(low)} and {_literal(high)}"
        return f"{self.field} {_SYMBOLS[self.op]} {_literal(self.value)}"

    @cached_property
    def _test(self) -> Callable[[Any], bool | None]:
        return self.test()

    def test(self) -> Callable[[Any], bool | None]:
        """value -> True (matches), False (does not), None (cannot be evaluated: wrong type)."""
        op, target = self.op, self.value
        numeric = _is_number(target[0] if isinstance(target, tuple) else target)

        def kind_ok(v: Any) -> bool:
            return _is_number(v) if numeric else type(v) is str

        if op in ("in", "not_in"):
            members = frozenset(target)
            inside = op == "in"
            return lambda v: (v in members) is inside if kind_ok(v) else None
        if op == "between":
            low, high = target
            return lambda v: low <= v <= high if kind_ok(v) else None
        compare = {
            "eq": lambda v: v == target,
            "lt": lambda v: v < target,
            "le": lambda v: v <= target,
            "gt": lambda v: v > target,
            "ge": lambda v: v >= target,
        }[op]
        return lambda v: compare(v) if kind_ok(v) else None

    def evaluate(self, instances: list, sensitive: list | None) -> tuple[list[int], list[int]]:
        """(matching, unevaluable) instance indexes of one request, read column-wise.

        The field's column is read once (features from the instances, ``sensitive.*`` from the
        request's sensitive attributes), then tested value by value; a missing value, a missing
        ``sensitive`` list or a value of the wrong type is unevaluable.
        """
        test = self._test
        if self.is_sensitive:
            if sensitive is None:
                return [], list(range(len(instances)))
            rows, name = sensitive, self.attribute
        else:
            rows, name = instances, self.field
        column = [r.get(name, _MISSING) if type(r) is dict else _MISSING for r in rows]
        matching, unevaluable = [], []
        for i, value in enumerate(column):
            outcome = None if value is _MISSING else test(value)
            if outcome is None:
                unevaluable.append(i)
            elif outcome:
                matching.append(i)
        return matching, unevaluable


def where_normalize(raw: Any) -> Where:
    """The predicate's structure checked (not yet its field); InvalidInput names what is wrong."""
    if isinstance(raw, Where):
        return raw
    if not isinstance(raw, dict):
        raise InvalidInput(
            {"where": 'must be an object such as {"field": "x", "op": "gt", "value": 1}'}
        )
    unknown = sorted(set(raw) - {"field", "op", "value"})
    errors = {f"where.{k}": "unknown key (use field, op, value)" for k in unknown}
    field, op, value = raw.get("field"), raw.get("op"), raw.get("value", _MISSING)
    if not isinstance(field, str) or not field.strip():
        errors["where.field"] = "required: a feature name, or sensitive.<attribute>"
    elif len(field) > MAX_TEXT:
        errors["where.field"] = f"at most {MAX_TEXT} characters"
    elif field.strip() == SENSITIVE_PREFIX.rstrip(".") or field.strip() == SENSITIVE_PREFIX:
        errors["where.field"] = "name the attribute: sensitive.<attribute>"
    if op not in OPS:
        errors["where.op"] = f"must be one of {', '.join(OPS)}"
    if errors:
        raise InvalidInput(errors)
    field = field.strip()
    try:
        clean = _clean_value(op, value)
    except ValueError as exc:
        raise InvalidInput({"where.value": str(exc)}) from None
    return Where(field=field, op=op, value=clean)


def _scalar(value: Any, *, numbers_only: bool = False) -> int | float | str:
    if _is_number(value):
        return _number(value)
    if isinstance(value, str) and not numbers_only:
        if len(value) > MAX_TEXT:
            raise ValueError(f"a string of at most {MAX_TEXT} characters")
        return value
    wanted = "a finite number" if numbers_only else "a string or a finite number"
    raise ValueError(f"must be {wanted}, not {type(value).__name__}")


def _clean_value(op: str, value: Any) -> Any:
    if value is _MISSING:
        raise ValueError("required")
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            raise ValueError(f"'{op}' takes a non-empty list of values")
        if len(value) > MAX_VALUES:
            raise ValueError(f"at most {MAX_VALUES} values (got {len(value)})")
        values = [_scalar(v) for v in value]
        if len({isinstance(v, str) for v in values}) > 1:
            raise ValueError("the values must all be strings or all be numbers")
        return tuple(sorted(set(values)))
    if op == "between":
        if not isinstance(value, list) or len(value) != 2:
            raise ValueError("'between' takes [low, high]")
        low, high = (_scalar(v, numbers_only=True) for v in value)
        if low > high:
            raise ValueError(f"low ({low}) is above high ({high}): nothing could match")
        return (low, high)
    if op == "eq":
        return _scalar(value)
    return _scalar(value, numbers_only=True)


def where_validate(raw: Any, features: Iterable[str]) -> Where:
    """The predicate, its field checked against the version's ``features`` (numbers there).

    A sensitive attribute is not declared anywhere before requests carry it, so only its name
    is checked; a request without it is refused by the halt (fail-closed).
    """
    where = where_normalize(raw)
    feature_list = list(features)
    if where.is_sensitive:
        return where
    if where.field not in feature_list:
        shown = ", ".join(feature_list[:30]) + (", ..." if len(feature_list) > 30 else "")
        raise InvalidInput(
            {
                "where.field": f"'{where.field}' is not a feature of the serving version "
                f"({shown}); a sensitive attribute is written sensitive.<attribute>"
            }
        )
    values = where.value if isinstance(where.value, tuple) else (where.value,)
    if not all(_is_number(v) for v in values):
        raise InvalidInput(
            {"where.value": f"'{where.field}' is a feature: compare it with numbers"}
        )
    return where


# --- the text form ------------------------------------------------------------------------------

_COMPARISON = re.compile(r"^\s*([\w.\-]+)\s*(==|=|<=|>=|<|>)\s*(.+?)\s*$", re.S)
_WORDED = re.compile(r"^\s*([\w.\-]+)\s+(not\s+in|in|between)\s+(.+?)\s*$", re.S | re.I)
_TOKEN = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([^,]+?))\s*(?:,|$)')
_OP_OF = {"==": "eq", "=": "eq", "<": "lt", "<=": "le", ">": "gt", ">=": "ge"}


def _token_value(quoted_double: str | None, quoted_single: str | None, bare: str | None) -> Any:
    if quoted_double is not None:
        return json.loads(f'"{quoted_double}"')
    if quoted_single is not None:
        return quoted_single
    text = bare.strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return _number(number) if math.isfinite(number) else text


def _values(text: str) -> list[Any]:
    text = text.strip()
    if text[:1] in "{[(" and text[-1:] in "}])":
        text = text[1:-1]
    values, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise InvalidInput({"where": f"cannot read the values in {text!r}"})
        values.append(_token_value(*match.groups()))
        pos = match.end()
    return values


def parse_where(text: str) -> dict[str, Any]:
    """``'area in north-east,south'`` or ``'population_density > 5000'`` -> the JSON form.

    Values are numbers when they read as numbers, strings otherwise (quote a number to keep it a
    string). ``between`` takes ``low and high``.
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput({"where": "required: e.g. 'population_density > 5000'"})
    match = _COMPARISON.match(text)
    if match:
        field, symbol, rest = match.groups()
        values = _values(rest)
        if len(values) != 1:
            raise InvalidInput({"where": f"'{symbol}' compares with one value"})
        return {"field": field, "op": _OP_OF[symbol], "value": values[0]}
    match = _WORDED.match(text)
    if match is None:
        raise InvalidInput(
            {
                "where": "write FIELD OP VALUE: 'x > 5', 'x between 1 and 5', "
                "'sensitive.area in north-east,south', 'x not in 1,2'"
            }
        )
    field, word, rest = match.groups()
    word = " ".join(word.lower().split())
    if word == "between":
        parts = re.split(r"\s+and\s+", rest.strip(), flags=re.I)
        values = [_token_value(None, None, p) for p in parts] if len(parts) == 2 else _values(rest)
        return {"field": field, "op": "between", "value": values}
    return {"field": field, "op": "in" if word == "in" else "not_in", "value": _values(rest)}


def render(where: dict[str, Any] | None) -> str:
    """The stored JSON form as text ('' for none): what pages and messages show."""
    if not where:
        return ""
    try:
        return where_normalize(where).text
    except InvalidInput:
        return json.dumps(where, sort_keys=True)
