"""Reads behind the incident pages: the list (open first) and one incident in words, with its
playbook as a checklist, decisions, rollback, halt, alerts and timeline. A fixed number of
queries per page, whatever the number of steps, events or alerts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.db.models import Case, Count, IntegerField, Q, Value, When
from django.urls import reverse
from django.utils import timezone

from governance.permissions import can_on_any_model, roles_of
from governance.roles import Action, Role
from governance.selectors import readable_models
from incidents.models import (
    ACTIVE_STATUSES,
    OPEN_STEP_STATUSES,
    EventKind,
    Incident,
    IncidentEvent,
    IncidentKind,
    IncidentStatus,
    Playbook,
    RollbackStatus,
    StepRun,
    StepStatus,
)
from incidents.selectors import completable_by, decision_options, justification_needed_for
from incidents.steps.human import NOT_APPLICABLE

ROLE_NAMES = dict(Role.choices)
KIND_WORDS = {
    IncidentKind.PERFORMANCE: "performance",
    IncidentKind.FAIRNESS: "fairness",
    IncidentKind.OUTAGE: "outage",
    IncidentKind.ETHICS: "ethics hard-limit",
    IncidentKind.MANUAL_ROLLBACK: "manual rollback",
}
DECISION_WORDS = {
    "rollback": "roll back",
    "no_rollback": "do not roll back",
    "halt": "halt inference",
    "restored": "service restored",
    "escalate": "escalate to the ML Lead",
    NOT_APPLICABLE: "not applicable",
}
CHART_MARGIN = timedelta(days=2)
PAGE_SIZE = 50


def incident_title(incident: Incident) -> str:
    """The incident in words: 'Critical fairness incident on hotspot-classifier 1.0.1'."""
    kind = KIND_WORDS.get(incident.kind, incident.kind.replace("_", " "))
    version = f" {incident.version.version}" if incident.version_id else ""
    return f"{incident.severity.capitalize()} {kind} incident on {incident.model.name}{version}"


def decision_words(decision: str) -> str:
    return DECISION_WORDS.get(decision, decision.replace("_", " "))


def _overdue(run: StepRun, now: datetime) -> bool:
    return run.status == StepStatus.WAITING and run.due_at is not None and run.due_at < now


# --- the list -----------------------------------------------------------------------------


@dataclass
class IncidentRow:
    incident: Incident
    title: str
    next_step: StepRun | None
    overdue: bool


STATUS_FILTERS = ["active", *IncidentStatus.values, "all"]


def incident_list(user, params) -> dict:
    """Incidents of the models the user may read, open and mitigating ones first, newest first
    within each group; filtered by status and model (unknown values are ignored), 50 a page."""
    names = list(readable_models(user).order_by("name").values_list("name", flat=True))
    incidents = Incident.objects.filter(model__name__in=names).select_related("model", "version")
    model = params.get("model", "")
    if model in names:
        incidents = incidents.filter(model__name=model)
    else:
        model = ""
    status = params.get("status", "")
    if status not in STATUS_FILTERS:
        status = ""
    if status == "active":
        incidents = incidents.filter(status__in=ACTIVE_STATUSES)
    elif status in IncidentStatus.values:
        incidents = incidents.filter(status=status)
    active = Case(
        When(status__in=ACTIVE_STATUSES, then=Value(0)),
        default=Value(1),
        output_field=IntegerField(),
    )
    try:
        page = max(int(params.get("page", "1")), 1)
    except ValueError:
        page = 1
    start = (page - 1) * PAGE_SIZE
    found = list(
        incidents.annotate(
            active=active,
            open_steps=Count("steps", filter=Q(steps__status__in=OPEN_STEP_STATUSES)),
            alert_count=Count("alerts", distinct=True),
        ).order_by("active", "-created_at", "-id")[start : start + PAGE_SIZE + 1]
    )
    shown = found[:PAGE_SIZE]
    first_open: dict[int, StepRun] = {}
    for run in StepRun.objects.filter(
        incident__in=[i.pk for i in shown if i.status in ACTIVE_STATUSES],
        status__in=OPEN_STEP_STATUSES,
    ).order_by("incident_id", "order"):
        first_open.setdefault(run.incident_id, run)
    now = timezone.now()
    rows = []
    for incident in shown:
        step = first_open.get(incident.pk)
        rows.append(
            IncidentRow(
                incident, incident_title(incident), step, bool(step) and _overdue(step, now)
            )
        )
    kept = {k: v for k, v in (("status", status), ("model", model)) if v}
    return {
        "rows": rows,
        "models": names,
        "statuses": STATUS_FILTERS,
        "chosen": {"status": status, "model": model},
        "page": page,
        "has_next": len(found) > PAGE_SIZE,
        "query": urlencode(kept),
    }


# --- one incident -------------------------------------------------------------------------


@dataclass
class StepForm:
    decisions: list[tuple[str, str]]
    decision_required: bool
    justification_for: list[str]
    values: dict = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass
class StepItem:
    run: StepRun
    roles: str
    overdue: bool
    decision: str = ""
    form: StepForm | None = None

    @property
    def done_by(self) -> str:
        who, system = _who(self.run.completed_by)
        return "the platform" if system else who


@dataclass
class TimelineLine:
    at: datetime
    who: str
    text: str
    system: bool


def _who(actor: str) -> tuple[str, bool]:
    if actor.startswith("system:"):
        return "The platform", True
    return actor, False


def _timeline(events: list[IncidentEvent], steps: dict[int, StepRun]) -> list[TimelineLine]:
    """Each event as a sentence: a person completing a step reads 'olu-ethics completed step
    6: <action>: <note>'; the platform's own lines keep their message."""
    lines = []
    for event in events:
        who, system = _who(event.actor)
        data = event.data or {}
        run = steps.get(data.get("step")) if isinstance(data.get("step"), int) else None
        if (
            event.kind in (EventKind.STEP, EventKind.DECISION)
            and run is not None
            and "decision" in data
        ):
            decision = data.get("decision") or ""
            if decision == NOT_APPLICABLE:
                text = f" marked step {run.order} not applicable: {run.action}"
            else:
                text = f" completed step {run.order}: {run.action}"
                if decision:
                    text += f", deciding to {decision_words(decision)}"
            if run.note:
                text += f" (note: {run.note})"
            if run.justification:
                text += f" (justification: {run.justification})"
        elif event.kind == EventKind.OPENED:
            text = f" opened the incident: {event.message}"
        elif "task" in data and event.message.startswith("step "):
            text = f" ran {event.message}"  # an automated step: "ran step 1 (...): done: ..."
        else:
            text = f": {event.message}"
        lines.append(TimelineLine(event.at, who, text, system))
    return lines


def _status_words(incident: Incident, steps: list[StepRun], rollbacks: list) -> str:
    """The stored status and why it holds (``playbooks.incident_resolve_if_finished``: resolved
    only once every step but the review is finished and no rollback is under way)."""
    remaining = [s for s in steps if not s.is_review and s.status in OPEN_STEP_STATUSES]
    waiting = f"{len(remaining)} step{'s' if len(remaining) != 1 else ''} still open"
    in_flight = [
        r
        for r in rollbacks
        if r.status in (RollbackStatus.REQUESTED, RollbackStatus.SWITCHED, RollbackStatus.VERIFIED)
    ]
    if incident.status == IncidentStatus.OPEN:
        return f"{waiting}; it is resolved when every step is finished."
    if incident.status == IncidentStatus.MITIGATING:
        done = []
        if rollbacks:
            done.append(f"rollback {rollbacks[0].get_status_display().lower()}")
        if incident.halt_id:
            done.append("inference halted")
        why = " and ".join(done).capitalize() or "Mitigated"
        rest = waiting + (", a rollback under way" if in_flight else "")
        return f"{why}; {rest}: it is resolved when they are finished."
    if incident.status == IncidentStatus.RESOLVED:
        review = (
            f"; post-incident review due {incident.review_due_at:%Y-%m-%d %H:%M} UTC"
            if incident.review_due_at
            else ""
        )
        when = f" at {incident.resolved_at:%Y-%m-%d %H:%M} UTC" if incident.resolved_at else ""
        return f"Every playbook step is finished{when}{review}."
    return "The post-incident review is recorded."


def _chart_window(incident: Incident) -> dict[str, str]:
    return {
        "from": (incident.created_at - CHART_MARGIN).date().isoformat(),
        "to": (incident.created_at + CHART_MARGIN).date().isoformat(),
    }


def chart_link(incident: Incident) -> str:
    """The model page's charts around the opening (two days each side)."""
    url = reverse("console:model", args=[incident.model.name])
    return f"{url}?{urlencode(_chart_window(incident))}"


