"""Celery wrappers: they take ids and call services.

``CELERY_TASK_ROUTES`` sends ``incidents.*`` to the ``urgent`` queue. A rollback of a version
that no longer serves, a step of an incident no longer open and a reminder of a step completed
meanwhile end ``skipped`` (``governance.premises``), never paged or retried.
"""

from __future__ import annotations

from celery import shared_task


@shared_task(name="incidents.run_rollback", bind=True, acks_late=True)
def run_rollback(self, rollback_id: int) -> str:
    """Resume the rollback from its stored status; safe to redeliver."""
    from .rollback import rollback_run

    return rollback_run(rollback_id, task_id=getattr(self.request, "id", "") or "")


@shared_task(name="incidents.deliver_notifications", acks_late=True)
def deliver_notifications() -> dict:
    """Deliver the due outbox rows; re-schedules itself while rows wait for a retry."""
    from .notifications import deliver_due, enqueue_delivery, next_due_in

    counts = deliver_due()
    wait = next_due_in()
    if wait is not None:
        # short hops, under the broker's visibility timeout; the beat entry is the safety net
        enqueue_delivery(countdown=min(max(wait, 1.0), 60.0))
    return counts


@shared_task(name="incidents.run_playbook", acks_late=True)
def run_playbook(incident_id: int) -> list[dict]:
    """Run the incident's due automated steps in order; safe to redeliver."""
    from .playbook_engine import playbook_advance

    return playbook_advance(incident_id)


@shared_task(name="incidents.escalate_overdue_steps")
def escalate_overdue_steps() -> int:
    """Tell the escalation role about every overdue human step (once per step)."""
    from .playbook_engine import steps_escalate_overdue

    return steps_escalate_overdue()


@shared_task(name="incidents.check_ethics_limits")
def check_ethics_limits() -> list[dict]:
    """Halt every model whose serving version breaches its ethics policy's hard limits."""
    from .ethics import ethics_check_all

    return ethics_check_all()
