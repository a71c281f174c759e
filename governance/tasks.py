"""Celery wrappers: they take ids and call services."""

from __future__ import annotations

from celery import shared_task

from platform_core.tasking import RETRY_TRANSIENT


@shared_task(name="governance.mirror_stage_to_mlflow", **RETRY_TRANSIENT)
def mirror_stage_to_mlflow(version_id: int) -> None:
    from .services import mlflow_mirror

    mlflow_mirror(version_id=version_id)


@shared_task(name="governance.escalate_overdue_stages")
def escalate_overdue_stages() -> int:
    """Escalate versions over their stage time limit (beat runs this every 15 minutes)."""
    from .sla import escalate_overdue

    return len(escalate_overdue())


@shared_task(name="governance.sweep_orphan_evidence")
def sweep_orphan_evidence() -> int:
    """Remove evidence files whose evaluation never committed (written first, row second)."""
    from .evidence import sweep_orphans

    return len(sweep_orphans())


@shared_task(name="governance.audit_checkpoint")
def audit_checkpoint() -> int:
    """Sign the audit chain head into the checkpoint store (beat, every 10 minutes).

    A head that does not extend the last checkpoint is not signed: the error is logged and the
    task fails, so the gap shows in the worker's log and the next ``verify_audit`` names it.
    """
    from .audit import checkpoint

    return checkpoint().checkpoint.seq


@shared_task(name="governance.verify_audit")
def verify_audit() -> bool:
    """Verify the whole chain daily (beat) and record when and how that went, as
    ``manage.py verify_audit`` does: the console's audit page shows the last result."""
    from .audit import verify_and_checkpoint

    return verify_and_checkpoint().result.valid
