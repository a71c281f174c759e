"""Premises of delayed tasks: re-check, under the lock transitions take, what a task assumes.

A task enqueued after a commit runs later, when the state it was enqueued for may have moved on:
the version it should verify was rolled back, the step it should run was completed by a person,
the model it should monitor no longer serves. Each such task states its premise in one sentence
(``Premise.statement``), re-checks it inside ``Premise.locked()`` - a transaction holding the
``RegisteredModel`` row lock that ``governance.lifecycle.transition``, the rollback and the alert
router take first - and acts in that same transaction, so no transition can slip in between the
check and the act. A premise that no longer holds ends the task with ``Premise.skip``:

- one structured log line, ``task skipped: premise no longer holds`` (logger
  ``governance.premises``, level INFO, with ``task``, ``premise``, ``reason`` as ``extra``);
- where the task would have changed state, one ``task.skipped`` audit event by
  ``system:<task>`` naming the premise and the reason, in the transaction that decided it;
- the task's result ``{"status": "skipped", "task", "premise", "reason", ...}``: it returns
  normally, so Celery neither retries it nor reports a failure, and nothing is paged or alerted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.db import models, transaction

from registry.models import RegisteredModel

from . import audit
from .audit import Actor

logger = logging.getLogger(__name__)

SKIPPED = "skipped"
AUDIT_ACTION = "task.skipped"


class PremiseFailed(Exception):
    """Raised by an action deep inside a task when its premise turns out not to hold."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Premise:
    """What a delayed task assumes about the world when it acts; ``model_id`` names the lock."""

    task: str
    statement: str
    model_id: int | None = None
    model_name: str = ""

    @property
    def actor(self) -> Actor:
        return Actor.system(self.task)

    @contextmanager
    def locked(self) -> Iterator[RegisteredModel | None]:
        """A transaction holding the model's row lock (None if the model is gone)."""
        with transaction.atomic():
            model = None
            if self.model_id is not None:
                model = RegisteredModel.objects.select_for_update().filter(pk=self.model_id).first()
            yield model

    def skip(
        self,
        reason: str,
        *,
        obj: models.Model | None = None,
        audited: bool = True,
        **data: Any,
    ) -> dict[str, Any]:
        """End the task as skipped: the log line, the audit event (``audited``), the result."""
        result = {
            "status": SKIPPED,
            "task": self.task,
            "premise": self.statement,
            "reason": reason,
            **data,
        }
        logger.info(
            "task skipped: premise no longer holds: task=%s premise=%r reason=%r",
            self.task,
            self.statement,
            reason,
            extra={"task": self.task, "premise": self.statement, "reason": reason, "skipped": True},
        )
        if audited:
            with transaction.atomic():
                audit.record(
                    actor=self.actor,
                    action=AUDIT_ACTION,
                    obj=obj,
                    object_type="" if obj is not None else "task",
                    object_id="" if obj is not None else self.task,
                    model_name=self.model_name,
                    after={"task": self.task, "premise": self.statement, **_plain(data)},
                    reason=reason,
                )
        return result


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if isinstance(v, str | int | float | bool | None)}


def skipped(result: object) -> bool:
    """Whether a task's result is a premise skip (for callers and tests)."""
    return isinstance(result, dict) and result.get("status") == SKIPPED
