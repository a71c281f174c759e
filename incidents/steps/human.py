"""Human steps: a person in one of the step's roles completes a waiting step with a note and,
where the step offers them, a decision (acted on in the same transaction) and its justification.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from governance import audit
from governance.audit import Actor
from governance.lifecycle import live_lifecycle
from governance.permissions import can, roles_of
from governance.roles import Action, Role
from platform_core.errors import Conflict, Forbidden, InvalidInput, NotFound
from serving.halt import halt_engage

from ..models import (
    OPEN_STEP_STATUSES,
    EventKind,
    Incident,
    IncidentStatus,
    Rollback,
    StepRun,
    StepStatus,
)
from ..paging import page_role
from ..playbook_engine import lock_incident
from ..resolution import IN_FLIGHT_ROLLBACK, incident_resolve_if_finished, incident_set_reviewed
from ..rollback import rollback_create, successor_serves
from ..timeline import add_event

NOT_APPLICABLE = "not_applicable"
# Decisions that act instead of rolling back need no justification; any other decision on a step
# offering "rollback" is a decision not to roll back (spec 5.2: "No -> document justification").
ACTING_DECISIONS = frozenset({"rollback", "halt"})


def _allowed_decisions(run: StepRun) -> list[str]:
    return [*run.decisions, *([NOT_APPLICABLE] if run.condition else [])]


def _validate(run: StepRun, *, note: str, decision: str, justification: str) -> None:
    errors: dict[str, str] = {}
    if not note.strip():
        errors["note"] = "required: what was done or found"
    allowed = _allowed_decisions(run)
    if decision and decision not in allowed:
        errors["decision"] = (
            f"'{decision}' is not offered here; one of: {', '.join(allowed)}"
            if allowed
            else f"step {run.order} takes no decision"
        )
    elif run.decisions and not decision:
        errors["decision"] = f"required: one of {', '.join(allowed)}"
    if (
        "rollback" in run.decisions
        and decision
        and decision not in ACTING_DECISIONS
        and not justification.strip()
    ):
        errors["justification"] = "required: why the live version is not rolled back"
    if errors:
        raise InvalidInput(errors)


def step_complete(
    *,
    incident_id: int,
    order: int,
    note: str,
    decision: str = "",
    justification: str = "",
    actor: Actor,
    scopes=None,
) -> StepRun:
    """Complete a waiting step: checked, then decided and recorded in one transaction under the
    model, incident and step locks (the order the engine and the rollback take)."""
    note = (note or "").strip()
    decision = (decision or "").strip()
    justification = (justification or "").strip()
    incident, run = _step_for(incident_id, order)
    _authorize(incident, run, decision=decision, actor=actor, scopes=scopes)
    _validate(run, note=note, decision=decision, justification=justification)
    with transaction.atomic():
        incident = lock_incident(incident_id)
        run = StepRun.objects.select_for_update().get(pk=run.pk)
        _check_completable(incident, run)
        before = _step_state(run)
        effect = _decide(incident, run, decision=decision, note=note, actor=actor, scopes=scopes)
        _record_completion(
            incident, run, before=before, effect=effect, decision=decision, note=note,
            justification=justification, actor=actor,
        )  # fmt: skip
        if run.is_review:
            incident_set_reviewed(incident, note=note, actor=actor)
        else:
            incident_resolve_if_finished(incident, actor=actor)
    return run


def _step_for(incident_id: int, order: int) -> tuple[Incident, StepRun]:
    incident = Incident.objects.select_related("model").filter(pk=incident_id).first()
    if incident is None:
        raise NotFound(f"no incident {incident_id}")
    run = incident.steps.filter(order=order).first()
    if run is None:
        raise NotFound(f"incident {incident_id} has no step {order}")
    if not run.roles:
        raise Conflict(
            f"step {order} ({run.action}) is automated ({run.task or 'no task'}): the platform "
            "performs it, nobody completes it"
        )
    return incident, run


def _authorize(incident: Incident, run: StepRun, *, decision: str, actor: Actor, scopes) -> None:
    """The actor holds one of the step's roles, and may roll back if that is the decision."""
    held = roles_of(actor.user, model=incident.model, scopes=scopes) & set(run.roles)
    if not held:
        raise Forbidden(
            f"step {run.order} ({run.action}) is completed by {' or '.join(run.roles)}; you hold "
            f"none of these roles for model '{incident.model.name}'"
        )
    if decision == "rollback" and not can(
        actor.user, Action.ROLLBACK, model=incident.model, scopes=scopes
    ):
        raise Forbidden(
            f"deciding to roll back {incident.model.name} needs the 'rollback' permission"
        )


