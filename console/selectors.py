"""Reads behind the console's pages: bulk queries whose count does not grow with the models.

The console sits on top of every app (docs/architecture.md §2): it reads their models
here and changes state only through their services.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlencode

from django.db.models import Q
from django.utils import timezone

from governance import sla
from governance.models import SERVING_STAGES, Lifecycle, RoleGrant
from governance.permissions import can
from governance.roles import Action, actions_for
from governance.selectors import models_allowing, readable_models
from incidents.models import ACTIVE_STATUSES, OPEN_STEP_STATUSES, Incident, StepRun
from monitoring.models import Alert, AlertStatus, Check, Severity
from registry.models import RegisteredModel
from serving.halt import RELEASE_ROLES
from serving.models import Halt

from .paths import path_template
from .rows import overview_rows

GLOBAL = "global"
# a watch (fairness breach within noise) shows, below every alert that acts
SEVERITY_RANK = {Severity.WATCH: 0.5, Severity.MEDIUM: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}
UNRESOLVED_ALERTS = (AlertStatus.OPEN, AlertStatus.QUEUED, AlertStatus.ACKNOWLEDGED)


@dataclass
class NextStep:
    incident: Incident
    step: StepRun | None

    @property
    def url(self) -> str:
        return path_template("console:incident", 1)(self.incident.pk)

    @property
    def overdue(self) -> bool:
        return bool(self.step and self.step.due_at and self.step.due_at < timezone.now())


@dataclass
class ModelRow:
    model: RegisteredModel
    live: Lifecycle | None = None
    worst_alert: str = ""
    open_alerts: int = 0
    other_alerts: int = 0
    halt: Halt | None = None
    scoped_halts: list[Halt] = field(default_factory=list)  # refuse only matching requests
    incidents: list[NextStep] = field(default_factory=list)
    over_limit: list[tuple[Lifecycle, datetime]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return path_template("console:model", 1)(self.model.name)

    @property
    def live_url(self) -> str:
        return path_template("registry:version-detail", 2)(
            self.model.name, self.live.version.version
        )

    @property
    def health(self) -> str:
        """Halted beats everything, then partly halted (scoped halts); then the live version's
        worst unresolved alert."""
        if self.halt is not None:
            return "halted"
        if self.scoped_halts:
            return "partly halted"
        return self.worst_alert or ("healthy" if self.live else "not serving")


@dataclass
class Overview:
    rows: list[ModelRow]
    global_halt: Halt | None
    holds_roles: bool = True  # read only when no model shows: "no role" or "no model yet"

    @property
    def rows_html(self) -> str:
        """The table's rows (``console.rows``: the template loop cost more than the reads)."""
        return overview_rows(self.rows)


def active_halts(model_names: list[str] | None = None) -> list[Halt]:
    """Engaged halts: the global one and those of the given models (all models when None)."""
    halts = Halt.objects.filter(released_at__isnull=True)
    if model_names is not None:
        halts = halts.filter(Q(scope=GLOBAL) | Q(scope__in=model_names))
    return list(halts.order_by("engaged_at"))


def overview(user, *, now: datetime | None = None) -> Overview:
    """One row per model the user may read; six queries whatever the number of models."""
    now = now or timezone.now()
    models = list(readable_models(user).order_by("name"))
    rows = {m.pk: ModelRow(model=m) for m in models}
    names = {m.name: m.pk for m in models}

    # Only what a row shows: the version's facts (feature lists, schemas...) are JSON that 100
    # rows would decode for nothing (bench/console.py).
    for lifecycle in (
        Lifecycle.objects.filter(version__model_id__in=rows, stage__in=SERVING_STAGES)
        .select_related("version")
        .only("stage", "version__model_id", "version__version")
    ):
        rows[lifecycle.version.model_id].live = lifecycle

    # Health is the live version's: alerts left open on a version rolled back or retired are
    # counted apart, so they do not paint the version now serving.
    live_ids = {row.live.version_id for row in rows.values() if row.live is not None}
    for model_id, version_id, severity in Alert.objects.filter(
        model_id__in=rows, status__in=UNRESOLVED_ALERTS
    ).values_list("model_id", "version_id", "severity"):
        row = rows[model_id]
        if version_id not in live_ids:
            row.other_alerts += 1
            continue
        row.open_alerts += 1
        if SEVERITY_RANK.get(severity, 0) > SEVERITY_RANK.get(row.worst_alert, 0):
            row.worst_alert = severity

    global_halt = None
    for halt in active_halts(list(names)):
        if halt.scope == GLOBAL:
            global_halt = halt
        elif halt.where:
            rows[names[halt.scope]].scoped_halts.append(halt)
        else:
            rows[names[halt.scope]].halt = halt
    if global_halt is not None:
        for row in rows.values():
            row.halt = row.halt or global_halt

    incidents = list(
        Incident.objects.filter(model_id__in=rows, status__in=ACTIVE_STATUSES).order_by(
            "created_at"
        )
    )
    first_open: dict[int, StepRun] = {}
    for step in (
        StepRun.objects.filter(incident__in=incidents, status__in=OPEN_STEP_STATUSES)
        .order_by("incident_id", "order")
        .only("incident_id", "order", "action", "responsible", "status", "due_at")
    ):
        first_open.setdefault(step.incident_id, step)
    for incident in incidents:
        rows[incident.model_id].incidents.append(NextStep(incident, first_open.get(incident.pk)))

    for lifecycle in sla.over_limit(now, model_ids=list(rows)):
        rows[lifecycle.version.model_id].over_limit.append((lifecycle, sla.deadline_for(lifecycle)))
    holds_roles = bool(rows) or RoleGrant.objects.filter(user_id=user.pk).exists()
    return Overview(rows=list(rows.values()), global_halt=global_halt, holds_roles=holds_roles)


