"""Logged predictions of one version: one file and manifest row per UTC day."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Unpack

import numpy as np
import pyarrow as pa
from django.db import IntegrityError, transaction

from governance import audit
from governance.records import MAX_ERRORS, Errors
from platform_core.errors import Conflict, InvalidInput
from registry.models import ModelVersion

from .. import store
from ..models import BatchKind, DataBatch, IngestKey
from ..store import ids as id_index
from .common import (
    VersionBatch,
    VersionBatchArgs,
    commit,
    days_of,
    record_table,
    stored_summary,
)

logger = logging.getLogger(__name__)


def predictions_ingest(
    *, batch_keys: Sequence[str] = (), **batch: Unpack[VersionBatchArgs]
) -> list[DataBatch]:
    """Store a batch of logged predictions of one version: one file and manifest row per day.

    ``batch`` names the version, the records or upload, the actor and the source
    (``common.VersionBatchArgs``). Raises ``NotFound`` (no such version) or ``InvalidInput``
    (any bad record, or a prediction id the version already has stored that day; nothing
    stored). ``source`` is ``api``, ``upload`` (the default for files) or ``gateway``.
    ``batch_keys`` name what the batch was made of (the gateway's spool files): when all were
    ingested before, nothing is stored and their earlier manifest rows are returned (the first
    of each ingestion), so a file whose deletion failed after its commit is never stored twice;
    a mix of old and new keys is refused. Duplicate ids are found in the days' id indexes
    (``store.stored_duplicates``), at a cost that follows the batch, not the day.
    """
    sent = VersionBatch.of(batch)
    target = sent.target
    keys = _checked_keys(batch_keys)
    if (replayed := _ingested_before(target, keys)) is not None:
        logger.info("predictions of %s already ingested under %s", target, ", ".join(keys))
        return replayed
    parsed = sent.parse(BatchKind.PREDICTIONS)
    written = _write(parsed, target)

    def create_rows() -> list[DataBatch]:
        store.lock_version(target.pk)  # two batches with one id: the second sees the first
        if keys and IngestKey.objects.filter(version=target, key__in=keys).exists():
            raise _KeysTaken  # by a concurrent call meanwhile
        _refuse_stored_ids(target, written)
        batches = sent.batch_rows(written.files, BatchKind.PREDICTIONS)
        _audit(sent, written, batches, rows=parsed.n, keys=keys)
        IngestKey.objects.bulk_create(
            IngestKey(version=target, key=key, batch=batches[0]) for key in keys
        )
        transaction.on_commit(lambda: _compact(target.pk, [f.day for f in written.files]))
        return batches

    try:
        return commit(written.files, create_rows=create_rows)
    except (_KeysTaken, IntegrityError) as exc:
        if keys and (replayed := _ingested_before(target, keys)) is not None:
            return replayed
        if isinstance(exc, _KeysTaken):
            raise Conflict("the batch keys changed while this batch was stored; retry") from exc
        raise


@dataclass(frozen=True)
class _Written:
    """A batch's day files on disk, and its ids for the duplicate check (in the given order)."""

    files: list[store.StoredFile]
    ids: pa.Array
    digests: np.ndarray
    days: np.ndarray  # datetime64[D] of each record


def _write(parsed, target: ModelVersion) -> _Written:
    """One file per day, rows sorted by time (a window edge is then a binary search)."""
    days = days_of(parsed.timestamp)
    ids = pa.array(parsed.prediction_id, type=pa.string())
    digests = id_index.id_digests(parsed.prediction_id)
    table = record_table(parsed, target, with_label=False)
    row_days, row_digests = days, digests
    if not np.all(parsed.timestamp[1:] >= parsed.timestamp[:-1]):
        order = np.argsort(parsed.timestamp, kind="stable")
        table, row_days, row_digests = table.take(pa.array(order)), days[order], digests[order]
    files = store.write_by_day(
        table,
        model_name=target.model.name,
        kind=BatchKind.PREDICTIONS,
        days=row_days,
        id_digests=row_digests,
    )
    return _Written(files=files, ids=ids, digests=digests, days=days)


def _refuse_stored_ids(target: ModelVersion, written: _Written) -> None:
    """400 naming each record whose id the version already has stored on that day."""
    stored = store.stored_duplicates(
        version=target, ids=written.ids, digests=written.digests, days=written.days
    )
    if stored:
        errors = Errors()
        for index, day in sorted(stored.items())[: MAX_ERRORS + 1]:
            errors.row(
                index,
                "prediction_id",
                f"already stored for version {target.version} (on {day.isoformat()})",
            )
        errors.raise_if_any()


def _audit(
    sent: VersionBatch, written: _Written, batches: list[DataBatch], *, rows: int, keys: list[str]
) -> None:
    audit.record(
        actor=sent.actor,
        action="predictions.ingested",
        obj=sent.target,
        after={
            "version": sent.target.version,
            "rows": rows,
            **stored_summary(written.files, batches),
            "source": sent.source,
            **({"batch_key_count": len(keys)} if keys else {}),
        },
    )


class _KeysTaken(Exception):
    """Some ``batch_keys`` were committed by another call while this one was writing."""


def _compact(version_id: int, days: Sequence[date]) -> None:
    """Merge the days' id indexes after a commit (best effort: the next commit tries again)."""
    for day in days:
        try:
            store.compact_id_index(version_id=version_id, day=day)
        except Exception:
            logger.warning("could not merge the id index of %s", day, exc_info=True)


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
