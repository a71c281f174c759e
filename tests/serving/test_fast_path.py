"""The predict fast path (``serving.fast_path``, the gateway's WSGI entry): a request of a caller
the gateway already authorised is answered without Django's stack, with Django's bytes and
headers; everything else, and everything it is not sure of, is Django's answer."""

from __future__ import annotations

import json

import pytest
from django.conf import settings as django_settings
from django.core.handlers.wsgi import WSGIHandler
from django.test import override_settings

from bench._common import wsgi_post
from config import gateway as gateway_config
from governance.audit import Actor
from serving import log
from serving.fast_path import PredictFastPath
from serving.halt import halt_engage
from tests.serving.helpers import instances, live

pytestmark = pytest.mark.django_db

GATEWAY = "config.urls_gateway"
SYSTEM = Actor.system("tests")


@pytest.fixture(autouse=True)
def _connections_kept():
    """As Django's test client does: a request's end must not close the test's connection."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def gateway_stack():
    derived = gateway_config.gateway_settings(
        django_settings.INSTALLED_APPS,
        django_settings.MIDDLEWARE,
        django_settings.REST_FRAMEWORK,
        django_settings.TEMPLATES,
    )
    with override_settings(
        ROOT_URLCONF=GATEWAY,
        MIDDLEWARE=derived["MIDDLEWARE"],
        REST_FRAMEWORK=derived["REST_FRAMEWORK"],
    ):
        yield


class Counting:
    """Django's WSGI handler, counting the requests it answers."""

    def __init__(self) -> None:
        self.handler = WSGIHandler()
        self.calls = 0

    def __call__(self, environ, start_response):
        self.calls += 1
        return self.handler(environ, start_response)


def token_of(client) -> str:
    return client._credentials["HTTP_AUTHORIZATION"].split()[1]


def call(app, token: str, model: str, body, **environ) -> tuple[int, dict, bytes]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    environ = {"HTTP_AUTHORIZATION": f"Token {token}", **environ}
    status, headers, data = wsgi_post(app, f"/api/v1/predict/{model}/", raw, **environ)
    return int(status.split()[0]), dict(headers), data


def known_caller(mlflow_models, ci, seed: int):
    """A live version, the ci token, a fast path over Django and Django alone, after one
    request through the fast path's Django (the token and its decision remembered)."""
    version = live(mlflow_models, seed=seed)
    token, name = token_of(ci), version.model.name
    fast = PredictFastPath(Counting())
    assert call(fast, token, name, {"instances": instances(1)})[0] == 200
    return token, name, fast, Counting()


def without_ids(data: bytes) -> dict:
    body = json.loads(data)
    for row in body.get("predictions", []):
        assert len(row.pop("prediction_id")) == 36
    return body


def test_a_known_caller_is_served_without_django_and_answered_as_django_answers(
    mlflow_models, ci, gateway_stack
):
    version = live(mlflow_models, seed=71)
    django, token, name = Counting(), token_of(ci), version.model.name
    app = PredictFastPath(django)
    body = {"instances": instances(3)}

    first = call(app, token, name, body)  # the token and its PREDICT decision: DRF's, once
    assert django.calls == 1 and first[0] == 200
    second = call(app, token, name, body)
    assert django.calls == 1  # the fast path
    assert second[0] == 200
    assert second[1] == first[1]  # Content-Type, Allow, security headers, Content-Length...
    assert without_ids(second[2]) == without_ids(first[2])
    assert second[1]["Content-Length"] == str(len(second[2]))
    assert log.buffered() == 6  # both logged


def test_a_halt_is_answered_by_the_fast_path_with_django_s_exact_bytes(
    mlflow_models, ci, committed, gateway_stack
):
    token, name, fast, django = known_caller(mlflow_models, ci, 72)
    with committed():
        halt_engage(scope=name, reason="leak", actor=SYSTEM, automatic=True)
    calls = fast.application.calls

    by_django = call(django, token, name, {"instances": instances(1)})
    served = call(fast, token, name, {"instances": instances(1)})
    assert fast.application.calls == calls  # grants unchanged: the fast path
    assert served[0] == by_django[0] == 503
    assert served[2] == by_django[2] and json.loads(served[2])["halted"] is True
    assert served[1] == by_django[1]


