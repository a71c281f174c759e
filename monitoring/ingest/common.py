"""What every kind of ingestion shares: the schemas, the bounds, the stored tables, the commit.

Records are parsed by ``governance.records`` (the parser evidence uses too), written as Parquet
by ``monitoring.store`` and committed with their ``DataBatch`` rows through
``governance.filestore.commit_after_files`` (files first, then the rows).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict, TypeVar

import numpy as np
import pyarrow as pa
from django.conf import settings
from django.utils import timezone

from governance import filestore, records
from governance.audit import Actor
from governance.records import NAT, Parsed
from registry import services as registry_services
from registry.feature_types import DEFAULT_TYPE, FEATURE_TYPES
from registry.models import ModelVersion

from .. import store
from ..columns import feature_column, sensitive_column
from ..models import BatchKind, DataBatch

# A timestamp before this is refused when the version's training start is unknown (labels).
EARLIEST_TIMESTAMP = datetime(2000, 1, 1, tzinfo=UTC)
DEFAULT_MAX_FUTURE_SECONDS = 300
_DAY_US = 86_400_000_000
T = TypeVar("T")
_RECORD_COLUMNS = ("prediction", "prediction_id", "score", "timestamp")

SCHEMAS = {
    BatchKind.PREDICTIONS: records.Schema(
        columns=_RECORD_COLUMNS, required=("prediction_id", "timestamp", "score"), features=True
    ),
    BatchKind.REFERENCE: records.Schema(
        columns=("label", *_RECORD_COLUMNS), required=("score",), features=True
    ),
    BatchKind.LABELS: records.Schema(
        columns=("label", "label_time", "prediction_id"),
        required=("prediction_id", "label"),
        sensitive=False,
    ),
}


def parse(*, kind: str, **batch: Any) -> Parsed:
    """Validate a batch of ``kind`` (``records`` or ``upload``, as ``governance.records.parse``
    takes them); raise ``InvalidInput``."""
    return records.parse(schema=SCHEMAS[kind], **batch)


def parse_for_version(kind: str, version: ModelVersion, *, records: Any, upload) -> Parsed:
    """Validate a batch of ``version``'s records (predictions or reference): its features with
    their declared types, its timestamps within the version's bounds."""
    return parse(
        kind=kind,
        records=records,
        upload=upload,
        feature_names=version.feature_list,
        feature_types=feature_types_of(version),
        bounds=timestamp_bounds(version),
    )


def source_of(source: str | None, upload) -> str:
    """``source`` as given, else ``upload`` for a file and ``api`` for JSON records."""
    return source or ("upload" if upload is not None else "api")


class VersionBatchArgs(TypedDict, total=False):
    """The keywords ``predictions_ingest`` and ``reference_ingest`` share: the version, its
    records as JSON (``records``) or as a CSV or Parquet file (``upload``), who sends them and
    from where (``api``, ``upload`` or ``gateway``; by default ``source_of`` the form).
    ``model_name``, ``version`` and ``actor`` are required."""

    model_name: str
    version: str
    records: Any
    upload: Any
    actor: Actor
    source: str | None


_REQUIRED_ARGS = frozenset({"model_name", "version", "actor"})


@dataclass(frozen=True)
class VersionBatch:
    """A batch sent for one version: the version found, the source decided, the records not
    parsed yet (``parse``)."""

    target: ModelVersion
    actor: Actor
    source: str
    records: Any
    upload: Any

    @classmethod
    def of(cls, args: VersionBatchArgs) -> VersionBatch:
        """Raises ``NotFound`` (no such version), ``TypeError`` (a keyword missing or unknown)."""
        if missing := _REQUIRED_ARGS - args.keys():
            raise TypeError(f"missing keyword arguments: {', '.join(sorted(missing))}")
        if unknown := args.keys() - VersionBatchArgs.__annotations__.keys():
            raise TypeError(f"unexpected keyword arguments: {', '.join(sorted(unknown))}")
        upload = args.get("upload")
        return cls(
            target=registry_services.version_get(args["model_name"], args["version"]),
            actor=args["actor"],
            source=source_of(args.get("source"), upload),
            records=args.get("records"),
            upload=upload,
        )

    def parse(self, kind: str) -> Parsed:
        return parse_for_version(kind, self.target, records=self.records, upload=self.upload)

    def batch_rows(self, files: Sequence[store.StoredFile], kind: str) -> list[DataBatch]:
        """The manifest rows of the batch's ``files``."""
        return batch_rows(
            files,
            model=self.target.model,
            version_id=self.target.pk,
            kind=kind,
            source=self.source,
            actor=self.actor,
        )


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


# ------------------------------------------------------------------------------------------------
# Arrow tables
# ------------------------------------------------------------------------------------------------


def timestamp_array(values: np.ndarray) -> pa.Array:
    return pa.array(values, mask=values == NAT, type=pa.int64()).cast(store.TIMESTAMP)


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


def record_table(parsed: Parsed, version: ModelVersion, *, with_label: bool) -> pa.Table:
    n = parsed.n
    columns: dict[str, pa.Array] = {
        "prediction_id": pa.array(
            parsed.prediction_id if parsed.prediction_id is not None else [None] * n,
            type=pa.string(),
        ),
        "timestamp": timestamp_array(
            parsed.timestamp if parsed.timestamp is not None else np.full(n, NAT)
        ),
        "score": pa.array(parsed.score, type=pa.float64()),
        "prediction": _binary_array(
            parsed.prediction if parsed.prediction is not None else np.full(n, np.nan)
        ),
    }
    for name in version.feature_list:
        kind, values = parsed.features[name]
        columns[feature_column(name)] = _feature_array(kind, values)
    for attribute, values in sorted(parsed.sensitive.items()):
        columns[sensitive_column(attribute)] = pa.array(values, type=pa.string())
    columns["version"] = pa.array([version.version] * n, type=pa.string())
    if with_label:
        columns["label"] = _binary_array(
            parsed.label if parsed.label is not None else np.full(n, np.nan)
        )
    return pa.table(columns)


def days_of(stamps_us: np.ndarray) -> np.ndarray:
    return (stamps_us // _DAY_US).astype("datetime64[D]")


# ------------------------------------------------------------------------------------------------
# Commit
# ------------------------------------------------------------------------------------------------


def commit(files: Sequence[store.StoredFile], *, create_rows: Callable[[], T]) -> T:
    """Create the manifest rows for ``files`` (already on disk); remove the files on failure."""
    paths = [p for f in files for p in f.paths]
    return filestore.commit_after_files(paths, create_rows, referenced=store.referenced)


def day_list(files: Sequence[store.StoredFile]) -> list[str]:
    return sorted({f.day.isoformat() for f in files})


def stored_summary(files: Sequence[store.StoredFile], batches: Sequence[DataBatch]) -> dict:
    """What an ingestion's audit event says it stored: the days, the files' combined digest and
    the manifest rows."""
    return {
        "days": day_list(files),
        "digest": store.combined_digest(files),
        "batches": [b.pk for b in batches],
    }


def batch_rows(files, *, model, version_id, kind, source, actor) -> list[DataBatch]:
    return [
        DataBatch.objects.create(
            model=model,
            version_id=version_id,
            kind=kind,
            day=f.day,
            path=f.path,
            rows=f.rows,
            size=f.size,
            digest=f.digest,
            id_index=f.id_index,
            source=source,
            created_by=actor.label[:200],
        )
        for f in files
    ]
