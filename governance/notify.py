"""Telling the holders of a role about something: the platform's notification interface.

Until the incidents issue lands this sends one Django email. That issue replaces the delivery
below with its outbox (email, page, webhook), keeping this signature, so callers need not change.
"""

from __future__ import annotations

import logging

from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db.models import Q

from registry.models import RegisteredModel

from .models import RoleGrant

logger = logging.getLogger(__name__)


def notify_role(
    *, role: str, model: RegisteredModel | None, subject: str, body: str, dedup_key: str
) -> list[str]:
    """Email everyone holding ``role`` globally or for ``model``; return the addresses told.

    Users without an email address are skipped (and logged). ``dedup_key`` names the event for the
    incidents issue's outbox, which will deliver once per key; here the callers already guarantee
    once-only (an escalation is a unique row), so it is only logged.
    """
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
    if not addresses:
        logger.warning("notify %s [%s]: nobody to tell about %r", role, dedup_key, subject)
        return []
    send_mail(subject, body, None, addresses)
    logger.info("notify %s [%s]: emailed %s", role, dedup_key, ", ".join(addresses))
    return addresses
