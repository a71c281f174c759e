"""The lifecycle state machine: who may take each transition and what must hold first.

The FSM on ``Lifecycle`` enforces the edges; this module checks permissions (before state, so an
unauthorised caller gets 403 before any 409), lists every unmet condition for a 409, applies the
transition under row locks, writes its audit event and mirrors the stage to MLflow after commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from django.db import transaction
from django.utils import timezone
from django_fsm import ConcurrentTransition, can_proceed

from platform_core.errors import Conflict, Forbidden, InvalidInput, NoStandbyVersion, NotFound
from registry.models import ModelVersion, RegisteredModel
from registry.semver import Bump

from . import audit
from .approvals import unmet_approvals
from .audit import Actor
from .models import SERVING_STAGES, Archive, EvidenceKind, Lifecycle, Stage
from .permissions import can
from .policies import policy_values
from .roles import Action
from .selectors import latest_evaluation
from .versioning import version_bump

WARM_STANDBY = 3  # the last versions that served stay deployable (specification 5.3)


@dataclass(frozen=True)
class TransitionRule:
    actions: frozenset[str]  # any of these lets a person request it; empty: automatic only
    needs_comment: bool = False


RULES: dict[str, TransitionRule] = {
    "submit_for_validation": TransitionRule(
        frozenset({Action.REQUEST_TRANSITION, Action.REGISTER})
    ),
    "fail_validation": TransitionRule(frozenset()),
    "approve_for_staging": TransitionRule(
        frozenset({Action.REQUEST_TRANSITION, Action.APPROVE_AS_ML_LEAD})
    ),
    "fail_shadow": TransitionRule(frozenset()),
    "promote": TransitionRule(frozenset({Action.REQUEST_TRANSITION, Action.APPROVE_AS_ML_LEAD})),
    "begin_monitoring": TransitionRule(frozenset()),
    "mark_degraded": TransitionRule(frozenset()),
    "resolve": TransitionRule(frozenset({Action.RESOLVE_DEGRADED}), needs_comment=True),
    "approve_retraining": TransitionRule(frozenset({Action.APPROVE_RETRAINING})),
    "start_rollback": TransitionRule(frozenset({Action.ROLLBACK}), needs_comment=True),
    "restore": TransitionRule(frozenset()),
    "complete_rollback": TransitionRule(frozenset({Action.ROLLBACK}), needs_comment=True),
    "retire": TransitionRule(frozenset({Action.APPROVE_AS_ML_LEAD}), needs_comment=True),
}


def live_lifecycle(model: RegisteredModel, *, exclude: ModelVersion | None = None):
    qs = Lifecycle.objects.select_related("version").filter(
        version__model=model, stage__in=SERVING_STAGES
    )
    if exclude is not None:
        qs = qs.exclude(version=exclude)
    return qs.first()


def declared_bump(version: ModelVersion) -> Bump:
    """MAJOR/MINOR/PATCH of ``version``: ``versioning.version_bump`` decides, for every caller."""
    return version_bump(version)


def check_permission(*, version: ModelVersion, name: str, actor: Actor, scopes=None) -> None:
    rule = RULES.get(name)
    if rule is None:
        raise InvalidInput({"transition": f"unknown transition; use one of {', '.join(RULES)}"})
    if not rule.actions:
        raise Forbidden(f"{name} is taken automatically by the platform, never on request")
    if actor.user is None or not any(
        can(actor.user, action, model=version.model, scopes=scopes) for action in rule.actions
    ):
        raise Forbidden(f"none of your roles may request {name} for {version.model.name}")


def unmet_conditions(lifecycle: Lifecycle, name: str, *, comment: str = "") -> list[str]:
    """Everything that must hold before ``name`` and does not; empty when it may proceed."""
    version = lifecycle.version
    reasons: list[str] = []
    if RULES[name].needs_comment and not comment.strip():
        reasons.append(f"{name} needs a written justification in 'comment'")

    def passed(kind: str, label: str) -> None:
        evaluation = latest_evaluation(version, kind)
        if evaluation is None:
            reasons.append(f"no {label} evidence has been submitted")
        elif not evaluation.passed:
            reasons.append(f"the latest {label} evidence failed (evaluation {evaluation.pk})")

    if name == "submit_for_validation":
        passed(EvidenceKind.UNIT_TESTS, "unit_tests")
    elif name == "approve_for_staging":
        passed(EvidenceKind.VALIDATION, "validation")
    elif name == "promote":
        passed(EvidenceKind.VALIDATION, "validation")
        reasons += _baseline_unmet(lifecycle)
        reasons += _shadow_unmet(lifecycle)
    if name in ("submit_for_validation", "approve_for_staging", "promote"):
        reasons += unmet_approvals(version, name)
    if name == "start_rollback" and _standby_target(lifecycle) is None:
        reasons.append(
            "no warm-standby version to restore: the version this one superseded is not in "
            "warm standby"
        )
    return reasons


def _baseline_unmet(lifecycle: Lifecycle) -> list[str]:
    """A promotion replaces the live version its shadow run was compared with, and no other.

    So of two staged versions racing to promote, only one can win: the loser's baseline is gone.
    """
    live = live_lifecycle(lifecycle.version.model, exclude=lifecycle.version)
    live_id = live.version_id if live else None
    if live_id == lifecycle.shadow_baseline_id:
        return []
    seen = lifecycle.shadow_baseline.version if lifecycle.shadow_baseline else "no live version"
    now = live.version.version if live else "no live version"
    return [
        f"the live version changed since this version entered staging (was {seen}, now {now}); "
        "send it back through validation to shadow the new live version"
    ]


def _shadow_unmet(lifecycle: Lifecycle) -> list[str]:
    """Shadow mode: replay for a first version, none for PATCH, else the policy's shadow_days."""
    version = lifecycle.version
    shadow_days = policy_values("validation", version.model_id)["shadow_days"]
    if live_lifecycle(version.model, exclude=version) is None:
        replay = latest_evaluation(version, EvidenceKind.SHADOW_REPLAY)
        if replay is None or not replay.passed:
            return [
                "a first version needs a passing shadow_replay over at least "
                f"{shadow_days} days (there is no live traffic to shadow)"
            ]
        return []
    if declared_bump(version) == Bump.PATCH:
        return []  # fast-tracked: the validation gates ran again instead
    reasons = []
    shadow_end = lifecycle.stage_entered_at + timedelta(days=shadow_days)
    if timezone.now() < shadow_end:
        reasons.append(f"the {shadow_days}-day shadow period ends {shadow_end:%Y-%m-%d %H:%M} UTC")
    shadow = latest_evaluation(version, EvidenceKind.SHADOW)
    if shadow is None or not shadow.passed:
        reasons.append("needs a passing shadow evaluation from the serving gateway")
    return reasons


