"""Celery wrappers of the monitoring services: they take ids and call services.

Every ``monitoring.*`` task goes to the ``monitoring`` queue (CELERY_TASK_ROUTES), so rollback and
halt never wait behind a monitoring job.
"""

from __future__ import annotations

import logging

from celery import shared_task

from platform_core.tasking import RETRY_TRANSIENT

logger = logging.getLogger(__name__)

# --- monitor runs, schedule and alert hand-off ----------------------------------------------


@shared_task(name="monitoring.execute_run")
def execute_run(run_id: int) -> str:
    """Execute one monitor run (a run already claimed or finished is left alone; a scheduled
    run of a version that no longer serves ends ``skipped``, with no alert)."""
    from .runs import run_execute

    return run_execute(run_id).status


@shared_task(name="monitoring.execute_runs")
def execute_runs(run_ids: list[int]) -> list[str]:
    """Execute the runs of one version and window together (the schedule's task per version:
    one load of the window, one commit); each run as ``execute_run`` would."""
    from .runs import runs_execute

    return [run.status for run in runs_execute(run_ids)]


@shared_task(name="monitoring.run_daily_checks")
def run_daily_checks() -> int:
    """Beat, daily at 02:00 UTC: data drift, prediction drift and fairness of every live version."""
    from .schedule import fan_out_chunk, schedule_daily

    return len(schedule_daily(chunk=fan_out_chunk()).enqueued)


@shared_task(name="monitoring.run_weekly_checks")
def run_weekly_checks() -> int:
    """Beat, Mondays at 03:00 UTC: concept drift, calibration and label drift."""
    from .schedule import fan_out_chunk, schedule_weekly

    return len(schedule_weekly(chunk=fan_out_chunk()).enqueued)


@shared_task(name="monitoring.schedule_chunk")
def schedule_chunk(checks: list[str], window_end: str, version_ids: list[int]) -> int:
    """One chunk of the daily or weekly fan-out: create these versions' runs, enqueue them."""
    from datetime import datetime

    from .schedule import schedule_chunk as create

    return create(
        checks=checks, window_end=datetime.fromisoformat(window_end), version_ids=version_ids
    )


@shared_task(name="monitoring.create_monthly_audits")
def create_monthly_audits() -> int:
    """Beat, the 1st at 04:00 UTC: the monthly human audit task per live model, for the ML Lead."""
    from .schedule import audit_tasks_create_monthly

    return len(audit_tasks_create_monthly())


@shared_task(name="monitoring.reconcile_estimates")
def reconcile_estimates() -> int:
    """Beat, daily: one reconciliation task per estimated concept-drift run awaiting labels."""
    from .reconciliation import reconcile_estimates as fan_out

    return len(fan_out())


@shared_task(name="monitoring.reconcile_estimate")
def reconcile_estimate(run_id: int) -> str:
    """Reconcile one estimated run with the labels that arrived (a reconciled run is left alone)."""
    from .reconciliation import reconcile_run

    return reconcile_run(run_id)


@shared_task(name="monitoring.route_alert", **RETRY_TRANSIENT)
def route_alert(alert_id: int) -> None:
    """Retry an alert's hand-off to the routing hook (hooks are idempotent)."""
    from .routing import route

    route(alert_id)


# --- production data retention ----------------------------------------------------------------


@shared_task(name="monitoring.purge_expired_predictions")
def purge_expired_predictions() -> int:
    """Beat, daily: delete prediction and label batches older than each model's retention_days."""
    from .ingest import purge_expired

    return purge_expired()


@shared_task(name="monitoring.sweep_orphan_data")
def sweep_orphan_data() -> int:
    """Hourly: remove Parquet files whose manifest row never committed."""
    from .store import sweep_orphans

    return len(sweep_orphans())


@shared_task(name="monitoring.compact_partitions")
def compact_partitions() -> int:
    """Beat, daily at 01:00 UTC (before the checks): merge each closed (version, day)
    partition's files into one; partitions beyond the first chunk go to ``compact_chunk``
    tasks (``MONITORING_COMPACT_CHUNK`` each), so every worker shares the work."""
    from platform_core.tasking import enqueue

    from .store import compact

    if not compact.enabled():
        return 0
    due = compact.due_partitions()
    chunks = compact.chunks(due, compact.chunk_size())
    for rest in chunks[1:]:
        enqueue("monitoring.compact_chunk", compact.as_args(rest))
    logger.info(
        "compaction: %d partitions due, %d chunk tasks sent", len(due), max(len(chunks) - 1, 0)
    )
    return _compact_logged(chunks[0] if chunks else [])


@shared_task(name="monitoring.compact_chunk")
def compact_chunk(partitions: list[list]) -> int:
    """One chunk of the compaction fan-out: [[version id, "YYYY-MM-DD"], ...]."""
    from .store import compact

    if not compact.enabled():
        return 0
    return _compact_logged(compact.from_args(partitions))


def _compact_logged(partitions) -> int:
    from .store import compact

    named = compact.names(partitions)

    def progress(outcome, i: int, n: int) -> None:
        logger.info(
            "compaction %d/%d: %s on %s %s (%d prediction, %d label files)%s",
            i,
            n,
            named.get(outcome.partition.version_id, outcome.partition.version_id),
            outcome.partition.day,
            outcome.status,
            outcome.prediction_files,
            outcome.label_files,
            f": {outcome.reason}" if outcome.reason else "",
        )

    return compact.compact(partitions, progress=progress).compacted