# The charts an incident page draws, by what raised it; everything else gets the general four.
FAIRNESS_CHARTS = ("fairness_gap", "fairness_groups", "performance", "psi")
INCIDENT_CHARTS = {
    "fairness": FAIRNESS_CHARTS,
    "ethics": FAIRNESS_CHARTS,
    "performance": ("performance", "psi", "ks", "ece"),
}
DEFAULT_CHARTS = ("psi", "performance", "fairness_gap", "ece")
CHART_TITLES = {
    "psi": "Data drift: PSI per feature",
    "ks": "Prediction drift: KS test",
    "performance": "Performance against the validated baseline",
    "fairness_gap": "Fairness: equalized-odds difference",
    "fairness_groups": "Fairness: rates per group",
    "ece": "Calibration: ECE",
}


def incident_charts(incident: Incident) -> dict:
    """The model's series around the opening, drawn by static/console/charts.js with the opening
    marked, so a reader sees what the numbers did before and after."""
    url = reverse("console:model-series", args=[incident.model.name])
    return {
        "series_url": f"{url}?{urlencode(_chart_window(incident))}",
        "charts": [
            {"id": c, "title": CHART_TITLES[c]}
            for c in INCIDENT_CHARTS.get(str(incident.kind), DEFAULT_CHARTS)
        ],
        "mark_at": incident.created_at.isoformat(),
        "mark_label": f"incident {incident.pk} opened",
    }


