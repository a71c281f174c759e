"""Reading predictions: a window of them (``load_window``) or the newest (``recent_records``)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from django.utils import timezone

from registry.models import ModelVersion, RegisteredModel

from ..models import BatchKind, DataBatch
from .files import parquet_file, read_each
from .frames import (
    DAY_US,
    Part,
    as_utc,
    check_columns,
    empty_frame,
    model_id_of,
    numbers_as_float,
    select_columns,
    timestamps_us,
    to_frame,
    to_us,
    version_id_of,
    wanted_columns,
)
from .labels import label_columns, latest_labels


def _read_part(
    batch: DataBatch,
    lo: int,
    hi: int,
    columns: Sequence[str] | None,
    with_sensitive: bool,
    shared_day: bool = False,
) -> Part:
    """``shared_day``: other files of its day are read too (``Part.times`` then says where its
    rows go among theirs)."""
    file = parquet_file(batch.path, batch.size)
    wanted = wanted_columns(file.schema_arrow.names, columns, with_sensitive)
    day_lo = to_us(datetime.combine(batch.day, time(), UTC))
    inner = lo <= day_lo and day_lo + DAY_US <= hi
    timed = not inner or shared_day
    read = wanted if not timed or "timestamp" in wanted else [*wanted, "timestamp"]
    groups, first_row = (None, 0) if inner else _row_groups(file, lo, hi)
    if groups is None:
        table = file.read(columns=read, use_threads=True)
    else:
        table = file.read_row_groups(groups, columns=read, use_threads=True)
    table = numbers_as_float(table)
    part = Part(batch_id=batch.pk, table=table, offset=first_row)
    if not timed:
        return part
    ts = timestamps_us(table)
    if not inner:
        if ts.size and np.all(ts[1:] >= ts[:-1]):  # written sorted: a window edge is two searches
            i, j = np.searchsorted(ts, [lo, hi], side="left")
            part.table, part.offset, ts = table.slice(i, j - i), first_row + int(i), ts[i:j]
        else:
            keep = np.flatnonzero((ts >= lo) & (ts < hi))
            part.table, part.positions, ts = table.take(pa.array(keep)), keep + first_row, ts[keep]
    if shared_day:
        part.times = ts
    if "timestamp" not in wanted:
        part.table = part.table.drop_columns(["timestamp"])
    return part


def _in_day_time_order(table: pa.Table, parts: Sequence[Part]) -> pa.Table:
    """The rows of each day that several files share, sorted by time (stable: ties keep file,
    then row order) - the order a compacted day is stored in (``store.compact``), so that
    compaction changes no check's result, not even a seeded resampling's. Only such a day's
    rows are copied; the others stay slices of ``table``."""
    pieces: list[pa.Table] = []
    done = 0  # rows of ``table`` placed in ``pieces``
    start = 0
    segment: list[np.ndarray] = []
    segment_start = 0

    def settle() -> None:
        nonlocal done
        times = np.concatenate(segment) if len(segment) > 1 else None
        segment.clear()
        if times is None or not times.size or np.all(times[1:] >= times[:-1]):
            return
        if segment_start > done:
            pieces.append(table.slice(done, segment_start - done))
        order = np.argsort(times, kind="stable")
        pieces.append(table.slice(segment_start, times.size).take(pa.array(order)))
        done = segment_start + times.size

    day = None
    for part in parts:
        if part.times is None or part.day != day:
            settle()
            day, segment_start = part.day, start
        if part.times is not None:
            segment.append(part.times)
        start += part.table.num_rows
    settle()
    if not pieces:
        return table
    if done < table.num_rows:
        pieces.append(table.slice(done))
    return pa.concat_tables(pieces)


def _row_groups(file: pq.ParquetFile, lo: int, hi: int) -> tuple[list[int] | None, int]:
    """The row groups of a time-sorted file that may hold rows in ``[lo, hi)``, and the file
    row the first of them starts at; ``(None, 0)`` when all are needed (or the statistics do
    not say). Rows are written sorted by time, so the groups kept are consecutive."""
    meta = file.metadata
    if meta.num_row_groups < 2:
        return None, 0
    try:
        index = file.schema_arrow.get_field_index("timestamp")
        bounds = []
        for g in range(meta.num_row_groups):
            stats = meta.row_group(g).column(index).statistics
            if stats is None or not stats.has_min_max or stats.null_count:
                return None, 0
            bounds.append((to_us(as_utc(stats.min)), to_us(as_utc(stats.max))))
    except (KeyError, TypeError, ValueError, pa.ArrowException):
        return None, 0
    if any(bounds[g][0] < bounds[g - 1][1] for g in range(1, len(bounds))):  # not sorted
        return None, 0
    keep = [g for g, (low, high) in enumerate(bounds) if high >= lo and low < hi]
    if not keep or len(keep) == meta.num_row_groups:
        return (None, 0) if keep else ([0], 0)
    first_row = sum(meta.row_group(g).num_rows for g in range(keep[0]))
    return keep, first_row


def _read_parts(
    batches: Sequence[DataBatch],
    lo: int,
    hi: int,
    columns: Sequence[str] | None,
    with_sensitive: bool,
) -> list[Part]:
    """Each batch's part (``read_each``: on an object store several at once)."""
    per_day = Counter(b.day for b in batches)

    def read(batch: DataBatch) -> Part:
        part = _read_part(batch, lo, hi, columns, with_sensitive, per_day[batch.day] > 1)
        part.day = batch.day
        return part

    return read_each(batches, read)


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
    label_files: Sequence[tuple[str, int]],
) -> pa.Table | None:
    parts = _read_parts(batches, lo, hi, columns, with_sensitive)
    parts = [p for p in parts if p.table.num_rows] or parts[:1]
    if not parts:
        return None
    table = pa.concat_tables([p.table for p in parts], promote_options="default")
    if columns is not None:
        table = select_columns(table, columns)
    if with_labels:
        labels = latest_labels(
            model_id,
            version_id,
            {b.day for b in batches},
            [p.batch_id for p in parts],
            files=label_files,
        )
        label, label_time = label_columns(parts, labels)
        table = table.append_column("label", label).append_column("label_time", label_time)
    return _in_day_time_order(table, parts)


