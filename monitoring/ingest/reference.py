"""Reference records of a version (a training or validation sample) and its profile."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from typing import Unpack

from django.utils import timezone

from governance import audit
from platform_core.errors import InvalidInput

from .. import profiles, store
from ..models import BatchKind, DataBatch, ReferenceProfile
from .common import VersionBatch, VersionBatchArgs, commit, record_table, stored_summary


@dataclass(frozen=True)
class ReferenceResult:
    batches: list[DataBatch]
    profile: ReferenceProfile
    rows: int


def reference_ingest(**batch: Unpack[VersionBatchArgs]) -> ReferenceResult:
    """Add reference records (a training or validation sample) to a version; recompute its profile.

    ``batch`` names the version, the records or upload, the actor and the source
    (``common.VersionBatchArgs``). Reference data accumulates: the profile covers every
    reference batch of the version. The file is filed under the day it arrived.
    """
    sent = VersionBatch.of(batch)
    target = sent.target
    parsed = sent.parse(BatchKind.REFERENCE)
    table = record_table(parsed, target, with_label=True)
    files = [
        store.write_file(
            table,
            model_name=target.model.name,
            kind=BatchKind.REFERENCE,
            day=timezone.now().astimezone(UTC).date(),
        )
    ]

    def create_rows() -> ReferenceResult:
        # one reference upload at a time per version, so each profile covers all committed data
        # (FOR NO KEY UPDATE: runs, alerts and batches referencing the version are not held up)
        store.lock_version(target.pk)
        batches = sent.batch_rows(files, BatchKind.REFERENCE)
        try:
            profile = profiles.store_profile(target, batch=batches[-1])
        except ValueError as exc:  # stats refused the data as a whole
            raise InvalidInput({"records": str(exc)}) from exc
        audit.record(
            actor=sent.actor,
            action="reference.ingested",
            obj=target,
            after={
                "version": target.version,
                "rows": parsed.n,
                **stored_summary(files, batches),
                "reference_rows": profile.rows,
                "source": sent.source,
            },
        )
        return ReferenceResult(batches=batches, profile=profile, rows=parsed.n)

    return commit(files, create_rows=create_rows)