def readable_incident(user, pk: int) -> Incident | None:
    """The incident if the user may read its model (else None: a 404 that names nothing)."""
    return (
        Incident.objects.filter(pk=pk, model__in=readable_models(user))
        .select_related("model", "version", "halt")
        .first()
    )


def incident_page(user, incident: Incident, *, failed: dict | None = None) -> dict:
    """Everything the incident page shows; ``failed`` carries a refused form (its step, the
    values sent and the errors) so it is shown again as it was filled in."""
    now = timezone.now()
    steps = list(incident.steps.order_by("order"))
    events = list(incident.events.order_by("at", "id"))
    rollbacks = list(incident.rollbacks.select_related("from_version", "to_version"))
    alerts = list(incident.alerts.select_related("version").order_by("created_at", "id"))
    alerts = list({a.pk: a for a in alerts}.values())  # once each
    roles = roles_of(user, model=incident.model)
    may_complete = can_on_any_model(user, Action.COMPLETE_STEP)
    by_order = {s.order: s for s in steps}
    items = []
    for run in steps:
        item = StepItem(
            run=run,
            roles=" or ".join(ROLE_NAMES.get(r, r) for r in run.roles),
            overdue=_overdue(run, now),
            decision=decision_words(run.decision) if run.decision else "",
        )
        if may_complete and completable_by(user, incident, run, roles=roles):
            item.form = StepForm(
                decisions=[(d, decision_words(d)) for d in decision_options(user, incident, run)],
                decision_required=bool(run.decisions),
                justification_for=[decision_words(d) for d in justification_needed_for(run)],
            )
            if failed and failed.get("order") == run.order:
                item.form.values = failed.get("values", {})
                item.form.errors = failed.get("errors", [])
        items.append(item)
    playbook = (
        Playbook.objects.filter(number=incident.playbook).first() if incident.playbook else None
    )
    alerts_url = reverse("console:alerts")
    return {
        "incident": incident,
        "title": incident_title(incident),
        "status_words": _status_words(incident, steps, rollbacks),
        "playbook": playbook,
        "steps": items,
        "decisions": [i for i in items if i.run.decision],
        "rollbacks": rollbacks,
        "halt": incident.halt,
        "alerts": alerts,
        "alerts_url": f"{alerts_url}?{urlencode({'model': incident.model.name, 'status': 'all'})}",
        "timeline": _timeline(events, by_order),
        "chart_link": chart_link(incident),
        "charts": incident_charts(incident),
        "now": now,
    }
