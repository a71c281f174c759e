"""Evidence records CI submits for the validation gates: parsing, validation, digest and storage.

Records arrive as JSON (``{"kind": "validation", "records": [{"score": 0.71, "label": 1,
"sensitive": {"area": "north"}, "prediction": 1, "timestamp": "2026-01-05T10:00:00Z"}, ...]}``) or
as an uploaded CSV or Parquet file with the columns ``score``, ``label``, optional ``prediction``
and ``timestamp``, and one ``sensitive.<attribute>`` column per sensitive attribute.

Every record is checked; a batch is accepted whole or refused whole, with errors naming the record
and field (``records[3].score``, records counted from 0 in the order given). An accepted batch has
a SHA-256 digest over its canonical form (the same records give the same digest whether they came
as JSON, CSV or Parquet) and is stored as Parquet under ``VAR_DIR/evidence/<digest>.parquet``
before the evaluation row commits (docs/architecture.md §5: data outside the database first,
then the manifest row); ``sweep_orphans`` removes files no evaluation refers to.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from django.conf import settings

from registry.errors import InvalidInput

FIELDS = ("score", "label", "prediction", "timestamp", "sensitive")
SENSITIVE_PREFIX = "sensitive."
EVIDENCE_DIR = "evidence"
MAX_ERRORS = 50
MAX_RECORDS = 2_000_000
MAX_ATTRIBUTE_LENGTH = 100
MAX_VALUE_LENGTH = 200

_SCORE = "must be a number in [0, 1]"
_LABEL = "must be 0 or 1"
_PREDICTION = "must be 0, 1 or null"
_TIMESTAMP = "must be an ISO 8601 date-time, e.g. 2026-01-05T10:00:00Z"


@dataclass(frozen=True)
class EvidenceBatch:
    """An accepted batch of records as arrays, ready for ``analytics.stats``."""

    scores: np.ndarray  # float64 in [0, 1]
    labels: np.ndarray  # int8, 0/1
    predictions: np.ndarray | None  # float64: 0, 1 or NaN (not given); None when no record has one
    sensitive: dict[str, np.ndarray]  # attribute -> str values, same attributes on every record
    timestamps: np.ndarray | None  # datetime64[us] in UTC; None when no record has one
    digest: str  # sha256 hex of the canonical records
    attributes: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return int(self.scores.size)

    def to_table(self) -> pa.Table:
        columns: dict[str, pa.Array] = {
            "score": pa.array(self.scores, type=pa.float64()),
            "label": pa.array(self.labels, type=pa.int8()),
        }
        if self.predictions is not None:
            given = ~np.isnan(self.predictions)
            columns["prediction"] = pa.array(
                np.where(given, self.predictions, 0).astype(np.int8), mask=~given, type=pa.int8()
            )
        if self.timestamps is not None:
            columns["timestamp"] = pa.array(self.timestamps, type=pa.timestamp("us", tz="UTC"))
        for name, values in self.sensitive.items():
            columns[SENSITIVE_PREFIX + name] = pa.array(values.tolist(), type=pa.string())
        table = pa.table(columns)
        return table.replace_schema_metadata({"evidence_digest": self.digest})


# ------------------------------------------------------------------------------------------------
# Parsing
# ------------------------------------------------------------------------------------------------


def parse_records(records: Any, *, require_timestamp: bool = False) -> EvidenceBatch:
    """Validate JSON records (a list of objects); raise ``InvalidInput`` naming every bad field."""
    if not isinstance(records, list):
        raise InvalidInput({"records": "must be a list of records"})
    return _build(records, require_timestamp=require_timestamp, source="records")


def parse_upload(upload, *, require_timestamp: bool = False) -> EvidenceBatch:
    """Validate an uploaded CSV or Parquet file (told apart by content, not by name)."""
    frame = read_upload(upload)
    columns = [str(c) for c in frame.columns]
    allowed = {"score", "label", "prediction", "timestamp"}
    unknown = [
        c
        for c in columns
        if c not in allowed
        and not (c.startswith(SENSITIVE_PREFIX) and len(c) > len(SENSITIVE_PREFIX))
    ]
    if unknown:
        raise InvalidInput(
            {
                "file": f"unknown column(s) {', '.join(unknown)}; use score, label, prediction, "
                "timestamp and sensitive.<attribute>"
            }
        )
    missing = [c for c in ("score", "label") if c not in columns]
    if missing:
        raise InvalidInput({"file": f"missing column(s) {', '.join(missing)}"})
    if require_timestamp and "timestamp" not in columns:
        raise InvalidInput({"file": "missing column timestamp (required for shadow_replay)"})
    return _build(_frame_records(frame), require_timestamp=require_timestamp, source="records")


def read_upload(upload) -> pd.DataFrame:
    """The uploaded file as a frame: Parquet when it starts with the Parquet magic, else CSV."""
    data = upload.read() if hasattr(upload, "read") else bytes(upload)
    if not data:
        raise InvalidInput({"file": "is empty"})
    if data[:4] == b"PAR1":
        try:
            return pq.read_table(io.BytesIO(data)).to_pandas()
        except (pa.ArrowException, ValueError, OSError) as exc:
            raise InvalidInput({"file": f"could not be read as Parquet: {exc}"}) from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput({"file": "is neither Parquet nor UTF-8 CSV"}) from exc
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise InvalidInput({"file": f"could not be read as CSV: {exc}"}) from exc


def _missing(value: Any) -> bool:
    if value is None or value is pd.NaT or value is pd.NA:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip() == ""


def _cell(value: Any) -> Any:
    """A file cell as its JSON equivalent: numbers from CSV text, timestamps as datetimes."""
    if _missing(value):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value


def _number_cell(value: Any) -> Any:
    value = _cell(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _frame_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    names = [str(c) for c in frame.columns]
    sensitive = [c for c in names if c.startswith(SENSITIVE_PREFIX)]
    columns = {name: frame[name].tolist() for name in names}
    records: list[dict[str, Any]] = []
    for i in range(len(frame)):
        record: dict[str, Any] = {}
        for name in ("score", "label", "prediction"):
            if name in columns:
                value = _number_cell(columns[name][i])
                if value is not None or name != "prediction":
                    record[name] = value
        if "timestamp" in columns and (ts := _cell(columns["timestamp"][i])) is not None:
            record["timestamp"] = ts
        if sensitive:
            record["sensitive"] = {
                c[len(SENSITIVE_PREFIX) :]: _cell(columns[c][i]) for c in sensitive
            }
        records.append(record)
    return records


# ------------------------------------------------------------------------------------------------
# Validation and canonical form
# ------------------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _binary(value: Any) -> int | None:
    if _is_number(value) and value in (0, 1):
        return int(value)
    return None


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    else:
        return None
    if parsed.tzinfo is None:  # naive times are read as UTC
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _sensitive_value(value: Any) -> str | None:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        value = value.strip()
        return value if value and len(value) <= MAX_VALUE_LENGTH else None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value)) if value.is_integer() else repr(value)
    return None


class _Errors:
    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}
        self.more = 0

    def add(self, key: str, message: str) -> None:
        if len(self.errors) >= MAX_ERRORS and key not in self.errors:
            self.more += 1
            return
        self.errors.setdefault(key, []).append(message)

    def raise_if_any(self) -> None:
        if not self.errors:
            return
        errors = dict(self.errors)
        if self.more:
            errors["records"] = [f"{self.more} further error(s) not listed"]
        raise InvalidInput(errors)


def _build(records: list, *, require_timestamp: bool, source: str) -> EvidenceBatch:
    if not records:
        raise InvalidInput({source: "must contain at least one record"})
    if len(records) > MAX_RECORDS:
        raise InvalidInput({source: f"at most {MAX_RECORDS} records per submission"})
    errors = _Errors()
    attributes: tuple[str, ...] | None = None
    n = len(records)
    scores = np.empty(n, dtype=np.float64)
    labels = np.empty(n, dtype=np.int8)
    predictions = np.full(n, np.nan, dtype=np.float64)
    stamps: list[datetime | None] = [None] * n
    sensitive_rows: list[dict[str, str]] = [{}] * n
    any_prediction = any_timestamp = False

    for i, record in enumerate(records):
        at = f"{source}[{i}]"
        if not isinstance(record, Mapping):
            errors.add(at, "must be an object")
            continue
        for name in record:
            if name not in FIELDS:
                errors.add(f"{at}.{name}", "Unknown field.")
        score = record.get("score")
        if _is_number(score) and math.isfinite(score) and 0.0 <= score <= 1.0:
            scores[i] = float(score)
        else:
            errors.add(f"{at}.score", _SCORE if "score" in record else "required; " + _SCORE)
        label = _binary(record.get("label"))
        if label is None:
            errors.add(f"{at}.label", _LABEL if "label" in record else "required; " + _LABEL)
        else:
            labels[i] = label
        prediction = record.get("prediction")
        if prediction is not None:
            value = _binary(prediction)
            if value is None:
                errors.add(f"{at}.prediction", _PREDICTION)
            else:
                predictions[i], any_prediction = float(value), True
        stamp = record.get("timestamp")
        if stamp is not None:
            parsed = _timestamp(stamp)
            if parsed is None:
                errors.add(f"{at}.timestamp", _TIMESTAMP)
            else:
                stamps[i], any_timestamp = parsed, True
        elif require_timestamp:
            errors.add(f"{at}.timestamp", "required for shadow_replay evidence; " + _TIMESTAMP)
        raw = record.get("sensitive", {})
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            errors.add(f"{at}.sensitive", 'must be an object, e.g. {"area": "north"}')
            continue
        row: dict[str, str] = {}
        for name, value in raw.items():
            if not isinstance(name, str) or not name or len(name) > MAX_ATTRIBUTE_LENGTH:
                errors.add(f"{at}.sensitive", "attribute names are non-empty strings")
                continue
            text = None if value is None else _sensitive_value(value)
            if text is None:
                errors.add(
                    f"{at}.sensitive.{name}",
                    f"must be a non-empty string or number (at most {MAX_VALUE_LENGTH} characters)",
                )
            else:
                row[name] = text
        names = tuple(sorted(raw))
        if attributes is None:
            attributes = names
        elif names != attributes:
            missing = sorted(set(attributes) - set(names))
            extra = sorted(set(names) - set(attributes))
            detail = "; ".join(
                part
                for part in (
                    f"missing {', '.join(missing)}" if missing else "",
                    f"unexpected {', '.join(extra)}" if extra else "",
                )
                if part
            )
            errors.add(
                f"{at}.sensitive",
                f"every record must give the same sensitive attributes as the first "
                f"({', '.join(attributes) or 'none'}): {detail}",
            )
        sensitive_rows[i] = row
    errors.raise_if_any()

    attributes = attributes or ()
    sensitive = {name: np.array([row[name] for row in sensitive_rows]) for name in attributes}
    timestamps = None
    if any_timestamp:
        timestamps = np.array(
            [s.replace(tzinfo=None) if s is not None else None for s in stamps],
            dtype="datetime64[us]",
        )
    digest = _digest(
        scores,
        labels,
        predictions if any_prediction else None,
        stamps if any_timestamp else None,
        sensitive_rows,
        attributes,
    )
    return EvidenceBatch(
        scores=scores,
        labels=labels,
        predictions=predictions if any_prediction else None,
        sensitive=sensitive,
        timestamps=timestamps,
        digest=digest,
        attributes=attributes,
    )


def _digest(
    scores: np.ndarray,
    labels: np.ndarray,
    predictions: np.ndarray | None,
    stamps: list[datetime | None] | None,
    sensitive_rows: list[dict[str, str]],
    attributes: tuple[str, ...],
) -> str:
    """SHA-256 over one canonical JSON line per record.

    Each line is ``json.dumps(record, sort_keys=True, separators=(",", ":"))`` of
    ``{"label", "prediction"?, "score", "sensitive"?, "timestamp"?}`` (absent fields omitted,
    timestamps as UTC ISO 8601), written out by hand because it is ~5x faster than ``json.dumps``.
    """
    quoted: dict[str, str] = {}

    def q(text: str) -> str:
        if text not in quoted:
            quoted[text] = json.dumps(text)
        return quoted[text]

    h = hashlib.sha256()
    score_list, label_list = scores.tolist(), labels.tolist()
    prediction_list = predictions.tolist() if predictions is not None else None
    lines: list[str] = []
    for i in range(len(score_list)):
        parts = [f'{{"label":{label_list[i]}']
        if prediction_list is not None and not math.isnan(prediction_list[i]):
            parts.append(f'"prediction":{int(prediction_list[i])}')
        parts.append(f'"score":{score_list[i]!r}')
        if attributes:
            row = sensitive_rows[i]
            inner = ",".join(f"{q(name)}:{q(row[name])}" for name in attributes)
            parts.append(f'"sensitive":{{{inner}}}')
        if stamps is not None and stamps[i] is not None:
            parts.append(f'"timestamp":{q(stamps[i].isoformat())}')
        lines.append(",".join(parts) + "}\n")
        if len(lines) >= 10_000:
            h.update("".join(lines).encode())
            lines.clear()
    h.update("".join(lines).encode())
    return h.hexdigest()


def payload_digest(payload: Mapping[str, Any]) -> str:
    """SHA-256 of a small JSON payload (e.g. unit-test results) in canonical form."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


