"""Periodic registry upkeep."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.utils import timezone


@shared_task(name="registry.sweep_orphans")
def sweep_orphans() -> list[str]:
    """Remove MLflow versions written for registrations that never committed, and the temporary
    download directories that killed workers left in the artifact cache."""
    from .services import sweep_orphans as sweep
    from .services import sweep_temp_dirs

    removed = sweep(older_than=timezone.now() - settings.ORPHAN_GRACE)
    return removed + sweep_temp_dirs()
