"""An ML Lead's rollback of the live version: the incident opens through ``incidents.services``
like every other incident, then the rollback takes the automatic one's path
(``incidents.rollback.rollback_create``, which audits ``incidents.rollback_requested``)."""

from __future__ import annotations

from django.db import transaction

from governance import lifecycle as lifecycle_rules
from governance.audit import Actor
from governance.permissions import can
from governance.roles import Action
from platform_core.errors import Conflict, Forbidden, InvalidInput
from registry import services as registry_services
from registry.models import RegisteredModel

from .models import Incident, IncidentKind, Rollback
from .rollback import rollback_create
from .services import incident_open


def rollback_manual(
    *, model_name: str, reason: str, actor: Actor, scopes=None
) -> tuple[Incident, Rollback]:
    """Roll back ``model_name``'s live version (ML Lead, with a reason) under the model lock."""
    if actor.user is None or not can(actor.user, Action.ROLLBACK, model=model_name, scopes=scopes):
        raise Forbidden(f"rolling back {model_name} needs the 'rollback' permission")
    if not (reason or "").strip():
        raise InvalidInput({"reason": ["required: why the live version is rolled back"]})
    reason = reason.strip()
    model = registry_services.model_get(model_name)
    with transaction.atomic():
        RegisteredModel.objects.select_for_update().get(pk=model.pk)
        live = lifecycle_rules.live_lifecycle(model)
        if live is None:
            raise Conflict(f"no version of {model_name} is serving; there is nothing to roll back")
        if Rollback.objects.filter(from_version=live.version).exists():
            raise Conflict(f"{live.version} is already being rolled back (or was)")
        title = f"manual rollback of {model_name} {live.version.version}"
        incident = incident_open(
            model=model,
            kind=IncidentKind.MANUAL_ROLLBACK,
            severity="high",
            title=title,
            version=live.version,
            actor=actor,
            message=f"{title}: {reason}",
        )
        rollback = rollback_create(
            incident=incident, version=live.version, reason=reason, actor=actor, automatic=False
        )
    return incident, rollback
