"""Enqueueing Celery tasks by name, after commit (docs/architecture.md, section 5).

Services never import their app's ``tasks`` module (which imports the services): they name the
task. The queue is never chosen here: ``CELERY_TASK_ROUTES`` in settings routes every task.
A task is sent only once the transaction that asked for it commits (a rolled-back transaction
sends nothing) and every task re-reads its rows, so a duplicate or redelivered message finds its
work done: sending twice is harmless, forgetting is not.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from celery import current_app
from django.db import transaction

logger = logging.getLogger(__name__)

# The retry policy of a task whose work is idempotent and whose failure is transient (MLflow, the
# monitoring store or a routing hook briefly away): ``@shared_task(name=..., **RETRY_TRANSIENT)``.
# The backoff stays under the broker's visibility timeout (120 s) so a waiting retry is not
# redelivered to a second worker; the 20 tries wait at most about half an hour in all.
RETRY_TRANSIENT: dict[str, Any] = {
    "autoretry_for": (Exception,),
    "retry_backoff": 5,
    "retry_backoff_max": 100,
    "max_retries": 20,
}


def send(name: str, args: tuple = (), kwargs: dict[str, Any] | None = None, **options) -> str:
    """Send task ``name`` now (eager in tests that ask for it); returns the task id.

    ``signature(name)`` uses the registered task when this process knows it (so eager mode and
    the task's own options apply) and ``send_task`` otherwise; both route through settings.
    """
    options = {k: v for k, v in options.items() if v is not None}
    result = current_app.signature(name, args=args, kwargs=kwargs or {}).apply_async(**options)
    return getattr(result, "id", "") or ""


def enqueue(name: str, /, *args: Any, countdown: float | None = None, **kwargs: Any) -> str:
    """Send task ``name`` with ``args``/``kwargs`` now: for callers already past the commit."""
    return send(name, args, kwargs, countdown=countdown)


def enqueue_on_commit(
    name: str, /, *args: Any, countdown: float | None = None, **kwargs: Any
) -> None:
    """Send task ``name`` once the current transaction commits (at once outside one).

    ``robust``: a broker that is down is logged, not raised into the request that committed;
    the committed rows record the work, which a redelivery or a beat entry can pick up.
    """
    transaction.on_commit(partial(send, name, args, kwargs, countdown=countdown), robust=True)
