"""Every query parameter of the monitoring endpoints is parsed strictly: a 400 naming it.

``?since=nan`` used to become NaT and answer 500 (issue 10, finding 7).
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.factories import ModelVersionFactory

pytestmark = pytest.mark.django_db

BAD_TIMES = [
    "nan",
    "NaN",
    "NaT",
    "nat",
    "inf",
    "-inf",
    "Infinity",
    "now",
    "today",
    "1e9",
    "1700000000",
    "garbage",
    "2026-13-01",
    "2026-02-30",
    "2026-01-05T25:00:00Z",
    "99999-01-01",
    "10000-01-01",
    "9999-12-31",
    "2262-04-12T00:00:00Z",
    "0001-01-01",
    "1677-09-21",
    "2026-01-05T10:00:00+99:00",
    "\uff12\uff10\uff12\uff16-01-05"  # full-width digits,
    "2026-01-05\x00",
    " ",
]


@pytest.fixture(autouse=True)
def _var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path


@pytest.fixture
def predictions_url():
    version = ModelVersionFactory(feature_list=["f1"])
    return reverse("monitoring:predictions", kwargs={"name": version.model.name})


@pytest.mark.parametrize("name", ["since", "until"])
@pytest.mark.parametrize("value", BAD_TIMES)
def test_bad_times_are_400_naming_the_parameter(api_client, predictions_url, name, value):
    response = api_client("ci").get(predictions_url, {name: value})
    assert response.status_code == 400, (value, response.content)
    assert list(response.json()["errors"]) == [name]


@pytest.mark.parametrize(
    "value",
    ["2026-01-05", "2026-01-05T10:00", "2026-01-05T10:00:00.123456Z", "2026-01-05 10:00+02:00"],
)
def test_iso_times_are_accepted(api_client, predictions_url, value):
    response = api_client("ci").get(predictions_url, {"since": value})
    assert response.status_code == 200, response.content


@pytest.mark.parametrize(
    "value",
    ["0", "-1", "1001", "1e3", "1.0", "nan", " 5", "5 ", "1_0", "+5", "\u0665", "9" * 40, "x"],
)
def test_bad_limits_are_400(api_client, predictions_url, value):
    response = api_client("ci").get(predictions_url, {"limit": value})
    assert response.status_code == 400, (value, response.content)
    assert list(response.json()["errors"]) == ["limit"]


@pytest.mark.parametrize("value", ["1.0.0\x00", "x" * 500, "\n"])
def test_bad_versions_are_400(api_client, predictions_url, value):
    response = api_client("ci").get(predictions_url, {"version": value})
    assert response.status_code == 400, response.content
    assert list(response.json()["errors"]) == ["version"]


def test_unknown_parameters_are_400(api_client, predictions_url):
    response = api_client("ci").get(predictions_url, {"sinse": "2026-01-01"})
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["sinse"]


@pytest.mark.parametrize("path", ["/api/v1/monitoring/runs/", "/api/v1/alerts/"])
@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"model": "m\x00"}, "model"),
        ({"model": "m", "version": "1\x00"}, "version"),
        ({"limit": "nan"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"offset": "1e3"}, "offset"),
        ({"status": "nan"}, "status"),
        ({"bogus": "1"}, "bogus"),
    ],
)
def test_run_and_alert_lists_refuse_bad_parameters(api_client, path, params, named):
    response = api_client("ml_lead").get(path, params)
    assert response.status_code == 400, response.content
    assert named in response.json()["errors"]
