"""Services for production data: ingest predictions, labels and reference data; purge old logs.

Records arrive as JSON (``{"prediction_id": "p-1", "timestamp": "2026-01-05T10:00:00Z",
"features": {"x1": 0.3}, "score": 0.73, "prediction": 1, "sensitive": {"race": "b"}}``) or as an
uploaded CSV or Parquet file with the columns ``prediction_id, timestamp, score, prediction``, one
column per feature (named as in the version's ``feature_list``) and ``sensitive.<attribute>``.
Labels: ``{"prediction_id": "p-1", "label": 1, "label_time": "..."}`` (``label_time`` defaults to
now), or a file with those columns. Reference records have the prediction shape plus an optional
``label``; their ``prediction_id`` and ``timestamp`` are optional.

Feature values are checked against the types the version declares (``ModelVersion.feature_types``,
see ``registry.feature_types``): a ``number`` or ``integer`` feature takes numbers (an integer a
whole one), a ``boolean`` true/false (or 0/1), a ``string`` text (numbers become their text);
null is always allowed. The Parquet files store the declared type. A version registered before
types were declared keeps the types its stored files have (else ``number``). Timestamps must lie
between the version's ``training_data_start`` and a few minutes after now
(``MONITORING_MAX_FUTURE_SECONDS``).

Every record is checked, column by column with numpy where it can be; a batch is stored whole or
refused whole with 400 naming the record (0-based, in the order given) and field, e.g.
``{"records[3].score": ["must be a number in [0, 1]"]}``. Accepted records are written to Parquet
first (``monitoring.store``), then their ``DataBatch`` rows and the audit event commit in one
transaction. Ingestion works for a version in any stage.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from governance import audit
from governance.audit import Actor
from governance.evidence import MAX_RECORDS
from governance.policies import policy_values
from registry import services as registry_services
from registry.errors import Conflict, InvalidInput
from registry.feature_types import DEFAULT_TYPE, FEATURE_TYPES
from registry.models import ModelVersion, RegisteredModel

from . import profiles, store
from .models import BatchKind, DataBatch, IngestKey, ReferenceProfile

logger = logging.getLogger(__name__)

MAX_ERRORS = 50
MAX_ID_LENGTH = 200
MAX_ATTRIBUTE_LENGTH = 100
MAX_TEXT_LENGTH = 200
UPLOAD_SENSITIVE_PREFIX = "sensitive."
PURGE_TASK = "monitoring.purge_expired_predictions"

FIELDS = {
    BatchKind.PREDICTIONS: frozenset(
        {"prediction_id", "timestamp", "score", "prediction", "features", "sensitive"}
    ),
    BatchKind.REFERENCE: frozenset(
        {"prediction_id", "timestamp", "score", "prediction", "features", "sensitive", "label"}
    ),
    BatchKind.LABELS: frozenset({"prediction_id", "label", "label_time"}),
}
REQUIRED = {
    BatchKind.PREDICTIONS: ("prediction_id", "timestamp", "score"),
    BatchKind.REFERENCE: ("score",),
    BatchKind.LABELS: ("prediction_id", "label"),
}

_SCORE = "must be a number in [0, 1]"
_BINARY = "must be 0 or 1"
_PREDICTION = "must be 0, 1 or null"
_TIMESTAMP = "must be an ISO 8601 date-time, e.g. 2026-01-05T10:00:00Z (naive times are UTC)"
_ID = f"must be a non-empty string of at most {MAX_ID_LENGTH} characters"
_NUMBER_TYPES = frozenset({int, float})
_MAX_EXACT_INTEGER = 2**53  # a float64 holds every whole number up to this exactly
_TRUE = frozenset({"true", "1", "1.0"})
_FALSE = frozenset({"false", "0", "0.0"})
# A timestamp before this is refused when the version's training start is unknown (labels).
EARLIEST_TIMESTAMP = datetime(2000, 1, 1, tzinfo=UTC)
DEFAULT_MAX_FUTURE_SECONDS = 300
_NAT = np.iinfo(np.int64).min
_DAY_US = 86_400_000_000


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------


class _Errors:
    """Errors keyed ``records[i].field``; at most ``MAX_ERRORS`` listed, lowest rows first."""

    def __init__(self) -> None:
        self.items: list[tuple[int, str, str]] = []

    def row(self, index: int, name: str, message: str) -> None:
        self.items.append((index, name, message))

    def rows(self, indices: Sequence[int] | np.ndarray, name: str, message: str) -> None:
        for i in list(indices[: MAX_ERRORS + 1]):
            self.items.append((int(i), name, message))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        errors: dict[str, list[str]] = {}
        more = 0
        for index, name, message in sorted(self.items, key=lambda item: item[0]):
            key = f"records[{index}]" + (f".{name}" if name else "")
            if key not in errors and len(errors) >= MAX_ERRORS:
                more += 1
                continue
            if message not in errors.setdefault(key, []):
                errors[key].append(message)
        if more:
            errors["records"] = [f"{more} further error(s) not listed"]
        raise InvalidInput(errors)


# ------------------------------------------------------------------------------------------------
# Column validators: values in (a list from JSON, or an Arrow array from a file), a _Col out
# ------------------------------------------------------------------------------------------------


@dataclass
class _Col:
    """A converted column: its values, which records lack one, which have a bad one."""

    values: np.ndarray
    absent: np.ndarray
    bad: np.ndarray


def _is_arrow(values: Any) -> bool:
    return isinstance(values, pa.Array)


def _nulls(array: pa.Array) -> np.ndarray:
    return array.is_null().to_numpy(zero_copy_only=False)


def _numbers(values: Sequence | pa.Array) -> _Col:
    """float64 values; ``None`` (NaN or blank in a file) is absent; bools, text, inf are bad."""
    if _is_arrow(values):
        return _arrow_numbers(values)
    n = len(values)
    if isinstance(values, np.ndarray) and values.dtype == np.float64:  # checked numbers
        return _Col(values, np.zeros(n, dtype=bool), ~np.isfinite(values))
    types = set(map(type, values))
    if types <= _NUMBER_TYPES:
        try:
            array = np.array(values, dtype=np.float64)
        except OverflowError:
            pass
        else:
            return _Col(array, np.zeros(n, dtype=bool), ~np.isfinite(array))
    array = np.full(n, np.nan)
    absent = np.zeros(n, dtype=bool)
    bad = np.zeros(n, dtype=bool)
    for i, value in enumerate(values):
        if value is None:
            absent[i] = True
        elif type(value) in _NUMBER_TYPES:
            try:
                number = float(value)
            except OverflowError:
                bad[i] = True
                continue
            if math.isfinite(number):
                array[i] = number
            else:
                bad[i] = True
        else:
            bad[i] = True
    return _Col(array, absent, bad)


def _arrow_numbers(array: pa.Array) -> _Col:
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        trimmed = pc.utf8_trim_whitespace(array)
        trimmed = pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, kind), trimmed)
        absent = _nulls(trimmed)
        try:
            values = pc.cast(trimmed, pa.float64()).to_numpy(zero_copy_only=False)
        except pa.ArrowInvalid:  # some cell is not a number: find which
            values = pd.to_numeric(
                pd.Series(trimmed.to_pylist(), dtype=object), errors="coerce"
            ).to_numpy(dtype=np.float64, na_value=np.nan)
        return _Col(values, absent, ~absent & ~np.isfinite(values))
    absent = _nulls(array)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        values = pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False)
        absent |= np.isnan(values)
        return _Col(values, absent, np.isinf(values))
    return _Col(np.full(len(array), np.nan), absent, ~absent)


def _timestamps(values: Sequence | pa.Array) -> _Col:
    """int64 microseconds since the epoch in UTC (``_NAT`` where absent); naive times are UTC."""
    if _is_arrow(values):
        kind = values.type
        absent = _nulls(values)
        if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
            target = pa.timestamp("us", tz=getattr(kind, "tz", None))
            stamps = pc.cast(values, target, safe=False).cast(pa.int64()).fill_null(_NAT)
            return _Col(stamps.to_numpy(), absent, np.zeros(len(values), dtype=bool))
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            return _Col(np.full(len(values), _NAT, dtype=np.int64), absent, ~absent)
        values = values.to_numpy(zero_copy_only=False).tolist()
    n = len(values)
    out = np.full(n, _NAT, dtype=np.int64)
    absent = np.fromiter((v is None for v in values), dtype=bool, count=n)
    is_text = np.fromiter((type(v) is str for v in values), dtype=bool, count=n)
    is_time = np.fromiter((isinstance(v, datetime) for v in values), dtype=bool, count=n)
    bad = ~(absent | is_text | is_time)
    for mask, parse in ((is_text, _parse_iso), (is_time, _parse_datetimes)):
        if mask.any():
            where = np.flatnonzero(mask)
            parsed = parse([values[i] for i in where])
            out[where] = parsed
            bad[where[parsed == _NAT]] = True
    return _Col(out, absent, bad)


def _parse_iso(texts: list[str]) -> np.ndarray:
    parsed = pd.to_datetime(
        pd.Series(texts, dtype=object).str.strip(), format="ISO8601", utc=True, errors="coerce"
    )
    return _as_us(parsed)


def _parse_datetimes(values: list[datetime]) -> np.ndarray:
    return _as_us(pd.to_datetime(pd.Series(values, dtype=object), utc=True, errors="coerce"))


def _as_us(parsed: pd.Series) -> np.ndarray:
    array = parsed.dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    out = array.astype(np.int64)
    out[np.isnat(array)] = _NAT
    return out


def _ids(values: Sequence | pa.Array) -> _Col:
    """str values (integers become text); blank or longer than ``MAX_ID_LENGTH`` is bad."""
    if _is_arrow(values):
        kind = values.type
        if pa.types.is_integer(kind):
            values = pc.cast(values, pa.string())
        elif not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            absent = _nulls(values)
            return _Col(np.full(len(values), None, dtype=object), absent, ~absent)
        absent = _nulls(values)
        lengths = pc.utf8_length(values).fill_null(0).to_numpy()
        blank = pc.utf8_length(pc.utf8_trim_whitespace(values)).fill_null(0).to_numpy() == 0
        bad = ~absent & (blank | (lengths > MAX_ID_LENGTH))
        return _Col(values.to_numpy(zero_copy_only=False), absent, bad)
    n = len(values)
    out = np.empty(n, dtype=object)
    if set(map(type, values)) <= {str}:
        out[:] = values
        lengths = np.fromiter(map(len, values), dtype=np.int64, count=n)
        bad = (lengths > MAX_ID_LENGTH) | np.fromiter(
            (not v.strip() for v in values), dtype=bool, count=n
        )
        return _Col(out, np.zeros(n, dtype=bool), bad)
    absent = np.zeros(n, dtype=bool)
    bad = np.zeros(n, dtype=bool)
    for i, value in enumerate(values):
        if value is None:
            absent[i] = True
        elif type(value) is int:
            out[i] = str(value)
        elif type(value) is str and value.strip() and len(value) <= MAX_ID_LENGTH:
            out[i] = value
        else:
            bad[i] = True
    return _Col(out, absent, bad)


def _text(value: Any) -> str | None:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value if len(value) <= MAX_TEXT_LENGTH else None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value)) if value.is_integer() else repr(value)
    return None


def _texts(values: Sequence | pa.Array, *, strip: bool = False) -> _Col:
    """str values; numbers and booleans become text (``strip``: blank counts as absent)."""
    if _is_arrow(values):
        kind = values.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            if strip:
                values = pc.utf8_trim_whitespace(values)
                values = pc.if_else(pc.equal(values, ""), pa.scalar(None, kind), values)
            absent = _nulls(values)
            lengths = pc.utf8_length(values).fill_null(0).to_numpy()
            return _Col(values.to_numpy(zero_copy_only=False), absent, lengths > MAX_TEXT_LENGTH)
        values = values.to_pylist()
    n = len(values)
    if strip and set(map(type, values)) <= {str}:
        texts = [v.strip() for v in values]
        absent = np.fromiter((not v for v in texts), dtype=bool, count=n)
        bad = np.fromiter((len(v) > MAX_TEXT_LENGTH for v in texts), dtype=bool, count=n)
        out = np.empty(n, dtype=object)
        out[:] = texts
        out[absent] = None
        return _Col(out, absent, bad)
    out = np.empty(n, dtype=object)
    absent = np.zeros(n, dtype=bool)
    bad = np.zeros(n, dtype=bool)
    for i, value in enumerate(values):
        if value is None:
            absent[i] = True
            continue
        text = _text(value)
        if text is not None and strip:
            text = text.strip()
            if not text:
                absent[i] = True
                continue
        if text is None:
            bad[i] = True
        else:
            out[i] = text
    return _Col(out, absent, bad)


# ------------------------------------------------------------------------------------------------
# Parsed batches
# ------------------------------------------------------------------------------------------------


@dataclass
class _Source:
    """Raw columns of a batch: lists of JSON values, or Arrow arrays read from a file."""

    n: int
    columns: dict[str, Sequence | pa.Array] = field(default_factory=dict)
    features: dict[str, tuple[Sequence | pa.Array, str | None]] = field(default_factory=dict)
    sensitive: dict[str, Sequence | pa.Array] = field(default_factory=dict)


@dataclass
class Parsed:
    """A validated batch as typed arrays."""

    n: int
    prediction_id: np.ndarray | None = None  # object: str (None where absent)
    timestamp: np.ndarray | None = None  # int64 us UTC, _NAT where absent
    score: np.ndarray | None = None
    prediction: np.ndarray | None = None  # float64 0/1, NaN where absent
    label: np.ndarray | None = None  # float64 0/1, NaN where absent
    label_time: np.ndarray | None = None
    features: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)
    sensitive: dict[str, np.ndarray] = field(default_factory=dict)


def _check_size(n: int, name: str) -> None:
    if n == 0:
        raise InvalidInput({name: "must contain at least one record"})
    if n > MAX_RECORDS:
        raise InvalidInput({name: f"at most {MAX_RECORDS} records per request"})


def _feature_columns(
    features: list, feature_names: Sequence[str], errors: _Errors
) -> dict[str, tuple[Sequence, None]]:
    """Check every record's ``features`` object; transpose them into one sequence per feature."""
    empty: dict = {}
    expected = frozenset(feature_names)
    listing = ", ".join(feature_names)
    suspects = [i for i, v in enumerate(features) if type(v) is not dict or v.keys() != expected]
    clean = not suspects
    for i in suspects:
        value = features[i]
        if type(value) is not dict:
            if value is None:
                errors.row(i, "features", f"required: an object with the features {listing}")
            else:
                errors.row(i, "features", f"must be an object with the features {listing}")
            features[i] = empty
        else:
            keys = {str(k) for k in value}
            missing = [f for f in feature_names if f not in keys]
            unknown = sorted(keys - expected)
            parts = [f"missing features: {', '.join(missing)}"] if missing else []
            parts += [f"unknown features: {', '.join(unknown)}"] if unknown else []
            errors.row(i, "features", "; ".join(parts))
    if not feature_names:
        return {}
    if clean and len(feature_names) > 1:  # C-level passes instead of a dict lookup per cell
        rows = list(map(itemgetter(*feature_names), features))
        if set(map(type, chain.from_iterable(rows))) <= _NUMBER_TYPES:
            try:
                matrix = np.array(rows, dtype=np.float64)
            except OverflowError:
                pass
            else:
                return {name: (matrix[:, j], None) for j, name in enumerate(feature_names)}
        columns = list(zip(*rows, strict=True))
    else:
        columns = [[f.get(name) for f in features] for name in feature_names]
    return {name: (values, None) for name, values in zip(feature_names, columns, strict=True)}


