"""Incidents for the console's tests: real alerts routed to real playbooks, tasks not sent."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from governance import services
from incidents.alert_response import route_alert
from incidents.models import Incident
from incidents.playbook_engine import playbook_advance
from tests.incidents.helpers import SYSTEM, alert_on, live_pair


@pytest.fixture
def no_broker(monkeypatch):
    """Task enqueues are dropped: the tests call the services and run playbooks themselves."""
    monkeypatch.setattr("platform_core.tasking.send", lambda *a, **k: None)
    monkeypatch.setattr("incidents.notifications.enqueue_delivery", lambda countdown=None: None)


def opened(check: str = "fairness", severity: str = "critical", *, alerts: int = 1):
    """An incident of the live v2 (fairness/critical: playbook 2) whose automated steps ran;
    ``alerts`` > 1 routes more alerts of the same kind, which join it."""
    _, v2 = live_pair()
    for _ in range(alerts):
        route_alert(alert_on(v2, check, severity))
    incident = Incident.objects.get(model=v2.model)
    playbook_advance(incident.pk)
    return incident


def grant(username: str, role: str, model: str | None = None):
    services.role_grant(username=username, roles=[role], model_name=model, actor=SYSTEM)
    return get_user_model().objects.get(username=username)
