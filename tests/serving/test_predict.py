"""Serving the live version: scores, thresholds, feature validation and who may call it."""

import numpy as np
import pytest

from governance import services
from governance.audit import Actor
from serving import generation, loader
from tests.governance.lifecycle_helpers import new_version
from tests.serving.helpers import (
    instances,
    live,
    predict,
    pyfunc_scores,
    real_version,
    scores_with_and_without_fast_path,
)

pytestmark = pytest.mark.django_db


def test_predict_scores_with_the_live_version_and_answers_not_stale(mlflow_models, ci):
    version = live(mlflow_models, "1.0.0", seed=1)
    rows = instances(3)

    response = predict(ci, version.model.name, rows)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["model"] == version.model.name
    assert body["version"] == "1.0.0"
    assert body["stale"] is False
    assert [p["score"] for p in body["predictions"]] == pytest.approx(pyfunc_scores(version, rows))
    ids = [p["prediction_id"] for p in body["predictions"]]
    assert len(set(ids)) == 3


@pytest.mark.parametrize("threshold", [0.05, 0.5, 0.95])
def test_prediction_is_the_score_against_the_versions_decision_threshold(
    mlflow_models, ci, threshold
):
    version = live(mlflow_models, seed=1, thresholds={"decision": threshold})
    rows = [{"f1": x / 4, "f2": 0.0, "f3": 0.0} for x in range(-8, 9)]

    body = predict(ci, version.model.name, rows).json()

    for p in body["predictions"]:
        assert p["prediction"] == int(p["score"] >= threshold)
    if threshold == 0.5:
        assert {p["prediction"] for p in body["predictions"]} == {0, 1}


def test_missing_and_unexpected_features_are_refused_naming_them(mlflow_models, ci):
    version = live(mlflow_models, seed=1)
    rows = [{"f1": 1.0, "f2": 2.0, "f3": 3.0}, {"f1": 1.0, "f9": 2.0, "zz": 0}]

    response = predict(ci, version.model.name, rows)

    assert response.status_code == 400
    errors = response.json()["errors"]
    assert list(errors) == ["instances[1]"]
    assert errors["instances[1]"] == ["missing features: f2, f3", "unexpected features: f9, zz"]


@pytest.mark.parametrize(
    ("value", "said"),
    [("7", "the string '7'"), (None, "null"), (True, "a boolean"), ([1], "a list")],
)
def test_non_numeric_values_are_refused_naming_instance_and_feature(mlflow_models, ci, value, said):
    version = live(mlflow_models, seed=1)
    rows = [*instances(2), {"f1": 0.1, "f2": value, "f3": 0.3}]

    response = predict(ci, version.model.name, rows)

    assert response.status_code == 400
    assert response.json()["errors"] == {"instances[2].f2": [f"must be a number, got {said}"]}


def test_integers_are_numbers(mlflow_models, ci):
    version = live(mlflow_models, seed=1)
    response = predict(ci, version.model.name, [{"f1": 1, "f2": 0, "f3": -2}])
    assert response.status_code == 200


def test_at_most_1000_instances_per_request(mlflow_models, ci):
    version = live(mlflow_models, seed=1)
    assert predict(ci, version.model.name, instances(1000)).status_code == 200

    response = predict(ci, version.model.name, instances(1001))

    assert response.status_code == 400
    assert "at most 1000" in response.json()["errors"]["instances"][0]


@pytest.mark.parametrize(
    "body", [{}, {"instances": []}, {"instances": {"f1": 1}}, {"rows": [], "instances": [{}]}]
)
def test_malformed_bodies_are_400(mlflow_models, ci, body):
    version = live(mlflow_models, seed=1)
    response = ci.post(f"/api/v1/predict/{version.model.name}/", body, format="json")
    assert response.status_code == 400


def test_predict_needs_the_predict_permission(mlflow_models, api_client):
    version = live(mlflow_models, seed=1)
    for role in ("ml_engineer", "ml_lead", "auditor", "oncall"):
        response = predict(api_client(role), version.model.name, instances())
        assert response.status_code == 403, role
        assert "predict" in response.json()["detail"]


def test_predict_without_a_token_is_401(mlflow_models, client):
    version = live(mlflow_models, seed=1)
    response = client.post(
        f"/api/v1/predict/{version.model.name}/", {"instances": instances()}, "application/json"
    )
    assert response.status_code == 401


def test_a_per_model_grant_allows_predict_for_that_model_only(mlflow_models, api_client):
    version = live(mlflow_models, seed=1)
    other = live(mlflow_models, seed=2)
    client = api_client("ci", model=version.model.name, username="scoped-ci")

    assert predict(client, version.model.name, instances()).status_code == 200
    assert predict(client, other.model.name, instances()).status_code == 403


