"""A client's bad values are its own 400, naming instance and feature, and never an outage."""

import math

import numpy as np
import pytest

from incidents.models import Incident
from serving import background, loader
from tests.serving.helpers import instances, live, predict

pytestmark = pytest.mark.django_db


def _refused_without_outage(response, outages, key: str) -> str:
    background.drain()
    assert response.status_code == 400, response.content
    errors = response.json()["errors"]
    assert key in errors, errors
    assert outages == []
    assert not Incident.objects.exists()
    return " ".join(errors[key])


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize("value", [1e308, -1e308, 1e300, pytest.param(10**400, id="10**400"), 1e13])
def test_huge_values_are_400_naming_instance_and_feature_and_open_no_incident(
    mlflow_models, ci, outages, settings, value, fast_path
):
    settings.SERVING_FAST_PATH = fast_path
    version = live(mlflow_models, seed=1)
    rows = [*instances(2), {"f1": 0.1, "f2": value, "f3": -value}]

    response = predict(ci, version.model.name, rows)

    message = _refused_without_outage(response, outages, "instances[2].f2")
    assert "between" in message
    assert "instances[2].f3" in response.json()["errors"]


def test_the_range_is_a_setting(mlflow_models, ci, outages, settings):
    version = live(mlflow_models, seed=1)
    settings.SERVING_MAX_ABS_FEATURE = 10.0
    response = predict(ci, version.model.name, [{"f1": 11.0, "f2": 0.0, "f3": 0.0}])
    _refused_without_outage(response, outages, "instances[0].f1")
    assert predict(ci, version.model.name, [{"f1": 9.0, "f2": 0, "f3": 0}]).status_code == 200


@pytest.mark.parametrize(
    "value",
    [
        "NaN",
        "Infinity",
        "1e308",
        {"nested": {"deeper": [1, 2]}},
        [1.0] * 5000,
        True,
        False,
    ],
)
def test_non_numbers_are_400_and_never_an_outage(mlflow_models, ci, outages, value):
    version = live(mlflow_models, seed=1)
    response = predict(ci, version.model.name, [{"f1": value, "f2": 0.0, "f3": 0.0}])
    _refused_without_outage(response, outages, "instances[0].f1")


def test_nan_and_infinity_literals_in_the_json_body_are_400(mlflow_models, ci, outages):
    version = live(mlflow_models, seed=1)
    for literal in ("NaN", "Infinity", "-Infinity"):
        body = '{"instances": [{"f1": LITERAL, "f2": 0.0, "f3": 0.0}]}'.replace("LITERAL", literal)
        response = ci.post(
            f"/api/v1/predict/{version.model.name}/", body, content_type="application/json"
        )
        assert response.status_code == 400, (literal, response.content)
    background.drain()
    assert outages == []


def _live_scoring_with(mlflow_models, ci, monkeypatch, wrap) -> str:
    """A live model, loaded, whose scorer becomes ``wrap(its real scorer)``; the model's name."""
    version = live(mlflow_models, seed=1)
    name = version.model.name
    assert predict(ci, name, instances(1)).status_code == 200
    model = loader.loaded(version.artifact_digest)
    monkeypatch.setattr(model, "score", wrap(model.score))
    return name


def test_a_model_that_fails_on_some_values_is_400_for_those_instances(
    mlflow_models, ci, outages, monkeypatch
):
    """An in-range value the model cannot score is the request's fault when other rows score."""

    def picky(real):
        def score(X, features):  # e.g. a log transform: negative f3 is outside its domain
            if (X[:, 2] < 0).any():
                raise ValueError("math domain error")
            return real(X, features)

        return score

    name = _live_scoring_with(mlflow_models, ci, monkeypatch, picky)
    rows = [*instances(2), {"f1": 0.1, "f2": 0.2, "f3": -1.0}]

    response = predict(ci, name, rows)

    message = _refused_without_outage(response, outages, "instances[2].f3")
    assert "could not score" in message
    assert list(response.json()["errors"]) == ["instances[2].f3"]


def test_a_model_returning_non_finite_scores_for_some_rows_is_400(
    mlflow_models, ci, outages, monkeypatch
):

    def overflowing(real):
        def score(X, features):
            return np.where(np.abs(X[:, 0]) > 1000, math.nan, real(X, features))

        return score

    name = _live_scoring_with(mlflow_models, ci, monkeypatch, overflowing)
    response = predict(ci, name, [*instances(1), {"f1": 5000.0, "f2": 0.0, "f3": 0.0}])

    _refused_without_outage(response, outages, "instances[1].f1")


def test_a_model_that_fails_on_valid_input_is_still_an_outage(
    mlflow_models, ci, outages, monkeypatch
):

    def broken(real):
        def score(X, features):
            raise RuntimeError("segfault in the native library")

        return score

    name = _live_scoring_with(mlflow_models, ci, monkeypatch, broken)
    response = predict(ci, name, instances(1))
    background.drain()

    assert response.status_code == 200 and response.json()["stale"] is True
    assert [o["kind"] for o in outages] == ["predict_failed"]


@pytest.mark.django_db(transaction=True)  # the hook runs in the gateway's background thread
def test_1e308_opens_no_outage_incident_and_pages_nobody(mlflow_models, api_client, settings):
    from incidents.models import IncidentEvent, Notification

    settings.SERVING_OUTAGE_HOOK = "incidents.outage.report_outage"
    settings.SERVING_FAST_PATH = False
    version = live(mlflow_models, seed=1)
    ci = api_client("ci", username="gateway-ci")
    rows = [{"f1": 1e308, "f2": -1e308, "f3": 1e308}]

    response = predict(ci, version.model.name, rows)
    background.drain()

    assert response.status_code == 400
    assert not Incident.objects.exists()
    assert not IncidentEvent.objects.exists()
    assert not Notification.objects.exists()


def test_declared_integer_and_boolean_features_are_checked_at_the_gateway(
    mlflow_models, ci, outages
):
    """What monitoring ingestion would refuse in the prediction log is refused at predict."""
    version = live(
        mlflow_models,
        seed=1,
        feature_types={"f1": "number", "f2": "integer", "f3": "boolean"},
    )
    name = version.model.name

    fraction = predict(ci, name, [{"f1": 0.1, "f2": 1.5, "f3": 1}])
    half = predict(ci, name, [{"f1": 0.1, "f2": 2, "f3": 0}, {"f1": 0.1, "f2": 2, "f3": 0.5}])
    fine = predict(ci, name, [{"f1": 0.1, "f2": 2.0, "f3": 1}])

    assert fraction.status_code == 400
    assert fraction.json()["errors"] == {"instances[0].f2": ["must be a whole number"]}
    assert half.status_code == 400
    assert list(half.json()["errors"]) == ["instances[1].f3"]
    assert fine.status_code == 200, fine.content
    background.drain()
    assert outages == []
