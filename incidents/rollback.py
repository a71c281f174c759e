"""Rollback: an idempotent state machine over one ``Rollback`` row.

requested -(start_rollback + restore, one transaction)-> switched -(v(n-1) verified serving)->
verified -(complete_rollback: the failing version to cold archive)-> completed, with the
post-incident review scheduled 48 hours out. Without a warm-standby version: no_standby (nothing
switched, the ML Lead paged). Each step runs in its own transaction under a row lock on the
rollback and commits its status with its effect, so a retried or redelivered task resumes from the
stored status and never rolls back twice. The unique constraint on ``from_version`` means a failing
version is rolled back at most once, however many alerts or people ask. An ML Lead's rollback
(``incidents.manual_rollback``) opens its incident and then takes the same path.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from governance import audit
from governance import lifecycle as lifecycle_rules
from governance.audit import Actor
from governance.models import SERVING_STAGES, Lifecycle
from governance.premises import Premise
from governance.roles import Role
from platform_core.errors import Conflict, NoStandbyVersion
from platform_core.tasking import enqueue_on_commit
from registry.models import ModelVersion
from serving import gateway

from .models import EventKind, Incident, IncidentStatus, Rollback, RollbackStatus
from .paging import page_role
from .resolution import REVIEW_AFTER, incident_resolve_if_finished, review_step_ensure
from .timeline import add_event

logger = logging.getLogger(__name__)

SYSTEM = Actor.system("incidents.rollback")
TERMINAL = frozenset(
    {
        RollbackStatus.COMPLETED,
        RollbackStatus.NO_STANDBY,
        RollbackStatus.FAILED,
        RollbackStatus.SKIPPED,
    }
)


def successor_serves(incident: Incident, live: Lifecycle) -> str:
    """Why ``live`` is not the version to roll back for ``incident``: a rollback or promotion
    since the incident opened replaced the version it concerns ("" when that version serves).
    Neither the playbook nor a person's decision ever rolls back the successor."""
    if incident.version_id and live.version_id != incident.version_id:
        return (
            f"the incident concerns {incident.version.version}, but {live.version.version} "
            "serves now"
        )
    return ""


def rollback_create(
    *, incident: Incident, version: ModelVersion, reason: str, actor: Actor, automatic: bool
) -> Rollback | None:
    """The rollback row of ``version`` (inside the caller's transaction, which holds the model
    lock) and its ``incidents.rollback_requested`` audit event, automatic or not; None when that
    version already has one. The task is enqueued after commit."""
    if Rollback.objects.filter(from_version=version).exists():
        return None
    try:
        with transaction.atomic():
            rollback = Rollback.objects.create(
                incident=incident,
                model_id=version.model_id,
                from_version=version,
                reason=reason,
                requested_by=actor.label[:200],
                automatic=automatic,
            )
    except IntegrityError:
        return None
    if incident.status == IncidentStatus.OPEN:
        incident.status = IncidentStatus.MITIGATING
        incident.save(update_fields=["status"])
    add_event(
        incident,
        kind=EventKind.ROLLBACK,
        actor=actor.label,
        message=f"rollback of {version.version} requested"
        + (" automatically" if automatic else "")
        + f": {reason}",
        data={"rollback": rollback.pk, "from_version": version.version},
    )
    audit.record(
        actor=actor,
        action="incidents.rollback_requested",
        obj=rollback,
        after={"incident": incident.pk, "version": version.version, "automatic": automatic},
        reason=reason,
    )
    enqueue_on_commit("incidents.run_rollback", rollback.pk)
    return rollback


def rollback_run(rollback_id: int, *, task_id: str = "") -> str:
    """Advance the rollback to a terminal status, resuming wherever a previous run stopped.

    ``settings.INCIDENTS_ROLLBACK_PAUSE_AFTER_SWITCH`` (a drill and test knob, 0 in production)
    holds the task right after the switch commits, so a drill can kill the worker mid-rollback.
    """
    status = ""
    for _ in range(len(RollbackStatus.values)):
        status = _advance(rollback_id, task_id=task_id)
        if status in TERMINAL:
            break
        if status == RollbackStatus.SWITCHED:  # this run made the switch: it has committed
            pause = float(getattr(settings, "INCIDENTS_ROLLBACK_PAUSE_AFTER_SWITCH", 0) or 0)
            if pause > 0:
                logger.warning(
                    "rollback %s: drill pause of %.1f s after the switch", rollback_id, pause
                )
                time.sleep(pause)
    return status


