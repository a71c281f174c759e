"""A JSON webhook signed with HMAC-SHA256 (header ``X-Governance-Signature: sha256=<hex>``)."""

from __future__ import annotations

import hashlib
import hmac
import json

from django.conf import settings

from .base import Channel, Delivered, post_json

HEADER = "X-Governance-Signature"


def signature(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookChannel(Channel):
    name = "webhook"

    def send(self, notification) -> Delivered:
        payload = {
            "id": notification.pk,
            "dedup_key": notification.dedup_key,
            "event": notification.event,
            "role": notification.role,
            "model": notification.model.name if notification.model else None,
            "incident": notification.incident_id,
            "subject": notification.subject,
            "body": notification.body,
        }
        body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        secret = getattr(settings, "NOTIFICATION_WEBHOOK_SECRET", "") or ""
        return post_json(
            getattr(settings, "NOTIFICATION_WEBHOOK_URL", ""),
            payload,
            headers={HEADER: signature(body, secret)},
        )
