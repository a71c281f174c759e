"""Schemathesis against the app in-process: every operation of the OpenAPI schema, 100 examples
each under ``TEST_DEPTH=deep`` (30 as every role and 10 as nobody in CI's run; derandomized: a
run sees the same examples every time), as a token holding every role and as nobody. No answer
may be a 5xx and every answer must conform to the schema (status code, content type, body).

Path parameters name the real objects of the security fixtures (a halted live model, its
incident, alert and monitor run) so the examples reach the views' code instead of stopping at
a 404; bodies, query strings and headers are fuzzed. The schema has no OpenAPI links, so there
is no stateful phase (``test_the_schema_declares_no_links`` notices when that changes).

Known failures (found by this test on main, issue 10) are listed in ``KNOWN`` and marked strict
xfail by operation: they flip to failures when fixed, and the lead removes them.
"""

from __future__ import annotations

import json
import os

import pytest
import schemathesis
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from governance import services
from tests.depth import examples
from tests.security.conftest import ROLES, SYSTEM, TARGET


@schemathesis.check
def not_a_server_error_but_a_halt(ctx, response, case):
    """A halted model's predict answers 503 by design (documented, ``halted: true``)."""
    predict = case.path.startswith("/api/v1/predict/")
    if response.status_code == 503 and predict and response.json().get("halted") is True:
        return True
    return not_a_server_error(ctx, response, case)


CHECKS = [
    not_a_server_error_but_a_halt,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Examples per operation: 100 for the deep proof (TEST_DEPTH=deep, tests/depth.py), fewer in CI's
# budget; PROOF_EXAMPLES overrides both (to explore by hand). The anonymous fuzz needs few: every
# answer is a 401 before a body, query or object is looked at.
EXAMPLES = int(os.environ.get("PROOF_EXAMPLES", examples(ci=30, deep=100)))
ANONYMOUS_EXAMPLES = int(os.environ.get("PROOF_EXAMPLES", examples(ci=10, deep=100)))

# Test item -> what this test found on main (strict xfail: each flips to a failure when fixed;
# then delete its line).
KNOWN: dict[str, str] = {}


def connection_vendor() -> str:
    from django.conf import settings as django_settings

    engine = django_settings.DATABASES["default"]["ENGINE"]
    return "postgresql" if engine.endswith("postgresql") else "sqlite"


def _schema_dict() -> dict:
    raw = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(raw, renderer_context={}))


SCHEMA = _schema_dict()
schema = schemathesis.openapi.from_dict(SCHEMA)


@pytest.fixture
def app():
    """Django's own WSGI handler, so requests run the real middleware stack.

    Django closes the database connection at the end of every request; in a test that would
    close the connection holding the test's transaction, so the two signals are unhooked here
    (as Django's test client does).
    """
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield WSGIHandler()
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def powerful_token(objects) -> str:
    """Every role, globally: the widest reach into the views."""
    services.role_grant(username="fuzzer", roles=list(ROLES), actor=SYSTEM)
    _, token = services.token_create(username="fuzzer", actor=SYSTEM)
    return token


@pytest.fixture
def served(mlflow_models) -> str:
    """A live model backed by a real MLflow artifact and not halted: predict reaches the model."""
    from tests.serving.helpers import live

    return live(mlflow_models, seed=0).model.name


def _real_objects(case, world, request) -> None:
    if world is None:  # anonymous: every answer is a 401 before any object is looked up
        return
    if case.path.startswith("/api/v1/predict/"):
        case.path_parameters = {"name": request.getfixturevalue("served")}
        return
    ids = {"/incidents/": world.incident.pk, "/alerts/": world.alert.pk, "/runs/": world.run.pk}
    real = {
        "name": TARGET,
        "version": world.version.version,
        "id": next((v for k, v in ids.items() if k in case.path), None),
        "order": world.step_order,
    }
    if case.path_parameters:
        case.path_parameters = {k: real.get(k, v) for k, v in case.path_parameters.items()}


def _settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the first failure is reported
        suppress_health_check=list(HealthCheck),
    )


def _operations() -> list[str]:
    return [f"{m.upper()} {p}" for p, ops in SCHEMA["paths"].items() for m in ops]


def _params(test: str) -> list:
    return [
        pytest.param(
            op,
            id=op,
            marks=[pytest.mark.xfail(strict=True, reason=KNOWN[f"{test}[{op}]"])]
            if f"{test}[{op}]" in KNOWN
            else [],
        )
        for op in _operations()
    ]


def _fuzz(op: str, app, world, token, request, max_examples: int) -> None:
    """Positive and negative examples of one operation, each checked as it is answered."""
    from hypothesis import given
    from hypothesis import strategies as st
    from schemathesis import GenerationMode

    method, path = op.split(" ", 1)
    operation = schema[path][method]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @_settings(max_examples)
    @given(case=cases)
    def run(case):
        _run(case, app, world, token, request)

    run()


def _run(case, app, world, token, request) -> None:
    _real_objects(case, world, request)
    headers = {"Authorization": f"Token {token}"} if token else {}
    case.call_and_validate(base_url="http://localhost", app=app, headers=headers, checks=CHECKS)


@pytest.mark.parametrize("op", _params("test_api_as_every_role"))
def test_api_as_every_role(op, app, objects, powerful_token, request):
    _fuzz(op, app, objects, powerful_token, request, EXAMPLES)


@pytest.mark.parametrize("op", _params("test_api_anonymous"))
def test_api_anonymous(op, app, db, request):
    _fuzz(op, app, None, None, request, ANONYMOUS_EXAMPLES)


_LISTS = [
    f"{path}"
    for path, ops in SCHEMA["paths"].items()
    if any(p.get("name") == "limit" for p in ops.get("get", {}).get("parameters", []))
]


def test_a_huge_page_size_is_refused_or_capped_on_every_list(objects, powerful_token):
    """Fuzzing found it on some lists; asked of every list here, so the proof is deterministic."""
    from rest_framework.test import APIClient

    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Token {powerful_token}")
    answers = {}
    for path in _LISTS:
        url = path.format(name=TARGET, version=objects.version.version)
        answers[url] = client.get(url, {"limit": str(10**24)}).status_code
    assert answers and all(code in (200, 400) for code in answers.values()), answers


def test_the_schema_declares_no_links():
    """When links appear, add a stateful test (``schema.as_state_machine()``) for them."""
    links = [
        (path, method)
        for path, ops in SCHEMA["paths"].items()
        for method, op in ops.items()
        if any("links" in r for r in op.get("responses", {}).values())
    ]
    assert links == []