def _sensitive_columns(sensitive: list, errors: _Errors) -> dict[str, list]:
    """The same attributes on every record as on the first; one list per attribute."""
    empty: dict = {}
    first = sensitive[0] if type(sensitive[0]) is dict else empty
    attributes = list(first)
    for name in attributes:
        if not isinstance(name, str) or not name or len(name) > MAX_ATTRIBUTE_LENGTH:
            errors.row(0, "sensitive", "attribute names are non-empty strings")
            return {}
    wanted = first.keys()
    for i, value in enumerate(sensitive):
        if value is None:
            value = sensitive[i] = empty
        elif type(value) is not dict:
            errors.row(i, "sensitive", 'must be an object, e.g. {"race": "b"}')
            sensitive[i] = empty
            continue
        if value.keys() != wanted:
            keys = {str(k) for k in value}
            missing = sorted(set(attributes) - keys)
            extra = sorted(keys - set(attributes))
            detail = "; ".join(
                p
                for p in (
                    f"missing {', '.join(missing)}" if missing else "",
                    f"unexpected {', '.join(extra)}" if extra else "",
                )
                if p
            )
            errors.row(
                i,
                "sensitive",
                "every record must give the same sensitive attributes as the first "
                f"({', '.join(attributes) or 'none'}): {detail}",
            )
    return {a: [s.get(a) for s in sensitive] for a in attributes}


