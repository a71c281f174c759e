"""Celery wrappers: they take ids and call services.

``CELERY_TASK_ROUTES`` sends ``incidents.*`` to the ``urgent`` queue.
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
        enqueue_delivery(countdown=max(wait, 1.0))
    return counts
