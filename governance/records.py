"""One parser for batches of records: JSON records, or an uploaded CSV or Parquet file.

Both the validation evidence CI submits (``governance.evidence``) and the production data
monitoring ingests (``monitoring.ingest``) arrive this way; a ``Schema`` says which columns a kind
of batch has and which are required, and everything else is the same rule for both: the limits
(``MAX_RECORDS``, ``MAX_ERRORS``, value lengths), the messages, how a file is told apart (Parquet
by its magic, else UTF-8 CSV), and the sensitive columns of an upload (``sensitive.<attribute>``,
see ``upload_sensitive_column``).

Every record is checked, column by column with numpy where it can be; a batch is accepted whole or
refused whole with ``InvalidInput`` naming the record (0-based, in the order given) and field,
e.g. ``{"records[3].score": ["must be a number in [0, 1]"]}``, at most ``MAX_ERRORS`` of them.
Feature values are checked against their declared types (``registry.feature_types``): a
``number`` or ``integer`` feature takes numbers (an integer a whole one), a ``boolean`` true/false
(or 0/1), a ``string`` text (numbers become their text); null is always allowed.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from platform_core.errors import InvalidInput
from registry.feature_types import DEFAULT_TYPE

MAX_RECORDS = 2_000_000
MAX_ERRORS = 50
MAX_ID_LENGTH = 200
MAX_ATTRIBUTE_LENGTH = 100
MAX_TEXT_LENGTH = 200
UPLOAD_SENSITIVE_PREFIX = "sensitive."

SCORE = "must be a number in [0, 1]"
BINARY = "must be 0 or 1"
PREDICTION = "must be 0, 1 or null"
TIMESTAMP = "must be an ISO 8601 date-time, e.g. 2026-01-05T10:00:00Z (naive times are UTC)"
ID = f"must be a non-empty string of at most {MAX_ID_LENGTH} characters"
SENSITIVE_VALUE = f"must be a non-empty string or number (at most {MAX_TEXT_LENGTH} characters)"
REQUIRED_NOTE = "required; "
_NUMBER_TYPES = frozenset({int, float})
_MAX_EXACT_INTEGER = 2**53  # a float64 holds every whole number up to this exactly
_TRUE = frozenset({"true", "1", "1.0"})
_FALSE = frozenset({"false", "0", "0.0"})
NAT = np.iinfo(np.int64).min  # an absent timestamp in int64 microseconds


def upload_sensitive_column(attribute: str) -> str:
    """The upload column of a sensitive attribute: ``sensitive.<attribute>``."""
    return UPLOAD_SENSITIVE_PREFIX + attribute


def is_upload_sensitive(column: str) -> bool:
    """Whether an upload column holds a sensitive attribute (a bare prefix does not)."""
    return column.startswith(UPLOAD_SENSITIVE_PREFIX) and len(column) > len(UPLOAD_SENSITIVE_PREFIX)


def upload_attribute(column: str) -> str:
    """The attribute an upload's ``sensitive.<attribute>`` column holds."""
    return column.removeprefix(UPLOAD_SENSITIVE_PREFIX)


@dataclass(frozen=True)
class Schema:
    """The columns of one kind of batch.

    ``columns`` are the plain fields, in the order an upload's error message lists them;
    ``features``: each record has a ``features`` object (one column per feature in a file);
    ``sensitive``: each record may have a ``sensitive`` object (``sensitive.<attribute>``
    columns). ``required_notes`` replace ``required; `` before a missing required field's
    message where the reason is worth saying.
    """

    columns: tuple[str, ...]
    required: tuple[str, ...]
    features: bool = False
    sensitive: bool = True
    required_notes: Mapping[str, str] = field(default_factory=dict)

    @property
    def fields(self) -> frozenset[str]:
        """The keys a JSON record may have."""
        nested = {"features"} if self.features else set()
        return frozenset({*self.columns, *nested, *({"sensitive"} if self.sensitive else ())})

    def note(self, name: str) -> str:
        return self.required_notes.get(name, REQUIRED_NOTE)


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------


class Errors:
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
    return _one_by_one(values, _number)


_BLANK = object()  # a value that counts as absent (blank text), as None does


def _one_by_one(values: Sequence, convert: Callable[[Any], Any]) -> _Col:
    """The slow path: ``convert`` gives each value's float, ``_BLANK`` or None (bad)."""
    n = len(values)
    out = np.full(n, np.nan)
    absent = np.zeros(n, dtype=bool)
    bad = np.zeros(n, dtype=bool)
    for i, value in enumerate(values):
        converted = _BLANK if value is None else convert(value)
        if converted is _BLANK:
            absent[i] = True
        elif converted is None:
            bad[i] = True
        else:
            out[i] = converted
    return _Col(out, absent, bad)