def _standby_target(lifecycle: Lifecycle) -> Lifecycle | None:
    if lifecycle.superseded_id is None:
        return None
    target = Lifecycle.objects.select_for_update().get(version_id=lifecycle.superseded_id)
    if target.stage == Stage.RETIRED and target.archive == Archive.WARM:
        return target
    return None


def transition(
    *,
    version: ModelVersion,
    name: str,
    actor: Actor,
    comment: str = "",
    automatic: bool = False,
    scopes=None,
) -> Lifecycle:
    """Apply one transition; ``automatic`` is for the platform's own tasks (no role check)."""
    if name not in RULES:
        raise InvalidInput({"transition": f"unknown transition; use one of {', '.join(RULES)}"})
    if not automatic:
        check_permission(version=version, name=name, actor=actor, scopes=scopes)
    changed: list[int] = []
    try:
        with transaction.atomic():
            # Promotions and rollbacks change two versions of a model: serialise them per model.
            RegisteredModel.objects.select_for_update().get(pk=version.model_id)
            lifecycle = (
                Lifecycle.objects.select_for_update()
                .select_related("version__model")
                .get(version=version)
            )
            before = lifecycle.stage
            method = getattr(lifecycle, name)
            if not can_proceed(method):
                raise Conflict(
                    f"{name} is not possible from stage {before}",
                    reasons=[f"{version} is in {before}; {name} does not start there"],
                )
            reasons = unmet_conditions(lifecycle, name, comment=comment)
            if reasons:
                # a rollback without a standby is a state its callers handle, not a refusal
                no_standby = name == "start_rollback" and _standby_target(lifecycle) is None
                raise (NoStandbyVersion if no_standby else Conflict)(
                    f"{name} refused: {len(reasons)} unmet condition(s)", reasons=reasons
                )
            changed += _apply(lifecycle, name, comment=comment, actor=actor)
            audit.record(
                actor=actor,
                action=f"lifecycle.{name}",
                obj=lifecycle,
                before={"version": version.version, "stage": before},
                after={"version": version.version, "stage": lifecycle.stage},
                reason=comment,
            )
            for version_id in changed:
                transaction.on_commit(partial(_mirror, version_id), robust=True)
    except Lifecycle.DoesNotExist:
        raise NotFound(f"{version} has no lifecycle record") from None
    except ConcurrentTransition as exc:
        raise Conflict(f"{version} changed stage concurrently; read it again") from exc
    return lifecycle


