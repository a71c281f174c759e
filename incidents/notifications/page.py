"""Paging: a PagerDuty Events API v2 payload, trigger and resolve sharing one dedup key."""

from __future__ import annotations

from django.conf import settings

from .base import Channel, Delivered, PermanentFailure, post_json

SEVERITY = {"critical": "critical", "high": "error", "medium": "warning"}


def payload(notification) -> dict:
    keys = getattr(settings, "PAGING_ROUTING_KEYS", {}) or {}
    routing_key = keys.get(notification.role) or keys.get("default", "")
    if not routing_key:
        raise PermanentFailure(f"no paging routing key for role '{notification.role}'")
    body = {
        "routing_key": routing_key,
        "event_action": notification.event,
        "dedup_key": notification.incident_key or notification.dedup_key,
    }
    if notification.event == "trigger":
        severity = "critical"
        if notification.incident is not None:
            severity = SEVERITY.get(notification.incident.severity, "error")
        body["payload"] = {
            "summary": notification.subject[:1024],
            "source": "model-governance",
            "severity": severity,
            "component": notification.model.name if notification.model else "platform",
            "custom_details": {
                "role": notification.role,
                "recipients": notification.recipients,
                "body": notification.body,
                "incident": notification.incident_id,
            },
        }
    return body


class PageChannel(Channel):
    name = "page"

    def send(self, notification) -> Delivered:
        return post_json(getattr(settings, "PAGING_URL", ""), payload(notification))
