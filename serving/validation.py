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

from platform_core.errors import InvalidInput

from .conf import setting

_NUMBERS = (int, float)
_NUMBER_SET = frozenset(_NUMBERS)


def max_abs_feature() -> float:
    """The largest magnitude a feature value may have (``SERVING_MAX_ABS_FEATURE``).

    Finite is not enough: ``1e308`` overflows inside any model that multiplies or squares it,
    and a failure caused by the request's values must be the client's 400, never an outage.
    """
    return float(setting("SERVING_MAX_ABS_FEATURE"))


def _range_message(limit: float) -> str:
    return f"must be a number between {-limit:g} and {limit:g}"


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
    if isinstance(value, int):
        return str(value) if abs(value) < 10**20 else "a huge integer"
    return f"a {type(value).__name__}"


def feature_matrix(
    instances: list,
    features: tuple[str, ...],
    feature_set: frozenset[str],
    *,
    integer_features: frozenset[str] = frozenset(),
    boolean_features: frozenset[str] = frozenset(),
) -> np.ndarray:
    """The instances as a float64 matrix, columns in ``features`` order; InvalidInput otherwise.

    ``integer_features`` take whole numbers, ``boolean_features`` 0 or 1 (declared types).
    """
    values_of = _getter(features)
    try:  # every instance an object of exactly these features: the rows in one C loop
        rows = list(map(values_of, instances))
    except (KeyError, TypeError, IndexError):
        rows = None
    if rows is not None and set(map(len, instances)) == {len(feature_set)}:
        return _checked(rows, features, integer_features, boolean_features)
    rows = []  # some instance is not: name each one that is wrong
    problems: dict[str, list[str]] = {}
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
    return _checked(rows, features, integer_features, boolean_features)


def _checked(
    rows: list,
    features: tuple[str, ...],
    integer_features: frozenset[str],
    boolean_features: frozenset[str] = frozenset(),
) -> np.ndarray:
    kinds = set(map(type, chain.from_iterable(rows)))
    if not kinds <= _NUMBER_SET:
        _raise_bad_values(rows, features)
    try:
        X = np.fromiter(chain.from_iterable(rows), np.float64, len(rows) * len(features))
    except OverflowError:
        _raise_bad_values(rows, features)
    X = X.reshape(len(rows), len(features))
    limit = max_abs_feature()
    if not (np.abs(X) <= limit).all():  # also false for NaN and infinity
        _raise_bad_values(rows, features)
    for j, name in enumerate(features):
        if name in integer_features and not np.all(X[:, j] == np.round(X[:, j])):
            i = int(np.argmax(X[:, j] != np.round(X[:, j])))
            raise InvalidInput({f"instances[{i}].{name}": "must be a whole number"})
        if name in boolean_features and not np.all((X[:, j] == 0) | (X[:, j] == 1)):
            i = int(np.argmax((X[:, j] != 0) & (X[:, j] != 1)))
            raise InvalidInput({f"instances[{i}].{name}": "must be 0 or 1 (a boolean feature)"})
    return X


def feature_matrices(
    instances: list,
    features: tuple[str, ...],
    feature_set: frozenset[str],
    shadow_features: tuple[str, ...],
    *,
    integer_features: frozenset[str] = frozenset(),
    boolean_features: frozenset[str] = frozenset(),
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
        X = feature_matrix(
            instances,
            features,
            feature_set,
            integer_features=integer_features,
            boolean_features=boolean_features,
        )
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
    X = _checked(rows, features, integer_features, boolean_features)
    return X, (_shadow_values(extras, shadow_features) if carried else None)


def _shadow_values(extras: list, shadow_features: tuple[str, ...]) -> np.ndarray:
    """The shadow features' values, NaN where not given; InvalidInput for a non-number."""
    E = np.full((len(extras), len(shadow_features)), np.nan)
    limit = max_abs_feature()
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
            elif not _in_range(value, limit):
                problem = f"{_range_message(limit)}, got {_describe(value)}"
            else:
                E[i, j] = value
                continue
            problems[f"instances[{i}].{shadow_features[j]}"] = problem
            if len(problems) >= _MAX_REPORTED:
                raise InvalidInput(problems)
    if problems:
        raise InvalidInput(problems)
    return E


def _in_range(value: int | float, limit: float) -> bool:
    """Finite and at most ``limit`` in magnitude (an int of any size is compared exactly)."""
    if type(value) is int:
        return abs(value) <= limit
    return math.isfinite(value) and abs(value) <= limit


def _raise_bad_values(rows: list[list], features: tuple[str, ...]) -> None:
    limit = max_abs_feature()
    problems: dict[str, str] = {}
    for i, row in enumerate(rows):
        for name, value in zip(features, row, strict=True):
            if type(value) not in _NUMBERS:
                problems[f"instances[{i}].{name}"] = f"must be a number, got {_describe(value)}"
            elif not _in_range(value, limit):
                problems[f"instances[{i}].{name}"] = (
                    f"{_range_message(limit)}, got {_describe(value)}"
                )
            if len(problems) >= _MAX_REPORTED:
                raise InvalidInput(problems)
    raise InvalidInput(problems)


# --- whose fault is a failed scoring ------------------------------------------------------------

_BLAMED_FEATURES = 5  # culprit instances whose feature is searched (one scoring per feature)


def _scores_ok(score, X: np.ndarray) -> bool:
    try:
        scores = np.asarray(score(X))
        return scores.shape == (len(X),) and bool(np.isfinite(scores).all())
    except Exception:
        return False


def _failing_rows(score, X: np.ndarray, lo: int, hi: int, out: list[int]) -> None:
    """Bisect: rows of ``X[lo:hi]`` that fail alone (at most ``_MAX_REPORTED``)."""
    if len(out) >= _MAX_REPORTED or _scores_ok(score, X[lo:hi]):
        return
    if hi - lo == 1:
        out.append(lo)
        return
    mid = (lo + hi) // 2
    _failing_rows(score, X, lo, mid, out)
    _failing_rows(score, X, mid, hi, out)


def blame_instances(
    score, X: np.ndarray, features: tuple[str, ...], good_row: np.ndarray
) -> dict[str, str] | None:
    """After a scoring failed: the 400 problems when the request's values caused it, else None.

    ``score(X)`` scores rows; ``good_row`` is a row the model scored before (or zeros). When the
    model cannot score even that, the model itself is broken: None, an outage. Otherwise the
    rows that fail alone are the client's, found by bisection (a handful of extra scorings, not
    one per row), and for the first few the feature whose value, replaced by the good row's,
    lets the row score. A batch whose rows all score alone failed for the model's own reasons.
    """
    if not _scores_ok(score, good_row.reshape(1, -1)):
        return None
    culprits: list[int] = []
    _failing_rows(score, X, 0, len(X), culprits)
    if not culprits:
        return None
    problems: dict[str, str] = {}
    for n, i in enumerate(culprits):
        blamed = []
        if n < _BLAMED_FEATURES:
            for j, name in enumerate(features):
                row = X[i].copy()
                row[j] = good_row[j]
                if _scores_ok(score, row.reshape(1, -1)):
                    blamed.append(name)
        for name in blamed:
            problems[f"instances[{i}].{name}"] = "the model could not score this value"
        if not blamed:
            problems[f"instances[{i}]"] = "the model could not score this instance"
    return problems