def _from_records(
    records: Any, *, kind: str, feature_names: Sequence[str], errors: _Errors
) -> _Source:
    if not isinstance(records, list):
        raise InvalidInput({"records": "must be a list of records"})
    _check_size(len(records), "records")
    recs: list[Mapping] = records
    if not all(type(r) is dict for r in records):
        recs = []
        for i, record in enumerate(records):
            if isinstance(record, Mapping):
                recs.append(record)
            else:
                errors.row(i, "", "must be an object")
                recs.append({})
    allowed = FIELDS[kind]
    for i in [i for i, r in enumerate(recs) if not r.keys() <= allowed][: MAX_ERRORS + 1]:
        for name in recs[i]:
            if name not in allowed:
                errors.row(i, str(name), "Unknown field.")
    scalar = sorted(allowed - {"features", "sensitive"})
    source = _Source(n=len(recs), columns={name: [r.get(name) for r in recs] for name in scalar})
    if kind != BatchKind.LABELS:
        features = [r.get("features") for r in recs]
        source.features = _feature_columns(features, feature_names, errors)
        source.sensitive = _sensitive_columns([r.get("sensitive") for r in recs], errors)
    return source


def _read_table(upload, *, text_columns: Sequence[str]) -> pa.Table:
    """The uploaded file as an Arrow table: Parquet when it starts with its magic, else CSV.

    CSV cells are typed by inference (a column of numbers becomes numbers), except the
    ``text_columns`` (ids, times, sensitive attributes, categorical features), read as text.
    """
    data = upload.read() if hasattr(upload, "read") else bytes(upload)
    if not data:
        raise InvalidInput({"file": "is empty"})
    if data[:4] == b"PAR1":
        try:
            return pq.read_table(pa.BufferReader(data))
        except (pa.ArrowException, ValueError, OSError) as exc:
            raise InvalidInput({"file": f"could not be read as Parquet: {exc}"}) from exc
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            {"file": f"is neither Parquet nor UTF-8 CSV (byte {exc.start} is not UTF-8)"}
        ) from exc
    try:
        header = next(csv.reader(io.StringIO(data[: 1 << 16].decode("utf-8", errors="replace"))))
    except (StopIteration, csv.Error) as exc:
        raise InvalidInput({"file": "could not be read as CSV: no header row"}) from exc
    text = set(text_columns) | {h for h in header if h.startswith(UPLOAD_SENSITIVE_PREFIX)}
    try:
        return pa_csv.read_csv(
            pa.BufferReader(data),
            convert_options=pa_csv.ConvertOptions(
                column_types={name: pa.string() for name in text if name in header},
                strings_can_be_null=True,
            ),
        )
    except (pa.ArrowException, ValueError) as exc:
        raise InvalidInput({"file": f"could not be read as CSV: {exc}"}) from exc


