"""Validation policies: versioned gate thresholds, edited only through audited services."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from registry.errors import InvalidInput
from registry.models import RegisteredModel

from . import audit
from .audit import Actor
from .models import ValidationPolicy


def validation_policy_current(model: RegisteredModel) -> ValidationPolicy:
    """The newest policy version; models registered before policies existed get the defaults."""
    policy = model.validation_policies.order_by("-version").first()
    if policy is None:
        policy = ValidationPolicy.objects.create(
            model=model, version=1, thresholds=dict(ValidationPolicy.DEFAULTS), created_by="system"
        )
    return policy


def validation_policy_create_default(*, model: RegisteredModel, actor: Actor) -> ValidationPolicy:
    """Called in the model's registering transaction (which also writes the audit event)."""
    return ValidationPolicy.objects.create(
        model=model,
        version=1,
        thresholds=dict(ValidationPolicy.DEFAULTS),
        created_by=actor.label,
        comment="defaults of the specification",
    )


def validation_policy_update(
    *, model: RegisteredModel, changes: dict[str, Any], comment: str, actor: Actor
) -> ValidationPolicy:
    """A new policy version with ``changes`` applied; earlier gate results keep their version."""
    unknown = sorted(set(changes) - set(ValidationPolicy.DEFAULTS))
    if unknown:
        raise InvalidInput({k: "not a validation policy threshold" for k in unknown})
    bad = {
        k: "must be a non-negative number"
        for k, v in changes.items()
        if not isinstance(v, int | float) or isinstance(v, bool) or v < 0
    }
    if bad:
        raise InvalidInput(bad)
    with transaction.atomic():
        RegisteredModel.objects.select_for_update().get(pk=model.pk)
        current = validation_policy_current(model)
        policy = ValidationPolicy.objects.create(
            model=model,
            version=current.version + 1,
            thresholds={**current.thresholds, **changes},
            created_by=actor.label,
            comment=comment,
        )
        audit.record(
            actor=actor,
            action="validation_policy.updated",
            obj=policy,
            model_name=model.name,
            before={"version": current.version, "thresholds": current.thresholds},
            after={"version": policy.version, "thresholds": policy.thresholds},
            reason=comment,
        )
    return policy