def test_a_token_narrowed_to_other_roles_may_not_predict(mlflow_models, api_client):
    version = live(mlflow_models, seed=1)
    services.role_grant(username="both", roles=["ci", "auditor"], actor=Actor.system("tests"))
    client = api_client(username="both", scope=["auditor"])
    assert predict(client, version.model.name, instances()).status_code == 403


def _revoke_the_grant(username: str) -> None:
    services.role_revoke(username=username, roles=["ci"], actor=Actor.system("tests"))


def _revoke_the_token(username: str) -> None:
    from knox.models import AuthToken

    key = AuthToken.objects.get(user__username=username).token_key
    services.token_revoke(key_prefix=key, actor=Actor.system("tests"))


def _deactivate_the_user(username: str) -> None:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(username=username)
    user.is_active = False
    user.save()


@pytest.mark.parametrize(
    ("withdraw", "refused"),
    [
        pytest.param(_revoke_the_grant, 403, id="grant-revoked"),
        pytest.param(_revoke_the_token, 401, id="token-revoked"),
        pytest.param(_deactivate_the_user, 401, id="user-deactivated"),
    ],
)
def test_a_withdrawn_credential_is_refused_on_the_next_request(
    mlflow_models, api_client, committed, withdraw, refused
):
    """The gateway remembers a caller between requests; a committed withdrawal still counts."""
    version = live(mlflow_models, seed=1)
    client = api_client("ci", username="withdrawn")
    assert predict(client, version.model.name, instances()).status_code == 200

    with committed():
        withdraw("withdrawn")

    assert predict(client, version.model.name, instances()).status_code == refused


def test_unknown_model_is_404(ci, db):
    response = predict(ci, "no-such-model", instances())
    assert response.status_code == 404


def test_a_model_with_no_serving_version_answers_503(mlflow_models, ci):
    version = real_version(mlflow_models, seed=1)  # still in development
    response = predict(ci, version.model.name, instances())
    assert response.status_code == 503
    assert "no version" in response.json()["detail"]


def test_a_warm_request_costs_one_generation_read_and_no_other_query(
    mlflow_models, ci, django_assert_num_queries
):
    version = live(mlflow_models, seed=1)
    predict(ci, version.model.name, instances())  # builds the route, checks the token

    # The database backend reads the generations with a query; Redis with an MGET.
    with django_assert_num_queries(0 if generation.backend().name == "redis" else 1):
        response = predict(ci, version.model.name, instances(5))

    assert response.status_code == 200


def test_an_expired_token_is_refused_even_when_remembered(mlflow_models, api_client):
    version = live(mlflow_models, seed=1)
    client = api_client("ci", username="expiring")
    assert predict(client, version.model.name, instances()).status_code == 200
    from datetime import timedelta

    import time_machine

    with time_machine.travel(timedelta(days=91), tick=False):
        assert predict(client, version.model.name, instances()).status_code == 401


def test_a_wrong_token_is_401(mlflow_models, api_client, ci):
    from rest_framework.test import APIClient

    version = live(mlflow_models, seed=1)
    predict(ci, version.model.name, instances())
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 64)
    assert predict(client, version.model.name, instances()).status_code == 401


def test_the_fast_path_agrees_with_the_pyfunc_and_can_be_turned_off(mlflow_models, ci, settings):
    version = live(mlflow_models, seed=3)
    fast, slow = scores_with_and_without_fast_path(ci, version, settings)
    assert fast == pytest.approx(slow, abs=1e-12)


def test_a_factory_version_without_a_real_artifact_cannot_serve(ci, db, settings):
    """A version whose artifact MLflow does not have gets 503 stale, not a 500."""
    version = new_version("1.0.0")
    from tests.governance.lifecycle_helpers import to_production_first

    to_production_first(version)
    response = predict(ci, version.model.name, instances())
    assert response.status_code == 503
    assert response.json()["stale"] is True


def test_a_binary_logistic_regression_is_scored_with_sklearns_own_arithmetic():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 4))
    y = (X[:, 0] + rng.normal(scale=0.3, size=300) > 0).astype(int)
    binary = LogisticRegression().fit(X, y)
    rows = rng.normal(size=(50, 4))

    scores = loader._linear_scorer(binary)(rows)

    assert np.array_equal(scores, binary.predict_proba(rows)[:, 1])  # bit for bit
    three_classes = LogisticRegression().fit(X, y + (X[:, 1] > 1))
    assert loader._linear_scorer(three_classes) is None
    assert loader._linear_scorer(make_pipeline(StandardScaler(), binary)) is None


def test_the_api_schema_documents_predict_with_its_body_and_token(api_client):
    import json

    schema = json.loads(api_client("auditor").get("/api/schema/?format=json").content)

    predict = schema["paths"]["/api/v1/predict/{name}/"]["post"]
    assert predict["summary"] == "Score instances with the live version of a model"
    assert "requestBody" in predict and "200" in predict["responses"]
    assert {"gatewayTokenAuth": []} in predict["security"]