def _from_upload(
    upload, *, kind: str, feature_names: Sequence[str], feature_types: Mapping[str, str]
) -> _Source:
    features = [] if kind == BatchKind.LABELS else list(feature_names)
    text = ["prediction_id", "timestamp", "label_time"]
    text += [name for name in features if feature_types.get(name) in ("string", "boolean")]
    table = _read_table(upload, text_columns=text)
    _check_size(table.num_rows, "file")
    names = list(table.column_names)
    base = sorted(FIELDS[kind] - {"features", "sensitive"})
    sensitive = [
        c
        for c in names
        if c.startswith(UPLOAD_SENSITIVE_PREFIX) and len(c) > len(UPLOAD_SENSITIVE_PREFIX)
    ]
    allowed = set(base) | set(features)
    if kind != BatchKind.LABELS:
        allowed |= set(sensitive)
    problems = []
    unknown = [c for c in names if c not in allowed]
    if unknown:
        hint = ", ".join(base)
        if features:
            hint += ", one column per feature and sensitive.<attribute>"
        problems.append(f"unknown column(s) {', '.join(unknown)}; use {hint}")
    duplicated = sorted({c for c in names if names.count(c) > 1})
    if duplicated:
        problems.append(f"duplicate column(s) {', '.join(duplicated)}")
    missing = [c for c in (*REQUIRED[kind], *features) if c not in names]
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if problems:
        raise InvalidInput({"file": problems})

    def column(name: str) -> pa.Array:
        return table.column(name).combine_chunks()

    source = _Source(n=table.num_rows)
    source.columns = {name: column(name) for name in base if name in names}
    for name in features:
        source.features[name] = (column(name), None)
    if kind != BatchKind.LABELS:
        source.sensitive = {c[len(UPLOAD_SENSITIVE_PREFIX) :]: column(c) for c in sensitive}
    return source


def _required(name: str, absent: np.ndarray, errors: _Errors, message: str) -> None:
    where = np.flatnonzero(absent)
    if where.size:
        errors.rows(where, name, "required; " + message)


def _validate(
    source: _Source,
    *,
    kind: str,
    feature_types: Mapping[str, str],
    bounds: tuple[int, int] | None,
    errors: _Errors,
) -> Parsed:
    n = source.n
    parsed = Parsed(n=n)
    required = REQUIRED[kind]
    columns = source.columns

    def given(name: str) -> bool:
        return name in FIELDS[kind] and (name in columns or name in required)

    def column(name: str) -> Sequence | pa.Array:
        values = columns.get(name)
        return [None] * n if values is None else values

    if given("prediction_id"):
        ids = _ids(column("prediction_id"))
        errors.rows(np.flatnonzero(ids.bad), "prediction_id", _ID)
        if "prediction_id" in required:
            _required("prediction_id", ids.absent, errors, _ID)
        present = ~(ids.absent | ids.bad)
        _refuse_repeated_ids(ids.values, present, errors)
        parsed.prediction_id = np.where(present, ids.values, None)

    for name in ("timestamp", "label_time"):
        if given(name):
            stamps = _timestamps(column(name))
            errors.rows(np.flatnonzero(stamps.bad), name, _TIMESTAMP)
            if bounds is not None:
                earliest, latest = bounds
                given_ok = ~(stamps.absent | stamps.bad)
                outside = given_ok & ((stamps.values < earliest) | (stamps.values > latest))
                errors.rows(np.flatnonzero(outside), name, _bounds_message(earliest, latest))
            if name in required:
                _required(name, stamps.absent, errors, _TIMESTAMP)
            setattr(parsed, name, stamps.values)

    if given("score"):
        scores = _numbers(column("score"))
        bad = scores.bad | (~scores.absent & ((scores.values < 0.0) | (scores.values > 1.0)))
        errors.rows(np.flatnonzero(bad), "score", _SCORE)
        _required("score", scores.absent, errors, _SCORE)
        parsed.score = scores.values

    for name, message in (("prediction", _PREDICTION), ("label", _BINARY)):
        if not given(name):
            continue
        values = _numbers(column(name))
        binary = (values.values == 0.0) | (values.values == 1.0)
        bad = values.bad | (~values.absent & ~binary)
        errors.rows(np.flatnonzero(bad), name, message)
        if name in required:
            _required(name, values.absent, errors, message)
        if values.absent.all() and name not in required:
            continue
        setattr(parsed, name, np.where(values.absent | bad, np.nan, values.values))

    for name, (values, _) in source.features.items():
        declared = feature_types.get(name, DEFAULT_TYPE)
        parsed.features[name] = (declared, _feature(name, values, declared, errors))

    message = f"must be a non-empty string or number (at most {MAX_TEXT_LENGTH} characters)"
    for attribute, values in source.sensitive.items():
        texts = _texts(values, strip=True)
        errors.rows(np.flatnonzero(texts.bad | texts.absent), f"sensitive.{attribute}", message)
        parsed.sensitive[attribute] = texts.values
    return parsed


