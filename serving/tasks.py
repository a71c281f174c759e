"""Celery wrappers: they take ids and call services.

The gateway enqueues ``verify_promotion`` and ``warm_standby`` on the urgent queue (a restore must
not wait behind monitoring jobs): ``signals.enqueue_*``.
"""

from __future__ import annotations

from celery import shared_task


@shared_task(name="serving.warm_standby")
def warm_standby(model_id: int) -> list[dict]:
    """Cache and verify the artifacts of the model's warm-standby versions."""
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
    """Score a probe with the newly live version; then take begin_monitoring."""
    from .readiness import verify_promotion as verify

    return verify(version_id=version_id)


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
