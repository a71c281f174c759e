"""Parquet storage of production data: predictions, labels and reference records.

Layout: ``VAR_DIR/monitoring/<model>/<kind>/day=YYYY-MM-DD/<uuid>.parquet``, one file per ingested
batch and UTC day. A file is written under a temporary name, fsynced and renamed into place; only
then does its ``DataBatch`` manifest row commit (docs/architecture.md §5). A request that fails
after writing removes its files (``discard``); a crash in between leaves an orphan that
``sweep_orphans`` removes. Readers only ever look at files a committed ``DataBatch`` points to.
A prediction file has an id index beside it (``<uuid>.ids.npy``, ``DataBatch.id_index``: its
ids' sorted 64-bit digests), which later merges combine per version and day; the duplicate check
of a new batch searches those, never the day's ids (see "The prediction id index" below).

Typed columns
-------------
predictions and reference
    ``prediction_id`` (string), ``timestamp`` (timestamp[us, UTC]), ``score`` (float64),
    ``prediction`` (int8, null when not logged), ``f.<feature>`` (the version's declared type:
    float64, int64, bool or string; readers get int64 and bool as float64, so the statistics
    see numbers as before), ``s.<attribute>`` (string; sensitive, loaded only on request),
    ``version`` (string); reference files add ``label`` (int8, null when not given), and their
    ``prediction_id`` and ``timestamp`` may be null. Rows are sorted by timestamp, so a window
    boundary inside a day is a binary search, not a filter.
labels
    ``prediction_id`` (string), ``label`` (int8), ``label_time`` (timestamp[us, UTC]) and where the
    labelled prediction is stored: ``batch`` (its ``DataBatch`` id) and ``row`` (its row in that
    file). A label file lives in the partition of its prediction's day, one file per (version,
    day), so the labels of a window are in the window's partitions, and joining them is a scatter
    by position instead of a hash join on 1M string ids.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from registry.models import ModelVersion, RegisteredModel

from .models import BatchKind, DataBatch

logger = logging.getLogger(__name__)

DATA_DIR = "monitoring"
FEATURE_PREFIX = "f."
SENSITIVE_PREFIX = "s."
TIMESTAMP = pa.timestamp("us", tz="UTC")
BASE_COLUMNS = ("prediction_id", "timestamp", "score", "prediction")
LABEL_COLUMNS = ("label", "label_time")
COMPRESSION = "lz4"  # decompresses at memory speed; random floats do not compress anyway
_NAT = np.iinfo(np.int64).min
_DAY_US = 86_400_000_000


def feature_column(name: str) -> str:
    return FEATURE_PREFIX + name


def sensitive_column(name: str) -> str:
    return SENSITIVE_PREFIX + name


# ------------------------------------------------------------------------------------------------
# Paths and writing
# ------------------------------------------------------------------------------------------------


def root() -> Path:
    return Path(settings.VAR_DIR) / DATA_DIR


def resolve(path: str) -> Path:
    """The file behind ``DataBatch.path`` (stored relative to ``VAR_DIR``)."""
    return Path(settings.VAR_DIR) / path


@dataclass(frozen=True)
class StoredFile:
    """A file written and renamed into place, waiting for its ``DataBatch`` row."""

    path: str  # relative to VAR_DIR
    day: date
    rows: int
    digest: str  # "sha256:<hex>" of the file's bytes
    id_index: str = ""  # predictions: its sorted id digests (``DataBatch.id_index``)

    @property
    def paths(self) -> list[str]:
        return [self.path, self.id_index] if self.id_index else [self.path]


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """Low-cardinality columns worth dictionary encoding (never floats or ids)."""
    return [
        f.name
        for f in schema
        if f.name in ("prediction", "version", "label")
        or f.name.startswith(SENSITIVE_PREFIX)
        or (f.name.startswith(FEATURE_PREFIX) and pa.types.is_string(f.type))
    ]


def _partition(model_name: str, kind: str, day: date) -> Path:
    return root() / model_name / kind / f"day={day.isoformat()}"


def write_file(
    table: pa.Table,
    *,
    model_name: str,
    kind: str,
    day: date,
    id_digests: np.ndarray | None = None,
) -> StoredFile:
    """Write ``table`` as one Parquet partition file: temp name, fsync, ``os.replace``.

    With ``id_digests`` (the rows' ``id_digests``), the file's id index is written beside it.
    """
    directory = _partition(model_name, kind, day)
    stem = uuid.uuid4().hex
    name = f"{stem}.parquet"
    tmp = directory / f".{name}.tmp"
    target = directory / name
    try:
        for attempt in range(2):  # the sweeper may remove an empty day directory meanwhile
            directory.mkdir(parents=True, exist_ok=True)
            try:
                pq.write_table(
                    table,
                    tmp,
                    compression=COMPRESSION,
                    use_dictionary=_dictionary_columns(table.schema),
                    row_group_size=1 << 20,
                )
                break
            except FileNotFoundError:
                if attempt:
                    raise
        digest = hashlib.sha256()
        with open(tmp, "rb") as fh:
            while chunk := fh.read(1 << 22):
                digest.update(chunk)
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    relative = target.relative_to(Path(settings.VAR_DIR)).as_posix()
    index = ""
    if id_digests is not None:
        try:
            index = _write_id_index(np.sort(id_digests), directory=directory, stem=stem)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
    return StoredFile(
        path=relative,
        day=day,
        rows=table.num_rows,
        digest=f"sha256:{digest.hexdigest()}",
        id_index=index,
    )


def write_by_day(
    table: pa.Table,
    *,
    model_name: str,
    kind: str,
    days: np.ndarray,
    id_digests: np.ndarray | None = None,
) -> list[StoredFile]:
    """One file per distinct UTC day; ``days`` (datetime64[D]) gives each row's day."""
    files: list[StoredFile] = []
    try:
        for day in np.unique(days):
            rows = np.flatnonzero(days == day)
            if rows[-1] - rows[0] + 1 == rows.size:  # contiguous, as in a table sorted by time
                part = table.slice(int(rows[0]), int(rows.size))
                digests = None if id_digests is None else id_digests[rows[0] : rows[-1] + 1]
            else:
                part = table.take(pa.array(rows))
                digests = None if id_digests is None else id_digests[rows]
            files.append(
                write_file(
                    part, model_name=model_name, kind=kind, day=day.item(), id_digests=digests
                )
            )
    except BaseException:
        discard(p for f in files for p in f.paths)
        raise
    return files


def combined_digest(files: Sequence[StoredFile]) -> str:
    """One digest for a request's files (their digests in day order)."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: (f.day, f.path)):
        h.update(f"{f.day.isoformat()}:{f.digest}\n".encode())
    return f"sha256:{h.hexdigest()}"


def discard(paths: Iterable[str]) -> None:
    """Remove files written for a request that then failed (unless a manifest row has them)."""
    paths = list(paths)
    if not paths:
        return
    try:
        kept = _referenced(paths)
    except Exception:  # e.g. inside a broken transaction: leave them to the sweeper
        logger.warning("could not check files to discard; the orphan sweeper will", exc_info=True)
        return
    for path in paths:
        if path not in kept:
            resolve(path).unlink(missing_ok=True)


def _referenced(paths: Sequence[str]) -> set[str]:
    """Those of ``paths`` a manifest row points to, as its file or its id index."""
    batches = DataBatch.objects.filter(path__in=paths).values_list("path", flat=True)
    indexes = DataBatch.objects.filter(id_index__in=paths).values_list("id_index", flat=True)
    return {*batches, *indexes}


def delete_files(paths: Iterable[str]) -> None:
    """Delete files whose manifest rows are gone (after a purge commits), and empty day dirs."""
    directories = set()
    for path in paths:
        file = resolve(path)
        try:
            file.unlink(missing_ok=True)
        except OSError:  # the sweeper retries
            logger.warning("could not delete %s", file, exc_info=True)
        directories.add(file.parent)
    for directory in directories:
        with contextlib.suppress(OSError):  # not empty, or gone
            directory.rmdir()


def sweep_orphans(*, older_than: datetime | None = None) -> list[str]:
    """Delete partition files that no ``DataBatch`` points to, last modified before ``older_than``.

    ``older_than`` defaults to now minus ``settings.ORPHAN_GRACE``, so a file whose request is
    still committing is left alone. Stale temporary files go too, and so do empty day
    directories. Returns the removed paths (relative to ``VAR_DIR``).
    """
    base = root()
    if not base.is_dir():
        return []
    if older_than is None:
        older_than = timezone.now() - settings.ORPHAN_GRACE
    cutoff = older_than.timestamp()
    var_dir = Path(settings.VAR_DIR)
    removed: list[str] = []
    for directory, subdirs, files in os.walk(base, topdown=False):
        here = Path(directory)
        candidates = {}
        for name in files:
            file = here / name
            try:
                if file.stat().st_mtime < cutoff:
                    candidates[file.relative_to(var_dir).as_posix()] = file
            except FileNotFoundError:
                continue
        if candidates:
            referenced = _referenced(list(candidates))
            for relative, file in candidates.items():
                if relative not in referenced:
                    file.unlink(missing_ok=True)
                    removed.append(relative)
        if here != base and not subdirs and here.name.startswith("day="):
            try:
                if not any(here.iterdir()) and here.stat().st_mtime < cutoff:
                    here.rmdir()
            except OSError:
                pass
    return removed


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------


def as_utc(value: datetime | date | str) -> datetime:
    if isinstance(value, str):
        value = pd.Timestamp(value).to_pydatetime()
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(), UTC)
    raise TypeError(f"expected a datetime or date, got {type(value).__name__}")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_us(value: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (the stored timestamp unit)."""
    return (value - _EPOCH) // timedelta(microseconds=1)


def _model_id(model: RegisteredModel | str | int) -> int:
    if isinstance(model, RegisteredModel):
        return model.pk
    if isinstance(model, int):
        return model
    return RegisteredModel.objects.values_list("pk", flat=True).get(name=model)


def _version_id(model_id: int, version: ModelVersion | str | int | None) -> int | None:
    if version is None or isinstance(version, int):
        return version
    if isinstance(version, ModelVersion):
        return version.pk
    return ModelVersion.objects.values_list("pk", flat=True).get(model_id=model_id, version=version)


def _timestamps_us(table: pa.Table) -> np.ndarray:
    column = table.column("timestamp")
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return array.cast(pa.int64()).fill_null(_NAT).to_numpy()


@dataclass
class _Part:
    """One prediction file's contribution to a window."""

    batch_id: int
    table: pa.Table
    offset: int  # rows [offset, offset + table.num_rows) of the file, when positions is None
    positions: np.ndarray | None = None  # the file rows kept, when they were not one range


def _wanted(names: Sequence[str], columns: Sequence[str] | None, with_sensitive: bool) -> list[str]:
    if columns is None:
        return [n for n in names if with_sensitive or not n.startswith(SENSITIVE_PREFIX)]
    present = set(names)
    return [c for c in columns if c in present]


def _read_part(
    batch: DataBatch,
    lo: int,
    hi: int,
    columns: Sequence[str] | None,
    with_sensitive: bool,
) -> _Part:
    file = pq.ParquetFile(resolve(batch.path), memory_map=True)
    wanted = _wanted(file.schema_arrow.names, columns, with_sensitive)
    day_lo = to_us(datetime.combine(batch.day, time(), UTC))
    inner = lo <= day_lo and day_lo + _DAY_US <= hi
    read = wanted if inner or "timestamp" in wanted else [*wanted, "timestamp"]
    table = _numbers_as_float(file.read(columns=read, use_threads=True))
    part = _Part(batch_id=batch.pk, table=table, offset=0)
    if not inner:
        ts = _timestamps_us(table)
        if ts.size and np.all(ts[1:] >= ts[:-1]):  # written sorted: a window edge is two searches
            i, j = np.searchsorted(ts, [lo, hi], side="left")
            part.table, part.offset = table.slice(i, j - i), int(i)
        else:
            keep = np.flatnonzero((ts >= lo) & (ts < hi))
            part.table, part.positions = table.take(pa.array(keep)), keep
        if "timestamp" not in wanted:
            part.table = part.table.drop_columns(["timestamp"])
    return part


def _numbers_as_float(table: pa.Table) -> pa.Table:
    """Integer and boolean features as float64: what the checks and the statistics expect."""
    for index, f in enumerate(table.schema):
        if f.name.startswith(FEATURE_PREFIX) and (
            pa.types.is_integer(f.type) or pa.types.is_boolean(f.type)
        ):
            table = table.set_column(index, f.name, pc.cast(table.column(index), pa.float64()))
    return table


def _latest_labels(
    model_id: int, version_id: int | None, days: Iterable[date], batch_ids: Iterable[int]
) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per prediction batch: (rows, label, label_time us) of the latest label of each row.

    Latest = greatest ``label_time``; equal times go to the label ingested last.
    """
    label_batches = DataBatch.objects.filter(
        model_id=model_id, kind=BatchKind.LABELS, day__in=sorted(set(days))
    )
    if version_id is not None:
        label_batches = label_batches.filter(version_id=version_id)
    paths = list(label_batches.order_by("id").values_list("path", flat=True))
    if not paths:
        return {}
    wanted = np.fromiter(batch_ids, dtype=np.int64)
    batch_parts, row_parts, label_parts, time_parts = [], [], [], []
    for path in paths:
        table = pq.read_table(resolve(path), columns=["batch", "row", "label", "label_time"])
        batch = table.column("batch").to_numpy()
        keep = np.isin(batch, wanted)
        if not keep.any():
            continue
        batch_parts.append(batch[keep])
        row_parts.append(table.column("row").to_numpy()[keep])
        label_parts.append(table.column("label").to_numpy()[keep])
        time_parts.append(_timestamps_us(table.rename_columns(["b", "r", "l", "timestamp"]))[keep])
    if not batch_parts:
        return {}
    batch = np.concatenate(batch_parts)
    row = np.concatenate(row_parts)
    label = np.concatenate(label_parts)
    label_time = np.concatenate(time_parts)
    key = (batch << 32) | row  # batch ids and rows both fit in 32 bits
    if pd.Index(key).is_unique:  # the usual case, one label per prediction: no sort needed
        return {
            int(b): (row[mask], label[mask], label_time[mask])
            for b in pd.unique(batch)
            for mask in [batch == b]
        }
    order = np.lexsort((np.arange(batch.size), label_time))  # by time, then ingestion order
    order = order[::-1]  # latest first
    key = (batch[order] << 32) | row[order]  # batch ids and rows both fit in 32 bits
    _, first = np.unique(key, return_index=True)
    latest = order[first]
    out: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    by_batch = np.argsort(batch[latest], kind="stable")
    latest = latest[by_batch]
    bounds = np.flatnonzero(np.diff(batch[latest])) + 1
    for chunk in np.split(latest, bounds):
        out[int(batch[chunk[0]])] = (row[chunk], label[chunk], label_time[chunk])
    return out


def _label_columns(
    parts: Sequence[_Part], labels: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]
) -> tuple[pa.Array, pa.Array]:
    n = sum(p.table.num_rows for p in parts)
    label = np.full(n, np.nan)
    label_time = np.full(n, _NAT, dtype=np.int64)
    start = 0
    for part in parts:
        size = part.table.num_rows
        found = labels.get(part.batch_id)
        if found is not None and size:
            rows, values, times = found
            if part.positions is None:
                inside = (rows >= part.offset) & (rows < part.offset + size)
                at = rows[inside] - part.offset
            else:
                at = np.searchsorted(part.positions, rows)
                inside = (at < size) & (part.positions[np.minimum(at, size - 1)] == rows)
                at = at[inside]
            label[start + at] = values[inside]
            label_time[start + at] = times[inside]
        start += size
    times = pa.array(label_time, mask=label_time == _NAT, type=pa.int64()).cast(TIMESTAMP)
    return pa.array(label, type=pa.float64()), times


def _to_frame(table: pa.Table) -> pd.DataFrame:
    """Arrow to pandas; 0/1 columns become float64 with NaN for absent, as ``stats`` expects."""
    for name in ("prediction", "label"):
        if name in table.column_names and not pa.types.is_floating(table.schema.field(name).type):
            index = table.column_names.index(name)
            table = table.set_column(index, name, pc.cast(table.column(name), pa.float64()))
    return table.to_pandas(split_blocks=True, self_destruct=True)


def _empty(
    columns: Sequence[str] | None, feature_names: Sequence[str], labels: bool
) -> pd.DataFrame:
    names = (
        list(columns)
        if columns is not None
        else [
            *BASE_COLUMNS,
            *(feature_column(f) for f in feature_names),
            "version",
        ]
    )
    if labels:
        names += [c for c in LABEL_COLUMNS if c not in names]
    return _to_frame(pa.schema([pa.field(n, _column_type(n)) for n in names]).empty_table())


def _column_type(name: str) -> pa.DataType:
    """The type of a column no stored file has (categorical features would be strings)."""
    if name in ("timestamp", "label_time"):
        return TIMESTAMP
    if name in ("prediction_id", "version") or name.startswith(SENSITIVE_PREFIX):
        return pa.string()
    return pa.float64()


def _select(table: pa.Table, columns: Sequence[str]) -> pa.Table:
    """``columns`` in that order; one that no file had comes back all null."""
    for name in columns:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, _column_type(name)))
    return table.select(list(columns))


def _read_predictions(
    batches: Sequence[DataBatch],
    *,
    lo: int,
    hi: int,
    columns: Sequence[str] | None,
    with_labels: bool,
    with_sensitive: bool,
    model_id: int,
    version_id: int | None,
) -> pa.Table | None:
    parts = [_read_part(b, lo, hi, columns, with_sensitive) for b in batches]
    parts = [p for p in parts if p.table.num_rows] or parts[:1]
    if not parts:
        return None
    table = pa.concat_tables([p.table for p in parts], promote_options="default")
    if columns is not None:
        table = _select(table, columns)
    if with_labels:
        labels = _latest_labels(
            model_id, version_id, {b.day for b in batches}, [p.batch_id for p in parts]
        )
        label, label_time = _label_columns(parts, labels)
        table = table.append_column("label", label).append_column("label_time", label_time)
    return table


def _check_columns(columns: Sequence[str] | None, with_sensitive: bool) -> None:
    if columns is None:
        return
    if isinstance(columns, str):
        raise TypeError("columns must be a list of column names")
    hidden = [c for c in columns if c.startswith(SENSITIVE_PREFIX)]
    if hidden and not with_sensitive:
        raise ValueError(f"sensitive columns {hidden} need with_sensitive=True")


def load_window(
    *,
    model: RegisteredModel | str | int,
    version: ModelVersion | str | int | None,
    start: datetime | date,
    end: datetime | date,
    columns: Sequence[str] | None = None,
    with_labels: bool = False,
    with_sensitive: bool = False,
) -> pd.DataFrame:
    """The predictions of ``version`` (all versions when ``None``) timed in ``[start, end)``.

    Only the partitions of the days the window touches are read (a manifest query), only the
    requested ``columns`` (stored names: ``prediction_id``, ``timestamp``, ``score``,
    ``prediction``, ``f.<feature>``, ``s.<attribute>``, ``version``; all but the sensitive ones
    when ``None``; a requested column no file has comes back all null) and, on the edge days,
    only the rows inside the window. Sensitive ``s.*``
    columns come only with ``with_sensitive=True``. ``with_labels`` adds ``label`` (float64: 0, 1,
    NaN when unlabelled) and ``label_time``, the latest label per prediction. ``prediction`` is
    float64 too (NaN when not logged), so both go straight into ``analytics.stats``. Naive
    datetimes are UTC. Rows come in storage order (by day, then batch; by time within a batch).
    """
    _check_columns(columns, with_sensitive)
    start, end = as_utc(start), as_utc(end)
    model_id = _model_id(model)
    version_id = _version_id(model_id, version)
    feature_names: list[str] = []
    if columns is None and isinstance(version, ModelVersion):
        feature_names = list(version.feature_list)
    table = None
    if end > start:
        batches = DataBatch.objects.filter(
            model_id=model_id,
            kind=BatchKind.PREDICTIONS,
            day__gte=start.date(),
            day__lte=(end - timedelta(microseconds=1)).date(),
        )
        if version_id is not None:
            batches = batches.filter(version_id=version_id)
        table = _read_predictions(
            list(batches.order_by("day", "id")),
            lo=to_us(start),
            hi=to_us(end),
            columns=columns,
            with_labels=with_labels,
            with_sensitive=with_sensitive,
            model_id=model_id,
            version_id=version_id,
        )
    if table is None:
        return _empty(columns, feature_names, with_labels)
    return _to_frame(table)


def recent_records(
    *,
    model: RegisteredModel,
    version: ModelVersion | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    with_sensitive: bool = False,
) -> pd.DataFrame:
    """The newest ``limit`` predictions timed in ``[since, until)`` with their latest labels.

    Reads day partitions newest first and stops as soon as it has ``limit`` rows.
    """
    until = as_utc(until) if until is not None else timezone.now() + timedelta(microseconds=1)
    since = as_utc(since) if since is not None else None
    batches = DataBatch.objects.filter(
        model=model, kind=BatchKind.PREDICTIONS, day__lte=(until - timedelta(microseconds=1)).date()
    )
    if since is not None:
        batches = batches.filter(day__gte=since.date())
    if version is not None:
        batches = batches.filter(version=version)
    by_day: dict[date, list[DataBatch]] = defaultdict(list)
    for batch in batches.order_by("-day", "id"):
        by_day[batch.day].append(batch)
    tables, total = [], 0
    for day, day_batches in by_day.items():
        day_start = datetime.combine(day, time(), UTC)
        lo = max(since, day_start) if since is not None else day_start
        hi = min(until, day_start + timedelta(days=1))
        table = _read_predictions(
            day_batches,
            lo=to_us(lo),
            hi=to_us(hi),
            columns=None,
            with_labels=True,
            with_sensitive=with_sensitive,
            model_id=model.pk,
            version_id=version.pk if version is not None else None,
        )
        if table is not None and table.num_rows:
            tables.append(table)
            total += table.num_rows
        if total >= limit:
            break
    if not tables:
        return _empty(None, list(version.feature_list) if version else [], True)
    table = pa.concat_tables(tables, promote_options="default")
    frame = _to_frame(table)
    order = np.argsort(
        -frame["timestamp"].to_numpy(dtype="datetime64[us]").astype(np.int64), kind="stable"
    )
    return frame.iloc[order[:limit]].reset_index(drop=True)


def load_reference(
    version: ModelVersion,
    *,
    columns: Sequence[str] | None = None,
    with_sensitive: bool = False,
) -> pd.DataFrame:
    """Every reference record of ``version`` (all its reference batches, oldest first).

    Columns as in ``load_window`` plus ``label`` (float64, NaN when not given).
    """
    _check_columns(columns, with_sensitive)
    paths = DataBatch.objects.filter(version=version, kind=BatchKind.REFERENCE).order_by("id")
    tables = []
    for path in paths.values_list("path", flat=True):
        file = pq.ParquetFile(resolve(path))
        wanted = _wanted(file.schema_arrow.names, columns, with_sensitive)
        tables.append(_numbers_as_float(file.read(columns=wanted)))
    if not tables:
        empty = _empty(columns, version.feature_list, False)
        if columns is None:
            empty["label"] = pd.Series(dtype="float64")
        return empty
    table = pa.concat_tables(tables, promote_options="default")
    if columns is not None:
        table = _select(table, columns)
    return _to_frame(table)


# ------------------------------------------------------------------------------------------------
# Look-ups for ingestion
# ------------------------------------------------------------------------------------------------


def stored_feature_types(version: ModelVersion) -> dict[str, str]:
    """``{feature: type}`` (``registry.feature_types``) as in the version's newest file, if any.

    Only for versions registered before types were declared.
    """
    path = (
        DataBatch.objects.filter(
            version=version, kind__in=[BatchKind.PREDICTIONS, BatchKind.REFERENCE]
        )
        .order_by("-id")
        .values_list("path", flat=True)
        .first()
    )
    if path is None:
        return {}
    try:
        schema = pq.read_schema(resolve(path))
    except (OSError, pa.ArrowException):
        logger.warning("could not read the schema of %s", path, exc_info=True)
        return {}
    return {
        f.name[len(FEATURE_PREFIX) :]: _declared_type(f.type)
        for f in schema
        if f.name.startswith(FEATURE_PREFIX)
    }


def _declared_type(kind: pa.DataType) -> str:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "string"
    if pa.types.is_boolean(kind):
        return "boolean"
    if pa.types.is_integer(kind):
        return "integer"
    return "number"


def _ids(path: str) -> pa.Array:
    column = pq.read_table(resolve(path), columns=["prediction_id"]).column("prediction_id")
    return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)


def stored_duplicates(
    *, version: ModelVersion, ids: pa.Array, digests: np.ndarray, days: np.ndarray
) -> dict[int, date]:
    """Positions in ``ids`` of prediction ids the version already has stored on their day.

    ``digests`` are the ids' ``id_digests`` and ``days`` (datetime64[D]) each row's day. Each
    day's id index (a few sorted runs of digests) is searched for the batch's digests, so the
    cost follows the batch, not the day's volume; a digest found there is confirmed against the
    stored ids of that run's batches, so a digest collision never refuses a new id. Call it
    holding the version's lock (``lock_version``) when the answer decides a commit.
    """
    found: dict[int, date] = {}
    for day in np.unique(days):
        rows = np.flatnonzero(days == day)
        order = np.argsort(digests[rows], kind="stable")
        needles, positions = digests[rows][order], rows[order]
        for run in _runs(version.pk, day.item()):
            stored = _run_digests(run)
            if not stored.size:
                continue
            at = np.minimum(np.searchsorted(stored, needles), stored.size - 1)
            hit = positions[stored[at] == needles]
            if not hit.size:
                continue
            wanted = ids.take(pa.array(hit))
            for path in run.paths:
                stored_here = pc.is_in(wanted, value_set=_ids(path))
                for i in hit[stored_here.to_numpy(zero_copy_only=False)].tolist():
                    found.setdefault(int(i), day.item())
    return found


def lock_version(version_id: int) -> None:
    """Serialize the commits of one version's predictions (their duplicate check, the id index).

    ``FOR NO KEY UPDATE``: rows that merely reference the version (runs, alerts) are not held
    up. SQLite's transactions are ``IMMEDIATE``, so they are serialized already.
    """
    ModelVersion.objects.select_for_update(no_key=True).filter(pk=version_id).values_list(
        "pk"
    ).first()


# ------------------------------------------------------------------------------------------------
# The prediction id index
# ------------------------------------------------------------------------------------------------
#
# Each prediction file has an id index: the sorted 64-bit digests of its ids (``.ids.npy``
# beside it, ``DataBatch.id_index``), written with it before its manifest row commits. After a
# commit, ``compact_id_index`` merges a day's smallest indexes while the next one is less than
# twice their sum (for equal batches, a binary counter), so a (version, day) has about
# log2(day rows / batch rows) of them at most, and each digest is rewritten about as often:
# checking a batch for duplicates costs O(batch x log(day)), however many predictions the day
# holds. (A table of 64-bit digests in the database would do the same at ~90 bytes a prediction
# and ~0.15 s per 20k inserted on PostgreSQL; these files take 8 bytes and a few milliseconds.)

ID_INDEX_SUFFIX = ".ids.npy"
MAX_INDEX_RUNS = 24  # a bound for days of very uneven batch sizes; the counter keeps ~log2


def id_digests(ids: Iterable[str]) -> np.ndarray:
    """The id index's keys: the first 8 bytes of each id's BLAKE2b digest, as int64.

    A stable, standard hash (never Python's ``hash`` or a library's internal one): the digests
    are stored, so they must mean the same in every process and release.
    """
    blake2b = hashlib.blake2b
    packed = b"".join([blake2b(i, digest_size=8).digest() for i in map(str.encode, ids)])
    return np.frombuffer(packed, dtype="<i8").astype(np.int64)


def _write_id_index(sorted_digests: np.ndarray, *, directory: Path, stem: str) -> str:
    target = directory / f"{stem}{ID_INDEX_SUFFIX}"
    tmp = directory / f".{target.name}.tmp"
    try:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(sorted_digests, dtype="<i8"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target.relative_to(Path(settings.VAR_DIR)).as_posix()


@dataclass(frozen=True)
class _Run:
    """One sorted index of a day and the batches it covers."""

    index: str  # "" for a batch stored before indexes existed: its ids are read and digested
    batch_ids: tuple[int, ...]
    paths: tuple[str, ...]  # the batches' files
    rows: int


def _runs(version_id: int, day: date) -> list[_Run]:
    batches = DataBatch.objects.filter(
        version_id=version_id, kind=BatchKind.PREDICTIONS, day=day
    ).order_by("id")
    grouped: dict[str, list[tuple[int, str, int]]] = defaultdict(list)
    runs = []
    for pk, index, path, rows in batches.values_list("id", "id_index", "path", "rows"):
        if index:
            grouped[index].append((pk, path, rows))
        else:
            runs.append(_Run(index="", batch_ids=(pk,), paths=(path,), rows=rows))
    for index, members in grouped.items():
        pks, paths, rows = zip(*members, strict=True)
        runs.append(_Run(index=index, batch_ids=pks, paths=paths, rows=sum(rows)))
    return runs


def _run_digests(run: _Run) -> np.ndarray:
    if run.index:
        return np.load(resolve(run.index), mmap_mode="r")
    return np.sort(id_digests(_ids(run.paths[0]).to_pylist()))


def _runs_to_merge(runs: list[_Run]) -> list[_Run]:
    """The smallest runs, merged while the next is less than twice their sum."""
    pending = sorted(runs, key=lambda r: r.rows, reverse=True)
    if not pending:
        return []
    chosen = [pending.pop()]
    size = chosen[0].rows
    while pending and (pending[-1].rows < 2 * size or len(pending) >= MAX_INDEX_RUNS):
        chosen.append(pending.pop())
        size += chosen[-1].rows
    if len(chosen) == 1 and chosen[0].index:
        return []
    return chosen


def compact_id_index(*, version_id: int, day: date) -> int:
    """Merge a day's smallest id indexes into one; returns the number of indexes merged.

    The merged index is written first, then, under the version's lock, the batches it covers
    point to it, provided none changed meanwhile (else the work is dropped); the old indexes are
    deleted after the commit (or by the orphan sweeper). Batches stored before indexes existed
    are folded in too. Readers keep reading the old files until they see the commit.
    """
    chosen = _runs_to_merge(_runs(version_id, day))
    if not chosen:
        return 0
    try:
        merged = np.sort(np.concatenate([_run_digests(r) for r in chosen]), kind="stable")
    except FileNotFoundError:  # a concurrent compaction replaced one: it did the work
        return 0
    directory = resolve(chosen[0].paths[0]).parent
    index = _write_id_index(merged, directory=directory, stem=uuid.uuid4().hex)
    expected = {pk: r.index for r in chosen for pk in r.batch_ids}
    try:
        with transaction.atomic():
            lock_version(version_id)
            current = dict(
                DataBatch.objects.filter(pk__in=list(expected)).values_list("id", "id_index")
            )
            if current != expected:  # merged or purged meanwhile
                resolve(index).unlink(missing_ok=True)
                return 0
            DataBatch.objects.filter(pk__in=list(expected)).update(id_index=index)
            old = [r.index for r in chosen if r.index]
            transaction.on_commit(lambda: delete_files(old))
    except BaseException:
        discard([index])
        raise
    return len(chosen)


@dataclass(frozen=True)
class Located:
    """Where the predictions named by a labels batch are stored (one entry per match)."""

    index: np.ndarray  # position in the labels batch
    batch_id: np.ndarray  # DataBatch id of the prediction file
    row: np.ndarray  # row in that file
    day: np.ndarray  # datetime64[D] partition day
    version_id: np.ndarray
    found: np.ndarray  # bool per label: some prediction matched


def locate_predictions(*, model: RegisteredModel, ids: pa.Array) -> Located:
    """Find each id among the model's stored predictions, newest day first.

    A prediction id may be stored under several versions (shadow traffic shares the live
    request's id): each match is returned. Once every id is found, one more (older) day is
    looked at for such twins and the search stops. A file is opened only when its id index
    holds one of the ids' digests (``_IndexProbe``), so a labels batch costs the files that
    hold its predictions and a binary search of the other days' indexes, not a read of every
    day back to its oldest prediction; files stored before indexes existed are read.
    """
    found = np.zeros(len(ids), dtype=bool)
    out: dict[str, list[np.ndarray]] = defaultdict(list)
    rows = DataBatch.objects.filter(model=model, kind=BatchKind.PREDICTIONS).order_by("-day", "id")
    probe = _IndexProbe(ids)
    stop_before: date | None = None
    for batch_id, path, day, version_id, index in rows.values_list(
        "id", "path", "day", "version_id", "id_index"
    ):
        if stop_before is not None and day < stop_before:
            break
        if probe.may_hold(index):
            position = pc.index_in(_ids(path), value_set=ids)
            hit = np.flatnonzero(position.is_valid().to_numpy(zero_copy_only=False))
            if hit.size:
                where = position.take(pa.array(hit)).to_numpy().astype(np.int64)
                out["index"].append(where)
                out["row"].append(hit.astype(np.int64))
                out["batch_id"].append(np.full(hit.size, batch_id, dtype=np.int64))
                out["day"].append(np.full(hit.size, np.datetime64(day, "D")))
                out["version_id"].append(np.full(hit.size, version_id or 0, dtype=np.int64))
                found[where] = True
        if stop_before is None and found.all():
            stop_before = day - timedelta(days=1)

    def cat(name: str, dtype: Any) -> np.ndarray:
        return np.concatenate(out[name]) if out[name] else np.empty(0, dtype=dtype)

    return Located(
        index=cat("index", np.int64),
        batch_id=cat("batch_id", np.int64),
        row=cat("row", np.int64),
        day=cat("day", "datetime64[D]"),
        version_id=cat("version_id", np.int64),
        found=found,
    )


class _IndexProbe:
    """Whether an id index may cover one of a batch's ids: a digest found there is a candidate.

    A hit only says the index's files are worth opening (their ids confirm it, so a collision
    is never a match); a miss rules them out. Each index is searched once per call, however
    many batches share it. An index that is gone (replaced by a merge that committed after the
    manifest was read) or absent (a batch stored before indexes existed) is no evidence: its
    file is read.
    """

    def __init__(self, ids: pa.Array) -> None:
        present = ids.drop_null() if ids.null_count else ids
        self.needles = np.unique(id_digests(present.to_pylist()))
        self.seen: dict[str, bool] = {}

    def may_hold(self, index: str) -> bool:
        if not index:
            return True
        if index not in self.seen:
            self.seen[index] = self._search(index)
        return self.seen[index]

    def _search(self, index: str) -> bool:
        try:
            stored = np.load(resolve(index), mmap_mode="r")
        except FileNotFoundError:
            return True
        if not stored.size or not self.needles.size:
            return False
        at = np.minimum(np.searchsorted(stored, self.needles), stored.size - 1)
        return bool(np.any(stored[at] == self.needles))
