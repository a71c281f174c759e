"""The emergency halt: a kill switch per model or global, released by two people.

``halt_engage`` (roles with HALT: ml_lead, ethics_officer, oncall) takes effect on the next
request of every gateway: the halt row and the routing-generation bump commit together (database
backend) or the bump follows the commit at once (Redis). ``halt_release_approve`` (roles with
RELEASE_HALT: ml_lead, ethics_officer) records one approval; the halt is released when an ML
Lead and an Ethics Officer, two different people, have approved. The person who engaged it may
be one of them. Every step is audited in its own transaction.

A *scoped* halt (``where``: a predicate over request fields, ``serving/predicate.py``) is one
model's halt that refuses only the requests its predicate matches (or cannot be evaluated on).
It is engaged, released and audited exactly like the model's halt; a model may have its whole
halt and several scoped ones at once, each released on its own (``where`` names which).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from governance import audit
from governance.audit import Actor
from governance.models import SERVING_STAGES
from governance.permissions import can, roles_of
from governance.roles import Action, Role
from platform_core.errors import Conflict, Forbidden, InvalidInput, NotFound
from registry.models import ModelVersion, RegisteredModel

from . import generation
from .conf import GLOBAL
from .models import Halt, HaltReleaseApproval
from .predicate import Where, where_normalize, where_validate

RELEASE_ROLES = (Role.ML_LEAD, Role.ETHICS_OFFICER)


def _model_for(scope: str) -> str | None:
    """The grant scope of a halt scope: None (global grants only) for ``global``."""
    return None if scope == GLOBAL else scope


def _check_scope(scope: str) -> None:
    if not scope or not isinstance(scope, str):
        raise InvalidInput({"scope": "required: a model name, or 'global'"})
    if scope != GLOBAL and not RegisteredModel.objects.filter(name=scope).exists():
        raise NotFound(f"no model named '{scope}' (use 'global' to halt every model)")


def active_halt(scope: str, *, lock: bool = False, where: Where | None = None) -> Halt | None:
    """The active halt of ``scope``: its whole halt, or the scoped one with predicate ``where``."""
    qs = Halt.objects.filter(
        scope=scope, where_key=where.key if where else "", released_at__isnull=True
    )
    if lock:
        qs = qs.select_for_update()
    return qs.first()


def serving_features(model_name: str) -> list[str]:
    """The feature list a scoped halt's predicate is checked against: the serving version's,
    else (nothing serves yet) the newest version's."""
    versions = ModelVersion.objects.filter(model__name=model_name)
    for qs in (versions.filter(lifecycle__stage__in=SERVING_STAGES), versions):
        ordered = qs.order_by("-registered_at", "-pk")
        features = ordered.values_list("feature_list", flat=True).first()
        if features is not None:
            return list(features or ())
    raise InvalidInput(
        {"where": f"model '{model_name}' has no version to check the fields against"}
    )


def _where_for(scope: str, where) -> Where | None:
    if where is None:
        return None
    if scope == GLOBAL:
        raise InvalidInput({"where": "a scoped halt is for one model; name the model as scope"})
    return where_validate(where, serving_features(scope))


def halt_engage(
    *,
    scope: str,
    reason: str,
    actor: Actor,
    scopes=None,
    automatic: bool = False,
    where: dict | Where | None = None,
) -> tuple[Halt, bool]:
    """Engage the halt of ``scope``; returns (halt, created). Already engaged: (that one, False).

    ``where`` (a predicate, ``serving/predicate.py``) makes it a scoped halt of that model.
    ``automatic`` is for the platform's own rules (an ethics hard-limit breach): no role check.
    """
    if not automatic and (
        actor.user is None
        or not can(actor.user, Action.HALT, model=_model_for(scope), scopes=scopes)
    ):
        where = "every model (a global grant)" if scope == GLOBAL else f"model '{scope}'"
        raise Forbidden(f"engaging a halt of {where} needs the 'halt' permission")
    if not (reason or "").strip():
        raise InvalidInput({"reason": "required: why inference must stop"})
    _check_scope(scope)
    predicate = _where_for(scope, where)
    with transaction.atomic():
        existing = active_halt(scope, lock=True, where=predicate)
        if existing is not None:
            return existing, False
        try:
            with transaction.atomic():
                halt = Halt.objects.create(
                    scope=scope,
                    where=predicate.to_dict() if predicate else None,
                    where_key=predicate.key if predicate else "",
                    reason=reason.strip(),
                    engaged_by=actor.user,
                    engaged_by_label=actor.label[:200],
                )
        except IntegrityError:  # engaged concurrently
            return active_halt(scope, where=predicate), False
        generation.bump(scope)
        after = {"scope": scope, "reason": halt.reason, "engaged_at": halt.engaged_at}
        if predicate:
            after |= {"where": predicate.to_dict(), "where_text": predicate.text}
        audit.record(
            actor=actor,
            action="halt.engaged",
            obj=halt,
            model_name=_model_for(scope) or "",
            after=after,
            reason=halt.reason,
        )
    return halt, True


