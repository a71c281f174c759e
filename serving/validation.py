"""Request validation against the live version's feature list: a 400 names what is wrong.

While a staging version is shadowed, a request may also carry the features that version needs
and the live one does not (a MAJOR feature-set change): ``feature_matrices`` accepts them beside
the live features and returns them apart, for the shadow only. Without such a version the route
has no shadow features and ``feature_matrix`` is the whole check.
"""

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
    return _checked(rows, features, integer_features)


def _checked(rows: list, features: tuple[str, ...], integer_features: frozenset[str]) -> np.ndarray:
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


def feature_matrices(
    instances: list,
    features: tuple[str, ...],
    feature_set: frozenset[str],
    shadow_features: tuple[str, ...],
    *,
    integer_features: frozenset[str] = frozenset(),
) -> tuple[np.ndarray, np.ndarray | None]:
    """``feature_matrix``, accepting also ``shadow_features`` (those only shadow versions use).

    Returns the live matrix (the live features only, in their order: what the live version
    scores) and the shadow features as a float64 matrix in ``shadow_features`` order, NaN where
    an instance does not carry one (absent or null: that instance is not shadow-scored by the
    versions needing it), or None when no instance carries any. A feature in neither list is
    unexpected and a missing live feature is missing (400, as without a shadow); a shadow
    feature that is given must be a finite number.
    """
    if not shadow_features:
        X = feature_matrix(instances, features, feature_set, integer_features=integer_features)
        return X, None
    accepted = feature_set | frozenset(shadow_features)
    values_of = _getter(features)
    extras_of = _getter(shadow_features)
    rows, extras = [], []
    carried = False
    problems: dict[str, list[str]] = {}
    for i, instance in enumerate(instances):
        if type(instance) is not dict:
            problems[f"instances[{i}]"] = ["must be an object of feature values"]
        else:
            keys = instance.keys()
            if keys == feature_set:
                rows.append(values_of(instance))
                extras.append(None)
                continue
            if keys == accepted:
                rows.append(values_of(instance))
                extras.append(extras_of(instance))
                carried = True
                continue
            missing = [f for f in features if f not in keys]
            unexpected = sorted(str(k) for k in keys - accepted)
            if not missing and not unexpected:  # some of the shadow features
                rows.append(values_of(instance))
                extras.append(tuple(instance.get(f) for f in shadow_features))
                carried = True
                continue
            messages = []
            if missing:
                messages.append("missing features: " + ", ".join(missing))
            if unexpected:
                messages.append("unexpected features: " + ", ".join(unexpected))
            problems[f"instances[{i}]"] = messages
        if len(problems) >= _MAX_REPORTED:
            break
    if problems:
        raise InvalidInput(problems)
    X = _checked(rows, features, integer_features)
    return X, (_shadow_values(extras, shadow_features) if carried else None)


def _shadow_values(extras: list, shadow_features: tuple[str, ...]) -> np.ndarray:
    """The shadow features' values, NaN where not given; InvalidInput for a non-number."""
    E = np.full((len(extras), len(shadow_features)), np.nan)
    problems: dict[str, str] = {}
    for i, values in enumerate(extras):
        if values is None:
            continue
        for j, value in enumerate(values):
            kind = type(value)
            if value is None:
                continue
            if kind not in _NUMBER_SET:
                problem = f"must be a number, got {_describe(value)}"
            elif kind is int and abs(value) > 1e308:
                problem = "must be a finite number, got a huge integer"
            elif not math.isfinite(value):
                problem = f"must be a finite number, got {value}"
            else:
                E[i, j] = value
                continue
            problems[f"instances[{i}].{shadow_features[j]}"] = problem
            if len(problems) >= _MAX_REPORTED:
                raise InvalidInput(problems)
    if problems:
        raise InvalidInput(problems)
    return E


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
