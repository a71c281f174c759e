"""My work: one list of what waits for a person, from their roles and per-model grants.

Sign-offs come from ``governance.inbox`` (the rule the admin's approvals inbox uses), stays over
their time limit from the escalations ``governance.sla`` records, incident steps from
``incidents.selectors``, and the monthly audit tasks and the medium alerts queued for the
retraining review from monitoring. Every read costs a fixed number of queries, so the count in
the navigation bar can be computed on every page. ``other_work`` is the
``GOVERNANCE_WORK_HOOK``: the admin's inbox lists it beside the sign-offs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from django.db.models import Count, Min
from django.urls import reverse
from django.utils import timezone

from governance import sla
from governance.inbox import (
    Grants,
    PendingApproval,
    WorkItem,
    approvals_pending,
    escalations_open,
)
from governance.roles import Action, Role, actions_for
from incidents.selectors import steps_waiting, steps_waiting_count
from monitoring.models import AlertStatus, AuditTask, ReviewItem

from .incidents import incident_title

ROLE_NAMES = dict(Role.choices)


def role_words(roles) -> str:
    return " or ".join(ROLE_NAMES.get(r, r) for r in roles)


def _approval_item(pending: PendingApproval, *, with_due: bool) -> WorkItem:
    version = pending.lifecycle.version
    return WorkItem(
        kind="approval",
        title=f"Sign off {pending.transition.replace('_', ' ')} of {version.model.name} "
        f"{version.version}",
        model=version.model.name,
        role=ROLE_NAMES.get(pending.role, pending.role),
        due_at=sla.deadline_for(pending.lifecycle) if with_due else None,
        url=reverse("admin:governance_lifecycle_inbox"),
        detail=f"in {pending.lifecycle.get_stage_display().lower()} since "
        f"{pending.lifecycle.stage_entered_at:%Y-%m-%d %H:%M} UTC; the due time is the "
        "stage's time limit",
    )


def _step_items(user, grants: Grants) -> list[WorkItem]:
    items = []
    for run in steps_waiting(user, grants=grants):
        incident = run.incident
        held = [r for r in run.roles if r in grants.roles_for(incident.model_id)]
        url = reverse("console:incident", args=[incident.pk])
        items.append(
            WorkItem(
                kind="incident_step",
                title=f"Step {run.order}: {run.action}",
                model=incident.model.name,
                role=role_words(held),
                due_at=run.due_at,
                url=f"{url}#step-{run.order}",
                detail=f"{incident_title(incident)} (incident {incident.pk}, {incident.status})",
            )
        )
    return items


def _escalation_items(user, grants: Grants) -> list[WorkItem]:
    items = []
    for escalation in escalations_open(user, grants=grants):
        lifecycle = escalation.lifecycle
        version = lifecycle.version
        limit = sla.STAGE_LIMITS[escalation.stage]
        held = [r for r in limit.approver_roles if r in grants.roles_for(version.model_id)]
        items.append(
            WorkItem(
                kind="escalation",
                title=f"{version.model.name} {version.version} is over its "
                f"{lifecycle.get_stage_display().lower()} time limit",
                model=version.model.name,
                role=role_words(held),
                due_at=escalation.deadline,
                url=reverse("registry:version-detail", args=[version.model.name, version.version]),
                detail="move it on, send it back, or record why it waits",
            )
        )
    return items


def _lead_of(grants: Grants, action: str, field: str):
    return grants.models_where(lambda roles: action in actions_for(roles), field)


def _audit_tasks(grants: Grants):
    """The open monthly audit tasks of the models where the user approves retraining (None:
    no such model)."""
    where = _lead_of(grants, Action.APPROVE_RETRAINING, "model_id")
    if where is None:
        return None
    return AuditTask.objects.filter(where, completed_at__isnull=True)


def _queued_reviews(grants: Grants):
    """Medium alerts queued for the retraining review, one row per model."""
    return (
        ReviewItem.objects.filter(
            _lead_of(grants, Action.APPROVE_RETRAINING, "alert__model_id"),
            reviewed_at__isnull=True,
        )
        .values("alert__model__name")
        .annotate(n=Count("pk"), first=Min("created_at"))
        .order_by("alert__model__name")
    )


def _audit_items(user, grants: Grants) -> list[WorkItem]:
    """The monthly human audit (an ML Lead's) and the medium alerts queued for the retraining
    review (whoever approves retraining), one line per model."""
    items = []
    tasks = _audit_tasks(grants)
    if tasks is None:
        return items
    for task in tasks.select_related("model", "version").order_by("due_at", "pk"):
        items.append(
            WorkItem(
                kind="audit_task",
                title=f"Monthly audit of {task.model.name} for {task.period}",
                model=task.model.name,
                role=ROLE_NAMES[Role.ML_LEAD],
                due_at=task.due_at,
                url=reverse("registry:model-detail", args=[task.model.name]),
                detail="review its monitoring runs and alerts and update the model card",
            )
        )
    queued = _queued_reviews(grants)
    for row in queued:
        name, n = row["alert__model__name"], row["n"]
        query = urlencode({"model": name, "status": AlertStatus.QUEUED})
        items.append(
            WorkItem(
                kind="review",
                title=f"{n} medium alert{'s' if n != 1 else ''} of {name} queued for the "
                "retraining review",
                model=name,
                role=ROLE_NAMES[Role.ML_LEAD],
                due_at=None,
                url=f"{reverse('console:alerts')}?{query}",
                detail=f"the first since {row['first']:%Y-%m-%d %H:%M} UTC",
            )
        )
    return items


def other_work(user, *, grants: Grants | None = None) -> list[WorkItem]:
    """Everything but the sign-offs (``settings.GOVERNANCE_WORK_HOOK``, for the admin inbox)."""
    grants = grants or Grants.of(user)
    return _sorted(
        [
            *_step_items(user, grants),
            *_escalation_items(user, grants),
            *_audit_items(user, grants),
        ]
    )


def _sorted(items: list[WorkItem]) -> list[WorkItem]:
    far = datetime.max.replace(tzinfo=timezone.get_current_timezone())
    return sorted(items, key=lambda item: (item.due_at is None, item.due_at or far, item.title))


@dataclass
class Work:
    items: list[WorkItem]
    roles: list[str]
    may_read_audit: bool = False  # the nav shows Audit only to those (audit_selectors.events)

    @property
    def count(self) -> int:
        return len(self.items)


def _may_read_audit(user, grants: Grants) -> bool:
    every_role = set(grants.global_roles).union(*grants.model_roles.values())
    return user.is_superuser or Action.READ_AUDIT in actions_for(every_role)


def my_work(user, *, with_due: bool = True) -> Work:
    """What waits for the user, soonest due first (no due time last). ``with_due=False`` skips
    the sign-offs' due times (a staging stay's limit reads its shadow period)."""
    grants = Grants.of(user)
    approvals = [
        _approval_item(p, with_due=with_due)
        for p in approvals_pending(user, grants=grants)
        if p.waiting
    ]
    roles = sorted({ROLE_NAMES.get(r, r) for r in grants.global_roles})
    scoped = sorted(
        {ROLE_NAMES.get(r, r) for rs in grants.model_roles.values() for r in rs} - set(roles)
    )
    return Work(
        items=_sorted([*approvals, *other_work(user, grants=grants)]),
        roles=roles + [f"{r} (some models)" for r in scoped],
        may_read_audit=_may_read_audit(user, grants),
    )


@dataclass(frozen=True)
class NavWork:
    count: int
    may_read_audit: bool


def nav_work(user) -> NavWork:
    """The count beside My work on every page: ``len(my_work(user).items)`` from the same reads
    (the same number of queries), without building, wording and sorting the items, which was
    a few milliseconds of every console page (bench/console.py)."""
    grants = Grants.of(user)
    count = sum(1 for p in approvals_pending(user, grants=grants) if p.waiting)
    count += steps_waiting_count(user, grants=grants)
    count += len(escalations_open(user, grants=grants))
    tasks = _audit_tasks(grants)
    if tasks is not None:
        count += tasks.count() + _queued_reviews(grants).count()
    return NavWork(count=count, may_read_audit=_may_read_audit(user, grants))


def work_count(user) -> int:
    return nav_work(user).count
