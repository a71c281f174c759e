"""Editing playbooks: the admin (and anyone else) changes steps only through these services,
which check the editor, validate the step as a whole and audit before/after. Incidents already
running keep their snapshot (``StepRun``), so an edit never changes work in progress.
"""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from governance import audit
from governance.audit import Actor
from governance.models import RoleGrant
from governance.roles import Role
from platform_core.errors import Forbidden, InvalidInput

from .models import Playbook, PlaybookStep
from .steps.automated import ACTIONS

EDITABLE_STEP_FIELDS = (
    "order",
    "action",
    "responsible",
    "roles",
    "escalate_to",
    "automated",
    "task",
    "deadline",
    "condition",
    "decisions",
    "is_review",
)
PLAYBOOK_EDITORS = frozenset({Role.ML_LEAD, Role.ETHICS_OFFICER})


def may_edit_playbooks(user) -> bool:
    """Superusers and holders of a global ML Lead or Ethics Officer grant."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    if user.is_superuser:
        return True
    return RoleGrant.objects.filter(
        user=user, model__isnull=True, role__in=PLAYBOOK_EDITORS
    ).exists()


def _check_editor(actor: Actor) -> None:
    if actor.user is not None and not may_edit_playbooks(actor.user):
        raise Forbidden("editing playbooks needs a global ml_lead or ethics_officer grant")


def playbook_step_clean(playbook: Playbook, values: dict, *, step: PlaybookStep | None) -> dict:
    unknown = sorted(set(values) - set(EDITABLE_STEP_FIELDS))
    if unknown:
        raise InvalidInput({name: "not an editable field of a playbook step" for name in unknown})
    merged = {
        name: getattr(step, name)
        if step is not None
        else PlaybookStep._meta.get_field(name).get_default()
        for name in EDITABLE_STEP_FIELDS
    }
    merged.update(values)
    errors: dict[str, str] = {}
    valid_roles = set(Role.values)
    for name in ("roles", "decisions"):
        value = merged[name]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            errors[name] = "a list of names"
    if "roles" not in errors and (bad := sorted(set(merged["roles"]) - valid_roles)):
        errors["roles"] = f"unknown roles {', '.join(bad)}; roles are {', '.join(Role.values)}"
    if merged["escalate_to"] not in valid_roles:
        errors["escalate_to"] = f"one of {', '.join(Role.values)}"
    if not str(merged["action"] or "").strip():
        errors["action"] = "required"
    if merged["automated"] and merged["task"] not in ACTIONS:
        errors["task"] = f"an automated step needs a task: one of {', '.join(sorted(ACTIONS))}"
    if not merged["automated"] and merged["task"]:
        errors["task"] = "only automated steps have a task"
    if not merged["automated"] and not merged.get("roles"):
        errors.setdefault("roles", "a human step needs at least one role")
    if merged["deadline"] is not None and merged["deadline"] < timedelta(0):
        errors["deadline"] = "must not be negative"
    order = merged["order"]
    if not isinstance(order, int) or order < 1:
        errors["order"] = "a positive number"
    elif playbook.steps.filter(order=order).exclude(pk=getattr(step, "pk", None)).exists():
        errors["order"] = f"playbook {playbook.number} already has a step {order}"
    if errors:
        raise InvalidInput(errors)
    return merged


def _snapshot(step: PlaybookStep) -> dict:
    return {name: getattr(step, name) for name in EDITABLE_STEP_FIELDS}


def playbook_step_update(*, step: PlaybookStep, changes: dict, actor: Actor) -> PlaybookStep:
    """Edit a step; incidents already running keep their snapshot (``StepRun``)."""
    _check_editor(actor)
    with transaction.atomic():
        step = PlaybookStep.objects.select_for_update().select_related("playbook").get(pk=step.pk)
        merged = playbook_step_clean(step.playbook, changes, step=step)
        before = _snapshot(step)
        if merged == before:
            return step  # nothing changed: nothing to save or audit
        for name, value in merged.items():
            setattr(step, name, value)
        step.save()
        _touch(step.playbook)
        after = _snapshot(step)
        audit.record(
            actor=actor,
            action="incidents.playbook_edited",
            obj=step,
            before={k: v for k, v in before.items() if after[k] != v} | {"order": before["order"]},
            after={k: v for k, v in after.items() if before[k] != v} | {"order": step.order},
            reason=f"playbook {step.playbook.number} step {step.order} edited",
        )
    return step


def playbook_step_create(*, playbook: Playbook, values: dict, actor: Actor) -> PlaybookStep:
    _check_editor(actor)
    with transaction.atomic():
        playbook = Playbook.objects.select_for_update().get(pk=playbook.pk)
        merged = playbook_step_clean(playbook, values, step=None)
        step = PlaybookStep.objects.create(playbook=playbook, **merged)
        _touch(playbook)
        audit.record(
            actor=actor,
            action="incidents.playbook_edited",
            obj=step,
            before=None,
            after=_snapshot(step),
            reason=f"playbook {playbook.number} step {step.order} added",
        )
    return step


def playbook_step_delete(*, step: PlaybookStep, actor: Actor) -> None:
    """Remove a step; running incidents keep their copy of it."""
    _check_editor(actor)
    with transaction.atomic():
        step = PlaybookStep.objects.select_for_update().select_related("playbook").get(pk=step.pk)
        before = _snapshot(step)
        playbook = step.playbook
        audit.record(
            actor=actor,
            action="incidents.playbook_edited",
            obj=step,
            before=before,
            after=None,
            reason=f"playbook {playbook.number} step {step.order} removed",
        )
        step.delete()
        _touch(playbook)


def playbook_update(*, playbook: Playbook, changes: dict, actor: Actor) -> Playbook:
    """Edit a playbook's name or description."""
    _check_editor(actor)
    unknown = sorted(set(changes) - {"name", "description"})
    if unknown:
        raise InvalidInput({name: "not an editable field of a playbook" for name in unknown})
    if "name" in changes and not str(changes["name"]).strip():
        raise InvalidInput({"name": "required"})
    with transaction.atomic():
        playbook = Playbook.objects.select_for_update().get(pk=playbook.pk)
        before = {k: getattr(playbook, k) for k in changes}
        for name, value in changes.items():
            setattr(playbook, name, value)
        playbook.updated_at = timezone.now()
        playbook.save()
        audit.record(
            actor=actor,
            action="incidents.playbook_edited",
            obj=playbook,
            before=before,
            after={k: getattr(playbook, k) for k in changes},
            reason=f"playbook {playbook.number} edited",
        )
    return playbook


def _touch(playbook: Playbook) -> None:
    Playbook.objects.filter(pk=playbook.pk).update(updated_at=timezone.now())
