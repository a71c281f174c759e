"""Evidence records CI submits for the validation gates: parsing, validation, digest and storage.

Records arrive as JSON (``{"kind": "validation", "records": [{"score": 0.71, "label": 1,
"sensitive": {"area": "north"}, "prediction": 1, "timestamp": "2026-01-05T10:00:00Z"}, ...]}``) or
as an uploaded CSV or Parquet file with the columns ``score``, ``label``, optional ``prediction``
and ``timestamp``, and one ``sensitive.<attribute>`` column per sensitive attribute.

Every record is checked by the parser monitoring's ingestion uses too (``governance.records``: one
set of limits and messages); a batch is accepted whole or refused whole, with errors naming the
record and field (``records[3].score``, records counted from 0 in the order given). An accepted
batch has a SHA-256 digest over its canonical form (the same records give the same digest whether
they came as JSON, CSV or Parquet) and is stored as Parquet under the key
``evidence/<digest>.parquet`` of the platform's storage (``platform_core.storage``: ``VAR_DIR``
on this host or an S3-compatible object store) before the evaluation row commits
(``governance.filestore``, docs/architecture.md §5: data outside the database first, then the
manifest row); ``sweep_orphans`` removes files no evaluation refers to.
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from platform_core import storage
from platform_core.errors import InvalidInput

from . import filestore, records
from .records import upload_sensitive_column

EVIDENCE_DIR = "evidence"
COLUMNS = ("score", "label", "prediction", "timestamp")
SCHEMA = records.Schema(columns=COLUMNS, required=("score", "label"))
SHADOW_REPLAY_SCHEMA = records.Schema(
    columns=COLUMNS,
    required=("score", "label", "timestamp"),
    required_notes={"timestamp": "required for shadow_replay evidence; "},
)


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
            columns[upload_sensitive_column(name)] = pa.array(values.tolist(), type=pa.string())
        table = pa.table(columns)
        return table.replace_schema_metadata({"evidence_digest": self.digest})


# ------------------------------------------------------------------------------------------------
# Parsing (governance.records) and canonical form
# ------------------------------------------------------------------------------------------------


def parse_records(records_: Any, *, require_timestamp: bool = False) -> EvidenceBatch:
    """Validate JSON records (a list of objects); raise ``InvalidInput`` naming every bad field."""
    if not isinstance(records_, list):
        raise InvalidInput({"records": "must be a list of records"})
    return _batch(records.parse(schema=_schema(require_timestamp), records=records_))


def parse_upload(upload, *, require_timestamp: bool = False) -> EvidenceBatch:
    """Validate an uploaded CSV or Parquet file (told apart by content, not by name)."""
    return _batch(records.parse(schema=_schema(require_timestamp), upload=upload))


def _schema(require_timestamp: bool) -> records.Schema:
    return SHADOW_REPLAY_SCHEMA if require_timestamp else SCHEMA


def _batch(parsed: records.Parsed) -> EvidenceBatch:
    """The validated columns as an evidence batch with its canonical digest."""
    attributes = tuple(sorted(parsed.sensitive))
    sensitive = {name: parsed.sensitive[name].astype(str) for name in attributes}
    labels = parsed.label.astype(np.int8)
    stamps = parsed.timestamp
    if stamps is not None and not np.any(stamps != records.NAT):
        stamps = None
    return EvidenceBatch(
        scores=parsed.score,
        labels=labels,
        predictions=parsed.prediction,
        sensitive=sensitive,
        timestamps=stamps.view("datetime64[us]") if stamps is not None else None,
        digest=_digest(parsed.score, labels, parsed.prediction, _iso_texts(stamps), sensitive),
        attributes=attributes,
    )


def _iso_texts(stamps_us: np.ndarray | None) -> list[str | None] | None:
    """UTC ISO 8601 as ``datetime.isoformat`` writes it (microseconds only when not zero)."""
    if stamps_us is None:
        return None
    moments = stamps_us.view("datetime64[us]")
    texts = np.where(
        stamps_us % 1_000_000 == 0,
        np.datetime_as_string(moments, unit="s"),
        np.datetime_as_string(moments, unit="us"),
    )
    present = (stamps_us != records.NAT).tolist()
    return [f"{t}+00:00" if p else None for t, p in zip(texts.tolist(), present, strict=True)]


def _digest(
    scores: np.ndarray,
    labels: np.ndarray,
    predictions: np.ndarray | None,
    stamps: list[str | None] | None,
    sensitive: Mapping[str, np.ndarray],
) -> str:
    """SHA-256 over one canonical JSON line per record.

    Each line is ``json.dumps(record, sort_keys=True, separators=(",", ":"))`` of
    ``{"label", "prediction"?, "score", "sensitive"?, "timestamp"?}`` (absent fields omitted,
    attributes sorted, timestamps as UTC ISO 8601), written out by hand because it is ~5x faster
    than ``json.dumps``.
    """
    quoted: dict[str, str] = {}

    def q(text: str) -> str:
        if text not in quoted:
            quoted[text] = json.dumps(text)
        return quoted[text]

    h = hashlib.sha256()
    score_list, label_list = scores.tolist(), labels.tolist()
    prediction_list = predictions.tolist() if predictions is not None else None
    attributes = [(q(name), values.tolist()) for name, values in sorted(sensitive.items())]
    lines: list[str] = []
    for i in range(len(score_list)):
        parts = [f'{{"label":{label_list[i]}']
        if prediction_list is not None and not math.isnan(prediction_list[i]):
            parts.append(f'"prediction":{int(prediction_list[i])}')
        parts.append(f'"score":{score_list[i]!r}')
        if attributes:
            inner = ",".join(f"{name}:{q(values[i])}" for name, values in attributes)
            parts.append(f'"sensitive":{{{inner}}}')
        if stamps is not None and stamps[i] is not None:
            parts.append(f'"timestamp":{q(stamps[i])}')
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
    """The evidence directory on this host (local storage only)."""
    return storage.current().local_path(EVIDENCE_DIR)


def key_of(digest: str) -> str:
    return f"{EVIDENCE_DIR}/{digest}.parquet"


def resolve(data_path: str) -> Path:
    """The local file behind ``Evaluation.data_path`` (local storage only; ``load`` reads
    either backend)."""
    return storage.current().local_path(data_path)


def store(batch: EvidenceBatch) -> tuple[str, bool]:
    """Write the batch as Parquet (``filestore.write``), content-addressed by digest.

    Returns the storage key (relative to ``VAR_DIR`` on a local disk) for
    ``Evaluation.data_path`` and whether this call created the object (an identical earlier
    batch may already be stored; its time is refreshed so the orphan sweeper leaves it alone
    while this request commits).
    """
    key = key_of(batch.digest)
    where = storage.current()
    if where.exists(key):
        where.touch(key)
        return key, False
    filestore.write(key, lambda sink: pq.write_table(batch.to_table(), sink))
    return key, True


def referenced(paths: Sequence[str]) -> set[str]:
    """Those of ``paths`` (storage keys) an evaluation refers to."""
    from .models import Evaluation

    return set(Evaluation.objects.filter(data_path__in=paths).values_list("data_path", flat=True))


def discard(data_path: str) -> None:
    """Remove a file written for a request that then failed, unless an evaluation refers to it."""
    filestore.discard_unreferenced([data_path], referenced=referenced)


def load(data_path: str) -> pd.DataFrame:
    """A stored batch as a frame (columns as in the upload format)."""
    return storage.current().read_parquet(data_path).to_pandas()


def sweep_orphans(*, older_than_seconds: float = 3600) -> list[str]:
    """Delete stored batches no evaluation refers to, older than the grace period (file names)."""
    removed = filestore.sweep_unreferenced(
        EVIDENCE_DIR, cutoff=time.time() - older_than_seconds, referenced=referenced
    )
    return [posixpath.basename(path) for path in removed]
