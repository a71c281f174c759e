"""Changing a model's artifact policy: ML lead of that model only, audited in the same commit."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from platform_core.errors import Forbidden, InvalidInput
from registry import services as registry_services
from registry.artifact_policy import EffectivePolicy, policy_for, validate_policy
from registry.models import ArtifactPolicy

from . import audit
from .audit import Actor
from .permissions import roles_of
from .roles import Role


def artifact_policy_update(
    *,
    model_name: str,
    allowed_flavors: Any,
    allow_executable: Any,
    mlflow_name: Any,
    reason: str,
    actor: Actor,
    scopes=None,
) -> EffectivePolicy:
    """Replace the policy. Versions already registered keep their artifacts; it binds new ones."""
    if actor.user is None or Role.ML_LEAD not in roles_of(
        actor.user, model=model_name, scopes=scopes
    ):
        raise Forbidden(f"changing the artifact policy of {model_name} needs an ML lead of it")
    model = registry_services.model_get(model_name)
    with transaction.atomic():
        model = registry_services.model_get(model_name, lock=True)
        errors: dict[str, str | list[str]] = {}
        clean: dict[str, Any] = {}
        try:
            clean = validate_policy(
                model=model,
                allowed_flavors=allowed_flavors,
                allow_executable=allow_executable,
                mlflow_name=mlflow_name,
            )
        except InvalidInput as exc:
            errors.update(exc.errors)
        if not (reason or "").strip():
            errors["reason"] = "required: why the artifact policy changes"
        if errors:
            raise InvalidInput(errors)
        before = _state(policy_for(model))
        stored, _ = ArtifactPolicy.objects.update_or_create(
            model=model,
            defaults={
                **clean,
                "reason": reason.strip(),
                "updated_by": actor.label[:200],
                "updated_at": timezone.now(),
            },
        )
        after = policy_for(model)
        audit.record(
            actor=actor,
            action="registry.artifact_policy_updated",
            obj=stored,
            before=before,
            after=_state(after),
            reason=stored.reason,
        )
    return after


def _state(policy: EffectivePolicy) -> dict[str, Any]:
    return {
        "allowed_flavors": policy.allowed_flavors,
        "allow_executable": policy.allow_executable,
        "mlflow_name": policy.mlflow_name,
    }
