"""The alert hand-off: monitoring raises alerts, a hook named in settings decides what follows.

``route(alert_id)`` calls the function named by ``settings.MONITORING_ALERT_HOOK`` (a dotted path,
default ``monitoring.routing.default_route``) with the alert. The incidents app points the
setting at its own handler (incidents, playbooks, paging, rollback), so monitoring never imports
it (docs/architecture.md §2). Every hook must be idempotent: a retried hand-off calls it again.

``default_route`` applies the specification's routing that monitoring can do by itself:

* watch (a fairness breach whose interval still includes the limit): nothing; the alert is
  there for a person to read, and counts toward no review, incident, rollback or halt;
* medium: a review item for the next retraining review, the alert ``queued``; the stage stays;
* high or critical on a version in production or monitoring: ``mark_degraded`` (automatic);
* anything on a version outside those stages (in validation, degraded already, retired...):
  nothing beyond the alert itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.db import transaction
from django.utils.module_loading import import_string

from governance import audit
from governance import lifecycle as lifecycle_rules
from governance.audit import Actor
from governance.models import Lifecycle, Stage
from platform_core.errors import Conflict

from .models import Alert, AlertStatus, ReviewItem, Severity

logger = logging.getLogger(__name__)

DEFAULT_HOOK = "monitoring.routing.default_route"
SYSTEM = Actor.system("monitoring")
# mark_degraded starts only from these; a degraded or retraining version is degraded already.
DEGRADABLE = frozenset({Stage.PRODUCTION, Stage.MONITORING})


def hook() -> Callable[[Alert], object]:
    return import_string(getattr(settings, "MONITORING_ALERT_HOOK", "") or DEFAULT_HOOK)


def route(alert_id: int) -> None:
    """Hand one alert to the configured hook."""
    alert = Alert.objects.select_related("model", "version", "run").get(pk=alert_id)
    alert.version.model = alert.model  # the same row: str(alert) needs no query
    hook()(alert)


def default_route(alert: Alert) -> str:
    """Route by severity; returns what was done (for logs and tests). Safe to call again."""
    if alert.severity == Severity.WATCH:
        return "nothing: a watch alert (the evidence does not establish the breach)"
    if alert.severity == Severity.MEDIUM:
        return _queue_for_review(alert)
    return _degrade(alert)


def _queue_for_review(alert: Alert) -> str:
    with transaction.atomic():
        locked = Alert.objects.select_for_update().get(pk=alert.pk)
        locked.model, locked.version = alert.model, alert.version  # loaded: the event names them
        item, created = ReviewItem.objects.get_or_create(alert=locked)
        if not created:
            return "already queued"
        before = locked.status
        if locked.status == AlertStatus.OPEN:
            locked.status = AlertStatus.QUEUED
            locked.save(update_fields=["status"])
        audit.record(
            actor=SYSTEM,
            action="monitoring.alert_queued",
            obj=locked,
            before={"status": before},
            after={"status": locked.status, "review_item": item.pk},
            reason="medium alert: queued for the next retraining review; the stage stays",
        )
    alert.status = locked.status
    return "queued"


def _degrade(alert: Alert) -> str:
    stage = Lifecycle.objects.filter(version=alert.version).values_list("stage", flat=True).first()
    if stage not in DEGRADABLE:
        return f"nothing: {alert.version} is in {stage or 'no stage'}"
    feature = f" on {alert.feature}" if alert.feature else ""
    comment = (
        f"{alert.severity} {alert.kind} alert {alert.pk}: {alert.metric}{feature} "
        f"{_fmt(alert.value)} against the threshold {_fmt(alert.threshold)} "
        f"(window {alert.window_start:%Y-%m-%d %H:%M} to {alert.window_end:%Y-%m-%d %H:%M} UTC)"
    )
    try:
        lifecycle_rules.transition(
            version=alert.version,
            name="mark_degraded",
            actor=SYSTEM,
            comment=comment,
            automatic=True,
        )
    except Conflict:
        # Another alert degraded it (or it moved on) between our read and the lock: nothing to do.
        now = (
            Lifecycle.objects.filter(version=alert.version).values_list("stage", flat=True).first()
        )
        logger.info("alert %s: %s is now in %s; not degraded again", alert.pk, alert.version, now)
        return "nothing: the stage changed concurrently"
    return "degraded"


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4g}"