def _number(value: Any) -> float | None:
    if type(value) not in _NUMBER_TYPES:
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


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
    """int64 microseconds since the epoch in UTC (``NAT`` where absent); naive times are UTC."""
    if _is_arrow(values):
        kind = values.type
        absent = _nulls(values)
        if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
            target = pa.timestamp("us", tz=getattr(kind, "tz", None))
            stamps = pc.cast(values, target, safe=False).cast(pa.int64()).fill_null(NAT)
            return _Col(stamps.to_numpy(), absent, np.zeros(len(values), dtype=bool))
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            return _Col(np.full(len(values), NAT, dtype=np.int64), absent, ~absent)
        values = values.to_numpy(zero_copy_only=False).tolist()
    n = len(values)
    out = np.full(n, NAT, dtype=np.int64)
    absent = np.fromiter((v is None for v in values), dtype=bool, count=n)
    is_text = np.fromiter((type(v) is str for v in values), dtype=bool, count=n)
    is_time = np.fromiter((isinstance(v, datetime) for v in values), dtype=bool, count=n)
    bad = ~(absent | is_text | is_time)
    for mask, parse in ((is_text, _parse_iso), (is_time, _parse_datetimes)):
        if mask.any():
            where = np.flatnonzero(mask)
            parsed = parse([values[i] for i in where])
            out[where] = parsed
            bad[where[parsed == NAT]] = True
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
    out[np.isnat(array)] = NAT
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
    timestamp: np.ndarray | None = None  # int64 us UTC, NAT where absent
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
    features: list, feature_names: Sequence[str], errors: Errors
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


def _sensitive_columns(sensitive: list, errors: Errors) -> dict[str, list]:
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
    records: Any, *, schema: Schema, feature_names: Sequence[str], errors: Errors
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
    allowed = schema.fields
    for i in [i for i, r in enumerate(recs) if not r.keys() <= allowed][: MAX_ERRORS + 1]:
        for name in recs[i]:
            if name not in allowed:
                errors.row(i, str(name), "Unknown field.")
    columns = {name: [r.get(name) for r in recs] for name in sorted(schema.columns)}
    source = _Source(n=len(recs), columns=columns)
    if schema.features:
        features = [r.get("features") for r in recs]
        source.features = _feature_columns(features, feature_names, errors)
    if schema.sensitive:
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
    upload, *, schema: Schema, feature_names: Sequence[str], feature_types: Mapping[str, str]
) -> _Source:
    features = list(feature_names) if schema.features else []
    text = ["prediction_id", "timestamp", "label_time"]
    text += [name for name in features if feature_types.get(name) in ("string", "boolean")]
    table = _read_table(upload, text_columns=text)
    _check_size(table.num_rows, "file")
    names = list(table.column_names)
    sensitive = [c for c in names if is_upload_sensitive(c)] if schema.sensitive else []
    if problems := _column_problems(names, schema=schema, features=features, sensitive=sensitive):
        raise InvalidInput({"file": problems})

    def column(name: str) -> pa.Array:
        return table.column(name).combine_chunks()

    source = _Source(n=table.num_rows)
    source.columns = {name: column(name) for name in schema.columns if name in names}
    for name in features:
        source.features[name] = (column(name), None)
    source.sensitive = {upload_attribute(c): column(c) for c in sensitive}
    return source


def _column_problems(
    names: list[str], *, schema: Schema, features: list[str], sensitive: list[str]
) -> list[str]:
    """Unknown, repeated and missing columns of an upload, each kind in one message."""
    problems = []
    unknown = [c for c in names if c not in {*schema.columns, *features, *sensitive}]
    if unknown:
        hint = ", ".join(schema.columns)
        if features:
            hint += ", one column per feature and sensitive.<attribute>"
        elif schema.sensitive:
            hint += " and sensitive.<attribute>"
        problems.append(f"unknown column(s) {', '.join(unknown)}; use {hint}")
    duplicated = sorted({c for c in names if names.count(c) > 1})
    if duplicated:
        problems.append(f"duplicate column(s) {', '.join(duplicated)}")
    missing = [c for c in (*schema.required, *features) if c not in names]
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    return problems


@dataclass
class _Check:
    """What one validation step needs: the batch's raw columns, its schema, the errors so far."""

    source: _Source
    schema: Schema
    errors: Errors

    def given(self, name: str) -> bool:
        """The field is part of the schema and the batch has it (or must have it)."""
        return name in self.schema.columns and (
            name in self.source.columns or name in self.schema.required
        )

    def column(self, name: str) -> Sequence | pa.Array:
        values = self.source.columns.get(name)
        return [None] * self.source.n if values is None else values

    def require(self, name: str, absent: np.ndarray, message: str) -> None:
        if name in self.schema.required:
            where = np.flatnonzero(absent)
            if where.size:
                self.errors.rows(where, name, self.schema.note(name) + message)


