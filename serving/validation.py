"""Request validation against the live version's feature list: a 400 names what is wrong."""

from __future__ import annotations

import math
from functools import lru_cache
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np

from registry.errors import InvalidInput

_NUMBERS = (int, float)
_NUMBER_SET = frozenset(_NUMBERS)


@lru_cache(maxsize=256)
def _getter(features: tuple[str, ...]):
    """The instance's values in ``features`` order, as a tuple (C speed)."""
    if len(features) == 1:
        name = features[0]
        return lambda instance: (instance[name],)
    return itemgetter(*features)


_MAX_REPORTED = 20  # problems listed in one 400


def parse_body(payload: Any, *, max_instances: int) -> tuple[list, list | None]:
    """``{"instances": [...], "sensitive": [...]?}`` -> (instances, sensitive or None)."""
    if not isinstance(payload, dict):
        raise InvalidInput({"non_field_errors": 'the body must be {"instances": [...]}'})
    unknown = sorted(set(payload) - {"instances", "sensitive"})
    if unknown:
        raise InvalidInput({k: "unknown field" for k in unknown})
    instances = payload.get("instances")
    if not isinstance(instances, list) or not instances:
        raise InvalidInput({"instances": "required: a non-empty list of feature objects"})
    if len(instances) > max_instances:
        raise InvalidInput(
            {"instances": f"at most {max_instances} per request (got {len(instances)})"}
        )
    sensitive = payload.get("sensitive")
    if sensitive is not None:
        if not isinstance(sensitive, list) or len(sensitive) != len(instances):
            raise InvalidInput(
                {"sensitive": "a list with one object of attributes per instance, in order"}
            )
        wanted = sensitive[0].keys() if isinstance(sensitive[0], dict) else None
        for i, attrs in enumerate(sensitive):
            if not isinstance(attrs, dict) or not all(
                isinstance(v, str | int | float | bool) or v is None for v in attrs.values()
            ):
                raise InvalidInput({f"sensitive[{i}]": "an object of plain attribute values"})
            if attrs.keys() != wanted:
                raise InvalidInput(
                    {f"sensitive[{i}]": "every instance gives the same attributes as the first"}
                )
    return instances, sensitive


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    if isinstance(value, float):
        return str(value)
    return f"a {type(value).__name__}"


def feature_matrix(
    instances: list,
    features: tuple[str, ...],
    feature_set: frozenset[str],
    *,
    integer_features: frozenset[str] = frozenset(),
) -> np.ndarray:
    """The instances as a float64 matrix, columns in ``features`` order; InvalidInput otherwise."""
    rows = []
    problems: dict[str, list[str]] = {}
    values_of = _getter(features)
    for i, instance in enumerate(instances):
        if type(instance) is not dict:
            problems[f"instances[{i}]"] = ["must be an object of feature values"]
        elif instance.keys() != feature_set:
            keys = set(instance)
            messages = []
            missing = [f for f in features if f not in keys]
            extra = sorted(str(k) for k in keys - feature_set)
            if missing:
                messages.append("missing features: " + ", ".join(missing))
            if extra:
                messages.append("unexpected features: " + ", ".join(extra))
            problems[f"instances[{i}]"] = messages
        else:
            rows.append(values_of(instance))
            continue
        if len(problems) >= _MAX_REPORTED:
            break
    if problems:
        raise InvalidInput(problems)
    kinds = set(map(type, chain.from_iterable(rows)))
    if not kinds <= _NUMBER_SET:
        _raise_bad_values(rows, features)
    try:
        X = np.array(rows, dtype=np.float64)
    except OverflowError:
        _raise_bad_values(rows, features)
    if not np.isfinite(X).all():
        _raise_bad_values(rows, features)
    for j, name in enumerate(features):
        if name in integer_features and not np.all(X[:, j] == np.round(X[:, j])):
            i = int(np.argmax(X[:, j] != np.round(X[:, j])))
            raise InvalidInput({f"instances[{i}].{name}": "must be a whole number"})
    return X


def _raise_bad_values(rows: list[list], features: tuple[str, ...]) -> None:
    problems: dict[str, str] = {}
    for i, row in enumerate(rows):
        for name, value in zip(features, row, strict=True):
            if type(value) not in _NUMBERS:
                problems[f"instances[{i}].{name}"] = f"must be a number, got {_describe(value)}"
            elif type(value) is int and abs(value) > 1e308:
                problems[f"instances[{i}].{name}"] = "must be a finite number, got a huge integer"
            elif not math.isfinite(value):
                problems[f"instances[{i}].{name}"] = f"must be a finite number, got {value}"
            if len(problems) >= _MAX_REPORTED:
                raise InvalidInput(problems)
    raise InvalidInput(problems)
