"""End to end on PostgreSQL and Redis: a page delivered by a real worker through a flaky endpoint.

A local HTTP server stands in for the paging service (PagerDuty Events API v2): it answers the
Ethics Officer's page 500, 500, 429 and then 202. A critical alert committed in this process
pages the Ethics Officer; a real worker delivers the outbox with a 1 s backoff
(``NOTIFICATION_BACKOFF_SECONDS``). The page reaches the server exactly once after it
recovers, and every attempt is recorded.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from governance import services
from governance.audit import Actor
from incidents.alert_response import route_alert
from incidents.models import Incident, Notification
from tests.incidents.helpers import alert_on, live_single
from tests.incidents.test_worker_e2e import Workers, wait_for

# Fixtures: real enqueues (not the package's recording stand-in) and real workers.
from tests.incidents.test_worker_e2e import enqueued as enqueued
from tests.incidents.test_worker_e2e import workers as workers

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


class PagingServer:
    """Answers the Ethics Officer's trigger pages from ``answers`` (then 202), others 202."""

    def __init__(self, answers: list[int]):
        self.answers = list(answers)
        self.received: list[dict] = []  # every POST: role, status answered, body
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                details = body.get("payload", {}).get("custom_details", {})
                role = details.get("role")
                with server.lock:
                    ethics = role == "ethics_officer" and body.get("event_action") == "trigger"
                    status = server.answers.pop(0) if ethics and server.answers else 202
                    server.received.append({"role": role, "status": status, "body": body})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status": "success"}' if status == 202 else b"{}")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/v2/enqueue"

    def pages(self, role: str) -> list[dict]:
        with self.lock:
            return [r for r in self.received if r["role"] == role]


@pytest.fixture
def paging() -> Iterator[PagingServer]:
    server = PagingServer([500, 500, 429])
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def test_a_critical_page_survives_500_and_429_and_is_delivered_once_by_a_real_worker(
    workers: Workers, paging: PagingServer, settings
):
    settings.PAGING_URL = paging.url
    settings.PAGING_ROUTING_KEYS = {"ethics_officer": "rk-ethics", "default": "rk-default"}
    services.role_grant(username="ethicist", roles=["ethics_officer"], actor=Actor.system("t"))
    version = live_single()
    workers.start(
        PAGING_URL=paging.url,
        PAGING_ROUTING_KEYS="ethics_officer=rk-ethics,default=rk-default",
        NOTIFICATION_BACKOFF_SECONDS="1",
    )

    routed = route_alert(alert_on(version, "fairness", "critical"))
    incident = Incident.objects.get(pk=routed["incident"])
    page = Notification.objects.get(dedup_key=f"incident-{incident.pk}-page-ethics_officer")

    wait_for(
        lambda: Notification.objects.filter(pk=page.pk).exclude(status="pending").exists(),
        timeout=40,
        what="the page to be delivered",
        workers=workers,
    )
    time.sleep(3)  # longer than the next backoff: a second delivery would have happened by now
    page.refresh_from_db()
    assert (page.status, page.attempts) == ("sent", 4)
    attempts = list(page.delivery_attempts.order_by("number").values_list("outcome", "status_code"))
    assert attempts == [("retry", 500), ("retry", 500), ("retry", 429), ("sent", 202)]
    times = list(page.delivery_attempts.order_by("number").values_list("at", flat=True))
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert all(gap >= 0.9 for gap in gaps), gaps  # backed off (1 s, 2 s, 4 s), not hammered

    received = paging.pages("ethics_officer")
    assert [r["status"] for r in received] == [500, 500, 429, 202]  # exactly one success
    payload = received[-1]["body"]
    assert payload["routing_key"] == "rk-ethics" and payload["event_action"] == "trigger"
    assert payload["dedup_key"] == f"incident-{incident.pk}"
    assert payload["payload"]["severity"] == "critical"
    assert "ethicist" in payload["payload"]["custom_details"]["recipients"]
