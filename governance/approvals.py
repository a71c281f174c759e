"""Approvals: who signed off which transition of which version, on what evidence.

Rules (docs/architecture.md §4): separation of duties - nobody approves or rejects a version they
registered (through any of their tokens: a CI token's owner counts as the registrant), are the
responsible engineer of, or submitted evidence for; one person fills at most one required role per
transition; CI accounts never approve; a rejection blocks until its author approves or new evidence
starts a new round; new evidence voids earlier approvals.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

from platform_core.errors import Conflict, Forbidden, InvalidInput
from registry.models import ModelVersion

from . import audit
from .audit import Actor
from .models import Approval, Decision, Evaluation, Lifecycle, RoleGrant, Stage
from .permissions import can, roles_of
from .roles import Action, Role

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser as User

REQUIRED_APPROVALS: dict[str, tuple[str, ...]] = {
    "submit_for_validation": (Role.ML_ENGINEER,),
    "approve_for_staging": (Role.ML_LEAD,),
    "promote": (Role.ML_LEAD, Role.ETHICS_OFFICER, Role.PRODUCT_MANAGER),
}
APPROVAL_STAGE = {
    "submit_for_validation": Stage.DEVELOPMENT,
    "approve_for_staging": Stage.VALIDATION,
    "promote": Stage.STAGING,
}
APPROVE_ACTION = {
    Role.ML_ENGINEER: Action.APPROVE_CODE_REVIEW,
    Role.ML_LEAD: Action.APPROVE_AS_ML_LEAD,
    Role.ETHICS_OFFICER: Action.APPROVE_AS_ETHICS_OFFICER,
    Role.PRODUCT_MANAGER: Action.APPROVE_AS_PRODUCT_MANAGER,
}


def evidence_digest(version: ModelVersion) -> str:
    """Digest of every piece of evidence on record: it changes whenever new evidence arrives."""
    rows = Evaluation.objects.filter(version=version).order_by("id")
    text = "|".join(f"{e.id}:{e.kind}:{e.evidence_digest}" for e in rows)
    return hashlib.sha256(f"{version.artifact_digest}|{text}".encode()).hexdigest()


def conflicts_of_interest(version: ModelVersion, user) -> list[str]:
    """Why ``user`` may not sign off ``version``; empty when they may.

    The registrant is whoever owned the token that registered it: the person behind a CI
    pipeline's token cannot be known, so the token's owner answers for it.
    """
    if user is None or user.pk is None:
        return []
    reasons = []
    if version.registered_by_id == user.pk:
        reasons.append("you registered it")
    if version.responsible_engineer_id == user.pk:
        reasons.append("you are its responsible engineer")
    if Evaluation.objects.filter(version=version, submitted_by=user).exists():
        reasons.append("you submitted evidence for it")
    return reasons


def versions_conflicted(user, versions) -> set[int]:
    """The ids among ``versions`` that ``user`` may not sign off (``conflicts_of_interest`` for
    many versions in one query, for the inboxes)."""
    versions = list(versions)
    if user is None or user.pk is None or not versions:
        return set()
    barred = set(
        Evaluation.objects.filter(
            version_id__in=[v.pk for v in versions], submitted_by=user
        ).values_list("version_id", flat=True)
    )
    barred.update(
        v.pk for v in versions if user.pk in (v.registered_by_id, v.responsible_engineer_id)
    )
    return barred


def _conflicted_users(version: ModelVersion) -> set[int]:
    """Everyone whose sign-off on ``version`` never counts, even one recorded before the rule."""
    users = set(
        Evaluation.objects.filter(version=version, submitted_by__isnull=False).values_list(
            "submitted_by", flat=True
        )
    )
    users.add(version.responsible_engineer_id)
    if version.registered_by_id is not None:
        users.add(version.registered_by_id)
    return users


def active_approvals(version: ModelVersion, transition: str) -> list[Approval]:
    """Each person's latest standing decision per role, bound to today's artifact and evidence."""
    digest = evidence_digest(version)
    latest: dict[tuple[int, str], Approval] = {}
    for approval in Approval.objects.filter(
        version=version, transition=transition, voided_at__isnull=True
    ).select_related("user"):
        if approval.artifact_digest == version.artifact_digest and (
            approval.evidence_digest == digest
        ):
            latest[(approval.user_id, approval.role)] = approval
    return list(latest.values())


def unmet_approvals(version: ModelVersion, transition: str) -> list[str]:
    """Reasons the transition's sign-offs are not complete; empty when they are."""
    required = REQUIRED_APPROVALS.get(transition, ())
    conflicted = _conflicted_users(version)
    everyone = active_approvals(version, transition)
    standing = [a for a in everyone if a.user_id not in conflicted]
    reasons = [
        f"rejected by {a.user.get_username()} as {a.role}" + (f": {a.comment}" if a.comment else "")
        for a in standing
        if a.decision == Decision.REJECT
    ]
    used_users: set[int] = set()
    for role in required:
        approvers = [
            a
            for a in standing
            if a.role == role and a.decision == Decision.APPROVE and a.user_id not in used_users
        ]
        if approvers:
            used_users.add(approvers[0].user_id)
        else:
            void = sorted(
                a.user.get_username()
                for a in everyone
                if a.role == role and a.decision == Decision.APPROVE and a.user_id in conflicted
            )
            reasons.append(
                f"needs an approval from a {role}"
                + (f" ({', '.join(void)}: not counted, separation of duties)" if void else "")
            )
    return reasons


