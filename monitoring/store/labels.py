"""Reading labels: the latest label of each prediction, scattered onto a window by position."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa

from ..models import BatchKind, DataBatch
from .files import read_each, read_table
from .frames import (
    NAT,
    TIMESTAMP,
    Part,
    timestamps_us,
)


def latest_labels(
    model_id: int,
    version_id: int | None,
    days: Iterable[date],
    batch_ids: Iterable[int],
    files: Sequence[tuple[str, int]] | None = None,
) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per prediction batch: (rows, label, label_time us) of the latest label of each row.

    Latest = greatest ``label_time``; equal times go to the label ingested last (the label
    files in id order, rows in file order). ``files``: the label files' (path, size) in id
    order, when the caller read them with its prediction batches (one manifest snapshot: a
    compaction that commits in between renumbers the rows labels point to).
    """
    if files is None:
        label_batches = DataBatch.objects.filter(
            model_id=model_id, kind=BatchKind.LABELS, day__in=sorted(set(days))
        )
        if version_id is not None:
            label_batches = label_batches.filter(version_id=version_id)
        files = list(label_batches.order_by("id").values_list("path", "size"))
    if not files:
        return {}
    wanted = np.fromiter(batch_ids, dtype=np.int64)
    batch_parts, row_parts, label_parts, time_parts = [], [], [], []
    tables = read_each(
        files,
        lambda file: read_table(
            file[0], columns=["batch", "row", "label", "label_time"], size=file[1]
        ),
    )
    for table in tables:
        batch = table.column("batch").to_numpy()
        keep = np.isin(batch, wanted)
        if not keep.any():
            continue
        columns = [
            batch,
            table.column("row").to_numpy(),
            table.column("label").to_numpy(),
            timestamps_us(table.rename_columns(["b", "r", "l", "timestamp"])),
        ]
        if not keep.all():  # the usual file labels only predictions of the window: no copies
            columns = [column[keep] for column in columns]
        for parts, column in zip(
            (batch_parts, row_parts, label_parts, time_parts), columns, strict=True
        ):
            parts.append(column)
    if not batch_parts:
        return {}
    batch = np.concatenate(batch_parts)
    row = np.concatenate(row_parts)
    label = np.concatenate(label_parts)
    label_time = np.concatenate(time_parts)
    key = (batch << 32) | row  # batch ids and rows both fit in 32 bits
    if pd.Index(key).is_unique:  # the usual case, one label per prediction: no sort needed
        if batch.size and np.all(batch[1:] >= batch[:-1]):  # grouped by batch: slices, no copies
            bounds = [0, *(np.flatnonzero(batch[1:] != batch[:-1]) + 1).tolist(), batch.size]
            return {
                int(batch[i]): (row[i:j], label[i:j], label_time[i:j])
                for i, j in itertools.pairwise(bounds)
            }
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


def label_columns(
    parts: Sequence[Part], labels: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]
) -> tuple[pa.Array, pa.Array]:
    n = sum(p.table.num_rows for p in parts)
    label = np.full(n, np.nan)
    label_time = np.full(n, NAT, dtype=np.int64)
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
    times = pa.array(label_time, mask=label_time == NAT, type=pa.int64()).cast(TIMESTAMP)
    return pa.array(label, type=pa.float64()), times