def _refuse_repeated_ids(ids: np.ndarray, present: np.ndarray, errors: _Errors) -> None:
    if not present.any():
        return
    series = pd.Series(ids[present])
    duplicated = series.duplicated(keep="first").to_numpy()
    if not duplicated.any():
        return
    rows = np.flatnonzero(present)
    firsts = series[~duplicated]
    first_of = dict(zip(firsts.tolist(), rows[~duplicated].tolist(), strict=True))
    for position in rows[duplicated][: MAX_ERRORS + 1].tolist():
        errors.row(
            position,
            "prediction_id",
            f"duplicates records[{first_of[ids[position]]}].prediction_id; "
            "ids are unique within a batch",
        )


def _bounds_message(earliest_us: int, latest_us: int) -> str:
    def shown(us: int) -> str:
        return datetime.fromtimestamp(us / 1e6, tz=UTC).isoformat(timespec="seconds")

    return (
        f"must be between {shown(earliest_us)} (the version's training data start) and "
        f"{shown(latest_us)} (a few minutes after the server's clock)"
    )


def _booleans(values: Sequence | pa.Array | np.ndarray) -> _Col:
    """float64 0/1 values: true/false, 0/1 (numbers or their text); NaN where absent."""
    if _is_arrow(values):
        kind = values.type
        absent = _nulls(values)
        if pa.types.is_boolean(kind):
            out = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
            return _Col(out, absent, np.zeros(len(values), dtype=bool))
        if pa.types.is_integer(kind) or pa.types.is_floating(kind):
            values = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
        else:
            values = values.to_pylist()
    if isinstance(values, np.ndarray) and values.dtype == np.float64:  # numbers (file or JSON)
        absent = np.isnan(values)
        return _Col(values, absent, ~absent & (values != 0.0) & (values != 1.0))
    n = len(values)
    out = np.full(n, np.nan)
    absent = np.zeros(n, dtype=bool)
    bad = np.zeros(n, dtype=bool)
    for i, value in enumerate(values):
        if value is None:
            absent[i] = True
        elif isinstance(value, bool) or (type(value) in _NUMBER_TYPES and value in (0, 1)):
            out[i] = float(value)
        elif isinstance(value, str):
            text = value.strip().lower()
            if not text:
                absent[i] = True
            elif text in _TRUE or text in _FALSE:
                out[i] = 1.0 if text in _TRUE else 0.0
            else:
                bad[i] = True
        else:
            bad[i] = True
    return _Col(out, absent, bad)


def _feature(name: str, values: Sequence | pa.Array, kind: str, errors: _Errors) -> np.ndarray:
    """The feature's values converted to its declared ``kind``; wrong types named per record."""
    key = f"features.{name}"
    if kind in ("number", "integer"):
        numbers = _numbers(values)
        bad = numbers.bad
        if kind == "integer":
            given = ~(numbers.absent | bad)
            whole = (numbers.values == np.round(numbers.values)) & (
                np.abs(numbers.values) <= _MAX_EXACT_INTEGER
            )
            bad = bad | (given & ~whole)
        errors.rows(
            np.flatnonzero(bad),
            key,
            f"must be {'a whole number' if kind == 'integer' else 'a number'} or null "
            f"({name} is declared {kind})",
        )
        return np.where(numbers.absent | bad, np.nan, numbers.values)
    if kind == "boolean":
        flags = _booleans(values)
        errors.rows(
            np.flatnonzero(flags.bad),
            key,
            f"must be true, false or null ({name} is declared boolean)",
        )
        return flags.values
    texts = _texts(values)
    errors.rows(
        np.flatnonzero(texts.bad),
        key,
        f"must be a string, number or null (at most {MAX_TEXT_LENGTH} characters; "
        f"{name} is declared string)",
    )
    return texts.values


def parse(
    *,
    kind: str,
    records: Any = None,
    upload=None,
    feature_names: Sequence[str] = (),
    feature_types: Mapping[str, str] | None = None,
    bounds: tuple[int, int] | None = None,
) -> Parsed:
    """Validate a batch of ``kind`` (JSON records or an uploaded file); raise ``InvalidInput``.

    ``feature_types`` maps features to their declared type (default ``number``);
    ``bounds`` (microseconds since the epoch) limit ``timestamp`` and ``label_time``.
    """
    feature_types = feature_types or {}
    errors = _Errors()
    if upload is not None:
        source = _from_upload(
            upload, kind=kind, feature_names=feature_names, feature_types=feature_types
        )
    elif records is None:
        raise InvalidInput({"records": "required: a list of records (or upload a file)"})
    else:
        source = _from_records(records, kind=kind, feature_names=feature_names, errors=errors)
    parsed = _validate(source, kind=kind, feature_types=feature_types, bounds=bounds, errors=errors)
    errors.raise_if_any()
    return parsed


# ------------------------------------------------------------------------------------------------
# Arrow tables
# ------------------------------------------------------------------------------------------------


def _timestamp_array(values: np.ndarray) -> pa.Array:
    return pa.array(values, mask=values == _NAT, type=pa.int64()).cast(store.TIMESTAMP)


