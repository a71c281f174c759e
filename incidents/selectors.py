"""Reads of incidents shared by the admin, the console and the inboxes: who may complete which
playbook step (the rule ``playbooks.step_complete`` enforces), and the steps waiting for a user."""

from __future__ import annotations

from governance.inbox import Grants
from governance.permissions import can, roles_of
from governance.roles import Action

from .models import Incident, StepRun, StepStatus
from .steps.human import NOT_APPLICABLE

# Decisions that act at once need the permission of the act itself (the service checks again).
ACTING_PERMISSION = {"rollback": Action.ROLLBACK, "halt": Action.HALT}


def completable_by(
    user, incident: Incident, run: StepRun, *, roles: set[str] | None = None
) -> bool:
    """A waiting step assigned to roles, one of which ``user`` holds for the incident's model
    (``roles``: the user's roles there, when the caller has them already)."""
    if run.status != StepStatus.WAITING or not run.roles:
        return False
    held = roles if roles is not None else roles_of(user, model=incident.model)
    return bool(set(held) & set(run.roles))


def decision_options(user, incident: Incident, run: StepRun) -> list[str]:
    """The step's decisions (``not_applicable`` for a conditional step), without the acting
    ones the user's roles do not allow (the service refuses those anyway)."""
    offered = [*run.decisions, *([NOT_APPLICABLE] if run.condition else [])]
    return [
        d
        for d in offered
        if d not in ACTING_PERMISSION or can(user, ACTING_PERMISSION[d], model=incident.model)
    ]


def justification_needed_for(run: StepRun) -> list[str]:
    """The decisions that need a justification: on a step offering a rollback, any decision
    that does not act (``playbooks._validate``: "No -> document justification")."""
    if "rollback" not in run.decisions:
        return []
    return [d for d in run.decisions if d not in ACTING_PERMISSION]


# What a waiting step is listed with (console.work: its title, role, due time and incident):
# not the version's facts, the step's outcome or the incident's details, JSON that every page's
# count would decode for nothing (bench/console.py).
WAITING_STEP_FIELDS = (
    "incident_id",
    "order",
    "action",
    "roles",
    "status",
    "due_at",
    "incident__kind",
    "incident__severity",
    "incident__status",
    "incident__model__name",
    "incident__version__version",
)


def _waiting(grants: Grants):
    """The waiting steps of the models where the user holds any role (None: no such model)."""
    where = grants.models_where(bool, "incident__model_id")
    if where is None:
        return None
    return StepRun.objects.filter(where, status=StepStatus.WAITING)


def steps_waiting(user, *, grants: Grants | None = None) -> list[StepRun]:
    """Waiting human steps (of any incident, the post-incident review included) assigned to a
    role the user holds for the incident's model, soonest due first. One query; each step has
    the fields of ``WAITING_STEP_FIELDS`` (another field is a query of its own)."""
    grants = grants or Grants.of(user)
    candidates = _waiting(grants)
    if candidates is None:
        return []
    candidates = candidates.select_related("incident__model", "incident__version").only(
        *WAITING_STEP_FIELDS
    )
    mine = [run for run in candidates if set(run.roles) & grants.roles_for(run.incident.model_id)]
    return sorted(mine, key=lambda r: (r.due_at is None, r.due_at or 0, r.incident_id, r.order))


def steps_waiting_count(user, *, grants: Grants | None = None) -> int:
    """``len(steps_waiting(user))`` from the steps' roles and models alone (one query): the
    count beside My work on every page."""
    grants = grants or Grants.of(user)
    candidates = _waiting(grants)
    if candidates is None:
        return 0
    return sum(
        1
        for roles, model_id in candidates.values_list("roles", "incident__model_id")
        if set(roles) & grants.roles_for(model_id)
    )