# ------------------------------------------------------------------------------------------------
# Storage
# ------------------------------------------------------------------------------------------------


def evidence_dir() -> Path:
    return Path(settings.VAR_DIR) / EVIDENCE_DIR


def resolve(data_path: str) -> Path:
    """The file behind ``Evaluation.data_path`` (stored relative to ``VAR_DIR``)."""
    return Path(settings.VAR_DIR) / data_path


def store(batch: EvidenceBatch) -> tuple[str, bool]:
    """Write the batch as Parquet (temp name, then ``os.replace``); content-addressed by digest.

    Returns the path relative to ``VAR_DIR`` for ``Evaluation.data_path`` and whether this call
    created the file (an identical earlier batch may already be stored; its mtime is refreshed so
    the orphan sweeper leaves it alone while this request commits).
    """
    directory = evidence_dir()
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{batch.digest}.parquet"
    relative = f"{EVIDENCE_DIR}/{target.name}"
    if target.exists():
        os.utime(target)
        return relative, False
    tmp = directory / f".{batch.digest}.{uuid.uuid4().hex}.tmp"
    try:
        pq.write_table(batch.to_table(), tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return relative, True


def discard(data_path: str) -> None:
    """Remove a file written for a request that then failed, unless an evaluation refers to it."""
    from .models import Evaluation

    if not Evaluation.objects.filter(data_path=data_path).exists():
        resolve(data_path).unlink(missing_ok=True)


def load(data_path: str) -> pd.DataFrame:
    """A stored batch as a frame (columns as in the upload format)."""
    return pq.read_table(resolve(data_path)).to_pandas()


def sweep_orphans(*, older_than_seconds: float = 3600) -> list[str]:
    """Delete stored batches no evaluation refers to, older than the grace period."""
    from .models import Evaluation

    directory = evidence_dir()
    if not directory.is_dir():
        return []
    cutoff = time.time() - older_than_seconds
    candidates = [p for p in directory.iterdir() if p.is_file() and p.stat().st_mtime < cutoff]
    referenced = set(
        Evaluation.objects.filter(
            data_path__in=[f"{EVIDENCE_DIR}/{p.name}" for p in candidates if p.suffix == ".parquet"]
        ).values_list("data_path", flat=True)
    )
    removed = []
    for p in candidates:
        if f"{EVIDENCE_DIR}/{p.name}" in referenced:
            continue
        p.unlink(missing_ok=True)
        removed.append(p.name)
    return removed
