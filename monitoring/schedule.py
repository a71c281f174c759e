"""What the beat schedule runs: the daily and weekly fan-out and the monthly human audit.

The fan-out creates one run per (model, live version, check) for the window ending at the start of
the current UTC day, then enqueues one ``monitoring.execute_runs`` task per version with its
pending runs: the checks of a version share one load of the window and one commit
(``runs.runs_execute``). Because the window end depends only on the day, a retried beat task or
a second beat process finds the same runs (unique per version, check and window) and creates
nothing new; a duplicate execute task finds its runs claimed and does nothing. Adding workers adds
throughput.

A large fleet is fanned out in chunks of ``MONITORING_FAN_OUT_CHUNK`` live versions: the beat
task enqueues one ``monitoring.schedule_chunk`` task per chunk but the first, which it creates
itself, and each chunk creates its runs in one transaction and enqueues them at once. So every
worker creates runs, and runs start while others are still being created (with one worker
creating all 1500 runs of 500 models, one commit each, the other waited 9 s for the first).
Pending runs no chunk covers (a version that stopped serving today, a task lost an earlier day)
and runs abandoned by a dead worker are sent again one task per run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from governance import audit
from governance.audit import Actor
from governance.models import SERVING_STAGES, Lifecycle
from governance.notify import notify_role
from governance.roles import Role
from platform_core.tasking import enqueue

from . import checks_feedback, runs
from .models import (
    DAILY_CHECKS,
    FEEDBACK_CHECKS,
    WEEKLY_CHECKS,
    AuditTask,
    MonitorRun,
    RunStatus,
)
from .runs import enqueue_run_groups, enqueue_runs

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


FAN_OUT_CHUNK = 50  # live versions per fan-out task (setting MONITORING_FAN_OUT_CHUNK)


def fan_out_chunk() -> int:
    return max(1, int(getattr(settings, "MONITORING_FAN_OUT_CHUNK", FAN_OUT_CHUNK)))


def schedule_checks(
    *,
    checks: Iterable[str],
    now: datetime | None = None,
    chunk: int | None = None,
    wanted: Callable[[Lifecycle], bool] | None = None,
) -> FanOut:
    """Create the runs of ``checks`` for every live version (those ``wanted`` accepts, when
    given); enqueue the pending ones.

    ``chunk``: live versions beyond the first ``chunk`` are left to ``monitoring.schedule_chunk``
    tasks (``chunk`` versions each); what is returned is this call's own share.
    """
    checks = tuple(checks)
    window_end = day_start(now)
    lifecycles = list(live_lifecycles())
    if wanted is not None:
        lifecycles = [lifecycle for lifecycle in lifecycles if wanted(lifecycle)]
    size = chunk or len(lifecycles) or 1
    mine, rest = lifecycles[:size], lifecycles[size:]
    for start in range(0, len(rest), size):  # sent first: the other workers start on them
        enqueue(
            "monitoring.schedule_chunk",
            list(checks),
            window_end.isoformat(),
            [lifecycle.version_id for lifecycle in rest[start : start + size]],
        )
    created, ids = _create_runs(checks, window_end, mine)
    pending = MonitorRun.objects.filter(status=RunStatus.PENDING, kind__in=checks)
    stale = (now or timezone.now()) - REQUEUE_PENDING_AFTER
    # today's pending runs of versions no chunk covers (no longer live), and older lost ones
    lost = list(
        pending.filter(window_end=window_end)
        .exclude(version_id__in=[lifecycle.version_id for lifecycle in lifecycles])
        .values_list("pk", flat=True)
        .order_by("pk")
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
    sent = set(ids)
    extra = lost + [pk for pk in abandoned.values_list("pk", flat=True).order_by("pk")]
    extra = [pk for pk in dict.fromkeys(extra) if pk not in sent]
    enqueue_runs(extra)
    return FanOut(created=created, enqueued=ids + extra)


def schedule_chunk(*, checks: Iterable[str], window_end: datetime, version_ids: list[int]) -> int:
    """One chunk of a fan-out: the runs of these versions (those still live); enqueued at once."""
    lifecycles = list(live_lifecycles().filter(version_id__in=version_ids))
    _, ids = _create_runs(tuple(checks), window_end, lifecycles)
    return len(ids)


def _create_runs(
    checks: tuple[str, ...], window_end: datetime, lifecycles: list[Lifecycle]
) -> tuple[int, list[int]]:
    """Create the runs of these live versions (one transaction); enqueue their pending ones,
    one task per version (its checks share one load of the window); (created, ids)."""
    versions = [lifecycle.version for lifecycle in lifecycles]
    before = MonitorRun.objects.filter(
        version__in=versions, kind__in=checks, window_end=window_end
    ).count()
    pending = runs.runs_create_scheduled(versions, checks, window_end, actor=SYSTEM)
    created = (
        MonitorRun.objects.filter(
            version__in=versions, kind__in=checks, window_end=window_end
        ).count()
        - before
    )
    enqueue_run_groups(pending.values())
    return created, sorted(pk for ids in pending.values() for pk in ids)


def schedule_daily(now: datetime | None = None, *, chunk: int | None = None) -> FanOut:
    return schedule_checks(checks=DAILY_CHECKS, now=now, chunk=chunk)


def schedule_weekly(now: datetime | None = None, *, chunk: int | None = None) -> FanOut:
    weekly = schedule_checks(checks=WEEKLY_CHECKS, now=now, chunk=chunk)
    loops = schedule_checks(
        checks=FEEDBACK_CHECKS,
        now=now,
        chunk=chunk,
        wanted=lambda lifecycle: checks_feedback.names_a_cell_field(lifecycle.version.model),
    )
    return FanOut(weekly.created + loops.created, weekly.enqueued + loops.enqueued)


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
