"""The ethics layer: hard limits per model whose breach stops all inference (spec section 5.1).

An ``EthicsPolicy`` (versioned, edited only by an Ethics Officer through
``ethics_policy_update``) holds hard bounds on the fairness aggregates of every sensitive
attribute and a list of prohibited features. A model without a policy has no hard limits.

Breaches are looked for in three places, always on the model's *serving* version only:

* ``ethics_check_alert``: at the start of alert routing, a fairness alert's run metrics;
* ``ethics_check_model``: the serving version's feature list and its latest fairness run (after a
  policy change, and from the beat task);
* ``ethics_check_all``: every model with a policy and a serving version (beat).

A breach calls ``ethics_halt``: in one transaction the gateway's kill switch is engaged for the
model (``halt_engage(automatic=True)``), an ``ethics`` incident (critical, playbook 2) is opened
or joined with the halt and a timeline event saying what engaged it and why, the playbook starts
and the Ethics Officer is paged (once per incident and halt: the alert that brought the breach
pages nobody a second time). With the model already halted and its ethics incident active,
nothing happens again: never a second halt, never a second incident.

When the policy names the breached attribute in ``scoped_attributes`` and every breach is
confined to one group of it (``confined_group``: without that group, the others are within the
bound), the halt is *scoped* to that group's requests (``sensitive.<attribute> in {group}``, a
``serving.predicate``): the rest of the model keeps serving. Any other breach halts the whole
model, which also covers a scoped halt already in force.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from django.db import transaction

from analytics import fairness as fairness_rule
from governance import audit
from governance.audit import Actor
from governance.lifecycle import live_lifecycle
from governance.models import SERVING_STAGES, Lifecycle
from governance.permissions import can
from governance.policies import policy_current, policy_publish, policy_validate
from governance.roles import Action, Role
from monitoring.models import Alert, Check, MonitorRun, RunStatus, Severity
from platform_core.errors import Forbidden
from registry import services as registry_services
from registry.models import ModelVersion, RegisteredModel
from serving.halt import active_halt, halt_engage
from serving.models import Halt
from serving.predicate import Where, where_normalize

from .ethics_schema import is_number
from .models import EthicsPolicy, EventKind, Incident, IncidentKind
from .paging import page_role, role_paged
from .services import incident_active, incident_open
from .timeline import add_event

logger = logging.getLogger(__name__)

SYSTEM = Actor.system("incidents.ethics")


@dataclass(frozen=True)
class Breach:
    """One hard limit crossed: a fairness aggregate beyond its bound, or a prohibited feature."""

    policy_version: int
    version: str
    attribute: str = ""
    metric: str = ""
    value: float | None = None
    bound: str = ""  # "max" or "min"
    limit: float | None = None
    feature: str = ""
    source: str = ""  # where the value was read: "alert 12 (run 34)", "run 34"
    group: str = ""  # the one group it is confined to, for an attribute the policy scopes

    def describe(self) -> str:
        if self.feature:
            return f"prohibited feature '{self.feature}' is in the feature list of {self.version}"
        beyond = "above the hard maximum" if self.bound == "max" else "below the hard minimum"
        confined = f", confined to {self.attribute}={self.group}" if self.group else ""
        return (
            f"{self.metric} of '{self.attribute}' on {self.version} is {self.value:.4g}, "
            f"{beyond} {self.limit:.4g}{confined}" + (f" ({self.source})" if self.source else "")
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in ("", None)}


# --- the policy --------------------------------------------------------------------------------


def ethics_policy_current(model: RegisteredModel) -> EthicsPolicy | None:
    """The newest stored version, or None: a model without a policy has no hard limits."""
    policy = policy_current("ethics", model)
    return policy if policy.pk is not None else None


def ethics_policy_update(
    *,
    model_name: str,
    fairness_limits: dict[str, dict[str, float]],
    prohibited_features: list[str],
    reason: str,
    actor: Actor,
    scopes=None,
    scoped_attributes: list[str] | None = None,
) -> EthicsPolicy:
    """A new policy version (Ethics Officer only); the model is checked against it after commit."""
    if actor.user is None or not can(
        actor.user, Action.APPROVE_AS_ETHICS_OFFICER, model=model_name, scopes=scopes
    ):
        raise Forbidden(f"changing the ethics policy of {model_name} needs the Ethics Officer")
    values = {
        "fairness_limits": fairness_limits,
        "prohibited_features": prohibited_features,
        "scoped_attributes": scoped_attributes or [],  # each version states all three
    }
    policy_validate("ethics", values, reason)  # every bad field named before the model lookup
    model = registry_services.model_get(model_name)
    with transaction.atomic():
        policy = policy_publish("ethics", model, values, actor, reason=reason)
        transaction.on_commit(partial(_check_after_update, model.pk), robust=True)
    return policy


def _check_after_update(model_id: int) -> None:
    ethics_check_model(RegisteredModel.objects.get(pk=model_id))


# --- finding breaches --------------------------------------------------------------------------


def fairness_breaches(
    policy: EthicsPolicy, attributes: dict[str, Any], *, version: str, source: str
) -> list[Breach]:
    """Every (attribute, aggregate) of a fairness run beyond the policy's hard bounds.

    Attributes monitoring did not judge (fewer than two groups of the minimum size) are skipped:
    their aggregates describe one group, not a disparity. Undefined values are no breach. A halt
    needs evidence: where the run kept the aggregate's interval, the whole interval must lie
    beyond the hard bound (``analytics.fairness.beyond``, the alerting rule); an estimate past
    the bound whose interval still includes it is noise as far as a halt is concerned.
    """
    found: list[Breach] = []
    scoped = set(policy.scoped_attributes or ())
    for attribute, entry in sorted((attributes or {}).items()):
        if not isinstance(entry, dict):
            continue
        judged = entry.get("judged", int(entry.get("n_judged_groups", 2)) >= 2)
        if not judged:
            continue
        intervals = entry.get("intervals") or {}
        for metric, bound in sorted((policy.fairness_limits or {}).items()):
            value = entry.get(metric)
            if not is_number(value):
                continue
            interval = intervals.get(metric)
            for side, limit in sorted(bound.items()):
                crossed = _crossed(value, side, limit)
                if crossed and isinstance(interval, list | tuple) and len(interval) == 2:
                    crossed = fairness_rule.beyond((interval[0], interval[1]), limit, side)
                if crossed:
                    group = ""
                    if attribute in scoped:
                        group = confined_group(entry.get("groups"), metric, side, limit) or ""
                    found.append(
                        Breach(
                            policy_version=policy.version,
                            version=version,
                            attribute=attribute,
                            metric=metric,
                            value=float(value),
                            bound=side,
                            limit=float(limit),
                            source=source,
                            group=group,
                        )
                    )
    return found


def _crossed(value: float, side: str, limit: float) -> bool:
    return value > limit if side == "max" else value < limit


# The per-group rates each aggregate is computed from (analytics.stats._group_fairness).
_RATES_OF = {
    "equalized_odds_difference": ("tpr", "fpr"),
    "fpr_ratio": ("fpr",),
    "fnr_ratio": ("fnr",),
    "demographic_parity_ratio": ("selection_rate",),
    "tpr_difference": ("tpr",),
    "fpr_difference": ("fpr",),
}


def _aggregate(metric: str, groups: list[dict]) -> float | None:
    """``metric`` over the judged ``groups`` as monitoring computes it (spread or min/max)."""
    parts = []
    for rate in _RATES_OF[metric]:
        values = [g[rate] for g in groups if g.get("judged") and is_number(g.get(rate))]
        if len(values) < 2:
            continue
        low, high = min(values), max(values)
        if metric.endswith("_ratio"):
            parts.append(1.0 if high == 0 else low / high)
        else:
            parts.append(high - low)
    return max(parts) if parts else None


def confined_group(groups: Any, metric: str, side: str, limit: float) -> str | None:
    """The one group without which the attribute is within the bound, or None.

    Needs three judged groups at least (with two, either one's removal leaves nothing to
    compare, so the breach belongs to neither alone) and exactly one such group.
    """
    if not isinstance(groups, dict) or metric not in _RATES_OF:
        return None
    judged = {name: g for name, g in groups.items() if isinstance(g, dict) and g.get("judged")}
    if len(judged) < 3:
        return None
    confined = []
    for name in sorted(judged):
        value = _aggregate(metric, [g for other, g in judged.items() if other != name])
        if value is not None and not _crossed(value, side, limit):
            confined.append(name)
    return confined[0] if len(confined) == 1 else None


def group_scope(breaches: list[Breach]) -> dict | None:
    """The scoped halt's predicate when every breach is confined to a group of one attribute."""
    attributes = {b.attribute for b in breaches}
    if len(attributes) != 1 or not all(b.group and not b.feature for b in breaches):
        return None
    groups = sorted({b.group for b in breaches})
    return {"field": f"sensitive.{attributes.pop()}", "op": "in", "value": groups}