def _kinds(with_labels: bool) -> list[str]:
    return [BatchKind.PREDICTIONS, *([BatchKind.LABELS] if with_labels else [])]


def _manifest(batches) -> tuple[list[DataBatch], list[tuple[str, int]]]:
    """Prediction batches by (day, id) and label files (path, size) by id, from ONE query: a
    compaction (``store.compact``) that commits between two queries would pair old prediction
    rows with labels that point at the new ones."""
    rows = list(batches.order_by("id"))
    predictions = sorted(
        (b for b in rows if b.kind == BatchKind.PREDICTIONS), key=lambda b: (b.day, b.pk)
    )
    labels = [(b.path, b.size) for b in rows if b.kind == BatchKind.LABELS]
    return predictions, labels


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
    datetimes are UTC. Rows come by day, then by time (equal times in the order they were
    ingested): the order a compacted day is stored in, so compaction changes no result.
    """
    check_columns(columns, with_sensitive)
    start, end = as_utc(start), as_utc(end)
    model_id = model_id_of(model)
    version_id = version_id_of(model_id, version)
    feature_names: list[str] = []
    if columns is None and isinstance(version, ModelVersion):
        feature_names = list(version.feature_list)
    table = None
    if end > start:
        batches = DataBatch.objects.filter(
            model_id=model_id,
            kind__in=_kinds(with_labels),
            day__gte=start.date(),
            day__lte=(end - timedelta(microseconds=1)).date(),
        )
        if version_id is not None:
            batches = batches.filter(version_id=version_id)
        predictions, label_files = _manifest(batches)
        table = _read_predictions(
            predictions,
            label_files=label_files,
            lo=to_us(start),
            hi=to_us(end),
            columns=columns,
            with_labels=with_labels,
            with_sensitive=with_sensitive,
            model_id=model_id,
            version_id=version_id,
        )
    if table is None:
        return empty_frame(columns, feature_names, with_labels)
    return to_frame(table)


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
        model=model, kind__in=_kinds(True), day__lte=(until - timedelta(microseconds=1)).date()
    )
    if since is not None:
        batches = batches.filter(day__gte=since.date())
    if version is not None:
        batches = batches.filter(version=version)
    by_day: dict[date, list[DataBatch]] = defaultdict(list)
    labels_by_day: dict[date, list[tuple[str, int]]] = defaultdict(list)
    for batch in batches.order_by("id"):  # one snapshot, as in load_window
        if batch.kind == BatchKind.PREDICTIONS:
            by_day[batch.day].append(batch)
        else:
            labels_by_day[batch.day].append((batch.path, batch.size))
    tables, total = [], 0
    for day in sorted(by_day, reverse=True):
        day_batches = by_day[day]
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
            label_files=labels_by_day[day],
        )
        if table is not None and table.num_rows:
            tables.append(table)
            total += table.num_rows
        if total >= limit:
            break
    if not tables:
        return empty_frame(None, list(version.feature_list) if version else [], True)
    table = pa.concat_tables(tables, promote_options="default")
    frame = to_frame(table)
    order = np.argsort(
        -frame["timestamp"].to_numpy(dtype="datetime64[us]").astype(np.int64), kind="stable"
    )
    return frame.iloc[order[:limit]].reset_index(drop=True)