def _advance(rollback_id: int, *, task_id: str) -> str:
    with transaction.atomic():
        rollback = (
            Rollback.objects.select_for_update(of=("self",))
            .select_related("incident", "model", "from_version", "to_version")
            .get(pk=rollback_id)
        )
        if rollback.status in TERMINAL:
            return rollback.status
        rollback.attempts += 1
        if task_id:
            rollback.task_id = task_id[:100]
        step = {
            RollbackStatus.REQUESTED: _switch,
            RollbackStatus.SWITCHED: _verify,
            RollbackStatus.VERIFIED: _complete,
        }[rollback.status]
        before = rollback.status
        step(rollback)
        rollback.save()
        audit.record(
            actor=SYSTEM,
            action=f"incidents.rollback_{rollback.status}",
            obj=rollback,
            before={"status": before},
            after={
                "status": rollback.status,
                "from_version": rollback.from_version.version,
                "to_version": rollback.to_version.version if rollback.to_version else None,
                "incident": rollback.incident_id,
            },
            reason=rollback.last_error or rollback.reason,
        )
    return rollback.status


def _switch(rollback: Rollback) -> None:
    """start_rollback restores v(n-1) in the same transaction, or refuses without a standby."""
    now = timezone.now()
    rollback.started_at = rollback.started_at or now
    version = rollback.from_version
    premise = Premise(
        "incidents.run_rollback",
        f"{version.version} of {rollback.model.name} still serves",
        model_id=rollback.model_id,
        model_name=rollback.model.name,
    )
    with premise.locked():
        stage = Lifecycle.objects.filter(version=version).values_list("stage", flat=True).first()
        if stage not in SERVING_STAGES:  # replaced or retired since the rollback was requested
            live = lifecycle_rules.live_lifecycle(rollback.model)
            reason = f"{version.version} no longer serves (it is in {stage}); " + (
                f"{live.version.version} serves now" if live else "no version serves now"
            )
            _stop(
                rollback,
                RollbackStatus.SKIPPED,
                f"skipped: {reason}",
                f"rollback skipped: {reason}; nothing was switched",
            )
            premise.skip(reason, obj=rollback, rollback=rollback.pk)
            return
    try:
        with transaction.atomic():
            lifecycle = lifecycle_rules.transition(
                version=version,
                name="start_rollback",
                actor=SYSTEM,
                comment=f"rollback {rollback.pk}: {rollback.reason}",
                automatic=True,
            )
    except NoStandbyVersion as exc:
        _no_standby(rollback, " ".join([str(exc), *exc.reasons]))
        return
    except Conflict as exc:
        _fail(rollback, f"start_rollback refused: {' '.join([str(exc), *exc.reasons])}")
        return
    rollback.to_version = ModelVersion.objects.get(pk=lifecycle.superseded_id)
    rollback.status = RollbackStatus.SWITCHED
    rollback.switched_at = timezone.now()
    add_event(
        rollback.incident,
        kind=EventKind.ROLLBACK,
        actor=SYSTEM.label,
        message=f"switched: {version.version} in rollback, {rollback.to_version.version} "
        "restored with its artifact, thresholds and feature list",
        data={"rollback": rollback.pk},
    )


def _no_standby(rollback: Rollback, detail: str) -> None:
    incident = rollback.incident
    _stop(
        rollback,
        RollbackStatus.NO_STANDBY,
        detail,
        f"no warm-standby version to restore: nothing was switched; "
        f"{rollback.from_version.version} keeps serving. The ML Lead is paged.",
    )
    page_role(
        incident,
        role=Role.ML_LEAD,
        subject=f"[{rollback.model.name}] rollback impossible: no warm-standby version",
        body=f"Rollback of {rollback.from_version.version} found no warm-standby version to "
        f"restore. Nothing was switched. Reason for the rollback: {rollback.reason}",
        actor=SYSTEM.label,
        event=f"rollback-{rollback.pk}-no-standby",
    )


def _stop(rollback: Rollback, status: str, last_error: str, message: str) -> None:
    """A rollback that ends without a switch: its status, its error and the incident's event
    (the caller saves the rollback)."""
    rollback.status = status
    rollback.last_error = last_error
    add_event(
        rollback.incident,
        kind=EventKind.ROLLBACK,
        actor=SYSTEM.label,
        message=message,
        data={"rollback": rollback.pk},
    )


def _fail(rollback: Rollback, detail: str) -> None:
    _stop(rollback, RollbackStatus.FAILED, detail, f"rollback failed: {detail}")
    page_role(
        rollback.incident,
        role=Role.ML_LEAD,
        subject=f"[{rollback.model.name}] rollback failed",
        body=detail,
        actor=SYSTEM.label,
        event=f"rollback-{rollback.pk}-failed",
    )