def _check_completable(incident: Incident, run: StepRun) -> None:
    """Only a waiting step; the review only after every other step and the rollback."""
    if run.status != StepStatus.WAITING:
        raise Conflict(
            f"step {run.order} is {run.status}; only a waiting step can be completed",
            reasons=[f"step {run.order} is {run.status}"],
        )
    if not run.is_review:
        return
    still_open = list(
        incident.steps.exclude(pk=run.pk)
        .filter(status__in=OPEN_STEP_STATUSES)
        .order_by("order")
        .values_list("order", "action", "status")
    )
    if still_open:
        raise Conflict(
            "the post-incident review comes last: "
            + ", ".join(f"step {o}" for o, _, _ in still_open)
            + " still open",
            reasons=[f"step {o} ({a}) is {s}" for o, a, s in still_open],
        )
    if incident.rollbacks.filter(status__in=IN_FLIGHT_ROLLBACK).exists():
        raise Conflict("the post-incident review waits until the rollback has finished")


def _record_completion(
    incident: Incident,
    run: StepRun,
    *,
    before: dict,
    effect: dict,
    decision: str,
    note: str,
    justification: str,
    actor: Actor,
) -> None:
    run.status = StepStatus.SKIPPED if decision == NOT_APPLICABLE else StepStatus.DONE
    run.completed_at = timezone.now()
    run.completed_by = actor.label[:200]
    run.note, run.decision, run.justification = note, decision, justification
    if effect:
        run.outcome = {**run.outcome, **effect}
    run.save()
    add_event(
        incident,
        kind=EventKind.DECISION if decision else EventKind.STEP,
        actor=actor.label,
        message=f"step {run.order} ({run.action}) {run.status}"
        + (f": decided {decision}" if decision else "")
        + f" - {note}"
        + (f" (justification: {justification})" if justification else ""),
        data={"step": run.order, "decision": decision, **effect},
    )
    audit.record(
        actor=actor,
        action="incidents.step_completed",
        obj=run,
        before=before,
        after={**_step_state(run), "incident": incident.pk, "effect": effect},
        reason=justification or note,
    )


def _step_state(run: StepRun) -> dict:
    return {
        "step": run.order,
        "status": run.status,
        "decision": run.decision,
        "note": run.note,
        "justification": run.justification,
        "completed_by": run.completed_by,
    }


def _decide(
    incident: Incident, run: StepRun, *, decision: str, note: str, actor: Actor, scopes
) -> dict:
    """Act on a decision inside the caller's transaction; returns what was done."""
    if decision == "rollback":
        return _decide_rollback(incident, run, note=note, actor=actor)
    if decision == "halt":
        return _decide_halt(incident, note=note, actor=actor, scopes=scopes)
    if decision == "escalate":
        page, created = page_role(
            incident,
            role=Role.ML_LEAD,
            subject=f"[{incident.model.name}] incident {incident.pk} escalated: {run.action}",
            body=f"Escalated by {actor.label}: {note}",
            actor=actor.label,
            event=f"step-{run.order}-escalated",
        )
        return {"paged": Role.ML_LEAD, "notification": page.pk, "already_paged": not created}
    return {}


def _decide_halt(incident: Incident, *, note: str, actor: Actor, scopes) -> dict:
    halt, created = halt_engage(scope=incident.model.name, reason=note, actor=actor, scopes=scopes)
    effect = {"halt": halt.pk, "halt_engaged": created}
    incident.halt = halt
    if incident.status == IncidentStatus.OPEN:  # inference stopped: the incident is mitigated
        incident.status = effect["incident_status"] = IncidentStatus.MITIGATING
    incident.save(update_fields=["halt", "status"])
    return effect


def _decide_rollback(incident: Incident, run: StepRun, *, note: str, actor: Actor) -> dict:
    model = incident.model
    earlier = (
        Rollback.objects.filter(from_version_id=incident.version_id).first()
        if incident.version_id
        else None
    )
    if earlier is not None and earlier.incident_id == incident.pk:
        # the automatic rollback got there first: the decision confirms it
        return {"rollback": earlier.pk, "confirmed": True, "status": earlier.status}
    if earlier is not None:
        raise Conflict(
            f"{incident.version.version} is already being rolled back (or was), by incident "
            f"{earlier.incident_id}"
        )
    live = live_lifecycle(model)
    if live is None:
        raise Conflict(f"no version of {model.name} is serving; there is nothing to roll back")
    if why := successor_serves(incident, live):
        raise Conflict(f"{why}: roll that back with a new decision of its own")
    rollback = rollback_create(
        incident=incident,
        version=live.version,
        reason=f"playbook {incident.playbook} step {run.order}, decided by {actor.label}: {note}",
        actor=actor,
        automatic=False,
    )
    if rollback is None:
        raise Conflict(f"{live.version.version} is already being rolled back (or was)")
    return {"rollback": rollback.pk, "from_version": live.version.version}
