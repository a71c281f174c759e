"""Feature types are declared at registration (or read from the MLflow signature), not guessed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from registry import feature_types
from registry.models import ModelVersion

pytestmark = pytest.mark.django_db

URL = "/api/v1/models/hotspot/versions/"


def test_declared_types_are_stored_and_shown(ci, version_body):
    declared = {"f1": "number", "f2": "integer", "f3": "string"}
    response = ci.post(URL, version_body("1.0.0", feature_types=declared), format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["feature_types"] == declared
    assert ModelVersion.objects.get().feature_types == declared


def test_without_a_declaration_the_float_signature_makes_every_feature_a_number(ci, version_body):
    response = ci.post(URL, version_body("1.0.0"), format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["feature_types"] == dict.fromkeys(["f1", "f2", "f3"], "number")


def test_the_mlflow_signature_gives_integer_and_boolean_features(ci, version_body):
    from sklearn.linear_model import LogisticRegression

    from demo.mlflow_logging import log_sklearn_model
    from registry import mlflow_bridge

    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "f1": rng.normal(size=100),
            "f2": rng.integers(0, 5, size=100).astype("int64"),
            "f3": rng.integers(0, 2, size=100).astype(bool),
        }
    )
    model = LogisticRegression().fit(frame.astype(float), (frame["f1"] > 0).astype(int))
    logged = log_sklearn_model(
        model,
        registered_name="hotspot",  # only the model's own MLflow name may back it
        input_example=frame.head(3),
        params={},
        metrics={},
        experiment_id=mlflow_bridge.ensure_experiment(),
        run_name="typed",
    )

    response = ci.post(URL, version_body("1.0.0", mlflow_uri=logged.uri), format="json")

    assert response.status_code == 201, response.json()
    assert response.json()["feature_types"] == {"f1": "number", "f2": "integer", "f3": "boolean"}


@pytest.mark.parametrize(
    ("declared", "said"),
    [
        ({"f1": "number", "f2": "number"}, "missing features: f3"),
        ({"f1": "number", "f2": "number", "f3": "number", "f9": "number"}, "f9"),
        ({"f1": "number", "f2": "float", "f3": "number"}, "float"),
        ({"f1": "number", "f2": None, "f3": "number"}, ""),
        (["number"], ""),
        ("number", ""),
    ],
)
def test_a_bad_declaration_is_400_naming_feature_types(ci, version_body, declared, said):
    response = ci.post(URL, version_body("1.0.0", feature_types=declared), format="json")
    assert response.status_code == 400, response.json()
    errors = response.json()["errors"]
    assert list(errors) == ["feature_types"]
    assert said in str(errors["feature_types"])
    assert not ModelVersion.objects.exists()


def test_declared_errors_and_resolve():
    assert feature_types.declared_errors({"a": "integer"}, ["a"]) == []
    assert feature_types.resolve(None, ["a", "b"]) == {"a": "number", "b": "number"}
    assert feature_types.resolve({"a": "string", "b": "boolean"}, ["a", "b"]) == {
        "a": "string",
        "b": "boolean",
    }


def test_a_broken_mlmodel_file_means_no_signature(tmp_path):
    (tmp_path / "MLmodel").write_text("!!python/object/apply:os.system ['touch /tmp/pwned']\n")
    assert feature_types.from_signature(tmp_path, ["a"]) == {}
    assert feature_types.resolve(None, ["a"], tmp_path) == {"a": "number"}