def _feature_array(kind: str, values: np.ndarray) -> pa.Array:
    """The declared type on disk: float64, int64, bool or string, null where absent."""
    if kind == "string":
        return pa.array(values, type=pa.string())
    absent = np.isnan(values)
    if kind == "integer":
        return pa.array(np.where(absent, 0, values).astype(np.int64), mask=absent, type=pa.int64())
    if kind == "boolean":
        return pa.array(np.where(absent, 0, values).astype(bool), mask=absent, type=pa.bool_())
    return pa.array(values, from_pandas=True, type=pa.float64())


def _binary_array(values: np.ndarray) -> pa.Array:
    absent = np.isnan(values)
    return pa.array(np.where(absent, 0, values).astype(np.int8), mask=absent, type=pa.int8())


def _record_table(parsed: Parsed, version: ModelVersion, *, with_label: bool) -> pa.Table:
    n = parsed.n
    columns: dict[str, pa.Array] = {
        "prediction_id": pa.array(
            parsed.prediction_id if parsed.prediction_id is not None else [None] * n,
            type=pa.string(),
        ),
        "timestamp": _timestamp_array(
            parsed.timestamp if parsed.timestamp is not None else np.full(n, _NAT)
        ),
        "score": pa.array(parsed.score, type=pa.float64()),
        "prediction": _binary_array(
            parsed.prediction if parsed.prediction is not None else np.full(n, np.nan)
        ),
    }
    for name in version.feature_list:
        kind, values = parsed.features[name]
        columns[store.feature_column(name)] = _feature_array(kind, values)
    for attribute, values in sorted(parsed.sensitive.items()):
        columns[store.sensitive_column(attribute)] = pa.array(values, type=pa.string())
    columns["version"] = pa.array([version.version] * n, type=pa.string())
    if with_label:
        columns["label"] = _binary_array(
            parsed.label if parsed.label is not None else np.full(n, np.nan)
        )
    return pa.table(columns)