def test_a_scoped_halt_refuses_on_the_fast_path_as_django_does(
    mlflow_models, ci, committed, gateway_stack
):
    token, name, fast, django = known_caller(mlflow_models, ci, 73)
    where = {"field": "f1", "op": "gt", "value": 100}
    with committed():
        halt_engage(scope=name, reason="one area", actor=SYSTEM, automatic=True, where=where)
    call(fast, token, name, {"instances": instances(1)})  # the new grants-free route, warm
    calls = fast.application.calls
    matching = {"instances": [{"f1": 500.0, "f2": 0.0, "f3": 1.0}]}

    refused = call(fast, token, name, matching)
    assert fast.application.calls == calls  # answered by the fast path
    assert refused[0] == 503 and json.loads(refused[2])["matched"] == [0]
    assert refused[2] == call(django, token, name, matching)[2]
    served = call(fast, token, name, {"instances": instances(2)})
    assert served[0] == 200 and fast.application.calls == calls


@pytest.mark.parametrize(
    "case",
    [
        "missing feature",
        "unknown token",
        "query string",
        "html accept",
        "nul byte",
        "form body",
        "deep body",
        "unknown model",
        "bad host",
        "odd space",
    ],
)
def test_what_the_fast_path_is_not_sure_of_is_django_s_answer(
    mlflow_models, ci, gateway_stack, case
):
    token, name, fast, django = known_caller(mlflow_models, ci, 74)
    calls = fast.application.calls
    body: object = {"instances": instances(1)}
    environ: dict = {}
    if case == "missing feature":
        body = {"instances": [{"f1": 1.0, "f2": 2.0}]}
    elif case == "unknown token":
        token = "x" * 64
    elif case == "query string":
        environ["QUERY_STRING"] = "a=%00"
    elif case == "html accept":
        environ["HTTP_ACCEPT"] = "text/html"
    elif case == "nul byte":
        body = b'{"instances": [{"f1": "\\u0000", "f2": 0, "f3": 0}]}'
    elif case == "form body":
        environ["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
    elif case == "deep body":
        body = {
            "instances": instances(1),
            "sensitive": [
                {"a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}
            ],
        }
    elif case == "unknown model":
        name = "no-such-model"
    elif case == "bad host":
        environ["HTTP_HOST"] = "evil.example"
    elif case == "odd space":  # a separator str.split() takes and knox's bytes split does not
        environ["HTTP_AUTHORIZATION"] = f"Token\xa0{token}"

    answered = call(fast, token, name, body, **environ)
    assert fast.application.calls == calls + 1  # Django answered, with the body put back
    expected = call(django, token, name, body, **environ)
    assert answered[0] == expected[0] != 200
    if answered[0] != 500:
        assert answered[2] == expected[2]
    if case == "missing feature":
        assert b"missing features: f3" in answered[2]


def test_a_revoked_token_is_checked_again_by_django(mlflow_models, ci, committed, gateway_stack):
    from knox.models import get_token_model

    version = live(mlflow_models, seed=75)
    token, name = token_of(ci), version.model.name
    fast = PredictFastPath(Counting())
    assert call(fast, token, name, {"instances": instances(1)})[0] == 200
    assert call(fast, token, name, {"instances": instances(1)})[0] == 200
    with committed():
        get_token_model().objects.filter(token_key=token[:15]).delete()
    calls = fast.application.calls
    assert call(fast, token, name, {"instances": instances(1)})[0] == 401
    assert fast.application.calls == calls + 1


def test_the_fast_path_stays_off_behind_middleware_it_does_not_know(mlflow_models, ci):
    version = live(mlflow_models, seed=76)  # the web service's middleware: sessions, messages
    token, name = token_of(ci), version.model.name
    fast = PredictFastPath(Counting())
    for _ in range(3):
        assert call(fast, token, name, {"instances": instances(1)})[0] == 200
    assert fast.application.calls == 3 and fast.enabled is False