@dataclass(frozen=True)
class ReleaseOutcome:
    halt: Halt
    approval: HaltReleaseApproval
    released: bool


def _approving_role(approvals, user, held: list[str], role: str | None) -> str:
    """The role this approval fills: the one asked for, else the first the user holds that is
    still open. One person approves once; each role is filled once."""
    mine = [a for a in approvals if a.user_id == user.pk]
    if mine:
        raise Conflict(
            f"you already approved this release as {mine[0].role}; the other approval must "
            "come from another person"
        )
    filled = {a.role for a in approvals}
    if role is None:
        open_roles = [r for r in held if r not in filled]
        if not open_roles:
            raise Conflict(
                f"the release is already approved as {', '.join(sorted(filled))}; it waits "
                f"for {', '.join(r for r in RELEASE_ROLES if r not in filled)}"
            )
        return open_roles[0]
    if role in filled:
        raise Conflict(f"the release was already approved as {role}")
    return role


def _audit_released(actor: Actor, halt: Halt, scope: str, model: str | None, before, approvals):
    """The ``halt.released`` event of the approval that completed the release."""
    scoped = {"where": halt.where, "where_text": halt.where_text} if halt.where else {}
    audit.record(
        actor=actor,
        action="halt.released",
        obj=halt,
        model_name=model or "",
        before=before,
        after={
            "scope": scope,
            **scoped,
            "active": False,
            "released_at": halt.released_at,
            "approved_by": [{"user": a.user.get_username(), "role": a.role} for a in approvals],
        },
        reason=approvals[-1].comment,
    )


def halt_release_approve(
    *,
    scope: str,
    actor: Actor,
    role: str | None = None,
    comment: str = "",
    scopes=None,
    where: dict | Where | None = None,
) -> ReleaseOutcome:
    """Record one release approval; release the halt once both roles have approved.

    ``where`` names a scoped halt of the model (its predicate as engaged); without it, the
    model's (or the global) whole halt.
    """
    predicate = where_normalize(where) if where is not None else None
    user = actor.user
    model = _model_for(scope)
    if user is None or not can(user, Action.RELEASE_HALT, model=model, scopes=scopes):
        raise Forbidden("approving the release of a halt needs the 'release_halt' permission")
    held = [r for r in RELEASE_ROLES if r in roles_of(user, model=model, scopes=scopes)]
    if role is not None and role not in held:
        raise Forbidden(
            f"you do not hold the role '{role}' here; you may approve as {', '.join(held)}"
        )
    with transaction.atomic():
        halt = active_halt(scope, lock=True, where=predicate)
        if halt is None:
            if predicate is not None:
                raise Conflict(f"no halt of '{scope}' is engaged where {predicate.text}")
            raise Conflict(f"no halt is engaged for '{scope}'")
        approvals = list(halt.release_approvals.select_related("user"))
        role = _approving_role(approvals, user, held, role)
        filled = {a.role for a in approvals}
        approval = HaltReleaseApproval.objects.create(
            halt=halt, user=user, role=role, comment=comment.strip()
        )
        filled.add(role)
        released = filled >= set(RELEASE_ROLES)
        before = {"scope": scope, "active": True}
        scoped = {"where": halt.where, "where_text": halt.where_text} if halt.where else {}
        before |= scoped
        if released:
            halt.released_at = timezone.now()
            halt.save(update_fields=["released_at"])
            generation.bump(scope)
        audit.record(
            actor=actor,
            action="halt.release_approved",
            obj=halt,
            model_name=model or "",
            after={"scope": scope, **scoped, "role": role, "approvals": sorted(filled)},
            reason=approval.comment,
        )
        if released:
            _audit_released(actor, halt, scope, model, before, [*approvals, approval])
    return ReleaseOutcome(halt=halt, approval=approval, released=released)


def waiting_for(halt: Halt) -> list[str]:
    if halt.released_at is not None:
        return []
    filled = set(halt.release_approvals.values_list("role", flat=True))
    return [r for r in RELEASE_ROLES if r not in filled]


def halt_list(*, active_only: bool = True):
    qs = Halt.objects.prefetch_related("release_approvals__user")
    return qs.filter(released_at__isnull=True) if active_only else qs