def _attributes_of(alert: Alert) -> dict[str, Any]:
    """Per-attribute aggregates: the alert's run metrics, else its details' violations."""
    run = alert.run
    attributes = (run.metrics or {}).get("attributes") if run is not None else None
    if attributes:
        return attributes
    rebuilt: dict[str, dict[str, Any]] = {}
    for violation in (alert.details or {}).get("violations", []):
        attribute, metric = violation.get("attribute"), violation.get("metric")
        if attribute and metric:
            rebuilt.setdefault(attribute, {})[metric] = violation.get("value")
    return rebuilt


def _serving(version: ModelVersion) -> bool:
    stage = Lifecycle.objects.filter(version=version).values_list("stage", flat=True).first()
    return stage in SERVING_STAGES


def alert_breaches(alert: Alert) -> list[Breach]:
    """The hard bounds a fairness alert on a serving version crosses (none for other alerts,
    and none for a watch: its evidence does not establish the breach)."""
    if alert.kind != Check.FAIRNESS or alert.severity == Severity.WATCH:
        return []
    policy = ethics_policy_current(alert.model)
    if policy is None or not policy.fairness_limits or not _serving(alert.version):
        return []
    return fairness_breaches(
        policy,
        _attributes_of(alert),
        version=alert.version.version,
        source=f"alert {alert.pk}, run {alert.run_id}",
    )


