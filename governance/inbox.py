"""What waits for a person: the sign-offs they may give now, stays over their time limit that
their role must act on, and (through ``settings.GOVERNANCE_WORK_HOOK``) the work the higher apps
hand to people, e.g. incident steps (docs/architecture.md §2: governance never imports them).

Every read here costs a fixed number of queries whatever the number of models, versions or
grants: the console counts a user's work on every page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import F, Q
from django.utils.module_loading import import_string

from .approvals import APPROVAL_STAGE, APPROVE_ACTION, REQUIRED_APPROVALS, versions_conflicted
from .models import Approval, Escalation, Lifecycle, RoleGrant
from .roles import Role, actions_for
from .sla import STAGE_LIMITS


@dataclass(frozen=True)
class Grants:
    """A user's role grants, read once (one query) and asked many times."""

    global_roles: frozenset[str]
    model_roles: dict[int, frozenset[str]]

    @classmethod
    def of(cls, user) -> Grants:
        if user is None or not user.is_authenticated or not user.is_active:
            return cls(frozenset(), {})
        glob: set[str] = set()
        per_model: dict[int, set[str]] = {}
        for role, model_id in RoleGrant.objects.filter(user=user).values_list("role", "model_id"):
            if model_id is None:
                glob.add(role)
            else:
                per_model.setdefault(model_id, set()).add(role)
        return cls(frozenset(glob), {m: frozenset(r) for m, r in per_model.items()})

    @property
    def is_ci(self) -> bool:
        """A CI account (any CI grant): it never signs anything off."""
        return Role.CI in self.global_roles or any(
            Role.CI in roles for roles in self.model_roles.values()
        )

    def roles_for(self, model_id: int) -> frozenset[str]:
        """As ``permissions.roles_of``: global grants always count."""
        return self.global_roles | self.model_roles.get(model_id, frozenset())

    def allows(self, action: str, model_id: int) -> bool:
        return action in actions_for(self.roles_for(model_id))

    def models_where(
        self, allowed: Callable[[frozenset[str]], bool], field: str = "model_id"
    ) -> Q | None:
        """A filter on ``field`` (a model id) for the models whose roles pass ``allowed``: an
        empty Q (all models) when the global roles pass, None when no model does."""
        if allowed(self.global_roles):
            return Q()
        ids = [m for m in self.model_roles if allowed(self.roles_for(m))]
        return Q(**{f"{field}__in": ids}) if ids else None


@dataclass
class PendingApproval:
    """One sign-off the user may give: ``mine`` is their standing decision ('' if none);
    ``waiting`` is false once they decided, or signed the transition in another role."""

    lifecycle: Lifecycle
    transition: str
    role: str
    mine: str = ""
    waiting: bool = True


def approvals_pending(
    user, *, grants: Grants | None = None, lifecycles: Iterable[Lifecycle] | None = None
) -> list[PendingApproval]:
    """(version, transition, role) sign-offs the user holds the role for, in the stages where
    they are given, oldest stay first; none for a version where they have a conflict of interest
    (``approvals.conflicts_of_interest``: no button to press) and none for a CI account.

    Four queries at most, for any number of versions (the admin inbox and the console share it).
    """
    if user is None or user.pk is None:
        return []
    grants = grants or Grants.of(user)
    if grants.is_ci:
        return []
    wanted = Q(pk__in=[])
    for transition, stage in APPROVAL_STAGE.items():
        for role in REQUIRED_APPROVALS[transition]:
            action = APPROVE_ACTION[role]
            where = grants.models_where(
                lambda roles, a=action: a in actions_for(roles), "version__model_id"
            )
            if where is not None:
                wanted |= Q(stage=stage) & where
    if lifecycles is None:
        found = list(
            Lifecycle.objects.filter(wanted)
            .select_related("version__model")
            .order_by("stage_entered_at", "pk")
        )
    else:
        found = [lc for lc in lifecycles if lc.stage in APPROVAL_STAGE.values()]
    if not found:
        return []
    version_ids = [lc.version_id for lc in found]
    barred = versions_conflicted(user, [lc.version for lc in found])
    mine: dict[tuple[int, str, str], str] = {}
    signed: dict[tuple[int, str], set[str]] = {}
    for version_id, transition, role, decision in Approval.objects.filter(
        version_id__in=version_ids, user=user, voided_at__isnull=True
    ).values_list("version_id", "transition", "role", "decision"):  # oldest first: last wins
        mine[(version_id, transition, role)] = decision
        signed.setdefault((version_id, transition), set()).add(role)
    out = []
    for lifecycle in found:
        version = lifecycle.version
        if version.pk in barred:
            continue
        for transition, stage in APPROVAL_STAGE.items():
            if lifecycle.stage != stage:
                continue
            held = grants.roles_for(version.model_id)
            for role in REQUIRED_APPROVALS[transition]:
                # only a role the user holds: an ML lead holds the engineer's actions, not the
                # engineer's signature (approvals.approval_record refuses it the same way)
                if role not in held or not grants.allows(APPROVE_ACTION[role], version.model_id):
                    continue
                decided = mine.get((version.pk, transition, role), "")
                other_roles = signed.get((version.pk, transition), set()) - {role}
                out.append(
                    PendingApproval(
                        lifecycle, transition, role, decided, not decided and not other_roles
                    )
                )
    return out


def escalations_open(user, *, grants: Grants | None = None) -> list[Escalation]:
    """Stays escalated over their stage's time limit (``sla``) that the user's role is told
    about, while the version is still in that stay. One query."""
    grants = grants or Grants.of(user)
    wanted = Q(pk__in=[])
    for stage, limit in STAGE_LIMITS.items():
        where = grants.models_where(
            lambda roles, lim=limit: bool(roles & set(lim.approver_roles)),
            "lifecycle__version__model_id",
        )
        if where is not None:
            wanted |= Q(stage=stage) & where
    return list(
        Escalation.objects.filter(wanted)
        .filter(lifecycle__stage=F("stage"), lifecycle__stage_entered_at=F("stage_entered_at"))
        .select_related("lifecycle__version__model")
        .order_by("deadline", "pk")
    )


@dataclass(frozen=True)
class WorkItem:
    """One thing waiting for the user, as the higher apps describe it (in words, with a link)."""

    kind: str
    title: str
    model: str
    role: str
    due_at: datetime | None
    url: str
    detail: str = ""


def other_work(user, *, grants: Grants | None = None) -> list[WorkItem]:
    """What the app named by ``settings.GOVERNANCE_WORK_HOOK`` says waits for the user beyond
    sign-offs (incident steps, ...); nothing when no hook is set."""
    path = getattr(settings, "GOVERNANCE_WORK_HOOK", "")
    if not path or user is None or not user.is_authenticated:
        return []
    return list(import_string(path)(user, grants=grants or Grants.of(user)))