@dataclass
class HaltRow:
    halt: Halt
    approvals: list
    waiting_for: list[str]
    may_approve: bool


def halt_page(user) -> dict:
    """Engaged halts the user may know about, what each release waits for, and where the user
    may engage one (the models their grants allow, and 'global' with a global grant)."""
    readable = list(readable_models(user).order_by("name"))
    names = [m.name for m in readable]
    rows = []
    for halt in (
        Halt.objects.filter(released_at__isnull=True)
        .filter(Q(scope=GLOBAL) | Q(scope__in=names))
        .prefetch_related("release_approvals__user")
        .order_by("engaged_at")
    ):
        approvals = list(halt.release_approvals.all())
        filled = {a.role for a in approvals}
        model = None if halt.scope == GLOBAL else halt.scope
        rows.append(
            HaltRow(
                halt=halt,
                approvals=approvals,
                waiting_for=[r for r in RELEASE_ROLES if r not in filled],
                may_approve=can(user, Action.RELEASE_HALT, model=model)
                and all(a.user_id != user.pk for a in approvals),
            )
        )
    engaged = {row.halt.scope for row in rows if not row.halt.where}  # scoped: more may follow
    # The grants read once, not once per model (bench/console.py: the page grew a query a model).
    grants = list(RoleGrant.objects.filter(user=user).values_list("role", "model_id"))
    everywhere = {role for role, model_id in grants if model_id is None}

    def may_halt(model: RegisteredModel) -> bool:  # can(user, HALT, model=model), batched
        held = everywhere | {role for role, model_id in grants if model_id == model.pk}
        return user.is_active and Action.HALT in actions_for(held)

    scopes = [m.name for m in readable if may_halt(m) and m.name not in engaged]
    if can(user, Action.HALT) and GLOBAL not in engaged:
        scopes.append(GLOBAL)  # last, and never preselected: the widest halt is chosen on purpose
    recent = (
        Halt.objects.filter(released_at__isnull=False)
        .filter(Q(scope=GLOBAL) | Q(scope__in=names))
        .order_by("-released_at")[:10]
    )
    return {"rows": rows, "engage_scopes": scopes, "recent": list(recent)}


ALERT_PAGE_SIZE = 50
# What a row of the alerts page shows (templates/console/alerts.html): not the run, the details
# or the version's facts, JSON that fifty rows would decode for nothing (bench/console.py).
ALERT_ROW_FIELDS = (
    "kind",
    "severity",
    "feature",
    "metric",
    "value",
    "threshold",
    "window_start",
    "window_end",
    "status",
    "created_at",
    "acknowledged_by",
    "resolved_by",
    "note",
    "model__name",
    "version__version",
)


def alert_page(user, params) -> dict:
    """Alerts of the models the user may read, filtered by model, check, severity and status
    (unknown filter values are ignored and shown as such), newest first, 50 at a time."""
    models = list(readable_models(user).order_by("name").values_list("name", flat=True))
    alerts = (
        Alert.objects.filter(model__name__in=models)
        .select_related("model", "version")
        .only(*ALERT_ROW_FIELDS)
    )
    chosen: dict[str, str] = {}
    options = {
        "model": models,
        "check": Check.values,
        "severity": Severity.values,
        "status": AlertStatus.values,
    }
    field_of = {"model": "model__name", "check": "kind", "severity": "severity", "status": "status"}
    for name, allowed in options.items():
        value = params.get(name, "")
        if value in allowed:
            chosen[name] = value
            alerts = alerts.filter(**{field_of[name]: value})
    if "status" not in chosen and params.get("status") != "all":
        alerts = alerts.filter(status__in=UNRESOLVED_ALERTS)
    try:
        page = max(int(params.get("page", "1")), 1)
    except ValueError:
        page = 1
    start = (page - 1) * ALERT_PAGE_SIZE
    rows = list(alerts.order_by("-created_at", "-id")[start : start + ALERT_PAGE_SIZE + 1])
    handle = set(
        models_allowing(user, Action.HANDLE_ALERTS)
        .filter(name__in=models)
        .values_list("name", flat=True)
    )
    version_url = path_template("registry:version-detail", 2)
    act_url = path_template("console:alert-act", 2)
    for alert in rows:  # the rows' links without a reverse() each (console.paths)
        alert.version_url = version_url(alert.model.name, alert.version.version)
        alert.acknowledge_url = act_url(alert.pk, "acknowledge")
        alert.resolve_url = act_url(alert.pk, "resolve")
    kept = dict(chosen)
    if params.get("status") == "all":
        kept["status"] = "all"
    return {
        "alerts": rows[:ALERT_PAGE_SIZE],
        "has_next": len(rows) > ALERT_PAGE_SIZE,
        "page": page,
        "filters": [(name, values, kept.get(name, "")) for name, values in options.items()],
        "query": urlencode(kept),
        "may_handle": handle,
    }
