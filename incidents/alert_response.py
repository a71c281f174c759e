"""What the platform does about an alert: the hook
``settings.MONITORING_ALERT_HOOK = "incidents.alert_response.route_alert"``.

Monitoring's ``default_route`` runs first (medium -> review queue; high/critical on a serving
version -> degraded). Then, for high and critical alerts, under a row lock on the model:

* the alert opens an incident of its kind, or joins the open one of the same model and kind;
* high: page the ML Lead (playbook 1); critical: page the Ethics Officer at once (playbook 2);
* critical: when the model's live version now has ``critical_alerts_for_rollback`` critical alerts
  within ``rollback_window_hours`` (the model's monitoring policy), a rollback row is created
  (unique per failing version: never twice) and its task enqueued after commit.

A ``watch`` alert (a fairness breach whose interval still includes the limit) stops after the
default route: no incident, no page, no ethics check, no rollback count.

Alerts on versions outside the serving stages open no incident (routing applies to serving
versions only). Safe to call again for the same alert: an alert already attached to an
incident changes nothing.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from governance import audit
from governance.audit import Actor
from governance.lifecycle import live_lifecycle
from governance.models import SERVING_STAGES, Lifecycle
from governance.policies import policy_values
from governance.premises import Premise
from governance.roles import Role
from monitoring.models import Alert, Check, Severity
from monitoring.routing import default_route
from registry.models import RegisteredModel

from .ethics import ethics_check_alert
from .models import EventKind, Incident, IncidentKind, Rollback
from .paging import page_role
from .rollback import rollback_create
from .services import incident_active, incident_open
from .timeline import add_event

SYSTEM = Actor.system("incidents.alert_response")
PAGED_ROLE = {Severity.HIGH: Role.ML_LEAD, Severity.CRITICAL: Role.ETHICS_OFFICER}
_RANK = {Severity.MEDIUM: 0, Severity.HIGH: 1, Severity.CRITICAL: 2}


def incident_kind(alert: Alert) -> str:
    return IncidentKind.FAIRNESS if alert.kind == Check.FAIRNESS else IncidentKind.PERFORMANCE


def route_alert(alert: Alert) -> dict:
    """Route one alert; returns what was done (for logs and tests)."""
    outcome: dict = {"default": default_route(alert)}
    if alert.severity == Severity.WATCH:
        outcome["action"] = "nothing: a watch alert counts toward nothing automatic"
        return outcome
    if alert.severity not in PAGED_ROLE:
        if halted := ethics_check_alert(alert):  # no incident of its own: an ethics incident
            outcome["ethics"] = halted
        return outcome
    stage = Lifecycle.objects.filter(version=alert.version).values_list("stage", flat=True).first()
    if stage not in SERVING_STAGES:
        outcome["action"] = f"no incident: {alert.version.version} is in {stage}, not serving"
        return outcome
    premise = Premise(
        "incidents.route_alert",
        f"{alert.version.version} of {alert.model.name} still serves",
        model_id=alert.model_id,
        model_name=alert.model.name,
    )
    with premise.locked() as model:
        known = Incident.objects.filter(alerts=alert).first()
        if known is not None:
            outcome.update(incident=known.pk, action="already routed")
            return outcome
        stage = Lifecycle.objects.filter(version=alert.version).values_list("stage", flat=True)
        if (now := stage.first()) not in SERVING_STAGES:  # rolled back or replaced meanwhile
            reason = f"{alert.version.version} is in {now}, no longer serving"
            outcome.update(premise.skip(reason, obj=alert, alert=alert.pk))
            outcome["action"] = f"no incident: {reason}"
            return outcome
        incident, opened = _open_or_join(alert, model)
        outcome.update(incident=incident.pk, action="opened" if opened else "joined")
        # an ethics hard-limit breach stops inference at once; the incident records the halt
        if halted := ethics_check_alert(alert, incident=incident):
            outcome["ethics"] = halted
        role = PAGED_ROLE[alert.severity]
        # one page per incident and person: a joining alert, or the halt that came with this
        # alert (paged by the ethics check just above), finds it sent already
        page_role(
            incident,
            role=role,
            subject=f"[{model.name}] {alert.severity} {alert.kind} alert: incident {incident.pk}"
            + (f" (playbook {incident.playbook})" if incident.playbook else ""),
            body=_describe(alert),
            actor=SYSTEM.label,
            data={"alert": alert.pk},
        )
        rollback = None
        if alert.severity == Severity.CRITICAL:
            rollback = _maybe_rollback(alert, model, incident)
        outcome["rollback"] = rollback.pk if rollback else None
        audit.record(
            actor=SYSTEM,
            action="incidents.alert_routed",
            obj=incident,
            after={
                "alert": alert.pk,
                "incident": incident.pk,
                "action": outcome["action"],
                "rollback": outcome["rollback"],
            },
            reason=_describe(alert),
        )
    return outcome


def _open_or_join(alert: Alert, model: RegisteredModel) -> tuple[Incident, bool]:
    kind = incident_kind(alert)
    incident = incident_active(model, kind)
    opened = incident is None
    if opened:
        incident = incident_open(
            model=model,
            kind=kind,
            severity=alert.severity,
            title=f"{alert.severity} {alert.kind} alert on {model.name} {alert.version.version}",
            version=alert.version,
            actor=SYSTEM,
            message=f"opened by alert {alert.pk}: {_describe(alert)}",
            data={"alert": alert.pk},
            alert=alert,
        )
        return incident, opened
    add_event(
        incident,
        kind=EventKind.ALERT,
        actor=SYSTEM.label,
        message=f"alert {alert.pk} joined: {_describe(alert)}",
        data={"alert": alert.pk},
    )
    if _RANK[alert.severity] > _RANK.get(incident.severity, 0):
        incident.severity = alert.severity
        incident.save(update_fields=["severity"])
    incident.alerts.add(alert)
    return incident, opened


def _maybe_rollback(alert: Alert, model: RegisteredModel, incident: Incident) -> Rollback | None:
    live = live_lifecycle(model)
    if live is None or live.version_id != alert.version_id:
        return None  # rollback concerns the live version only
    policy = policy_values("monitoring", model)
    needed = int(policy["critical_alerts_for_rollback"])
    window = timedelta(hours=float(policy["rollback_window_hours"]))
    since = max(alert.created_at, timezone.now()) - window
    criticals = Alert.objects.filter(
        version_id=live.version_id, severity=Severity.CRITICAL, created_at__gte=since
    ).count()
    if criticals < needed:
        return None
    return rollback_create(
        incident=incident,
        version=live.version,
        reason=f"{criticals} critical alerts on {live.version.version} within "
        f"{policy.get('rollback_window_hours', 24)} h (policy: {needed})",
        actor=SYSTEM,
        automatic=True,
    )


def _describe(alert: Alert) -> str:
    feature = f" on {alert.feature}" if alert.feature else ""
    value = "undefined" if alert.value is None else f"{alert.value:.4g}"
    threshold = "undefined" if alert.threshold is None else f"{alert.threshold:.4g}"
    return (
        f"{alert.severity} {alert.kind} alert {alert.pk} on {alert.version.version}: "
        f"{alert.metric}{feature} {value} against {threshold}"
    )