def _days(stamps_us: np.ndarray) -> np.ndarray:
    return (stamps_us // _DAY_US).astype("datetime64[D]")


# ------------------------------------------------------------------------------------------------
# Commit
# ------------------------------------------------------------------------------------------------


def _commit(files, *, create_rows):
    """Create the manifest rows for ``files`` (already on disk); remove the files on failure."""
    try:
        with transaction.atomic():
            return create_rows()
    except BaseException:
        try:
            store.discard(p for f in files for p in f.paths)
        except Exception:  # the orphan sweeper removes them later
            logger.warning("could not discard written files", exc_info=True)
        raise


def _day_list(files: Sequence[store.StoredFile]) -> list[str]:
    return sorted({f.day.isoformat() for f in files})


def _batch_rows(files, *, model, version_id, kind, source, actor) -> list[DataBatch]:
    return [
        DataBatch.objects.create(
            model=model,
            version_id=version_id,
            kind=kind,
            day=f.day,
            path=f.path,
            rows=f.rows,
            digest=f.digest,
            id_index=f.id_index,
            source=source,
            created_by=actor.label[:200],
        )
        for f in files
    ]


def _checked_keys(batch_keys: Sequence[str]) -> list[str]:
    keys = list(batch_keys)
    bad = [i for i, k in enumerate(keys) if not isinstance(k, str) or not k.strip() or len(k) > 200]
    if bad:
        raise InvalidInput({f"batch_keys[{bad[0]}]": "a non-empty string, at most 200 chars"})
    if len(set(keys)) != len(keys):
        raise InvalidInput({"batch_keys": "must not repeat a key"})
    return keys


def _ingested_before(version: ModelVersion, keys: list[str]) -> list[DataBatch] | None:
    """The batches stored under ``keys`` when all of them were ingested before; else None.

    Refuses (400) a mix of known and new keys: the caller splits the batch and retries.
    """
    if not keys:
        return None
    known = dict(
        IngestKey.objects.filter(version=version, key__in=keys).values_list("key", "batch")
    )
    if not known:
        return None
    if len(known) < len(keys):
        raise InvalidInput(
            {
                "batch_keys": [
                    f"{key} was ingested before (batch {known[key]}); send the others without it"
                    for key in keys
                    if key in known
                ][:MAX_ERRORS]
            }
        )
    return list(DataBatch.objects.filter(pk__in=set(known.values())).order_by("id"))


def feature_types_of(version: ModelVersion) -> dict[str, str]:
    """Every feature's declared type; for a version registered before declarations, the types
    its stored files have (else ``number``): never guessed from the batch at hand."""
    declared = version.feature_types or {}
    features = list(version.feature_list)
    if all(declared.get(f) in FEATURE_TYPES for f in features):
        return {f: declared[f] for f in features}
    stored = store.stored_feature_types(version)
    return {f: declared.get(f) or stored.get(f) or DEFAULT_TYPE for f in features}


def max_future_seconds() -> float:
    return float(getattr(settings, "MONITORING_MAX_FUTURE_SECONDS", DEFAULT_MAX_FUTURE_SECONDS))


def timestamp_bounds(version: ModelVersion | None) -> tuple[int, int]:
    """(earliest, latest) accepted timestamp in microseconds: not before the version's training
    data starts (else ``EARLIEST_TIMESTAMP``), not more than a few minutes in the future.

    Year 1 or 2262 would otherwise be stored, and a far-future day never expires.
    """
    earliest = EARLIEST_TIMESTAMP
    if version is not None and version.training_data_start is not None:
        earliest = store.as_utc(version.training_data_start)
    latest = timezone.now() + timedelta(seconds=max_future_seconds())
    return store.to_us(earliest), store.to_us(latest)


def predictions_ingest(
    *,
    model_name: str,
    version: str,
    records: Any = None,
    upload=None,
    actor: Actor,
    source: str | None = None,
    batch_keys: Sequence[str] = (),
) -> list[DataBatch]:
    """Store a batch of logged predictions of one version: one file and manifest row per day.

    Raises ``NotFound`` (no such version) or ``InvalidInput`` (any bad record, or a prediction
    id the version already has stored that day; nothing stored). ``source`` is ``api``,
    ``upload`` (the default for files) or ``gateway``. ``batch_keys`` name what the batch was
    made of (the gateway's spool files): when all were ingested before, nothing is stored and
    their earlier manifest rows are returned (the first of each ingestion), so a file whose
    deletion failed after its commit is never stored twice; a mix of old and new keys is
    refused. Duplicate ids are found in the days' id indexes (``store.stored_duplicates``), at
    a cost that follows the batch, not the day.
    """
    target = registry_services.version_get(model_name, version)
    keys = _checked_keys(batch_keys)
    if (replayed := _ingested_before(target, keys)) is not None:
        logger.info("predictions of %s already ingested under %s", target, ", ".join(keys))
        return replayed
    parsed = parse(
        kind=BatchKind.PREDICTIONS,
        records=records,
        upload=upload,
        feature_names=target.feature_list,
        feature_types=feature_types_of(target),
        bounds=timestamp_bounds(target),
    )
    days = _days(parsed.timestamp)
    ids = pa.array(parsed.prediction_id, type=pa.string())
    digests = store.id_digests(parsed.prediction_id)
    table = _record_table(parsed, target, with_label=False)
    row_days, row_digests = days, digests
    if not np.all(parsed.timestamp[1:] >= parsed.timestamp[:-1]):  # files are sorted by time
        order = np.argsort(parsed.timestamp, kind="stable")
        table, row_days, row_digests = table.take(pa.array(order)), days[order], digests[order]
    files = store.write_by_day(
        table,
        model_name=target.model.name,
        kind=BatchKind.PREDICTIONS,
        days=row_days,
        id_digests=row_digests,
    )
    source = source or ("upload" if upload is not None else "api")

    def create_rows() -> list[DataBatch]:
        store.lock_version(target.pk)  # two batches with one id: the second sees the first
        if keys and IngestKey.objects.filter(version=target, key__in=keys).exists():
            raise _KeysTaken  # by a concurrent call meanwhile
        stored = store.stored_duplicates(version=target, ids=ids, digests=digests, days=days)
        if stored:
            errors = _Errors()
            for index, day in sorted(stored.items())[: MAX_ERRORS + 1]:
                errors.row(
                    index,
                    "prediction_id",
                    f"already stored for version {target.version} (on {day.isoformat()})",
                )
            errors.raise_if_any()
        batches = _batch_rows(
            files,
            model=target.model,
            version_id=target.pk,
            kind=BatchKind.PREDICTIONS,
            source=source,
            actor=actor,
        )
        audit.record(
            actor=actor,
            action="predictions.ingested",
            obj=target,
            model_name=target.model.name,
            after={
                "version": target.version,
                "rows": parsed.n,
                "days": _day_list(files),
                "digest": store.combined_digest(files),
                "batches": [b.pk for b in batches],
                "source": source,
                **({"batch_key_count": len(keys)} if keys else {}),
            },
        )
        IngestKey.objects.bulk_create(
            IngestKey(version=target, key=key, batch=batches[0]) for key in keys
        )
        transaction.on_commit(lambda: _compact(target.pk, [f.day for f in files]))
        return batches

    try:
        return _commit(files, create_rows=create_rows)
    except (_KeysTaken, IntegrityError) as exc:
        if keys and (replayed := _ingested_before(target, keys)) is not None:
            return replayed
        if isinstance(exc, _KeysTaken):
            raise Conflict("the batch keys changed while this batch was stored; retry") from exc
        raise


class _KeysTaken(Exception):
    """Some ``batch_keys`` were committed by another call while this one was writing."""


def _compact(version_id: int, days: Sequence[date]) -> None:
    """Merge the days' id indexes after a commit (best effort: the next commit tries again)."""
    for day in days:
        try:
            store.compact_id_index(version_id=version_id, day=day)
        except Exception:
            logger.warning("could not merge the id index of %s", day, exc_info=True)


def labels_ingest(
    *, model_name: str, records: Any = None, upload=None, actor: Actor, source: str | None = None
) -> list[DataBatch]:
    """Store the true outcomes of logged predictions, found by ``prediction_id``.

    Each label is filed with its prediction (the prediction's version and day), so a window's
    labels are in its own partitions. Unknown ids are refused naming the record. The latest label
    of a prediction wins (greatest ``label_time``, then the one ingested last).
    """
    model = registry_services.model_get(model_name)
    parsed = parse(
        kind=BatchKind.LABELS, records=records, upload=upload, bounds=timestamp_bounds(None)
    )
    now_us = store.to_us(timezone.now())
    label_time = parsed.label_time if parsed.label_time is not None else np.full(parsed.n, _NAT)
    label_time = np.where(label_time == _NAT, now_us, label_time)

    ids = pa.array(parsed.prediction_id, type=pa.string())
    located = store.locate_predictions(model=model, ids=ids)
    if not located.found.all():
        errors = _Errors()
        errors.rows(
            np.flatnonzero(~located.found),
            "prediction_id",
            f"no stored prediction of model '{model.name}' has this id",
        )
        errors.raise_if_any()

    order = np.lexsort((located.row, located.batch_id, located.day, located.version_id))
    groups: dict[tuple[int, date], np.ndarray] = {}
    version_ids, days = located.version_id[order], located.day[order]
    bounds = np.flatnonzero((np.diff(version_ids) != 0) | (np.diff(days) != np.timedelta64(0)))
    for chunk in np.split(order, bounds + 1):
        if chunk.size:
            groups[(int(located.version_id[chunk[0]]), located.day[chunk[0]].item())] = chunk
    files: list[store.StoredFile] = []
    grouped: list[tuple[int, store.StoredFile]] = []
    try:
        for (version_id, day), chunk in groups.items():
            index = located.index[chunk]
            table = pa.table(
                {
                    "prediction_id": ids.take(pa.array(index)),
                    "label": pa.array(parsed.label[index].astype(np.int8), type=pa.int8()),
                    "label_time": _timestamp_array(label_time[index]),
                    "batch": pa.array(located.batch_id[chunk], type=pa.int64()),
                    "row": pa.array(located.row[chunk], type=pa.int64()),
                }
            )
            stored = store.write_file(table, model_name=model.name, kind=BatchKind.LABELS, day=day)
            files.append(stored)
            grouped.append((version_id, stored))
    except BaseException:
        store.discard(f.path for f in files)
        raise
    source = source or ("upload" if upload is not None else "api")
    versions = dict(
        ModelVersion.objects.filter(pk__in={v for v, _ in grouped}).values_list("pk", "version")
    )

    def create_rows() -> list[DataBatch]:
        predicted = set(np.unique(located.batch_id).tolist())
        if DataBatch.objects.filter(pk__in=predicted).count() != len(predicted):
            raise Conflict("some of the labelled predictions were purged meanwhile; retry")
        batches = [
            _batch_rows(
                [stored],
                model=model,
                version_id=version_id or None,
                kind=BatchKind.LABELS,
                source=source,
                actor=actor,
            )[0]
            for version_id, stored in grouped
        ]
        audit.record(
            actor=actor,
            action="labels.ingested",
            obj=model,
            model_name=model.name,
            after={
                "rows": parsed.n,
                "days": _day_list(files),
                "digest": store.combined_digest(files),
                "batches": [b.pk for b in batches],
                "versions": sorted(set(versions.values())),
                "source": source,
            },
        )
        return batches

    return _commit(files, create_rows=create_rows)


@dataclass(frozen=True)
class ReferenceResult:
    batches: list[DataBatch]
    profile: ReferenceProfile
    rows: int


def reference_ingest(
    *,
    model_name: str,
    version: str,
    records: Any = None,
    upload=None,
    actor: Actor,
    source: str | None = None,
) -> ReferenceResult:
    """Add reference records (a training or validation sample) to a version; recompute its profile.

    Reference data accumulates: the profile covers every reference batch of the version. The
    file is filed under the day it arrived.
    """
    target = registry_services.version_get(model_name, version)
    parsed = parse(
        kind=BatchKind.REFERENCE,
        records=records,
        upload=upload,
        feature_names=target.feature_list,
        feature_types=feature_types_of(target),
        bounds=timestamp_bounds(target),
    )
    table = _record_table(parsed, target, with_label=True)
    files = [
        store.write_file(
            table,
            model_name=target.model.name,
            kind=BatchKind.REFERENCE,
            day=timezone.now().astimezone(UTC).date(),
        )
    ]
    source = source or ("upload" if upload is not None else "api")

    def create_rows() -> ReferenceResult:
        # one reference upload at a time per version, so each profile covers all committed data
        # (FOR NO KEY UPDATE: runs, alerts and batches referencing the version are not held up)
        store.lock_version(target.pk)
        batches = _batch_rows(
            files,
            model=target.model,
            version_id=target.pk,
            kind=BatchKind.REFERENCE,
            source=source,
            actor=actor,
        )
        try:
            profile = profiles.store_profile(target, batch=batches[-1])
        except ValueError as exc:  # stats refused the data as a whole
            raise InvalidInput({"records": str(exc)}) from exc
        audit.record(
            actor=actor,
            action="reference.ingested",
            obj=target,
            model_name=target.model.name,
            after={
                "version": target.version,
                "rows": parsed.n,
                "days": _day_list(files),
                "digest": store.combined_digest(files),
                "batches": [b.pk for b in batches],
                "reference_rows": profile.rows,
                "source": source,
            },
        )
        return ReferenceResult(batches=batches, profile=profile, rows=parsed.n)

    return _commit(files, create_rows=create_rows)


# ------------------------------------------------------------------------------------------------
# Retention
# ------------------------------------------------------------------------------------------------


def retention_days(model: RegisteredModel) -> int:
    """``retention_days`` of the model's newest monitoring policy, else the default (365)."""
    return int(policy_values("monitoring", model)["retention_days"])


def purge_expired(*, now: datetime | None = None) -> int:
    """Delete prediction and label batches older than each model's retention; never reference.

    Batches of an impossible future day (after tomorrow) go too: only data stored before
    timestamps were bounded can have one.

    One transaction per model: its expired manifest rows go and a ``predictions.purged`` event
    (rows, days) is written; the files are deleted after that commits (a failure there leaves
    orphans for the sweeper). Returns the number of batches removed.
    """
    now = now or timezone.now()
    actor = Actor.system(PURGE_TASK)
    kinds = [BatchKind.PREDICTIONS, BatchKind.LABELS]
    model_ids = (
        DataBatch.objects.filter(kind__in=kinds).order_by().values_list("model_id", flat=True)
    )
    removed = 0
    for model in RegisteredModel.objects.filter(pk__in=set(model_ids)).order_by("name"):
        keep_days = retention_days(model)
        before = (now.astimezone(UTC) - timedelta(days=keep_days)).date()
        # A day after tomorrow cannot hold a real prediction: data stored before timestamps
        # were bounded (year 2262) would otherwise never expire.
        future = (now.astimezone(UTC) + timedelta(days=1)).date()
        with transaction.atomic():
            expired = list(
                DataBatch.objects.select_for_update()
                .filter(Q(day__lt=before) | Q(day__gt=future), model=model, kind__in=kinds)
                .order_by("day", "id")
            )
            if not expired:
                continue
            DataBatch.objects.filter(pk__in=[b.pk for b in expired]).delete()
            audit.record(
                actor=actor,
                action="predictions.purged",
                obj=model,
                model_name=model.name,
                after={
                    "rows": sum(b.rows for b in expired if b.kind == BatchKind.PREDICTIONS),
                    "label_rows": sum(b.rows for b in expired if b.kind == BatchKind.LABELS),
                    "days": sorted({b.day.isoformat() for b in expired}),
                    "batches": len(expired),
                    "retention_days": keep_days,
                    "before": before.isoformat(),
                    "future_days": sorted({b.day.isoformat() for b in expired if b.day > future}),
                },
            )
        store.delete_files(p for b in expired for p in (b.path, b.id_index) if p)
        removed += len(expired)
    return removed
