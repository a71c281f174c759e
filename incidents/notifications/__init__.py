"""The notification outbox: rows written in the caller's transaction, delivered after commit.

``notify_role`` writes one ``Notification`` per dedup key (a second call with the same key is a
no-op) and enqueues delivery after commit. ``deliver_due`` claims due rows with a conditional
UPDATE (a lease), so two workers never send the same row; temporary failures (network, 429, 5xx)
back off exponentially, permanent ones (other 4xx, nothing configured) stop; every attempt is a
``DeliveryAttempt`` row. A row whose announced event no longer holds when it is due (an overdue
reminder for a step completed meanwhile, a stage escalation for a version that left the stage)
is not sent: it ends ``skipped`` (``governance.premises``, see ``premise_failure``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from governance.models import RoleGrant
from platform_core.tasking import enqueue

from ..models import Channel, DeliveryAttempt, Notification, NotificationStatus
from ..timeline import add_event
from .base import PermanentFailure, TemporaryFailure
from .email import EmailChannel
from .page import PageChannel
from .webhook import WebhookChannel

logger = logging.getLogger(__name__)

CHANNELS = {
    Channel.EMAIL: EmailChannel(),
    Channel.PAGE: PageChannel(),
    Channel.WEBHOOK: WebhookChannel(),
}
# Defaults of ``settings.NOTIFICATION_BACKOFF_SECONDS`` / ``NOTIFICATION_BACKOFF_MAX_SECONDS``.
BACKOFF_BASE = timedelta(seconds=10)
BACKOFF_MAX = timedelta(minutes=30)
MAX_ATTEMPTS = 12
LEASE = timedelta(minutes=2)


def recipients_for(role: str, model=None, *, channel: str = Channel.EMAIL) -> list[str]:
    """Holders of ``role`` globally or for ``model``: emails for email, usernames otherwise."""
    scope = Q(model__isnull=True) | Q(model=model) if model is not None else Q(model__isnull=True)
    user_ids = RoleGrant.objects.filter(scope, role=role).values("user_id")
    users = get_user_model().objects.filter(pk__in=user_ids, is_active=True).order_by("pk")
    if channel == Channel.EMAIL:
        return list(dict.fromkeys(u.email for u in users if u.email))
    return [u.get_username() for u in users]


def notify_role(
    *,
    channel: str,
    role: str,
    model=None,
    subject: str,
    body: str = "",
    dedup_key: str,
    incident=None,
    event: str = "trigger",
    incident_key: str = "",
) -> tuple[Notification, bool]:
    """Write one outbox row (once per ``dedup_key``); delivery is enqueued after commit.

    A notice about an ``incident`` concerns the incident's model unless ``model`` says otherwise.
    """
    if model is None and incident is not None:
        model = incident.model
    dedup_key = dedup_key[:250]  # as stored: a longer key is looked up by what was kept
    with transaction.atomic():
        existing = Notification.objects.filter(dedup_key=dedup_key).first()
        if existing is not None:
            return existing, False
        try:
            with transaction.atomic():
                notification = Notification.objects.create(
                    channel=channel,
                    role=role,
                    model=model,
                    incident=incident,
                    recipients=recipients_for(role, model, channel=channel),
                    subject=subject[:300],
                    body=body,
                    dedup_key=dedup_key,
                    event=event,
                    incident_key=incident_key[:200],
                )
        except IntegrityError:
            return Notification.objects.get(dedup_key=dedup_key), False
        transaction.on_commit(lambda: enqueue_delivery(), robust=True)
    return notification, True


def enqueue_delivery(countdown: float | None = None) -> None:
    enqueue("incidents.deliver_notifications", countdown=countdown)


def backoff(attempts: int) -> timedelta:
    """Wait before the next attempt: base * 2^(attempts-1), capped (both from settings)."""
    from django.conf import settings

    base = getattr(settings, "NOTIFICATION_BACKOFF_SECONDS", None)
    cap = getattr(settings, "NOTIFICATION_BACKOFF_MAX_SECONDS", None)
    base = BACKOFF_BASE if base is None else timedelta(seconds=float(base))
    cap = BACKOFF_MAX if cap is None else timedelta(seconds=float(cap))
    return min(base * (2 ** max(attempts - 1, 0)), cap)


def _claim(notification_id: int, now) -> bool:
    """Atomically take the row for one attempt: only one worker wins the UPDATE."""
    return (
        Notification.objects.filter(
            pk=notification_id, status=NotificationStatus.PENDING, next_attempt_at__lte=now
        )
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .update(claimed_until=now + LEASE, attempts=F("attempts") + 1)
        == 1
    )


def _overdue_step(match: re.Match, notification: Notification) -> str | None:
    from ..models import StepRun, StepStatus

    run = StepRun.objects.filter(pk=int(match[1])).first()
    if run is None:
        return "the step no longer exists"
    if run.status != StepStatus.WAITING:
        return f"step {run.order} ({run.action}) was {run.status} meanwhile"
    if run.due_at is None or run.due_at > timezone.now():
        return f"step {run.order} ({run.action}) is no longer overdue (now due {run.due_at})"
    return None


def _stage_escalation(match: re.Match, notification: Notification) -> str | None:
    from governance.models import Escalation, Lifecycle

    escalation = Escalation.objects.filter(pk=int(match[1])).first()
    if escalation is None:
        return "the escalation no longer exists"
    now = Lifecycle.objects.filter(pk=escalation.lifecycle_id).values("stage", "stage_entered_at")
    row = now.first()
    if row is None or (row["stage"], row["stage_entered_at"]) != (
        escalation.stage,
        escalation.stage_entered_at,
    ):
        where = row["stage"] if row else "no stage"
        return f"the version left {escalation.stage} meanwhile (it is in {where})"
    return None


# What each kind of row announces, by its dedup key: a check that returns why it no longer holds.
# Pages and emails about an incident announce that it happened, which stays true: no check.
PREMISES: list[tuple[re.Pattern, str, Callable[[re.Match, Notification], str | None]]] = [
    (
        re.compile(r"^step-(\d+)-overdue-(?:page|email)$"),
        "the step is still waiting and overdue",
        _overdue_step,
    ),
    (
        re.compile(r"^escalation:(\d+):"),
        "the version is still in the escalated stay",
        _stage_escalation,
    ),
]


def _premise(notification: Notification):
    for pattern, statement, check in PREMISES:
        match = pattern.match(notification.dedup_key)
        if match is not None:
            return statement, partial(check, match, notification)
    return None


def skip_if_stale(notification: Notification) -> bool:
    """Re-check what the row announces under the model lock (the lock ``step_complete`` and the
    lifecycle take first); if it no longer holds, end the row ``skipped``: no attempt is made,
    the skip is logged and audited and, for an incident, written on its timeline."""
    from governance.premises import Premise

    found = _premise(notification)
    if found is None:
        return False
    statement, check = found
    premise = Premise(
        "incidents.deliver_notifications",
        f"{notification.channel} {notification.dedup_key}: {statement}",
        model_id=notification.model_id,
        model_name=notification.model.name if notification.model else "",
    )
    with premise.locked():
        reason = check()
        if reason is None:
            return False
        Notification.objects.filter(pk=notification.pk).update(
            status=NotificationStatus.SKIPPED, claimed_until=None, last_error=f"skipped: {reason}"
        )
        premise.skip(reason, obj=notification, notification=notification.pk)
        if notification.incident_id:
            add_event(
                notification.incident,
                kind="notification",
                actor="system:notifications",
                message=f"{notification.channel} to {notification.role or 'recipients'} not sent: "
                f"{reason}",
                data={"notification": notification.pk, "skipped": True},
            )
    return True


def deliver_one(notification_id: int) -> str:
    """One attempt at one due row; returns the outcome (``sent``, ``retry``, ``failed``,
    ``skipped`` when what it announces no longer holds, ``-`` when another worker has it)."""
    now = timezone.now()
    if not _claim(notification_id, now):
        return "-"
    notification = Notification.objects.select_related("model", "incident").get(pk=notification_id)
    if skip_if_stale(notification):
        return "skipped"
    started = time.monotonic()
    status_code, error = None, ""
    try:
        delivered = CHANNELS[notification.channel].send(notification)
        status_code, outcome = delivered.status_code, "sent"
    except TemporaryFailure as exc:
        status_code, error = exc.status_code, str(exc)
        outcome = "retry" if notification.attempts < MAX_ATTEMPTS else "failed"
    except PermanentFailure as exc:
        status_code, error, outcome = exc.status_code, str(exc), "failed"
    except Exception as exc:  # an unexpected bug in a channel: keep it retrying, visibly
        logger.exception("notification %s: channel error", notification_id)
        error = f"{type(exc).__name__}: {exc}"
        outcome = "retry" if notification.attempts < MAX_ATTEMPTS else "failed"
    duration_ms = int((time.monotonic() - started) * 1000)
    finished = timezone.now()
    with transaction.atomic():
        DeliveryAttempt.objects.create(
            notification=notification,
            number=notification.attempts,
            at=finished,
            outcome=outcome,
            status_code=status_code,
            error=error,
            duration_ms=duration_ms,
        )
        fields = {"claimed_until": None, "last_error": error}
        if outcome == "sent":
            fields.update(status=NotificationStatus.SENT, sent_at=finished)
        elif outcome == "failed":
            fields.update(status=NotificationStatus.FAILED)
        else:
            fields.update(next_attempt_at=finished + backoff(notification.attempts))
        Notification.objects.filter(pk=notification.pk).update(**fields)
    if notification.incident_id and outcome != "retry":
        with transaction.atomic():
            add_event(
                notification.incident,
                kind="notification",
                actor="system:notifications",
                message=f"{notification.channel} to {notification.role or 'recipients'}: "
                f"{outcome}" + (f" ({error})" if error else ""),
                data={"notification": notification.pk, "attempts": notification.attempts},
            )
    if outcome != "sent" and notification.channel == Channel.PAGE:
        with transaction.atomic():
            page_fallback_email(notification, error=error, retried=outcome == "retry")
    return outcome


def page_fallback_email(
    notification: Notification, *, error: str, retried: bool
) -> Notification | None:
    """A page that could not be sent becomes an email to the same role, once, and the incident's
    timeline says so: a role without a routing key (or a paging service that is down) still
    hears of the incident. Resolves have no fallback (the trigger's email said it all)."""
    if notification.event != "trigger":
        return None
    email, created = notify_role(
        channel=Channel.EMAIL,
        role=notification.role,
        model=notification.model,
        incident=notification.incident,
        subject=f"[page not delivered] {notification.subject}",
        body=f"{notification.body}\n\nThis was sent as a page, which could not be delivered: "
        f"{error}. It reaches you by email instead.",
        dedup_key=f"{notification.dedup_key}-email-fallback",
    )
    if created and notification.incident_id:
        add_event(
            notification.incident,
            kind="notification",
            actor="system:notifications",
            message=f"page to {notification.role or 'recipients'} could not be sent ({error}); "
            f"emailed {notification.role or 'them'} instead"
            + ("; the page is retried" if retried else ""),
            data={"notification": notification.pk, "fallback": email.pk},
        )
    return email


def deliver_due(*, limit: int = 100) -> dict[str, int]:
    """Attempt every due pending row once; returns counts by outcome."""
    now = timezone.now()
    ids = list(
        Notification.objects.filter(status=NotificationStatus.PENDING, next_attempt_at__lte=now)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .order_by("next_attempt_at", "id")
        .values_list("pk", flat=True)[:limit]
    )
    counts: dict[str, int] = {}
    for pk in ids:
        outcome = deliver_one(pk)
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def next_due_in() -> float | None:
    """Seconds until the earliest pending row is due (for re-scheduling the task)."""
    row = (
        Notification.objects.filter(status=NotificationStatus.PENDING)
        .order_by("next_attempt_at")
        .values_list("next_attempt_at", flat=True)
        .first()
    )
    if row is None:
        return None
    return max((row - timezone.now()).total_seconds(), 0.0)


def notify_role_by_email(
    *, role: str, model=None, subject: str, body: str, dedup_key: str
) -> list[str]:
    """``settings.GOVERNANCE_NOTIFY_HOOK``: governance's notices as one EMAIL outbox row per
    dedup key (stage escalations, monthly audits); returns the row's recipients."""
    notification, created = notify_role(
        channel=Channel.EMAIL,
        role=role,
        model=model,
        subject=subject,
        body=body,
        dedup_key=dedup_key,
    )
    if created and not notification.recipients:
        logger.warning("notify %s [%s]: nobody with an email address to tell", role, dedup_key)
    return list(notification.recipients)
