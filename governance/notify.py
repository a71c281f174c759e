"""Telling the holders of a role about something: the platform's notification interface.

Governance sits below the incidents app (docs/architecture.md §2), so it cannot call the outbox
directly: ``notify_role`` hands the message to the function named by
``settings.GOVERNANCE_NOTIFY_HOOK`` (by default the incidents outbox,
``incidents.notifications.notify_role_by_email``: one email row per dedup key, delivered and
retried by the urgent queue). ``email_role`` is the plain alternative for a deployment without
the incidents app: one Django email at once, no retry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db.models import Q
from django.utils.module_loading import import_string

from registry.models import RegisteredModel

from .models import RoleGrant

logger = logging.getLogger(__name__)

FALLBACK_HOOK = "governance.notify.email_role"


def hook() -> Callable[..., list[str]]:
    return import_string(getattr(settings, "GOVERNANCE_NOTIFY_HOOK", "") or FALLBACK_HOOK)


def notify_role(
    *, role: str, model: RegisteredModel | None, subject: str, body: str, dedup_key: str
) -> list[str]:
    """Tell everyone holding ``role`` globally or for ``model``; return the addresses told.

    ``dedup_key`` names the event: the outbox sends once per key, so a retried caller never
    tells anyone twice.
    """
    told = hook()(role=role, model=model, subject=subject, body=body, dedup_key=dedup_key)
    return list(told or [])


def role_addresses(role: str, model: RegisteredModel | None, *, dedup_key: str = "") -> list[str]:
    """Email addresses of the active holders of ``role`` (users without one are logged)."""
    scope = Q(model__isnull=True) | Q(model=model) if model is not None else Q(model__isnull=True)
    user_ids = RoleGrant.objects.filter(scope, role=role).values("user_id")
    users = get_user_model().objects.filter(pk__in=user_ids, is_active=True).order_by("pk")
    addresses: list[str] = []
    for user in users:
        if user.email:
            if user.email not in addresses:
                addresses.append(user.email)
        else:
            logger.warning("notify %s [%s]: %s has no email address", role, dedup_key, user)
    return addresses


def email_role(
    *, role: str, model: RegisteredModel | None, subject: str, body: str, dedup_key: str
) -> list[str]:
    """Email the role's holders at once (no outbox, no retry): for use without incidents."""
    addresses = role_addresses(role, model, dedup_key=dedup_key)
    if not addresses:
        logger.warning("notify %s [%s]: nobody to tell about %r", role, dedup_key, subject)
        return []
    send_mail(subject, body, None, addresses)
    logger.info("notify %s [%s]: emailed %s", role, dedup_key, ", ".join(addresses))
    return addresses
