"""Reactions to governance changes (connected in ``ServingConfig.ready``); thin, they call services.

- Every lifecycle transition bumps the model's routing generation (in the transaction, or after
  commit with Redis; see ``generation``), so each gateway reloads its route on its next request.
- A promotion or restore enqueues, after commit, the gateway's verification of the new version
  (which then takes ``begin_monitoring``) and the warm-standby refresh.
- An artifact policy change bumps the model's generation: routes carry the policy to the loader,
  which then refuses an executable artifact the policy no longer allows (even one in memory).
- A grant change, a token deletion or a user change bumps the ``__grants__`` generation, which
  voids the cached token checks and PREDICT decisions.
"""

from __future__ import annotations

import logging
from functools import partial

from django.db import transaction

from platform_core.tasking import enqueue

from . import generation
from .conf import GRANTS

logger = logging.getLogger(__name__)

NEW_LIVE = frozenset({"promote", "restore"})


def lifecycle_changed(sender, instance, name, source, target, **kwargs) -> None:
    if kwargs.get("exception") is not None:
        return
    version = instance.version
    generation.bump(version.model.name)
    if name in NEW_LIVE:
        transaction.on_commit(partial(enqueue_verification, version.pk), robust=True)
        transaction.on_commit(partial(enqueue_warm_standby, version.model_id), robust=True)


def artifact_policy_changed(sender, instance, **kwargs) -> None:
    generation.bump(instance.model.name)


def grants_changed(sender, **kwargs) -> None:
    generation.bump(GRANTS)


def enqueue_verification(version_id: int) -> None:
    """On ``urgent`` (settings route it): never behind monitoring (docs/architecture.md §5)."""
    enqueue("serving.verify_promotion", version_id)


def enqueue_warm_standby(model_id: int) -> None:
    enqueue("serving.warm_standby", model_id)


def enqueue_shadow_evaluation(version_id: int) -> None:
    """Enqueue with its premise as it holds now (the stay in staging, the live version), which
    the task re-checks under the model lock before it records anything."""
    from .shadow_evaluation import shadow_premise_now

    enqueue("serving.record_shadow_evaluation", version_id, **shadow_premise_now(version_id))
