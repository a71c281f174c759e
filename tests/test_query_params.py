"""One rule per kind of query parameter (issue 11): the audit log, the monitoring data and the
list endpoints once parsed dates and numbers three ways, and disagreed on the values below."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.http import QueryDict
from django.urls import reverse

from platform_core.api.params import datetime_param, int_param
from platform_core.errors import InvalidInput
from tests.factories import ModelVersionFactory

# Values one of the former parsers accepted and another refused (or answered 500 for).
DISAGREED_TIMES = [
    "2025-03-02T12",  # hour only: accepted by the audit log, refused by monitoring
    "20250302",  # basic format: likewise
    "0001-01-01",  # accepted by the lenient platform parser, refused by both others
    "2200-06-01",  # accepted by the audit log (year <= 2200), refused by monitoring (< 2200)
    "0001-01-01T00:00+14:00",  # an OverflowError in monitoring's conversion: a 500
]
AGREED_TIMES = ["2025-03-02", "2025-03-02T12:00:00Z", "2025-03-02 12:00+02:00"]
DISAGREED_COUNTS = ["+5", " 5", "5 "]  # accepted as limits by the lists, refused by monitoring


@pytest.fixture
def endpoints(settings, tmp_path) -> dict[str, str]:
    settings.VAR_DIR = tmp_path
    version = ModelVersionFactory(feature_list=["f1"])
    return {
        "audit": "/api/v1/audit/",
        "predictions": reverse("monitoring:predictions", kwargs={"name": version.model.name}),
        "alerts": "/api/v1/alerts/",
        "models": "/api/v1/models/",
    }


@pytest.mark.django_db
@pytest.mark.parametrize("value", DISAGREED_TIMES + AGREED_TIMES)
def test_the_audit_log_and_monitoring_read_a_time_alike(api_client, endpoints, value):
    audit = api_client("auditor").get(endpoints["audit"], {"since": value})
    data = api_client("ci").get(endpoints["predictions"], {"since": value})
    assert audit.status_code == data.status_code, (value, audit.content, data.content)
    assert audit.status_code == (200 if value in AGREED_TIMES else 400)
    if audit.status_code == 400:
        assert audit.json()["errors"] == data.json()["errors"]
        assert list(audit.json()["errors"]) == ["since"]


@pytest.mark.django_db
@pytest.mark.parametrize("value", DISAGREED_COUNTS)
def test_every_list_reads_a_limit_alike(api_client, endpoints, value):
    answers = {
        "models": api_client("ml_lead").get(endpoints["models"], {"limit": value}),
        "alerts": api_client("ml_lead").get(endpoints["alerts"], {"limit": value}),
        "predictions": api_client("ci").get(endpoints["predictions"], {"limit": value}),
    }
    assert {name: r.status_code for name, r in answers.items()} == dict.fromkeys(answers, 400)
    assert all(list(r.json()["errors"]) == ["limit"] for r in answers.values())


def test_a_time_is_utc_and_an_unencoded_plus_is_an_offset():
    params = QueryDict("until=2025-03-02T14:00:00+02:00")  # '+' arrives as a space
    assert datetime_param(params, "until") == datetime(2025, 3, 2, 12, tzinfo=UTC)
    midnight = datetime(2025, 3, 2, tzinfo=UTC)
    assert datetime_param(QueryDict("until=2025-03-02"), "until") == midnight
    assert datetime_param(QueryDict(""), "until") is None


@pytest.mark.parametrize(
    ("raw", "words"), [("1970-01-01T00:30+01:00", "between 1970 and 2200"), ("nan", "ISO 8601")]
)
def test_a_refused_time_names_the_parameter_and_the_rule(raw, words):
    with pytest.raises(InvalidInput) as refused:
        datetime_param({"since": raw}, "since")
    assert list(refused.value.errors) == ["since"] and words in str(refused.value.errors)


def test_a_count_names_its_bounds():
    assert int_param({"n": "7"}, "n", minimum=1, maximum=9) == 7
    with pytest.raises(InvalidInput, match="from 1 to 9"):
        int_param({"n": "10"}, "n", minimum=1, maximum=9)
    with pytest.raises(InvalidInput, match="of at least 1"):
        int_param({"n": "0"}, "n", minimum=1)
