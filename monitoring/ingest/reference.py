"""Reference records of a version (a training or validation sample) and its profile."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from typing import Any

from django.utils import timezone

from governance import audit
from governance.audit import Actor
from platform_core.errors import InvalidInput
from registry import services as registry_services

from .. import profiles, store
from ..models import BatchKind, DataBatch, ReferenceProfile
from .common import (
    batch_rows,
    commit,
    day_list,
    parse_for_version,
    record_table,
    source_of,
)


@dataclass(frozen=True)
class ReferenceResult:
    batches: list[DataBatch]
    profile: ReferenceProfile
    rows: int


def reference_ingest(
    *,
    model_name: str,
    version: str,
    records: Any = None,
    upload=None,
    actor: Actor,
    source: str | None = None,
) -> ReferenceResult:
    """Add reference records (a training or validation sample) to a version; recompute its profile.

    Reference data accumulates: the profile covers every reference batch of the version. The
    file is filed under the day it arrived.
    """
    target = registry_services.version_get(model_name, version)
    parsed = parse_for_version(BatchKind.REFERENCE, target, records=records, upload=upload)
    table = record_table(parsed, target, with_label=True)
    files = [
        store.write_file(
            table,
            model_name=target.model.name,
            kind=BatchKind.REFERENCE,
            day=timezone.now().astimezone(UTC).date(),
        )
    ]
    source = source_of(source, upload)

    def create_rows() -> ReferenceResult:
        # one reference upload at a time per version, so each profile covers all committed data
        # (FOR NO KEY UPDATE: runs, alerts and batches referencing the version are not held up)
        store.lock_version(target.pk)
        batches = batch_rows(
            files,
            model=target.model,
            version_id=target.pk,
            kind=BatchKind.REFERENCE,
            source=source,
            actor=actor,
        )
        try:
            profile = profiles.store_profile(target, batch=batches[-1])
        except ValueError as exc:  # stats refused the data as a whole
            raise InvalidInput({"records": str(exc)}) from exc
        audit.record(
            actor=actor,
            action="reference.ingested",
            obj=target,
            model_name=target.model.name,
            after={
                "version": target.version,
                "rows": parsed.n,
                "days": day_list(files),
                "digest": store.combined_digest(files),
                "batches": [b.pk for b in batches],
                "reference_rows": profile.rows,
                "source": source,
            },
        )
        return ReferenceResult(batches=batches, profile=profile, rows=parsed.n)

    return commit(files, create_rows=create_rows)
