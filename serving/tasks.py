"""Celery wrappers: they take ids and call services.

Each re-checks its premise under the model lock before acting (``governance.premises``): a task
whose premise no longer holds returns ``{"status": "skipped", ...}`` and is never retried.

The gateway enqueues ``verify_promotion`` and ``warm_standby`` on the urgent queue (a restore must
not wait behind monitoring jobs): ``signals.enqueue_*``; and ``ingest_prediction_log`` after it
writes its prediction spool (``log.enqueue_ingest``). Beat runs ``record_shadow_evaluations``
hourly, which fans out one ``record_shadow_evaluation`` per due version.
"""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from platform_core.tasking import RETRY_TRANSIENT


@shared_task(name="serving.warm_standby")
def warm_standby(model_id: int) -> list[dict]:
    """Cache and verify the artifacts of the model's warm-standby versions (a version that
    stopped being a standby meanwhile is skipped, not reported undeployable)."""
    from .standby import warm_standby_refresh

    return warm_standby_refresh(model_id=model_id)


@shared_task(
    name="serving.verify_promotion",
    autoretry_for=(Exception,),
    retry_backoff=2,
    retry_backoff_max=60,
    max_retries=10,
)
def verify_promotion(version_id: int) -> dict:
    """Score a probe with the newly live version; then take begin_monitoring.

    Retried only while the version is still live and does not serve; a version rolled back or
    replaced meanwhile ends the task ``skipped`` (superseded), never an outage or a retry.
    """
    from .readiness import verify_promotion as verify

    return verify(version_id=version_id)


@shared_task(name="serving.ingest_prediction_log", **RETRY_TRANSIENT)
def ingest_prediction_log() -> int:
    """Move the gateways' prediction spool into the monitoring store (enqueued by each flush)."""
    from .log import ingest_spooled

    return ingest_spooled()


@shared_task(name="serving.record_shadow_evaluations")
def record_shadow_evaluations() -> list[int]:
    """Beat, hourly: one ``record_shadow_evaluation`` per version whose shadow period is over."""
    from .shadow_counts import sweep
    from .shadow_evaluation import shadow_evaluations_due
    from .signals import enqueue_shadow_evaluation

    due = shadow_evaluations_due()
    for version_id in due:
        enqueue_shadow_evaluation(version_id)
    sweep()  # the gateway's shadow counts of stays that are over
    return due


@shared_task(
    name="serving.record_shadow_evaluation",
    autoretry_for=(OperationalError,),
    retry_backoff=30,
    max_retries=5,
)
def record_shadow_evaluation(
    version_id: int, staged_at: str | None = None, live_version_id: int | None = None
) -> dict | None:
    """Record the shadow evaluation of one version (once per stay in staging).

    ``staged_at`` and ``live_version_id`` are its premise as it held at enqueue time: the same
    stay in staging, shadowing the same live version; if either moved on, the task is skipped.
    """
    from .shadow_evaluation import shadow_evaluation_record_due

    evaluation = shadow_evaluation_record_due(
        version_id=version_id, staged_at=staged_at, live_version_id=live_version_id
    )
    if evaluation is None or isinstance(evaluation, dict):
        return evaluation
    return {"evaluation": evaluation.pk, "passed": evaluation.passed}


@shared_task(name="serving.trim_stale_cache")
def trim_stale_cache() -> int:
    """Drop shared stale-cache entries older than SERVING_STALE_CACHE_DAYS."""
    from datetime import timedelta

    from django.utils import timezone

    from .conf import setting
    from .models import StalePrediction

    cutoff = timezone.now() - timedelta(days=int(setting("SERVING_STALE_CACHE_DAYS")))
    deleted, _ = StalePrediction.objects.filter(updated_at__lt=cutoff).delete()
    return deleted
