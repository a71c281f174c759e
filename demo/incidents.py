"""The demo's incidents: the automatic rollback the fairness shift triggered, run to completion,
and a playbook in progress with the first human steps done by demo people."""

from __future__ import annotations

from collections.abc import Iterator

from django.contrib.auth import get_user_model

from governance.audit import Actor
from incidents.models import Channel, Incident, IncidentKind, Notification, Rollback, RollbackStatus
from incidents.notifications import deliver_due
from incidents.playbook_engine import playbook_advance
from incidents.rollback import rollback_run
from incidents.steps.human import step_complete
from platform_core.errors import DomainError


def _person(username: str) -> Actor:
    return Actor.for_user(get_user_model().objects.get(username=username), request_id="demo")


def work_incidents(model_name: str) -> Iterator[str]:
    for rollback in Rollback.objects.filter(
        model__name=model_name, status=RollbackStatus.REQUESTED
    ):
        status = rollback_run(rollback.pk, task_id="demo")
        rollback.refresh_from_db()
        to = rollback.to_version.version if rollback.to_version else "-"
        yield (
            f"automatic rollback of {rollback.from_version.version}: {status} "
            f"({to} serving; {rollback.verification or rollback.last_error})"
        )
    for incident in Incident.objects.filter(model__name=model_name).order_by("pk"):
        done = playbook_advance(incident.pk)
        yield (
            f"incident {incident.pk} ({incident.kind}, playbook {incident.playbook}): "
            f"{len(done)} automated steps run"
        )
    fairness = Incident.objects.filter(model__name=model_name, kind=IncidentKind.FAIRNESS).first()
    if fairness is None:
        return
    affected = sum(
        alert.details.get("n", 0) if isinstance(alert.details, dict) else 0
        for alert in fairness.alerts.all()[:1]
    )
    try:
        step_complete(
            incident_id=fairness.pk,
            order=3,
            note=(
                "Impact: error rates in one neighbourhood diverged from the others from day 25; "
                f"{fairness.alerts.count()} daily fairness alerts"
                + (f" over windows of {affected} labelled records" if affected else "")
                + ". Hotspots there were under-ranked for about 10 days."
            ),
            actor=_person("erin-engineer"),
        )
        yield f"incident {fairness.pk}: erin-engineer assessed the impact (step 3)"
    except DomainError as exc:
        yield f"incident {fairness.pk}: step 3 not completed: {exc}"
    try:
        step_complete(
            incident_id=fairness.pk,
            order=4,
            note=(
                "The automatic rollback to 1.0.0 is verified serving; no halt needed. 1.0.1's "
                "lower threshold is the suspect: root-cause analysis next."
            ),
            decision="rollback",
            actor=_person("lee-lead"),
        )
        yield f"incident {fairness.pk}: lee-lead confirmed the rollback (step 4)"
    except DomainError as exc:
        yield f"incident {fairness.pk}: step 4 not completed: {exc}"
    fairness.refresh_from_db()
    open_steps = fairness.steps.filter(status="waiting").count()
    yield (
        f"incident {fairness.pk} is {fairness.status}: {open_steps} steps wait for people "
        "(root-cause analysis, the Ethics Committee's remediation plan, the review)"
    )


def deliver_notifications(model_name: str) -> Iterator[str]:
    """Deliver the outbox as the worker would. The demo configures no paging service
    (``PAGING_URL``/``PAGING_ROUTING_KEYS``), so each page fails and is emailed to the same role
    instead (files under ``var/mail/``); the incident timelines say so."""
    for _ in range(2):  # the pages, then the emails standing in for them
        deliver_due()
    fallbacks = Notification.objects.filter(
        model__name=model_name, channel=Channel.EMAIL, dedup_key__endswith="-email-fallback"
    )
    roles = sorted(set(fallbacks.values_list("role", flat=True)))
    if roles:
        yield (
            f"no paging service configured: {fallbacks.count()} page(s) emailed instead to "
            f"{', '.join(roles)} (var/mail/; the incident timeline says so)"
        )
