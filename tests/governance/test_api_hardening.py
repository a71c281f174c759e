"""Issue 10, findings 7, 9 and 13: the API refuses hostile input with a 4xx, never a 500."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from governance import services
from platform_core.api.errors import REDACTED, scrub_paths
from platform_core.api.parsers import json_depth
from platform_core.errors import DomainError
from tests.conftest import SYSTEM
from tests.factories import ModelVersionFactory, RegisteredModelFactory

pytestmark = pytest.mark.django_db


def nested(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


def nested_list(levels: int) -> str:
    return "[" * levels + "]" * levels


# --- JSON depth ---------------------------------------------------------------------------------


def test_json_depth_is_counted_without_recursion_and_ignores_brackets_in_strings():
    assert json_depth("1") == 0
    assert json_depth('{"a": [1, {"b": "[[[[{{{{"}]}') == 3
    assert json_depth('["\\"[[[", []]') == 2
    assert json_depth(nested_list(100_000)) == 100_000


@pytest.mark.parametrize(
    ("path", "roles"),
    [
        ("/api/v1/models/", ("ci",)),
        ("/api/v1/halt/", ("ml_lead",)),
        ("/api/v1/models/hotspot/versions/", ("ci",)),
        ("/api/v1/models/hotspot/versions/1.0.0/evaluations/", ("ci",)),  # pins JSONParser
        ("/api/v1/models/hotspot/predictions/", ("ci",)),  # pins JSONParser (monitoring)
        ("/api/v1/predict/hotspot/", ("ci",)),  # the gateway: its own parser and auth
    ],
)
def test_a_body_nested_3000_deep_is_a_400_naming_the_limit(api_client, path, roles, settings):
    ModelVersionFactory(model__name="hotspot", version="1.0.0")
    client = api_client(*roles)
    response = client.post(path, nested(3000), content_type="application/json")
    assert response.status_code == 400
    assert "deeper than 32 levels" in response.json()["detail"]
    response = client.post(path, nested_list(3000), content_type="application/json")
    assert response.status_code == 400


def test_the_drf_parser_refuses_deep_bodies_on_its_own():
    """A request that did not pass the middleware (e.g. built by a test factory) is checked too."""
    import io

    from rest_framework.exceptions import ParseError

    from platform_core.api.parsers import DepthLimitedJSONParser

    parser = DepthLimitedJSONParser()
    assert parser.parse(io.BytesIO(nested(32).encode()), parser_context={}) is not None
    with pytest.raises(ParseError, match="deeper than 32"):
        parser.parse(io.BytesIO(nested(33).encode()), parser_context={})


def test_a_body_within_the_limit_is_parsed_as_before(api_client, settings):
    settings.JSON_MAX_DEPTH = 4
    client = api_client("ci")
    ok = client.post("/api/v1/models/", {"name": "m1", "description": "x"}, format="json")
    assert ok.status_code == 201
    deep = client.post(
        "/api/v1/models/",
        '{"name": "m2", "description": [[[[["x"]]]]]}',
        content_type="application/json",
    )
    assert deep.status_code == 400
    assert "deeper than 4 levels" in deep.json()["detail"]


# --- throttling ---------------------------------------------------------------------------------


def test_writes_beyond_the_token_rate_answer_429_with_retry_after(api_client, settings):
    cache.clear()
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"write": "3/hour"},
    }
    first = api_client("ci", username="bot-1")
    answers = [
        first.post("/api/v1/models/", {"name": f"t{i}"}, format="json").status_code
        for i in range(4)
    ]
    assert answers == [201, 201, 201, 429]
    refused = first.post("/api/v1/models/", {"name": "t9"}, format="json")
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) >= 1
    # reads are not counted, and another token has a budget of its own
    assert first.get("/api/v1/models/").status_code == 200
    other = api_client("ci", username="bot-2")
    assert other.post("/api/v1/models/", {"name": "t5"}, format="json").status_code == 201
    cache.clear()


# --- pagination ---------------------------------------------------------------------------------


def test_a_page_larger_than_the_maximum_is_a_400_naming_limit(api_client, settings):
    settings.API_MAX_PAGE_SIZE = 3
    for i in range(5):
        RegisteredModelFactory(name=f"m{i}")
    client = api_client("ci")
    assert len(client.get("/api/v1/models/?limit=3").json()["results"]) == 3
    refused = client.get("/api/v1/models/?limit=100000")
    assert refused.status_code == 400
    assert "limit" in refused.json()["errors"]
    assert "1 to 3" in str(refused.json()["errors"]["limit"])
    # without ?limit the page is the default, never above the maximum
    assert len(client.get("/api/v1/models/").json()["results"]) == 3


LIST_ENDPOINTS = [
    "/api/v1/models/",
    "/api/v1/models/hotspot/versions/",
    "/api/v1/models/hotspot/versions/1.0.0/evaluations/",
    "/api/v1/models/hotspot/versions/1.0.0/approvals/",
    "/api/v1/models/hotspot/versions/1.0.0/history/",
    "/api/v1/audit/",
    "/api/v1/monitoring/runs/",
    "/api/v1/alerts/",
    "/api/v1/incidents/",
    "/api/v1/playbooks/",
]


@pytest.mark.parametrize("path", LIST_ENDPOINTS)
@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("limit=abc", "limit"),
        ("limit=0", "limit"),
        ("limit=-5", "limit"),
        ("limit=1e3", "limit"),
        ("limit=100000", "limit"),
        ("offset=-1", "offset"),
        ("offset=x", "offset"),
        ("offset=99999999999999999999", "offset"),
    ],
)
def test_malformed_pagination_is_a_400_naming_the_parameter(api_client, path, query, param):
    ModelVersionFactory(model__name="hotspot", version="1.0.0")
    client = api_client("ml_lead", "auditor", username="reader")
    response = client.get(f"{path}?{query}")
    assert response.status_code == 400, response.content
    assert param in response.json()["errors"]


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/api/v1/models/hotspot/versions/?stage=nonsense", "stage"),
        ("/api/v1/models/hotspot/versions/1.0.0/evaluations/?kind=nonsense", "kind"),
        ("/api/v1/incidents/?status=open,nonsense", "status"),
        ("/api/v1/alerts/?severity=nonsense", "severity"),
        ("/api/v1/monitoring/runs/?status=nonsense", "status"),
        ("/api/v1/audit/?since=yesterday", "since"),
        ("/api/v1/models/?name=%00", "name"),
        ("/api/v1/audit/?action=a%00b", "action"),
        ("/api/v1/incidents/?model=%00", "model"),
    ],
)
def test_malformed_filters_are_a_400_naming_the_parameter(api_client, path, param):
    ModelVersionFactory(model__name="hotspot", version="1.0.0")
    client = api_client("ml_lead", "auditor", username="reader")
    response = client.get(path)
    assert response.status_code == 400, response.content
    assert param in response.json()["errors"]


@pytest.mark.parametrize(
    "path", ["/api/v1/models/a%00b/", "/api/v1/models/x/versions/%00/", "/registry/%00/"]
)
def test_a_nul_byte_in_the_path_is_a_400(api_client, path):
    assert api_client("ci").get(path).status_code == 400


def test_a_valid_stage_filter_still_filters(api_client):
    ModelVersionFactory(model__name="hotspot", version="1.0.0")
    client = api_client("ci")
    assert len(client.get("/api/v1/models/hotspot/versions/?stage=development").json()["results"])
    assert not client.get("/api/v1/models/hotspot/versions/?stage=production").json()["results"]


# --- no server paths in errors --------------------------------------------------------------------


def test_scrub_paths_hides_filesystem_paths_but_keeps_api_paths(settings):
    cache_dir = str(settings.ARTIFACT_CACHE_DIR)
    assert REDACTED in scrub_paths(f"could not read {cache_dir}/ab12/model.pkl")
    assert cache_dir not in scrub_paths(f"could not read {cache_dir}/ab12/model.pkl")
    assert scrub_paths("[Errno 2] No such file: '/tmp/evil-model'") == (
        f"[Errno 2] No such file: '{REDACTED}'"
    )
    assert "/etc/shadow" not in scrub_paths("file:///etc/shadow is not allowed")
    assert (
        scrub_paths("poll GET /api/v1/monitoring/runs/7/") == "poll GET /api/v1/monitoring/runs/7/"
    )
    assert scrub_paths({"errors": {"f": ["at /var/lib/x"]}}) == {
        "errors": {"f": [f"at {REDACTED}"]}
    }


def test_an_error_message_naming_a_path_reaches_the_client_without_it(api_client, monkeypatch):
    from governance.api import views

    def broken(*args, **kwargs):
        raise DomainError("failed to open /var/lib/governance/artifact-cache/x/MLmodel")

    monkeypatch.setattr(views.selectors, "model_list", broken)
    response = api_client("ci").get("/api/v1/models/")
    assert response.status_code == 400
    assert "/var/lib" not in response.content.decode()
    assert REDACTED in response.json()["detail"]


def test_an_unhandled_exception_answers_a_fixed_500_without_its_text(monkeypatch, db):
    from governance.api import views

    def crash(*args, **kwargs):
        raise RuntimeError("boom at /work/secret/place.py")

    monkeypatch.setattr(views.selectors, "model_list", crash)
    services.role_grant(username="crash", roles=["ci"], actor=SYSTEM)
    _, token = services.token_create(username="crash", roles=None, actor=SYSTEM)
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    response = client.get("/api/v1/models/")
    assert response.status_code == 500
    assert response.json() == {
        "detail": "Internal server error. It has been logged; retrying will not help."
    }
