"""Versioned policies of every kind: one way to read them and one way to publish a version.

``policy_current`` only reads: a model without a stored version gets an unsaved version 0 holding
the schema's defaults. ``policy_publish`` validates against the kind's schema, writes the next
version under the model's row lock (the unique ``(model, version)`` constraint backs it up) and
audits it in the same transaction. ``policy_in_force`` is for writers that must point a record
(an evaluation, a monitor run) at a stored version: it publishes version 1 with the defaults when
there is none. The kinds are the concrete subclasses of ``VersionedPolicy`` (validation here,
monitoring and ethics in their apps), found through the app registry, so governance imports no
app above it.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.db import IntegrityError, transaction

from platform_core.errors import InvalidInput
from registry.models import RegisteredModel

from . import audit
from .audit import Actor
from .policy_base import VersionedPolicy

DEFAULTS_REASON = "defaults of the specification"


def policy_class(kind: str) -> type[VersionedPolicy]:
    """The model class of a kind of policy ("validation", "monitoring", "ethics")."""
    for candidate in apps.get_models():
        if issubclass(candidate, VersionedPolicy) and candidate.kind == kind:
            return candidate
    raise LookupError(f"no policy kind '{kind}'")


def policy_current(kind: str, model: RegisteredModel | int) -> VersionedPolicy:
    """The newest stored version, or an unsaved version 0 with the defaults; never writes."""
    cls = policy_class(kind)
    model_id = model if isinstance(model, int) else model.pk
    policy = cls.objects.filter(model_id=model_id).order_by("-version").first()
    if policy is None:
        policy = cls(model_id=model_id, version=0, values=cls.schema.defaults())
    return policy


def policy_values(kind: str, model: RegisteredModel | int) -> dict[str, Any]:
    """The values in force for ``model`` (the schema's defaults where nothing is stored)."""
    return policy_current(kind, model).resolved


def policy_validate(kind: str, values: Any, reason: str = "") -> dict[str, Any]:
    """The clean values; InvalidInput names every bad key, bad value and a missing reason."""
    schema = policy_class(kind).schema
    errors: dict[str, Any] = {}
    clean: dict[str, Any] = {}
    try:
        clean = schema.validate(values)
    except InvalidInput as exc:
        errors.update(exc.errors)
    if schema.reason_required and not (reason or "").strip():
        errors["reason"] = f"required: why the {kind} policy changes"
    if errors:
        raise InvalidInput(errors)
    return clean


def _state(policy: VersionedPolicy) -> dict[str, Any] | None:
    if policy.pk is None:
        return None  # nothing was stored: the defaults were in force
    return {"version": policy.version, "values": policy.resolved}


def policy_publish(
    kind: str,
    model: RegisteredModel,
    values: dict[str, Any],
    actor: Actor,
    *,
    reason: str = "",
) -> VersionedPolicy:
    """The next version: the current values with ``values`` over them, audited.

    Raises InvalidInput naming every unknown key and bad value (an API answers 400). Two
    concurrent publishers never write the same version: both take the model's row lock first, and
    a loser of the unique constraint (a database without row locks) retries once.
    """
    cls = policy_class(kind)
    clean = policy_validate(kind, values, reason)
    reason = (reason or "").strip()
    for attempt in (1, 2):
        try:
            with transaction.atomic():
                return _publish(cls, model, clean, actor, reason)
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _publish(
    cls: type[VersionedPolicy],
    model: RegisteredModel,
    clean: dict[str, Any],
    actor: Actor,
    reason: str,
) -> VersionedPolicy:
    RegisteredModel.objects.select_for_update().get(pk=model.pk)
    current = policy_current(cls.kind, model)
    policy = cls.objects.create(
        model=model,
        version=current.version + 1,
        values={**current.resolved, **clean},
        reason=reason,
        created_by=actor.label[:200],
    )
    audit.record(
        actor=actor,
        action=cls.audit_action,
        obj=policy,
        before=_state(current),
        after=_state(policy),
        reason=reason,
    )
    return policy


def policy_in_force(kind: str, model: RegisteredModel, actor: Actor) -> VersionedPolicy:
    """The newest stored version; version 1 with the defaults is published when there is none."""
    policy = policy_current(kind, model)
    if policy.pk is not None:
        return policy
    cls = policy_class(kind)
    for attempt in (1, 2):
        try:
            with transaction.atomic():
                RegisteredModel.objects.select_for_update().get(pk=model.pk)
                policy = policy_current(kind, model)  # again, under the lock
                if policy.pk is None:
                    policy = _publish(cls, model, cls.schema.defaults(), actor, DEFAULTS_REASON)
                return policy
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def policy_create_initial(kind: str, model: RegisteredModel, actor: Actor) -> VersionedPolicy:
    """Version 1 with the defaults, in the transaction registering ``model`` (which audits it)."""
    cls = policy_class(kind)
    return cls.objects.create(
        model=model,
        version=1,
        values=cls.schema.defaults(),
        reason=DEFAULTS_REASON,
        created_by=actor.label[:200],
    )
