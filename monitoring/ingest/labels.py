"""True outcomes of logged predictions, each filed with its prediction (version and day)."""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa
from django.utils import timezone

from governance import audit
from governance.audit import Actor
from governance.records import NAT, Errors, Parsed
from platform_core.errors import Conflict
from registry import services as registry_services
from registry.models import ModelVersion, RegisteredModel

from .. import store
from ..models import BatchKind, DataBatch
from .common import (
    batch_rows,
    commit,
    parse,
    source_of,
    stored_summary,
    timestamp_array,
    timestamp_bounds,
)

_Partition = tuple[int, date]  # (version id, day) of the labelled predictions


# A compaction that commits between locating the predictions and storing their labels
# renumbers their rows: the labels are located again, this many times at most.
LOCATE_ATTEMPTS = 3


def labels_ingest(
    *, model_name: str, records: Any = None, upload=None, actor: Actor, source: str | None = None
) -> list[DataBatch]:
    """Store the true outcomes of logged predictions, found by ``prediction_id``.

    Each label is filed with its prediction (the prediction's version and day), so a window's
    labels are in its own partitions. Unknown ids are refused naming the record. The latest label
    of a prediction wins (greatest ``label_time``, then the one ingested last). When the files
    of the labelled predictions changed before the commit (a partition compacted, a day purged),
    the labels are located again: a purged prediction's id is then unknown.
    """
    model = registry_services.model_get(model_name)
    parsed = parse(
        kind=BatchKind.LABELS, records=records, upload=upload, bounds=timestamp_bounds(None)
    )
    ids = pa.array(parsed.prediction_id, type=pa.string())
    for _ in range(LOCATE_ATTEMPTS):
        try:
            return _store(model, parsed, ids, actor=actor, source=source_of(source, upload))
        except _PredictionsMoved:
            continue
    raise Conflict("the labelled predictions' files kept changing while storing; retry")


class _PredictionsMoved(Exception):
    """A labelled prediction's file is no longer where it was located (compacted or purged)."""


def _store(
    model: RegisteredModel, parsed: Parsed, ids: pa.Array, *, actor: Actor, source: str
) -> list[DataBatch]:
    located = _locate(model, ids)
    grouped = _write(parsed, ids, located, model_name=model.name)
    files = [stored for _, stored in grouped]
    versions = dict(
        ModelVersion.objects.filter(pk__in={v for v, _ in grouped}).values_list("pk", "version")
    )

    def create_rows() -> list[DataBatch]:
        # the lock compaction takes: a partition is never rewritten between this check and
        # the commit of labels that point into it
        for version_id in sorted(v for v in versions if v):
            store.lock_version(version_id)
        current = dict(
            DataBatch.objects.filter(pk__in=list(located.paths)).values_list("id", "path")
        )
        if current != located.paths:
            raise _PredictionsMoved
        batches = [
            batch_rows(
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
            after={
                "rows": parsed.n,
                **stored_summary(files, batches),
                "versions": sorted(set(versions.values())),
                "by_version": _by_version(grouped, batches, versions),
                "source": source,
            },
        )
        return batches

    return commit(files, create_rows=create_rows)


def _by_version(grouped, batches: list[DataBatch], versions: dict[int, str]) -> dict[str, dict]:
    """What each version got of an ingestion (its rows, days and manifest rows): a version's
    documentation pack counts its labels from this event, whatever later rewrites the rows."""
    parts: dict[str, dict] = {}
    for (version_id, stored), batch in zip(grouped, batches, strict=True):
        if not version_id:
            continue
        part = parts.setdefault(versions[version_id], {"rows": 0, "days": [], "batches": []})
        part["rows"] += stored.rows
        part["days"] = sorted({*part["days"], stored.day.isoformat()})
        part["batches"].append(batch.pk)
    return parts


def _locate(model: RegisteredModel, ids: pa.Array) -> store.Located:
    """Where each labelled prediction is stored; 400 naming every id with none."""
    located = store.locate_predictions(model=model, ids=ids)
    if not located.found.all():
        errors = Errors()
        errors.rows(
            np.flatnonzero(~located.found),
            "prediction_id",
            f"no stored prediction of model '{model.name}' has this id",
        )
        errors.raise_if_any()
    return located


def _by_partition(located: store.Located) -> dict[_Partition, np.ndarray]:
    """Matches grouped by the (version, day) of their prediction, in file order within each."""
    order = np.lexsort((located.row, located.batch_id, located.day, located.version_id))
    version_ids, days = located.version_id[order], located.day[order]
    bounds = np.flatnonzero((np.diff(version_ids) != 0) | (np.diff(days) != np.timedelta64(0)))
    return {
        (int(located.version_id[chunk[0]]), located.day[chunk[0]].item()): chunk
        for chunk in np.split(order, bounds + 1)
        if chunk.size
    }


def _write(
    parsed: Parsed, ids: pa.Array, located: store.Located, *, model_name: str
) -> list[tuple[int, store.StoredFile]]:
    """One label file per partition; all of them removed again if one cannot be written."""
    now_us = store.to_us(timezone.now())
    label_time = parsed.label_time if parsed.label_time is not None else np.full(parsed.n, NAT)
    label_time = np.where(label_time == NAT, now_us, label_time)
    grouped: list[tuple[int, store.StoredFile]] = []
    try:
        for (version_id, day), chunk in _by_partition(located).items():
            index = located.index[chunk]
            table = pa.table(
                {
                    "prediction_id": ids.take(pa.array(index)),
                    "label": pa.array(parsed.label[index].astype(np.int8), type=pa.int8()),
                    "label_time": timestamp_array(label_time[index]),
                    "batch": pa.array(located.batch_id[chunk], type=pa.int64()),
                    "row": pa.array(located.row[chunk], type=pa.int64()),
                }
            )
            stored = store.write_file(table, model_name=model_name, kind=BatchKind.LABELS, day=day)
            grouped.append((version_id, stored))
    except BaseException:
        store.discard(stored.path for _, stored in grouped)
        raise
    return grouped