def approval_record(
    *,
    version: ModelVersion,
    transition: str,
    role: str,
    decision: str,
    comment: str = "",
    actor: Actor,
    scopes=None,
) -> Approval:
    """Record one decision. Authorization is checked before state (403 before 409)."""
    _check_decision(transition, role, decision)
    user = _approver(version, role, actor, scopes)
    with transaction.atomic():
        _check_state(version, transition, role, user)
        approval = Approval.objects.create(
            version=version,
            transition=transition,
            role=role,
            user=user,
            decision=decision,
            comment=comment,
            artifact_digest=version.artifact_digest,
            evidence_digest=evidence_digest(version),
        )
        audit.record(
            actor=actor,
            action="approval.approved" if decision == Decision.APPROVE else "approval.rejected",
            obj=approval,
            after={
                "version": version.version,
                "transition": transition,
                "role": role,
                "decision": decision,
                "artifact_digest": approval.artifact_digest,
                "evidence_digest": approval.evidence_digest,
            },
            reason=comment,
        )
    return approval


def _check_decision(transition: str, role: str, decision: str) -> None:
    """400 naming each field that is not a decision this transition takes."""
    errors = {}
    if transition not in REQUIRED_APPROVALS:
        errors["transition"] = f"takes no approvals; use one of {', '.join(REQUIRED_APPROVALS)}"
    elif role not in REQUIRED_APPROVALS[transition]:
        errors["role"] = (
            f"{transition} needs approvals from {', '.join(REQUIRED_APPROVALS[transition])}"
        )
    if decision not in Decision.values:
        errors["decision"] = "must be approve or reject"
    if errors:
        raise InvalidInput(errors)


def _approver(version: ModelVersion, role: str, actor: Actor, scopes) -> User:
    """The person signing, when they may sign in ``role`` for this version; 403 otherwise."""
    user = actor.user
    if user is None:
        raise Forbidden("approvals are made by people, never by a system task")
    # A sign-off is given in a role one holds: an ML lead's roles include an engineer's actions,
    # but their code-review sign-off is not a peer ML engineer's (docs/architecture.md §4).
    if role not in roles_of(user, model=version.model, scopes=scopes) or not can(
        user, APPROVE_ACTION[role], model=version.model, scopes=scopes
    ):
        raise Forbidden(f"you do not hold the {role} role for {version.model.name}")
    if RoleGrant.objects.filter(user=user, role=Role.CI).exists():
        raise Forbidden("CI accounts never approve")
    conflicts = conflicts_of_interest(version, user)
    if conflicts:
        raise Forbidden(
            "separation of duties: nobody approves or rejects a version they registered, are "
            f"the responsible engineer of, or submitted evidence for ({'; '.join(conflicts)})"
        )
    return user


def _check_state(version: ModelVersion, transition: str, role: str, user: User) -> None:
    """409 unless the version waits for this transition's sign-offs and ``user`` has not signed
    it in another role. Locks the lifecycle row: call inside the recording transaction."""
    lifecycle = Lifecycle.objects.select_for_update().get(version=version)
    if lifecycle.stage != APPROVAL_STAGE[transition]:
        raise Conflict(
            f"{transition} is approved while the version is in "
            f"{APPROVAL_STAGE[transition]}; it is in {lifecycle.stage}"
        )
    other_role = next(
        (
            a.role
            for a in active_approvals(version, transition)
            if a.user_id == user.pk and a.role != role
        ),
        None,
    )
    if other_role:
        raise Conflict(
            f"you already signed {transition} as {other_role}; one person fills one role"
        )


def approvals_void(*, version: ModelVersion, reason: str, actor: Actor | None = None) -> int:
    """New evidence starts a new approval round. Runs inside the caller's transaction."""
    voided = Approval.objects.filter(version=version, voided_at__isnull=True).update(
        voided_at=timezone.now(), voided_reason=reason[:300]
    )
    if voided:
        audit.record(
            actor=actor or Actor.system("approvals"),
            action="approvals.voided",
            obj=version,
            after={"voided": voided},
            reason=reason,
        )
    return voided
