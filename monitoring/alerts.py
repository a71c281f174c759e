"""The life of an alert after it is raised: acknowledged, then resolved, by whom, when and why.

Every change is audited in its transaction. An incident that resolves takes its alerts with it
(``alerts_resolve_with_incident``, called by the incidents layer), so no alert stays open after
the incident that handled it.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

from governance import audit
from governance.audit import Actor
from governance.permissions import can
from governance.roles import Action
from platform_core.errors import Conflict, Forbidden, InvalidInput

from .models import Alert, AlertStatus

UNRESOLVED = (AlertStatus.OPEN, AlertStatus.QUEUED, AlertStatus.ACKNOWLEDGED)


def _locked(alert_id: int) -> Alert:
    return Alert.objects.select_for_update().select_related("model", "version").get(pk=alert_id)


def _check(actor: Actor, alert: Alert, scopes) -> None:
    if actor.user is None or not can(
        actor.user, Action.HANDLE_ALERTS, model=alert.model, scopes=scopes
    ):
        raise Forbidden(
            f"acknowledging or resolving alerts of '{alert.model.name}' needs the "
            "'handle_alerts' permission"
        )


def alert_acknowledge(*, alert_id: int, actor: Actor, note: str = "", scopes=None) -> Alert:
    """Someone is looking at it: the alert stays unresolved, with who and when on record."""
    with transaction.atomic():
        alert = _locked(alert_id)
        _check(actor, alert, scopes)
        if alert.status == AlertStatus.RESOLVED:
            raise Conflict(f"alert {alert.pk} is already resolved")
        if alert.status == AlertStatus.ACKNOWLEDGED:
            return alert  # a retried click: nothing new to record
        before = alert.status
        alert.status = AlertStatus.ACKNOWLEDGED
        alert.acknowledged_at = timezone.now()
        alert.acknowledged_by = actor.label[:200]
        alert.note = note.strip() or alert.note
        alert.save(update_fields=["status", "acknowledged_at", "acknowledged_by", "note"])
        _audit(alert, actor, "monitoring.alert_acknowledged", before, note)
    return alert


def alert_resolve(*, alert_id: int, actor: Actor, note: str, scopes=None) -> Alert:
    """Closed by a person, with the reason (required: the next reader needs to know why)."""
    with transaction.atomic():
        alert = _locked(alert_id)
        _check(actor, alert, scopes)  # 403 before 400: a refused caller learns nothing more
        if not (note or "").strip():
            raise InvalidInput({"note": "required: why this alert is resolved"})
        if alert.status == AlertStatus.RESOLVED:
            raise Conflict(f"alert {alert.pk} is already resolved by {alert.resolved_by}")
        before = alert.status
        _mark_resolved(alert, actor, note)
        _audit(alert, actor, "monitoring.alert_resolved", before, note)
    return alert


def alerts_resolve_with_incident(
    alerts: Iterable[Alert], *, actor: Actor, incident_id: int
) -> list[int]:
    """Resolve the unresolved ones among an incident's alerts (inside the caller's transaction).

    The incidents layer calls this when the incident resolves; safe to call again."""
    note = f"resolved with incident {incident_id}"
    done = []
    for alert in alerts:
        if alert.status not in UNRESOLVED:
            continue
        before = alert.status
        _mark_resolved(alert, actor, note)
        _audit(alert, actor, "monitoring.alert_resolved", before, note)
        done.append(alert.pk)
    return done


def alert_resolve_on_finding(alert: Alert, *, actor: Actor, note: str) -> bool:
    """Resolve ``alert`` (locked by the caller, inside its transaction) on a service's finding,
    such as an estimated alert the labels that arrived later did not confirm; no person's
    permission applies, so the finding goes into the note. False if it was already resolved."""
    if alert.status not in UNRESOLVED:
        return False
    before = alert.status
    _mark_resolved(alert, actor, note)
    _audit(alert, actor, "monitoring.alert_resolved", before, note)
    return True


def _mark_resolved(alert: Alert, actor: Actor, note: str) -> None:
    alert.status = AlertStatus.RESOLVED
    alert.resolved_at = timezone.now()
    alert.resolved_by = actor.label[:200]
    alert.note = note.strip()
    alert.save(update_fields=["status", "resolved_at", "resolved_by", "note"])


def _audit(alert: Alert, actor: Actor, action: str, before: str, note: str) -> None:
    audit.record(
        actor=actor,
        action=action,
        obj=alert,
        before={"status": before},
        after={"status": alert.status, "version": alert.version.version},
        reason=note.strip(),
    )