def _verify(rollback: Rollback) -> None:
    """v(n-1) must answer a real prediction through the gateway's code path, not just hold the
    serving stage: a probe (the version's features, all zero) is scored by ``gateway.serve``
    (not logged, cached or shadowed; through a halt, which stops traffic, not the rollback)."""
    target = rollback.to_version
    probe = _probe(rollback.model.name, target)
    if not probe.ok:
        _fail(
            rollback,
            f"{target.version} did not serve a probe through the gateway after the switch "
            f"({probe.attempts} attempts): {probe.detail}",
        )
        return
    rollback.status = RollbackStatus.VERIFIED
    rollback.verified_at = timezone.now()
    rollback.verification = (
        f"gateway: {target.version} scored a probe of {len(target.feature_list or [])} "
        f"features: score {probe.score:.6g}, {probe.latency_ms:.1f} ms "
        f"(attempt {probe.attempts} of {VERIFY_ATTEMPTS})"
    )
    add_event(
        rollback.incident,
        kind=EventKind.ROLLBACK,
        actor=SYSTEM.label,
        message=f"verified: {target.version} serves ({rollback.verification})",
        data={
            "rollback": rollback.pk,
            "score": probe.score,
            "latency_ms": round(probe.latency_ms, 1),
            "attempts": probe.attempts,
        },
    )


# The switch has committed when _verify runs, so the gateway should serve v(n-1) at once; a few
# short retries cover a routing generation not seen yet (a few hundred ms in all), no more.
VERIFY_ATTEMPTS = 5
VERIFY_RETRY_SECONDS = 0.1


@dataclass(frozen=True)
class Probe:
    ok: bool
    attempts: int
    detail: str = ""
    score: float | None = None
    latency_ms: float = 0.0


def _probe(model_name: str, version: ModelVersion) -> Probe:
    """Score one all-zero instance through ``serving.gateway.serve`` until ``version`` answers."""
    payload = {"instances": [dict.fromkeys(version.feature_list or [], 0.0)]}
    detail = ""
    for attempt in range(1, VERIFY_ATTEMPTS + 1):
        if attempt > 1:
            time.sleep(VERIFY_RETRY_SECONDS)
        started = time.perf_counter()
        try:
            code, body = gateway.serve(model_name, payload, record=False, ignore_halt=True)
        except Exception as exc:  # NotFound, InvalidInput, a broken model: all mean "not serving"
            detail = f"{type(exc).__name__}: {exc}"
            continue
        latency_ms = (time.perf_counter() - started) * 1000
        answered = body.get("version")
        if code == 200 and not body.get("stale") and answered == version.version:
            score = float(body["predictions"][0]["score"])
            return Probe(ok=True, attempts=attempt, score=score, latency_ms=latency_ms)
        if body.get("stale"):
            detail = f"HTTP {code}, not live: {body.get('detail') or 'stale answer'}"
        elif answered:
            detail = f"HTTP {code}, answered by {answered}"
        else:
            detail = f"HTTP {code}: {body.get('detail') or 'no version answered'}"
    return Probe(ok=False, attempts=VERIFY_ATTEMPTS, detail=detail)


def _complete(rollback: Rollback) -> None:
    comment = (
        f"rolled back (rollback {rollback.pk}); {rollback.to_version.version} verified serving: "
        f"{rollback.reason}"
    )
    try:
        with transaction.atomic():
            lifecycle_rules.transition(
                version=rollback.from_version,
                name="complete_rollback",
                actor=SYSTEM,
                comment=comment,
                automatic=True,
            )
    except Conflict as exc:
        _fail(rollback, f"complete_rollback refused: {' '.join([str(exc), *exc.reasons])}")
        return
    now = timezone.now()
    rollback.status = RollbackStatus.COMPLETED
    rollback.completed_at = now
    rollback.save(update_fields=["status", "completed_at"])
    # A rollback mitigates; the incident resolves only once every playbook step is finished or
    # closed as not applicable (the engineers' analysis and the remediation plan still wait).
    incident = rollback.incident
    if incident.status == IncidentStatus.OPEN:
        incident.status = IncidentStatus.MITIGATING
    incident.review_due_at = incident.review_due_at or now + REVIEW_AFTER
    incident.save(update_fields=["status", "review_due_at"])
    add_event(
        incident,
        kind=EventKind.ROLLBACK,
        actor=SYSTEM.label,
        message=f"completed: {rollback.from_version.version} retired to cold archive; "
        f"post-incident review due {incident.review_due_at:%Y-%m-%d %H:%M} UTC",
        data={"rollback": rollback.pk},
    )
    review_step_ensure(incident, actor=SYSTEM)
    incident_resolve_if_finished(incident, actor=SYSTEM)
