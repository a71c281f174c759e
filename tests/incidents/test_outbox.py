"""The notification outbox against a local paging endpoint answering 500, then 429, then 202."""

import hashlib
import hmac
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import time_machine
from django.core import mail
from django.utils import timezone

from governance import services
from governance.audit import Actor
from incidents.models import Incident, IncidentKind, Notification
from incidents.notifications import deliver_due, notify_role
from incidents.notifications.webhook import HEADER
from incidents.paging import page_role
from tests.factories import RegisteredModelFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def endpoint():
    """A local HTTP server answering the statuses queued in ``answers`` (then 202)."""
    received: list[dict] = []
    answers: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"headers": dict(self.headers), "body": body})
            self.send_response(answers.pop(0) if answers else 202)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v2/enqueue", received, answers
    server.shutdown()
    server.server_close()


def grant(username, role, email=""):
    services.role_grant(username=username, roles=[role], actor=Actor.system("tests"))
    from django.contrib.auth import get_user_model

    get_user_model().objects.filter(username=username).update(email=email)


def test_a_page_is_retried_through_500_and_429_and_delivered_once(endpoint, settings):
    url, received, answers = endpoint
    answers += [500, 429]
    settings.PAGING_URL = url
    settings.PAGING_ROUTING_KEYS = {"ml_lead": "rk-lead"}
    grant("lead", "ml_lead")
    page, created = notify_role(
        channel="page", role="ml_lead", subject="drift", body="b", dedup_key="k1"
    )
    assert created and page.recipients == ["lead"]
    assert notify_role(channel="page", role="ml_lead", subject="x", dedup_key="k1")[1] is False

    now = timezone.now()
    outcomes = []
    for minutes in (0, 1, 2, 3, 4):
        with time_machine.travel(now + timedelta(minutes=minutes), tick=False):
            outcomes.append(deliver_due())
    # at the second minute, the page's email fallback too (failed: the lead has no address)
    assert outcomes == [{"retry": 1}, {"retry": 1, "failed": 1}, {"sent": 1}, {}, {}]
    page.refresh_from_db()
    assert (page.status, page.attempts) == ("sent", 3)
    attempts = list(page.delivery_attempts.values_list("number", "outcome", "status_code"))
    assert attempts == [(1, "retry", 500), (2, "retry", 429), (3, "sent", 202)]
    assert len(received) == 3  # never twice once delivered
    payload = json.loads(received[-1]["body"])
    assert payload["routing_key"] == "rk-lead" and payload["event_action"] == "trigger"
    assert payload["dedup_key"] == "k1" and payload["payload"]["summary"] == "drift"


def test_backoff_is_exponential_and_a_4xx_stops(endpoint, settings):
    url, received, answers = endpoint
    answers += [503, 400]
    settings.PAGING_URL = url
    settings.PAGING_ROUTING_KEYS = {"default": "rk"}
    page, _ = notify_role(channel="page", role="oncall", subject="s", dedup_key="k2")
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        assert deliver_due() == {"retry": 1}
        page.refresh_from_db()
        assert page.next_attempt_at == start + timedelta(seconds=10)
        # the page is not due yet; its email fallback is, and nobody on call has an address
        assert deliver_due() == {"failed": 1}
    with time_machine.travel(start + timedelta(seconds=11), tick=False):
        assert deliver_due() == {"failed": 1}
    page.refresh_from_db()
    assert page.status == "failed" and "400" in page.last_error
    with time_machine.travel(start + timedelta(hours=1), tick=False):
        assert deliver_due() == {}
    assert len(received) == 2


def test_an_unreachable_endpoint_is_a_temporary_failure(settings):
    settings.PAGING_URL = "http://127.0.0.1:9/nothing"
    settings.PAGING_ROUTING_KEYS = {"default": "rk"}
    page, _ = notify_role(channel="page", role="oncall", subject="s", dedup_key="k3")
    assert deliver_due() == {"retry": 1}
    page.refresh_from_db()
    assert page.status == "pending" and "network error" in page.last_error


