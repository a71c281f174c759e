"""Retention: prediction and label batches older than their model's policy allows go."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from governance import audit
from governance.audit import Actor
from governance.policies import policy_values
from registry.models import RegisteredModel

from .. import store
from ..models import BatchKind, DataBatch

logger = logging.getLogger(__name__)

PURGE_TASK = "monitoring.purge_expired_predictions"


def retention_days(model: RegisteredModel) -> int:
    """``retention_days`` of the model's monitoring policy in force (its schema's default, 365)."""
    return int(policy_values("monitoring", model)["retention_days"])


def purge_expired(*, now: datetime | None = None) -> int:
    """Delete prediction and label batches older than each model's retention; never reference.

    Batches of an impossible future day (after tomorrow) go too: only data stored before
    timestamps were bounded can have one.

    One transaction per model: its expired manifest rows go and a ``predictions.purged`` event
    (rows, days) is written; the files are deleted after that commits (a failure there leaves
    orphans for the sweeper). Returns the number of batches removed.
    """
    now = now or timezone.now()
    actor = Actor.system(PURGE_TASK)
    kinds = [BatchKind.PREDICTIONS, BatchKind.LABELS]
    model_ids = (
        DataBatch.objects.filter(kind__in=kinds).order_by().values_list("model_id", flat=True)
    )
    removed = 0
    for model in RegisteredModel.objects.filter(pk__in=set(model_ids)).order_by("name"):
        keep_days = retention_days(model)
        before = (now.astimezone(UTC) - timedelta(days=keep_days)).date()
        # A day after tomorrow cannot hold a real prediction: data stored before timestamps
        # were bounded (year 2262) would otherwise never expire.
        future = (now.astimezone(UTC) + timedelta(days=1)).date()
        with transaction.atomic():
            expired = list(
                DataBatch.objects.select_for_update()
                .filter(Q(day__lt=before) | Q(day__gt=future), model=model, kind__in=kinds)
                .order_by("day", "id")
            )
            if not expired:
                continue
            DataBatch.objects.filter(pk__in=[b.pk for b in expired]).delete()
            audit.record(
                actor=actor,
                action="predictions.purged",
                obj=model,
                after={
                    "rows": sum(b.rows for b in expired if b.kind == BatchKind.PREDICTIONS),
                    "label_rows": sum(b.rows for b in expired if b.kind == BatchKind.LABELS),
                    "days": sorted({b.day.isoformat() for b in expired}),
                    "batches": len(expired),
                    "retention_days": keep_days,
                    "before": before.isoformat(),
                    "future_days": sorted({b.day.isoformat() for b in expired if b.day > future}),
                },
            )
        store.delete_files(p for b in expired for p in (b.path, b.id_index) if p)
        removed += len(expired)
    return removed
