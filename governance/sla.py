"""Stage time limits (docs/architecture.md §4): find versions over their limit and escalate once.

Limits: development 14 days, validation 3 days, staging 7 days counted from the end of the shadow
period (the policy's ``shadow_days``; a PATCH is fast-tracked with no shadow period), degraded 48
hours. Other stages have no limit. An escalation is recorded once per stay in a stage (the
``Escalation`` row is unique per lifecycle, stage and entry time), audited in the same transaction
and, after commit, the stage's approver roles are notified through ``governance.notify``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from registry.models import ModelVersion
from registry.semver import Bump

from . import audit, notify
from .audit import Actor
from .models import Escalation, Lifecycle, Stage
from .policies import policy_values
from .roles import Role
from .versioning import version_bump

logger = logging.getLogger(__name__)

ACTOR = Actor.system("stage time limits")


@dataclass(frozen=True)
class StageLimit:
    """How long a version may stay in a stage, and who is told when it stays longer."""

    duration: timedelta
    approver_roles: tuple[str, ...]
    after_shadow: bool = False  # counted from the end of the shadow period (staging)


STAGE_LIMITS: dict[str, StageLimit] = {
    Stage.DEVELOPMENT: StageLimit(timedelta(days=14), (Role.ML_ENGINEER,)),  # peer review
    Stage.VALIDATION: StageLimit(timedelta(days=3), (Role.ML_LEAD,)),
    Stage.STAGING: StageLimit(
        timedelta(days=7), (Role.ML_LEAD, Role.ETHICS_OFFICER), after_shadow=True
    ),
    Stage.DEGRADED: StageLimit(timedelta(hours=48), (Role.ML_LEAD,)),
}


def is_fast_tracked(version: ModelVersion) -> bool:
    """A PATCH (``versioning.version_bump``, the rule registration and promotion use): no shadow."""
    return version_bump(version) == Bump.PATCH


def shadow_period(version: ModelVersion) -> timedelta:
    """The shadow period a version must sit out in staging before its limit starts to run."""
    if is_fast_tracked(version):
        return timedelta(0)
    return timedelta(days=policy_values("validation", version.model_id)["shadow_days"])


def deadline_for(lifecycle: Lifecycle) -> datetime | None:
    """When the current stay in its stage runs over its limit; None for stages without one."""
    limit = STAGE_LIMITS.get(lifecycle.stage)
    if limit is None:
        return None
    deadline = lifecycle.stage_entered_at + limit.duration
    if limit.after_shadow:
        deadline += shadow_period(lifecycle.version)
    return deadline


def _past_shortest_limit(now: datetime) -> Q:
    """Stays past their stage's shortest possible limit (staging without a shadow period)."""
    over = Q()
    for stage, limit in STAGE_LIMITS.items():
        over |= Q(stage=stage, stage_entered_at__lt=now - limit.duration)
    return over


def over_limit(now: datetime, *, model_ids: list[int] | None = None) -> list[Lifecycle]:
    """Every stay over its stage's limit now, escalated or not (what the console shows)."""
    stays = Lifecycle.objects.filter(_past_shortest_limit(now)).select_related("version__model")
    if model_ids is not None:
        stays = stays.filter(version__model_id__in=model_ids)
    return [stay for stay in stays if (deadline := deadline_for(stay)) and now > deadline]


def _candidates(now: datetime):
    """Lifecycles that may be over their limit and have no escalation for this stay yet.

    The SQL filter uses each stage's shortest possible limit (staging without a shadow period);
    ``deadline_for`` then decides.
    """
    escalated = Escalation.objects.filter(
        lifecycle=OuterRef("pk"),
        stage=OuterRef("stage"),
        stage_entered_at=OuterRef("stage_entered_at"),
    )
    return (
        Lifecycle.objects.filter(_past_shortest_limit(now))
        .exclude(Exists(escalated))
        .select_related("version__model")
        .order_by("stage_entered_at", "pk")
    )


def escalate_overdue(*, now: datetime | None = None) -> list[Escalation]:
    """Escalate every version over its stage's limit; return the escalations created by this run.

    One transaction per escalation, so a long run never holds the audit chain head. A second run,
    or a concurrent worker, creates nothing new for the same stay. If one escalation fails, the
    rest are still attempted and the first error is raised at the end.
    """
    now = now or timezone.now()
    created: list[Escalation] = []
    errors: list[Exception] = []
    for lifecycle in list(_candidates(now)):  # read first: each escalation commits alone
        deadline = deadline_for(lifecycle)
        if deadline is None or now <= deadline:
            continue
        try:
            escalation = escalate(lifecycle, deadline=deadline)
        except Exception as exc:
            logger.exception("escalating %s failed", lifecycle)
            errors.append(exc)
            continue
        if escalation is not None:
            created.append(escalation)
    if errors:
        raise errors[0]
    return created


def escalate(lifecycle: Lifecycle, *, deadline: datetime) -> Escalation | None:
    """Record (and audit) one escalation of the lifecycle's current stay; None if already done.

    None too when the version left the stage since it was read. Notification runs after commit.
    """
    stage, entered = lifecycle.stage, lifecycle.stage_entered_at
    roles = [str(role) for role in STAGE_LIMITS[stage].approver_roles]
    with transaction.atomic():
        # Lock the row so a transition cannot slip in between this check and the commit.
        still_there = (
            Lifecycle.objects.select_for_update()
            .filter(pk=lifecycle.pk, stage=stage, stage_entered_at=entered)
            .values_list("pk", flat=True)
            .first()
        )
        if still_there is None:
            return None
        try:
            with transaction.atomic():  # savepoint: a duplicate leaves the outer block usable
                escalation = Escalation.objects.create(
                    lifecycle=lifecycle, stage=stage, stage_entered_at=entered, deadline=deadline
                )
        except IntegrityError:
            return None  # another run escalated this stay first
        audit.record(
            actor=ACTOR,
            action="lifecycle.escalated",
            obj=lifecycle,
            after={
                "stage": stage,
                "entered": entered.isoformat(),
                "deadline": deadline.isoformat(),
                "notify_roles": roles,
            },
        )
        transaction.on_commit(partial(_notify, escalation.pk), robust=True)
    return escalation


def _notify(escalation_id: int) -> None:
    """Tell the stage's approver roles; remember who was told on the escalation."""
    escalation = Escalation.objects.select_related("lifecycle__version__model").get(
        pk=escalation_id
    )
    version = escalation.lifecycle.version
    subject = f"{version} is over its {escalation.stage} time limit"
    body = (
        f"{version} entered {escalation.stage} at {escalation.stage_entered_at:%Y-%m-%d %H:%M} "
        f"UTC; its limit ran out at {escalation.deadline:%Y-%m-%d %H:%M} UTC.\n\n"
        f"Please review it: move it on, send it back, or record why it waits.\n"
    )
    told = []
    for role in STAGE_LIMITS[escalation.stage].approver_roles:
        addresses = notify.notify_role(
            role=role,
            model=version.model,
            subject=subject,
            body=body,
            dedup_key=f"escalation:{escalation.pk}:{role}",
        )
        told.append({"role": str(role), "addresses": addresses})
    Escalation.objects.filter(pk=escalation.pk).update(notified=told)
