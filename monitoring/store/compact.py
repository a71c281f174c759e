"""Daily compaction: a closed (version, day) partition's prediction files merged into one file,
and its label files into one, so a window reads one file per day instead of up to 1,440.

The gateway stores a file per minute of traffic; a 7-day window of a busy model was ~10,000
files and ~20,000 GETs on an object store (docs/scaling.md §3). After compaction it is 7 and 14.

How a partition is compacted (``compact_partition``):

1. Its batches are read (manifest rows, then their files) and the new objects are written under
   new unique keys: the predictions sorted by timestamp (a window edge still prunes row groups),
   their id index (one covering the whole day), and the label files concatenated in id order
   with each label's (batch, row) renumbered to the merged file (row order kept: "equal label
   times go to the label ingested last" still holds).
2. In ONE transaction under the version's lock (``lock_version``: prediction and label
   ingestion take it), the partition's rows are read again ``FOR UPDATE``; if any batch came,
   went or changed meanwhile the new objects are discarded and the partition is tried again
   (``ATTEMPTS``, then left to the next run: "skip", never merged half). Else the partition's
   FIRST prediction row (and first label row) is updated to the new object and the others are
   deleted, their ``IngestKey`` rows repointed to it first (CASCADE would drop them). The first
   row keeps its id because the label file written in step 1 must name the batch its
   predictions are in before the transaction can create one. The old objects are ``retire``-d
   (kept for ``ORPHAN_GRACE``, then swept) and one ``predictions.compacted`` event is audited.
3. A failure anywhere leaves the old rows as they were and at most an unreferenced new object,
   which ``discard`` or, failing that, the orphan sweeper removes.

Reference batches are another kind and never read or touched here (``ReferenceProfile`` points
at them, PROTECT). Readers take prediction and label rows from one manifest query
(``window._manifest``), so a check that straddles the commit reads either the old files (kept
during the grace) or the new ones, never a mix.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, timedelta

import numpy as np
import pyarrow as pa
from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from governance import audit
from governance.audit import Actor
from registry.models import ModelVersion

from ..models import BatchKind, DataBatch, IngestKey, ReferenceProfile
from .files import StoredFile, discard, read_each, read_table, retire, write_file
from .frames import timestamps_us
from .ids import id_digests, lock_version

logger = logging.getLogger(__name__)

COMPACT_TASK = "monitoring.compact_partitions"
SYSTEM = Actor.system(COMPACT_TASK)
ATTEMPTS = 3  # a partition that changes under each attempt is left to the next run
DEFAULT_AFTER_DAYS = 0
DEFAULT_LOOKBACK_DAYS = 7
DEFAULT_CHUNK = 20
KINDS = (BatchKind.PREDICTIONS, BatchKind.LABELS)


def enabled() -> bool:
    return bool(getattr(settings, "MONITORING_COMPACT_ENABLED", True))


def chunk_size() -> int:
    return max(1, int(getattr(settings, "MONITORING_COMPACT_CHUNK", DEFAULT_CHUNK)))


@dataclass(frozen=True)
class Partition:
    """A (version, day) with more than one prediction or label file."""

    version_id: int
    day: date
    prediction_files: int = 0
    label_files: int = 0


@dataclass
class Outcome:
    """What ``compact_partition`` did: ``compacted``, ``nothing`` (one file of each already) or
    ``skipped`` (the partition changed under every attempt, or its files could not be read)."""

    partition: Partition
    status: str
    prediction_files: int = 0
    label_files: int = 0
    rows: int = 0
    label_rows: int = 0
    reason: str = ""
    paths: list[str] = field(default_factory=list)  # the new objects


def due_partitions(*, today: date | None = None, model: str | None = None) -> list[Partition]:
    """The closed partitions worth compacting, oldest first.

    Closed: ``day < today - MONITORING_COMPACT_AFTER_DAYS`` (default 0: yesterday is merged at
    01:00, before the daily checks read it at 02:00; a gateway batch of yesterday that arrives
    later is a second file, merged by the next night's run). Only the
    ``MONITORING_COMPACT_LOOKBACK_DAYS`` days before that are looked at (default 7): each day is
    compacted by the runs of its first week, and the query stays a bounded range of the manifest
    however long the retention. Labels that arrive later
    add a file to an old day, which then stays (a second file, not 1,440).
    """
    today = today or timezone.now().astimezone(UTC).date()
    after = int(getattr(settings, "MONITORING_COMPACT_AFTER_DAYS", DEFAULT_AFTER_DAYS))
    lookback = int(getattr(settings, "MONITORING_COMPACT_LOOKBACK_DAYS", DEFAULT_LOOKBACK_DAYS))
    before = today - timedelta(days=max(after, 0))
    rows = DataBatch.objects.filter(
        kind__in=KINDS,
        version__isnull=False,
        day__lt=before,
        day__gte=before - timedelta(days=max(lookback, 1)),
    )
    if model is not None:
        rows = rows.filter(model__name=model)
    counts: dict[tuple[int, date], dict[str, int]] = {}
    for version_id, day, kind, n in (
        rows.values("version_id", "day", "kind")
        .annotate(n=Count("id"))
        .values_list("version_id", "day", "kind", "n")
    ):
        counts.setdefault((version_id, day), {})[kind] = n
    return [
        Partition(
            version_id=version_id,
            day=day,
            prediction_files=kinds.get(BatchKind.PREDICTIONS, 0),
            label_files=kinds.get(BatchKind.LABELS, 0),
        )
        for (version_id, day), kinds in sorted(counts.items(), key=lambda kv: kv[0][::-1])
        if kinds.get(BatchKind.PREDICTIONS, 0) > 1 or kinds.get(BatchKind.LABELS, 0) > 1
    ]


def compact_partition(
    version_id: int, day: date, *, actor: Actor = SYSTEM, before_commit=None
) -> Outcome:
    """Merge the (version, day) partition's files (see the module doc); ``before_commit``: a
    hook called after the new objects are written, before the transaction (tests)."""
    outcome = Outcome(Partition(version_id, day), "nothing")
    for _ in range(ATTEMPTS):
        outcome = _compact_once(version_id, day, actor=actor, before_commit=before_commit)
        if outcome.status != "changed":
            return outcome
    outcome.status = "skipped"
    outcome.reason = f"the partition changed under each of {ATTEMPTS} attempts"
    return outcome


def _partition_rows(version_id: int, day: date):
    return DataBatch.objects.filter(version_id=version_id, day=day, kind__in=KINDS).order_by("id")


def _state(batches: Sequence[DataBatch]) -> list[tuple[int, str, str, str]]:
    return [(b.pk, b.kind, b.path, b.id_index) for b in batches]


@dataclass
class _Merged:
    """The objects written for one kind, and the row they replace the others with."""

    keep: DataBatch
    others: list[DataBatch]
    stored: StoredFile


def _compact_once(version_id: int, day: date, *, actor: Actor, before_commit) -> Outcome:
    partition = Partition(version_id, day)
    batches = list(_partition_rows(version_id, day))
    predictions = [b for b in batches if b.kind == BatchKind.PREDICTIONS]
    labels = [b for b in batches if b.kind == BatchKind.LABELS]
    outcome = Outcome(partition, "nothing", len(predictions), len(labels))
    if len(predictions) < 2 and len(labels) < 2:
        return outcome
    version = ModelVersion.objects.select_related("model").get(pk=version_id)
    written: list[StoredFile] = []
    try:
        merged_predictions, renumber = None, None
        if len(predictions) > 1:
            merged_predictions, renumber = _merge_predictions(version, day, predictions)
            written.append(merged_predictions.stored)
        merged_labels = None
        if labels and (len(labels) > 1 or renumber is not None):
            merged_labels = _merge_labels(version, day, labels, renumber)
            written.append(merged_labels.stored)
        if before_commit is not None:
            before_commit()
        with transaction.atomic():
            lock_version(version_id)
            current = list(_partition_rows(version_id, day).select_for_update())
            if _state(current) != _state(batches):  # an ingestion, a merge or a purge meanwhile
                discard(p for f in written for p in f.paths)
                outcome.status = "changed"
                return outcome
            merges = [m for m in (merged_predictions, merged_labels) if m is not None]
            _commit(merges, current)
            audit.record(
                actor=actor,
                action="predictions.compacted",
                obj=version,
                after={
                    "version": version.version,
                    "day": day.isoformat(),
                    "prediction_files": len(predictions),
                    "label_files": len(labels),
                    "rows": sum(b.rows for b in predictions),
                    "label_rows": sum(b.rows for b in labels),
                    "batches": {m.keep.kind: m.keep.pk for m in merges},
                    "removed": sorted(b.pk for m in merges for b in m.others),
                    "digests": {m.keep.kind: m.stored.digest for m in merges},
                },
            )
    except FileNotFoundError as exc:  # a file of the partition is gone: nothing to merge safely
        discard(p for f in written for p in f.paths)
        logger.warning("compaction of version %s on %s skipped: %s", version_id, day, exc)
        outcome.status, outcome.reason = "skipped", f"a file is missing: {exc}"
        return outcome
    except BaseException:
        discard(p for f in written for p in f.paths)
        raise
    outcome.status = "compacted"
    outcome.rows = sum(b.rows for b in predictions)
    outcome.label_rows = sum(b.rows for b in labels)
    outcome.paths = [p for f in written for p in f.paths]
    return outcome


def _commit(merges: Sequence[_Merged], current: Sequence[DataBatch]) -> None:
    """Point each kept row at its new object, move the others' keys to it, delete the others,
    retire every replaced object (under the lock, the partition as read)."""
    old_ids = [b.pk for m in merges for b in m.others]
    # reference batches are another kind, never read here; a profile's batch is never replaced
    if ReferenceProfile.objects.filter(
        batch_id__in=[*old_ids, *(m.keep.pk for m in merges)]
    ).exists():
        raise RuntimeError("a reference profile points at a prediction or label batch")
    replaced = {m.keep.pk for m in merges} | set(old_ids)
    retire(p for b in current if b.pk in replaced for p in (b.path, b.id_index))
    for m in merges:
        stored, group = m.stored, [m.keep, *m.others]
        sources = {b.source for b in group}
        DataBatch.objects.filter(pk=m.keep.pk).update(
            path=stored.path,
            rows=stored.rows,
            size=stored.size,
            digest=stored.digest,
            id_index=stored.id_index,
            source=sources.pop() if len(sources) == 1 else "mixed",
            # the time its last records arrived: "batches stored by then" stays an upper bound
            created_at=max(b.created_at for b in group),
        )
        IngestKey.objects.filter(batch_id__in=[b.pk for b in m.others]).update(batch_id=m.keep.pk)
    DataBatch.objects.filter(pk__in=old_ids).delete()


def _merge_predictions(
    version: ModelVersion, day: date, batches: Sequence[DataBatch]
) -> tuple[_Merged, dict[int, np.ndarray]]:
    """One file of the batches' rows sorted by time (stable: ties keep batch, then row order);
    with, per old batch id, each of its rows' row in the new file."""
    tables = read_each(batches, lambda b: read_table(b.path, size=b.size))
    merged = pa.concat_tables(tables, promote_options="default")
    order = np.argsort(timestamps_us(merged), kind="stable")
    new_row = np.empty(order.size, dtype=np.int64)
    new_row[order] = np.arange(order.size, dtype=np.int64)
    renumber, start = {}, 0
    for batch, table in zip(batches, tables, strict=True):
        renumber[batch.pk] = new_row[start : start + table.num_rows]
        start += table.num_rows
    merged = merged.take(pa.array(order))
    ids = merged.column("prediction_id").to_pylist()
    stored = write_file(
        merged,
        model_name=version.model.name,
        kind=BatchKind.PREDICTIONS,
        day=day,
        id_digests=id_digests(ids),
    )
    return _Merged(keep=batches[0], others=list(batches[1:]), stored=stored), renumber


def _merge_labels(
    version: ModelVersion,
    day: date,
    batches: Sequence[DataBatch],
    renumber: dict[int, np.ndarray] | None,
) -> _Merged:
    """The label files concatenated in id order (so ingestion order decides equal label times
    as before), each label's (batch, row) moved to the merged prediction file."""
    tables = read_each(batches, lambda b: read_table(b.path, size=b.size))
    merged = pa.concat_tables(tables, promote_options="default")
    if renumber:
        keep_id = min(renumber)
        batch = merged.column("batch").to_numpy().astype(np.int64)
        row = merged.column("row").to_numpy().astype(np.int64)
        for old, rows in renumber.items():
            at = np.flatnonzero((batch == old) & (row >= 0) & (row < rows.size))
            if at.size:
                row[at] = rows[row[at]]
                batch[at] = keep_id
        merged = merged.set_column(
            merged.schema.get_field_index("batch"), "batch", pa.array(batch, type=pa.int64())
        ).set_column(merged.schema.get_field_index("row"), "row", pa.array(row, type=pa.int64()))
    stored = write_file(merged, model_name=version.model.name, kind=BatchKind.LABELS, day=day)
    return _Merged(keep=batches[0], others=list(batches[1:]), stored=stored)


@dataclass
class Run:
    """A compaction run's totals, for the task's log and the command's report."""

    partitions: int = 0
    compacted: int = 0
    skipped: int = 0
    files_before: int = 0
    files_after: int = 0
    outcomes: list[Outcome] = field(default_factory=list)


def compact(partitions: Sequence[Partition], *, actor: Actor = SYSTEM, progress=None) -> Run:
    """Compact each partition (one transaction each); ``progress(outcome, i, n)`` after each.

    A partition that fails is logged and left as it was; the others go on.
    """
    run = Run(partitions=len(partitions))
    for i, partition in enumerate(partitions, 1):
        try:
            outcome = compact_partition(partition.version_id, partition.day, actor=actor)
        except Exception as exc:
            logger.exception("compaction of %s failed", partition)
            outcome = Outcome(partition, "skipped", reason=f"{type(exc).__name__}: {exc}")
        run.outcomes.append(outcome)
        if outcome.status == "compacted":
            run.compacted += 1
            run.files_before += outcome.prediction_files + outcome.label_files
            run.files_after += (outcome.prediction_files > 0) + (outcome.label_files > 0)
        elif outcome.status == "skipped":
            run.skipped += 1
        if progress is not None:
            progress(outcome, i, len(partitions))
    return run


def names(partitions: Sequence[Partition]) -> dict[int, str]:
    """ "model version" per version id of ``partitions``: what a person reads in a report."""
    return {
        pk: f"{model} {version}"
        for pk, model, version in ModelVersion.objects.filter(
            pk__in={p.version_id for p in partitions}
        ).values_list("pk", "model__name", "version")
    }


def chunks(partitions: Sequence[Partition], size: int) -> list[list[Partition]]:
    return [list(partitions[i : i + size]) for i in range(0, len(partitions), size)]


def as_args(partitions: Sequence[Partition]) -> list[list]:
    """Partitions as a task's JSON arguments."""
    return [[p.version_id, p.day.isoformat()] for p in partitions]


def from_args(args: Sequence[Sequence]) -> list[Partition]:
    return [Partition(int(v), date.fromisoformat(d)) for v, d in args]