def _validate(
    source: _Source,
    *,
    schema: Schema,
    feature_types: Mapping[str, str],
    bounds: tuple[int, int] | None,
    errors: Errors,
) -> Parsed:
    check = _Check(source, schema, errors)
    parsed = Parsed(n=source.n)
    if check.given("prediction_id"):
        parsed.prediction_id = _valid_ids(check)
    for name in ("timestamp", "label_time"):
        if check.given(name):
            setattr(parsed, name, _valid_times(check, name, bounds))
    if check.given("score"):
        parsed.score = _valid_scores(check)
    for name, message in (("prediction", PREDICTION), ("label", BINARY)):
        if check.given(name):
            setattr(parsed, name, _valid_binary(check, name, message))
    for name, (values, _) in source.features.items():
        declared = feature_types.get(name, DEFAULT_TYPE)
        parsed.features[name] = (declared, _feature(name, values, declared, errors))
    for attribute, values in source.sensitive.items():
        texts = _texts(values, strip=True)
        where = np.flatnonzero(texts.bad | texts.absent)
        errors.rows(where, upload_sensitive_column(attribute), SENSITIVE_VALUE)
        parsed.sensitive[attribute] = texts.values
    return parsed


def _valid_ids(check: _Check) -> np.ndarray:
    """The ids (None where absent or bad); an id given twice is refused at its repeat."""
    ids = _ids(check.column("prediction_id"))
    check.errors.rows(np.flatnonzero(ids.bad), "prediction_id", ID)
    check.require("prediction_id", ids.absent, ID)
    present = ~(ids.absent | ids.bad)
    _refuse_repeated_ids(ids.values, present, check.errors)
    return np.where(present, ids.values, None)


def _valid_times(check: _Check, name: str, bounds: tuple[int, int] | None) -> np.ndarray:
    """int64 microseconds (``NAT`` where absent); outside ``bounds`` is refused."""
    stamps = _timestamps(check.column(name))
    check.errors.rows(np.flatnonzero(stamps.bad), name, TIMESTAMP)
    if bounds is not None:
        earliest, latest = bounds
        given = ~(stamps.absent | stamps.bad)
        outside = given & ((stamps.values < earliest) | (stamps.values > latest))
        check.errors.rows(np.flatnonzero(outside), name, _bounds_message(earliest, latest))
    check.require(name, stamps.absent, TIMESTAMP)
    return stamps.values


def _valid_scores(check: _Check) -> np.ndarray:
    scores = _numbers(check.column("score"))
    bad = scores.bad | (~scores.absent & ((scores.values < 0.0) | (scores.values > 1.0)))
    check.errors.rows(np.flatnonzero(bad), "score", SCORE)
    check.require("score", scores.absent, SCORE)
    return scores.values


def _valid_binary(check: _Check, name: str, message: str) -> np.ndarray | None:
    """float64 0/1, NaN where absent; None when an optional column has no value at all."""
    values = _numbers(check.column(name))
    binary = (values.values == 0.0) | (values.values == 1.0)
    bad = values.bad | (~values.absent & ~binary)
    check.errors.rows(np.flatnonzero(bad), name, message)
    check.require(name, values.absent, message)
    if values.absent.all() and name not in check.schema.required:
        return None
    return np.where(values.absent | bad, np.nan, values.values)


def _refuse_repeated_ids(ids: np.ndarray, present: np.ndarray, errors: Errors) -> None:
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
    return _one_by_one(values, _boolean)


def _boolean(value: Any) -> Any:
    if isinstance(value, bool) or (type(value) in _NUMBER_TYPES and value in (0, 1)):
        return float(value)
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if not text:
        return _BLANK
    if text in _TRUE or text in _FALSE:
        return 1.0 if text in _TRUE else 0.0
    return None


def _feature(name: str, values: Sequence | pa.Array, kind: str, errors: Errors) -> np.ndarray:
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
    schema: Schema,
    records: Any = None,
    upload=None,
    feature_names: Sequence[str] = (),
    feature_types: Mapping[str, str] | None = None,
    bounds: tuple[int, int] | None = None,
) -> Parsed:
    """Validate a batch (JSON records or an uploaded file) of ``schema``; raise ``InvalidInput``.

    ``feature_types`` maps features to their declared type (default ``number``);
    ``bounds`` (microseconds since the epoch) limit ``timestamp`` and ``label_time``.
    """
    feature_types = feature_types or {}
    errors = Errors()
    if upload is not None:
        source = _from_upload(
            upload, schema=schema, feature_names=feature_names, feature_types=feature_types
        )
    elif records is None:
        raise InvalidInput({"records": "required: a list of records (or upload a file)"})
    else:
        source = _from_records(records, schema=schema, feature_names=feature_names, errors=errors)
    parsed = _validate(
        source, schema=schema, feature_types=feature_types, bounds=bounds, errors=errors
    )
    errors.raise_if_any()
    return parsed