def ethics_check_alert(alert: Alert, *, incident: Incident | None = None) -> dict | None:
    """A fairness alert on a serving version: halt if any attribute crosses a hard bound.

    Routing passes the fairness incident the alert opened or joined, so one alert makes one
    incident, which records the halt; alone, the check opens (or joins) an ethics incident.
    """
    breaches = alert_breaches(alert)
    if not breaches:
        return None
    return ethics_halt(
        model=alert.model, version=alert.version, breaches=breaches, incident=incident
    )


def latest_fairness_run(version: ModelVersion) -> MonitorRun | None:
    return (
        MonitorRun.objects.filter(version=version, kind=Check.FAIRNESS, status=RunStatus.SUCCEEDED)
        .order_by("-window_end", "-id")
        .first()
    )


def model_breaches(model: RegisteredModel, policy: EthicsPolicy | None = None) -> list[Breach]:
    """What the serving version breaches now: prohibited features, then its latest fairness run.

    Sensitive attributes are not checked against the prohibited list: the gateway logs them
    beside a prediction for the fairness checks and never scores them.
    """
    policy = policy or ethics_policy_current(model)
    live = live_lifecycle(model)
    if policy is None or live is None:
        return []
    version = live.version
    features = {str(f).strip().casefold(): str(f) for f in version.feature_list or []}
    found = [
        Breach(policy_version=policy.version, version=version.version, feature=features[key])
        for key in dict.fromkeys(p.strip().casefold() for p in policy.prohibited_features or [])
        if key in features
    ]
    if policy.fairness_limits:
        run = latest_fairness_run(version)
        if run is not None:
            found += fairness_breaches(
                policy,
                (run.metrics or {}).get("attributes") or {},
                version=version.version,
                source=f"run {run.pk}",
            )
    return found


def ethics_check_model(model: RegisteredModel) -> dict | None:
    """Halt ``model`` if its serving version breaches its ethics policy; None when it does not."""
    breaches = model_breaches(model)
    if not breaches:
        return None
    live = live_lifecycle(model)
    return ethics_halt(model=model, version=live.version if live else None, breaches=breaches)


def ethics_check_all() -> list[dict]:
    """Beat: check every model with a policy and a serving version; returns what was halted.

    One failing model does not stop the others; the first error is raised at the end so the
    task shows it.
    """
    outcomes: list[dict] = []
    first_error: Exception | None = None
    model_ids = (
        EthicsPolicy.objects.filter(model__versions__lifecycle__stage__in=SERVING_STAGES)
        .values_list("model_id", flat=True)
        .distinct()
    )
    for model in RegisteredModel.objects.filter(pk__in=list(model_ids)).order_by("name"):
        try:
            outcome = ethics_check_model(model)
        except Exception as exc:
            logger.exception("ethics check of %s failed", model.name)
            first_error = first_error or exc
            continue
        if outcome is not None:
            outcomes.append(outcome)
    if first_error is not None:
        raise first_error
    return outcomes


# --- the halt ----------------------------------------------------------------------------------