def _apply(lifecycle: Lifecycle, name: str, *, comment: str, actor: Actor) -> list[int]:
    """Move the stage (and, for promote and rollback, the other version). Returns changed ids."""
    version = lifecycle.version
    changed = [version.pk]
    if name == "promote":
        previous = live_lifecycle(version.model, exclude=version)
        if previous is not None:
            previous_stage = previous.stage
            previous.retire(reason=f"replaced by {version.version}", archive=Archive.WARM)
            previous.save()
            lifecycle.superseded = previous.version
            changed.append(previous.version_id)
            audit.record(
                actor=actor,
                action="lifecycle.retire",
                obj=previous,
                before={"version": previous.version.version, "stage": previous_stage},
                after={"version": previous.version.version, "stage": previous.stage},
                reason=f"replaced by {version.version} (warm standby)",
            )
        lifecycle.promote()
        lifecycle.save()
        changed += _trim_warm_standby(version.model, actor=actor)
    elif name == "start_rollback":
        target = _standby_target(lifecycle)
        lifecycle.start_rollback()
        lifecycle.save()
        target.restore()
        target.save()
        changed.append(target.version_id)
        audit.record(
            actor=actor,
            action="lifecycle.restore",
            obj=target,
            before={"version": target.version.version, "stage": Stage.RETIRED},
            after={"version": target.version.version, "stage": target.stage},
            reason=f"rollback of {version.version}: {comment}",
        )
    elif name == "approve_for_staging":
        live = live_lifecycle(version.model, exclude=version)
        lifecycle.shadow_baseline = live.version if live else None
        lifecycle.approve_for_staging()
        lifecycle.save()
    elif name == "complete_rollback":
        lifecycle.complete_rollback(reason=comment)
        lifecycle.save()
    elif name == "retire":
        lifecycle.retire(reason=comment, archive=Archive.WARM)
        lifecycle.save()
    else:
        getattr(lifecycle, name)()
        lifecycle.save()
    return changed


def _trim_warm_standby(model: RegisteredModel, *, actor: Actor) -> list[int]:
    """Keep the last WARM_STANDBY retired-from-serving versions warm; older ones go cold."""
    warm = list(
        Lifecycle.objects.select_for_update()
        .filter(version__model=model, stage=Stage.RETIRED, archive=Archive.WARM)
        .order_by("-stage_entered_at", "-id")
    )
    moved = []
    for old in warm[WARM_STANDBY:]:
        Lifecycle.objects.filter(pk=old.pk).update(archive=Archive.COLD)
        moved.append(old.version_id)
        audit.record(
            actor=actor,
            action="lifecycle.archived_cold",
            obj=old,
            before={"archive": Archive.WARM},
            after={"archive": Archive.COLD},
            reason=f"only the last {WARM_STANDBY} serving versions stay in warm standby",
        )
    return moved


def _mirror(version_id: int) -> None:
    from .services import mlflow_mirror_or_retry

    mlflow_mirror_or_retry(version_id)