def test_webhook_is_signed_with_hmac_sha256(endpoint, settings):
    url, received, _ = endpoint
    settings.NOTIFICATION_WEBHOOK_URL = url
    settings.NOTIFICATION_WEBHOOK_SECRET = "s3cret"
    notify_role(channel="webhook", role="ml_lead", subject="s", body="b", dedup_key="k4")
    assert deliver_due() == {"sent": 1}
    body = received[0]["body"]
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert received[0]["headers"][HEADER] == expected


def test_email_goes_to_the_role_holders_with_an_address():
    grant("ethicist", "ethics_officer", email="ethics@example.org")
    grant("silent", "ethics_officer")
    notify_role(channel="email", role="ethics_officer", subject="fairness", dedup_key="k5")
    assert deliver_due() == {"sent": 1}
    assert mail.outbox[0].to == ["ethics@example.org"]
    assert Notification.objects.get().status == "sent"


def test_email_with_nobody_to_tell_fails_permanently():
    notify_role(channel="email", role="auditor", subject="s", dedup_key="k6")
    assert deliver_due() == {"failed": 1}


def test_a_dedup_key_longer_than_its_column_still_dedups():
    key = "incident-1-" + "x" * 300
    first, created = notify_role(channel="email", role="auditor", subject="s", dedup_key=key)
    again, created_again = notify_role(channel="email", role="auditor", subject="s", dedup_key=key)
    assert (created, created_again) == (True, False)
    assert again.pk == first.pk and Notification.objects.count() == 1


def test_a_page_without_a_routing_key_is_emailed_to_the_role_and_the_timeline_says_so(settings):
    settings.PAGING_URL = "http://127.0.0.1:9/never-called"
    settings.PAGING_ROUTING_KEYS = {}  # nobody configured a key for the Ethics Officer
    grant("ethicist", "ethics_officer", email="ethics@example.org")
    incident = Incident.objects.create(
        kind=IncidentKind.FAIRNESS,
        severity="critical",
        title="fairness alert",
        model=RegisteredModelFactory(),
        opened_by="tests",
    )
    page, _ = page_role(
        incident, role="ethics_officer", subject="fairness incident", body="act", actor="tests"
    )

    assert deliver_due() == {"failed": 1}  # the page: no routing key, nothing to retry
    assert deliver_due() == {"sent": 1}  # its fallback: an email to the same role
    assert deliver_due() == {}  # once

    page.refresh_from_db()
    assert page.status == "failed" and "no paging routing key" in page.last_error
    email = Notification.objects.get(channel="email")
    assert (email.role, email.status, email.incident_id) == ("ethics_officer", "sent", incident.pk)
    assert mail.outbox[0].to == ["ethics@example.org"]
    assert mail.outbox[0].subject == "[page not delivered] fairness incident"
    assert "no paging routing key for role 'ethics_officer'" in mail.outbox[0].body
    said = incident.events.filter(data__fallback=email.pk).get()
    assert said.message == (
        "page to ethics_officer could not be sent (no paging routing key for role "
        "'ethics_officer'); emailed ethics_officer instead"
    )


def test_a_page_that_is_retried_is_emailed_at_once_and_only_once(settings):
    settings.PAGING_URL = "http://127.0.0.1:9/nothing"
    settings.PAGING_ROUTING_KEYS = {"default": "rk"}
    grant("ethicist", "ethics_officer", email="ethics@example.org")
    notify_role(channel="page", role="ethics_officer", subject="s", dedup_key="k7")
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        assert deliver_due() == {"retry": 1}  # the paging service cannot be reached
        assert deliver_due() == {"sent": 1}  # the email does not wait for the retries
    with time_machine.travel(start + timedelta(seconds=11), tick=False):
        assert deliver_due() == {"retry": 1}  # the page is retried; no second email
    assert Notification.objects.filter(channel="email").count() == 1
