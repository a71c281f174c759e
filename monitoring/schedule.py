"""What the beat schedule runs: the daily and weekly fan-out and the monthly human audit.

The fan-out creates one run per (model, live version, check) for the window ending at the start of
the current UTC day, then enqueues one ``monitoring.execute_run`` task per pending run. Because
the window end depends only on the day, a retried beat task or a second beat process finds the
same runs (unique per version, check and window) and creates nothing new; a duplicate execute task
finds its run claimed and does nothing. Adding workers adds throughput.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

from django.db import transaction
from django.utils import timezone

from governance import audit
from governance.audit import Actor
from governance.models import SERVING_STAGES, Lifecycle
from governance.notify import notify_role
from governance.roles import Role

from . import runs
from .models import DAILY_CHECKS, WEEKLY_CHECKS, AuditTask, MonitorRun, RunStatus
from .runs import enqueue_runs, run_create

logger = logging.getLogger(__name__)

SYSTEM = Actor.system("monitoring schedule")
AUDIT_DUE_AFTER = timedelta(days=7)
# A pending run older than this lost its task (broker down at enqueue): the next beat re-sends it.
REQUEUE_PENDING_AFTER = timedelta(hours=1)


def day_start(now: datetime | None = None) -> datetime:
    """Midnight UTC of the current day: the end of every scheduled window that day."""
    now = (now or timezone.now()).astimezone(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def live_lifecycles():
    """The serving version of each model (at most one per model)."""
    return (
        Lifecycle.objects.filter(stage__in=SERVING_STAGES)
        .select_related("version__model")
        .order_by("version__model__name")
    )


@dataclass(frozen=True)
class FanOut:
    created: int
    enqueued: list[int]


def schedule_checks(*, checks: Iterable[str], now: datetime | None = None) -> FanOut:
    """Create the runs of ``checks`` for every live version; enqueue the pending ones."""
    checks = tuple(checks)
    window_end = day_start(now)
    created = 0
    for lifecycle in live_lifecycles():
        version = lifecycle.version
        for check in checks:
            try:
                before = MonitorRun.objects.filter(
                    version=version, kind=check, window_end=window_end
                ).exists()
                run_create(
                    model=version.model,
                    version=version,
                    check=check,
                    window_end=window_end,
                    trigger="schedule",
                    actor=SYSTEM,
                )
                created += not before
            except Exception:  # one model's trouble must not stop the others
                logger.exception("could not create the %s run of %s", check, version)
    pending = MonitorRun.objects.filter(status=RunStatus.PENDING, kind__in=checks)
    stale = (now or timezone.now()) - REQUEUE_PENDING_AFTER
    ids = list(
        pending.filter(window_end=window_end).values_list("pk", flat=True).order_by("pk")
    ) + list(
        pending.filter(created_at__lt=stale)
        .exclude(window_end=window_end)
        .values_list("pk", flat=True)
        .order_by("pk")
    )
    # a run whose worker died mid-way stays running; _claim takes it back after STALE_AFTER
    abandoned = MonitorRun.objects.filter(
        status=RunStatus.RUNNING,
        kind__in=checks,
        started_at__lt=(now or timezone.now()) - runs.STALE_AFTER,
    )
    ids += [pk for pk in abandoned.values_list("pk", flat=True).order_by("pk") if pk not in ids]
    enqueue_runs(ids)
    return FanOut(created=created, enqueued=ids)


def schedule_daily(now: datetime | None = None) -> FanOut:
    return schedule_checks(checks=DAILY_CHECKS, now=now)


def schedule_weekly(now: datetime | None = None) -> FanOut:
    return schedule_checks(checks=WEEKLY_CHECKS, now=now)


def audit_tasks_create_monthly(*, now: datetime | None = None) -> list[AuditTask]:
    """One audit task per model with a live version for this month, due in 7 days; the ML Lead
    is told after commit. A second call in the same month creates nothing."""
    now = now or timezone.now()
    period = now.astimezone(UTC).strftime("%Y-%m")
    created: list[AuditTask] = []
    for lifecycle in live_lifecycles():
        version = lifecycle.version
        model = version.model
        with transaction.atomic():
            task, is_new = AuditTask.objects.get_or_create(
                model=model,
                period=period,
                defaults={"version": version, "due_at": now + AUDIT_DUE_AFTER},
            )
            if not is_new:
                continue
            audit.record(
                actor=SYSTEM,
                action="monitoring.audit_task_created",
                obj=task,
                model_name=model.name,
                after={"period": period, "version": version.version, "due_at": task.due_at},
            )
            transaction.on_commit(partial(_notify_lead, task.pk), robust=True)
        created.append(task)
    return created


def _notify_lead(task_id: int) -> None:
    task = AuditTask.objects.select_related("model", "version").get(pk=task_id)
    notify_role(
        role=Role.ML_LEAD,
        model=task.model,
        subject=f"Monthly audit of {task.model.name} for {task.period}",
        body=(
            f"The monthly human audit of {task.model.name} (live version "
            f"{task.version.version if task.version else 'none'}) for {task.period} is due by "
            f"{task.due_at:%Y-%m-%d %H:%M} UTC: review its monitoring runs and alerts and update "
            "the model card. Record completion on the audit task in the admin."
        ),
        dedup_key=f"monitoring.audit_task:{task.pk}",
    )