def ethics_halt(
    *,
    model: RegisteredModel,
    version: ModelVersion | None,
    breaches: list[Breach],
    actor: Actor = SYSTEM,
    incident: Incident | None = None,
) -> dict:
    """Stop all inference of ``model`` and record why, in one transaction (idempotent).

    Returns ``{"model", "action", "halt", "incident", "breaches"}``; ``action`` is ``halted``
    (new halt and incident), ``joined`` (new halt, active incident), ``recorded`` (a halt someone
    engaged already stays; the incident records the breach) or ``already halted`` (nothing done).
    """
    if not breaches:
        raise ValueError("ethics_halt needs at least one breach")
    reason = f"ethics hard limits breached (ethics policy v{breaches[0].policy_version}): " + (
        "; ".join(b.describe() for b in breaches)
    )
    scope = group_scope(breaches)
    where = where_normalize(scope) if scope else None
    with transaction.atomic():
        RegisteredModel.objects.select_for_update().get(pk=model.pk)
        whole = active_halt(model.name)  # the whole halt covers any group's
        existing_halt = whole or (active_halt(model.name, where=where) if where else None)
        incident = incident or incident_active(model, IncidentKind.ETHICS)
        if (
            existing_halt is not None
            and incident is not None
            and incident.halt_id == existing_halt.pk
        ):
            return _outcome(model, "already halted", existing_halt, incident, breaches)
        opened = incident is None
        if opened:
            incident = _open_ethics_incident(model, version, reason, breaches, actor, where)
        if whole is not None:
            halt, created = whole, False
        else:
            halt, created = halt_engage(
                scope=model.name, reason=reason, actor=actor, automatic=True, where=where
            )
        incident.halt = halt
        incident.save(update_fields=["halt"])
        message = _record_halt_on_timeline(incident, halt, created, reason, breaches, actor)
        _page_ethics_officer(incident, halt, message, actor)
        action = ("halted" if opened else "joined") if created else "recorded"
        audit.record(
            actor=actor,
            action="incidents.ethics_halt",
            obj=incident,
            after={
                "incident": incident.pk,
                "incident_opened": opened,
                "halt": halt.pk,
                "halt_created": created,
                "version": version.version if version else None,
                "policy_version": breaches[0].policy_version,
                "breaches": [b.to_dict() for b in breaches],
                **({"where": halt.where, "where_text": halt.where_text} if halt.where else {}),
            },
            reason=reason,
        )
    logger.warning("ethics halt of %s (%s): %s", model.name, action, reason)
    return _outcome(model, action, halt, incident, breaches)


def _outcome(
    model: RegisteredModel, action: str, halt: Halt, incident: Incident, breaches: list[Breach]
) -> dict:
    return {
        "model": model.name,
        "action": action,
        "halt": halt.pk,
        "incident": incident.pk,
        "breaches": [b.to_dict() for b in breaches],
    }


def _open_ethics_incident(
    model: RegisteredModel,
    version: ModelVersion | None,
    reason: str,
    breaches: list[Breach],
    actor: Actor,
    where: Where | None = None,
) -> Incident:
    return incident_open(
        model=model,
        kind=IncidentKind.ETHICS,
        severity="critical",
        title=f"ethics hard limit breached on {model.name}"
        + (f" {version.version}" if version else "")
        + (f": inference halted where {where.text}" if where else ": inference halted"),
        version=version,
        actor=actor,
        message=f"opened by the ethics check: {reason}",
        data={"policy_version": breaches[0].policy_version},
    )


def _record_halt_on_timeline(
    incident: Incident,
    halt: Halt,
    created: bool,
    reason: str,
    breaches: list[Breach],
    actor: Actor,
) -> str:
    """The timeline says who engaged the halt and why (or that someone's halt stays)."""
    model_name = incident.model.name
    if halt.where:
        model_name = f"{model_name} (scoped: requests where {halt.where_text})"
    if created:
        message = f"emergency halt of {model_name} engaged by {actor.label}: {reason}"
    else:
        message = (
            f"the emergency halt of {model_name} engaged by {halt.engaged_by_label} at "
            f"{halt.engaged_at:%Y-%m-%d %H:%M:%S} UTC ({halt.reason}) stays in force; "
            f"the ethics check found: {'; '.join(b.describe() for b in breaches)}"
        )
    add_event(
        incident,
        kind=EventKind.DECISION,
        actor=actor.label,
        message=message,
        data={
            "halt": halt.pk,
            "halt_engaged_by": halt.engaged_by_label,
            "halt_created": created,
            **({"where": halt.where} if halt.where else {}),
            "policy_version": breaches[0].policy_version,
            "breaches": [b.to_dict() for b in breaches],
        },
    )
    return message


def _page_ethics_officer(incident: Incident, halt: Halt, message: str, actor: Actor) -> None:
    """One page per incident, person and event: the halt that comes with the incident (or with
    the alert that opened it) is the incident's page; a later halt within it is a new one."""
    role = Role.ETHICS_OFFICER
    page_role(
        incident,
        role=role,
        subject=f"[{incident.model.name}] EMERGENCY HALT"
        + (f" where {halt.where_text}" if halt.where else "")
        + ": ethics hard limit breached "
        f"(incident {incident.pk}, playbook {incident.playbook})",
        body=message,
        actor=actor.label,
        event=f"halt-{halt.pk}" if role_paged(incident, role) else "",
        data={"halt": halt.pk},
    )
