"""``Idempotency-Key`` is claimed before the view runs (issue 10, finding 6).

Concurrent requests run in real threads, each with its own database connection; the first is held
inside the view by an Event, so nothing here depends on timing.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import F
from rest_framework.test import APIClient

from governance import gates, services
from governance.api import idempotency
from governance.audit import Actor
from governance.models import Evaluation, IdempotencyRecord
from platform_core.errors import Unavailable
from tests.factories import ModelVersionFactory

pytestmark = pytest.mark.django_db(transaction=True)
SYSTEM = Actor.system("tests")
BODY = {"kind": "unit_tests", "passed": True, "summary": "12 passed"}
WAIT = 60  # seconds; only reached when the code under test is broken


@pytest.fixture
def url() -> str:
    model = services.model_register(name="hotspot", actor=SYSTEM)  # with its validation policy
    ModelVersionFactory(model=model, version="1.0.0")
    return "/api/v1/models/hotspot/versions/1.0.0/evaluations/"


@pytest.fixture
def token() -> str:
    services.role_grant(username="ci-bot", roles=["ci"], actor=SYSTEM)
    return services.token_create(username="ci-bot", actor=SYSTEM)[1]


def client_with(token: str) -> APIClient:
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def post(token: str, url: str, body=BODY, key: str = "run-7-unit-tests"):
    return client_with(token).post(url, body, format="json", HTTP_IDEMPOTENCY_KEY=key)


class HeldView:
    """Replaces ``gates.evaluation_submit``: each call reports that it is inside, then waits."""

    def __init__(self, monkeypatch, request) -> None:
        self.real = gates.evaluation_submit
        self.entered = 0
        self.signal = threading.Event()
        self.release = threading.Event()
        monkeypatch.setattr(gates, "evaluation_submit", self)
        request.addfinalizer(self.release.set)  # a failed assertion leaves no thread waiting

    def __call__(self, **kwargs):
        self.entered += 1
        self.signal.set()
        assert self.release.wait(WAIT), "the test never released the view"
        return self.real(**kwargs)


def in_thread(results: dict, name: str, done: threading.Event | None, call) -> threading.Thread:
    def run() -> None:
        try:
            results[name] = call()
        finally:
            connection.close()
            if done is not None:
                done.set()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_two_concurrent_posts_with_one_key_execute_once(monkeypatch, request, url, token):
    held = HeldView(monkeypatch, request)
    results: dict = {}
    first = in_thread(results, "first", None, lambda: post(token, url))
    assert held.signal.wait(WAIT)  # the first request holds the key, inside the view
    held.signal.clear()

    # The second either answers or enters the view too (the bug): both wake us.
    second = in_thread(results, "second", held.signal, lambda: post(token, url))
    assert held.signal.wait(WAIT)
    assert held.entered == 1, "the second request with the same key ran the view as well"
    second.join(WAIT)
    busy = results["second"]
    assert busy.status_code == 409
    assert busy.json() == {"detail": idempotency.IN_PROGRESS_DETAIL}
    assert int(busy["Retry-After"]) > 0

    other_body = post(token, url, body={**BODY, "summary": "13 passed"})
    assert other_body.status_code == 422  # the same key for a different request, even now

    held.release.set()
    first.join(WAIT)
    assert results["first"].status_code == 201, results["first"].json()
    assert Evaluation.objects.count() == 1

    replay = post(token, url)
    assert replay.status_code == 201 and replay["Idempotent-Replayed"] == "true"
    assert replay.json() == results["first"].json()
    assert held.entered == 1
    record = IdempotencyRecord.objects.get()
    assert (record.state, record.claim) == (IdempotencyRecord.DONE, "")


def test_different_keys_run_concurrently(monkeypatch, request, url, token):
    held = HeldView(monkeypatch, request)
    results: dict = {}
    first = in_thread(results, "first", None, lambda: post(token, url, key="a"))
    assert held.signal.wait(WAIT)
    held.signal.clear()
    second = in_thread(results, "second", None, lambda: post(token, url, key="b"))
    assert held.signal.wait(WAIT)  # the second got in although the first still runs
    held.release.set()
    first.join(WAIT)
    second.join(WAIT)
    assert results["first"].status_code == results["second"].status_code == 201
    assert Evaluation.objects.count() == 2


def test_an_exception_releases_the_claim_so_a_retry_runs(monkeypatch, url, token):
    real = gates.evaluation_submit
    calls = []

    def crash_once(**kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("worker lost its database connection")
        return real(**kwargs)

    monkeypatch.setattr(gates, "evaluation_submit", crash_once)
    assert post(token, url).status_code == 500
    assert not IdempotencyRecord.objects.exists()
    retry = post(token, url)
    assert retry.status_code == 201 and "Idempotent-Replayed" not in retry
    assert len(calls) == 2 and Evaluation.objects.count() == 1


def test_a_5xx_answer_releases_the_claim(monkeypatch, url, token):
    real = gates.evaluation_submit
    outcomes = iter([Unavailable("MLflow cannot be reached"), None])

    def unavailable_once(**kwargs):
        problem = next(outcomes)
        if problem is not None:
            raise problem
        return real(**kwargs)

    monkeypatch.setattr(gates, "evaluation_submit", unavailable_once)
    assert post(token, url).status_code == 503
    assert post(token, url).status_code == 201
    assert Evaluation.objects.count() == 1


def test_a_4xx_answer_is_not_kept(url, token):
    refused = post(token, url, body={"kind": "unit_tests"})
    assert refused.status_code == 400
    assert not IdempotencyRecord.objects.exists()
    assert post(token, url, body={"kind": "unit_tests"}).status_code == 400


def test_a_crashed_holders_claim_expires(monkeypatch, url, token, settings):
    """A process killed mid-request never releases its claim: it blocks until the timeout."""
    real = gates.evaluation_submit

    def killed(**kwargs):
        raise SystemExit  # as when gunicorn kills the worker

    monkeypatch.setattr(gates, "evaluation_submit", killed)
    monkeypatch.setattr(idempotency, "_release", lambda *args: None)  # it died before this
    with pytest.raises(SystemExit):
        post(token, url)
    monkeypatch.setattr(gates, "evaluation_submit", real)
    assert IdempotencyRecord.objects.get().state == IdempotencyRecord.IN_PROGRESS

    assert post(token, url).status_code == 409
    assert Evaluation.objects.count() == 0

    IdempotencyRecord.objects.update(
        claimed_at=F("claimed_at") - settings.IDEMPOTENCY_CLAIM_TIMEOUT - timedelta(seconds=1)
    )
    taken_over = post(token, url)
    assert taken_over.status_code == 201
    assert Evaluation.objects.count() == 1
    assert IdempotencyRecord.objects.get().state == IdempotencyRecord.DONE
    assert post(token, url)["Idempotent-Replayed"] == "true"
