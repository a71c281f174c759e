"""ONNX and skops artifacts served through the same gateway, without deserializing code."""

import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from registry import mlflow_bridge
from registry.models import ModelVersion
from serving import loader, router
from serving.standby import warm_standby_refresh
from tests.governance.lifecycle_helpers import (
    person,
    sign_promotion,
    step,
    to_production_first,
    to_staging,
)
from tests.serving.helpers import (
    FEATURES,
    format_version,
    instances,
    live,
    predict,
    rollback,
    scores_with_and_without_fast_path,
    shadowed,
)

pytestmark = pytest.mark.django_db
FORMATS = ["onnx", "skops"]


class Tweaked(LogisticRegression):
    """An estimator skops does not know: loading it would import and build this class."""


def sklearn_scores(estimator, rows: list[dict]) -> list[float]:
    return estimator.predict_proba(pd.DataFrame(rows, columns=FEATURES))[:, 1].tolist()


def live_format(fmt: str, version: str = "1.0.0", *, seed: int, **kwargs):
    v, estimator = format_version(fmt, version, seed=seed, **kwargs)
    to_production_first(v)
    return v, estimator


def promote(fmt: str, model, version: str, *, seed: int):
    v, estimator = format_version(fmt, version, model=model, seed=seed)
    to_staging(v)
    sign_promotion(v)
    step(v, "promote", actor=person("ci"))
    return v, estimator


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_version_serves_the_probabilities_of_the_sklearn_model_it_came_from(fmt, ci):
    version, estimator = live_format(fmt, seed=41, thresholds={"decision": 0.4})
    rows = instances(25, start=-1.2)

    response = predict(ci, version.model.name, rows)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["version"] == "1.0.0" and body["stale"] is False
    scores = [p["score"] for p in body["predictions"]]
    assert scores == pytest.approx(sklearn_scores(estimator, rows), abs=1e-6, rel=0)
    assert [p["prediction"] for p in body["predictions"]] == [int(s >= 0.4) for s in scores]
    assert {p["prediction"] for p in body["predictions"]} == {0, 1}
    model = loader.loaded(version.artifact_digest)
    assert model.format == fmt and model.pyfunc is None  # never through MLflow's pyfunc (pickle)


@pytest.mark.parametrize("fmt", FORMATS)
def test_features_are_checked_by_name_for_every_format(fmt, ci):
    version, _ = live_format(fmt, seed=41)
    rows = [{"f1": 1.0, "f2": 2.0, "f3": 3.0}, {"f1": 1.0, "f9": 2.0}]

    response = predict(ci, version.model.name, rows)

    assert response.status_code == 400
    assert response.json()["errors"] == {
        "instances[1]": ["missing features: f2, f3", "unexpected features: f9"]
    }


def test_the_skops_fast_path_equals_the_estimators_own_answers(ci, settings):
    version, _ = live_format("skops", seed=42)
    fast, slow = scores_with_and_without_fast_path(ci, version, settings)
    assert fast == pytest.approx(slow, abs=1e-12)


def test_a_version_whose_signature_names_other_features_is_refused(ci):
    version, _ = live_format("onnx", seed=41, feature_list=["f1", "f2", "other"])

    with pytest.raises(loader.ArtifactError) as refused:
        loader.load(router._version_ref(ModelVersion.objects.get(pk=version.pk)).artifact)

    assert refused.value.kind == "load_failed"
    assert "f1, f2, f3" in refused.value.detail and "f1, f2, other" in refused.value.detail


def test_hot_swap_from_a_pickle_to_onnx_to_skops_and_back(mlflow_models, ci, committed):
    v1 = live(mlflow_models, "1.0.0", seed=43)
    rows = instances(5, start=-0.5)
    assert predict(ci, v1.model.name, rows).json()["version"] == "1.0.0"

    with committed():
        v2, onnx_model = promote("onnx", v1.model, "1.0.1", seed=44)
    onnx_body = predict(ci, v1.model.name, rows).json()
    with committed():
        v3, skops_model = promote("skops", v1.model, "1.0.2", seed=45)
    skops_body = predict(ci, v1.model.name, rows).json()
    with committed():
        rollback(v3)
    back = predict(ci, v1.model.name, rows).json()

    assert onnx_body["version"] == "1.0.1" and skops_body["version"] == "1.0.2"
    assert [p["score"] for p in onnx_body["predictions"]] == pytest.approx(
        sklearn_scores(onnx_model, rows), abs=1e-6
    )
    assert [p["score"] for p in skops_body["predictions"]] == pytest.approx(
        sklearn_scores(skops_model, rows), abs=1e-6
    )
    assert back["version"] == "1.0.1" and back["stale"] is False
    assert loader.loaded(v2.artifact_digest).format == "onnx"


def test_a_skops_staging_version_shadows_an_onnx_live_one(ci, ingested):
    v1, _ = live_format("onnx", seed=46)
    v2, skops_model = format_version("skops", "1.1.0", model=v1.model, seed=47)
    to_staging(v2)
    rows = instances(4)
    body, by_version = shadowed(ci, v1.model.name, rows, ingested)

    assert body["version"] == "1.0.0"
    records = by_version["1.1.0"]["records"]
    assert [r["prediction_id"] for r in records] == [
        p["prediction_id"] for p in body["predictions"]
    ]
    assert [r["score"] for r in records] == pytest.approx(sklearn_scores(skops_model, rows))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_tampered_artifact_is_fetched_again_then_served(fmt, ci):
    version, _ = live_format(fmt, seed=48)
    path = mlflow_bridge.cache_path(version.artifact_digest)
    model_file = next(p for p in path.iterdir() if p.suffix in {".onnx", ".skops"})
    model_file.write_bytes(b"not a model any more")

    response = predict(ci, version.model.name, instances(3))

    assert response.status_code == 200 and response.json()["stale"] is False
    assert mlflow_bridge.directory_digest(path) == version.artifact_digest
    assert list(path.parent.glob(path.name + ".tampered-*"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_unloadable_artifact_with_mlflow_down_serves_the_stale_cache(fmt, ci, settings):
    version, _ = live_format(fmt, seed=49)
    rows = instances(3)
    fresh = predict(ci, version.model.name, rows).json()
    path = mlflow_bridge.cache_path(version.artifact_digest)
    next(p for p in path.iterdir() if p.suffix in {".onnx", ".skops"}).write_bytes(b"broken")
    settings.MLFLOW_TRACKING_URI = settings.MLFLOW_REGISTRY_URI = "http://127.0.0.1:9"
    router.clear()
    loader.clear()

    response = predict(ci, version.model.name, rows)

    assert response.status_code == 200
    body = response.json()
    assert body["stale"] is True
    assert [p["score"] for p in body["predictions"]] == [p["score"] for p in fresh["predictions"]]


def test_warm_standby_verifies_onnx_and_skops_versions(ci, committed):
    v1, _ = live_format("onnx", seed=50)
    with committed():
        promote("skops", v1.model, "1.0.1", seed=51)
    shutil.rmtree(mlflow_bridge.cache_path(v1.artifact_digest))

    report = warm_standby_refresh(model_id=v1.model_id)

    assert [(r["version"], r["ok"]) for r in report] == [("1.0.0", True)]
    assert mlflow_bridge.directory_digest(mlflow_bridge.cache_path(v1.artifact_digest)) == (
        v1.artifact_digest
    )


# --- skops trusted types ------------------------------------------------------------------------


def test_a_skops_artifact_holding_an_untrusted_type_is_refused_naming_it(ci, outages):
    version, _ = live_format("skops", seed=52, estimator=Tweaked())
    type_name = f"{__name__}.Tweaked"

    with pytest.raises(loader.ArtifactError) as refused:
        loader.load(router._version_ref(ModelVersion.objects.get(pk=version.pk)).artifact)
    response = predict(ci, version.model.name, instances(1))

    assert refused.value.kind == "untrusted_types"
    assert type_name in refused.value.detail  # though the artifact itself declares it trusted
    assert (
        type_name
        in loader.read_mlmodel(mlflow_bridge.cache_path(version.artifact_digest))["flavors"][
            "sklearn"
        ]["skops_trusted_types"]
    )
    assert "SERVING_SKOPS_TRUSTED_TYPES" in refused.value.detail
    assert response.status_code == 503  # nothing cached: never served by the untrusted class
    assert loader.loaded(version.artifact_digest) is None


def test_a_type_the_setting_trusts_is_loaded(ci, settings):
    version, estimator = live_format("skops", seed=52, estimator=Tweaked())
    settings.SERVING_SKOPS_TRUSTED_TYPES = [f"{__name__}.Tweaked"]
    rows = instances(3)

    response = predict(ci, version.model.name, rows)

    assert response.status_code == 200, response.content
    scores = [p["score"] for p in response.json()["predictions"]]
    assert scores == pytest.approx(sklearn_scores(estimator, rows), abs=1e-6)


# --- only validated versions are loaded ---------------------------------------------------------


@pytest.mark.parametrize("walk", ["development", "validation"])
def test_a_version_that_has_not_passed_validation_is_never_loaded(walk, mlflow_models):
    from tests.governance.lifecycle_helpers import to_validation
    from tests.serving.helpers import real_version

    version = real_version(mlflow_models, seed=53)
    if walk == "validation":
        to_validation(version)
    version = ModelVersion.objects.get(pk=version.pk)  # read as the router reads it
    path = mlflow_bridge.cache_path(version.artifact_digest)
    shutil.rmtree(path)
    ref = router._version_ref(version).artifact

    for load in (loader.load, loader.load_verified):
        with pytest.raises(loader.ArtifactError) as refused:
            load(ref)
        assert refused.value.kind == "not_validated"
        assert f"stage {walk}" in refused.value.detail

    assert loader.loaded(version.artifact_digest) is None
    assert not path.exists()  # refused before the artifact was even fetched


def test_a_reference_without_a_stage_is_refused(mlflow_models):
    version = ModelVersion.objects.get(pk=live(mlflow_models, seed=53).pk)
    ref = router._version_ref(version).artifact
    assert loader.load(ref).digest == version.artifact_digest  # in production: served

    from dataclasses import replace

    with pytest.raises(loader.ArtifactError) as refused:
        loader.load(replace(ref, stage=None))  # even with the artifact already in memory
    assert refused.value.kind == "not_validated"


# --- formats and the artifact policy ------------------------------------------------------------


def test_artifact_format_and_whether_it_is_executable():
    onnx, _ = format_version("onnx", seed=54)
    skops, _ = format_version("skops", "1.0.1", model=onnx.model, seed=54)
    pickled, _ = format_version("cloudpickle", "1.0.2", model=onnx.model, seed=54)

    found = {
        v.version: loader.artifact_format(mlflow_bridge.cache_path(v.artifact_digest))
        for v in (onnx, skops, pickled)
    }

    assert found == {"1.0.0": "onnx", "1.0.1": "skops", "1.0.2": "cloudpickle"}
    assert [loader.is_executable(f) for f in loader.FORMATS] == [False, False, True, True, True]


def _mlmodel(tmp_path, text: str):
    (tmp_path / "MLmodel").write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("mlmodel", "fmt"),
    [
        ("flavors:\n  sklearn: {pickled_model: model.pkl}\n", "pickle"),
        (
            "flavors:\n  python_function: {loader_module: mlflow.pyfunc.model}\n"
            "  onnx: {data: model.onnx}\n",
            "python_function",  # an onnx flavour whose pyfunc loads pickled Python: code
        ),
        (
            "flavors:\n  sklearn: {pickled_model: model.skops, serialization_format: skops,"
            " code: code}\n",
            "python_function",  # skops with code paths that MLflow would import: code
        ),
        ("flavors:\n  python_function: {loader_module: my_loader}\n", "python_function"),
    ],
)
def test_a_flavour_is_taken_at_its_word_only_when_it_brings_no_code(tmp_path, mlmodel, fmt):
    assert loader.artifact_format(_mlmodel(tmp_path, mlmodel)) == fmt


def test_an_mlmodel_with_a_python_tag_is_refused_not_run(tmp_path):
    path = _mlmodel(tmp_path, "flavors: !!python/object/apply:os.system ['touch pwned']\n")

    with pytest.raises(loader.ArtifactError) as refused:
        loader.artifact_format(path)

    assert refused.value.kind == "load_failed"
    assert not (tmp_path / "pwned").exists()


# --- ONNX graphs the converters produce ---------------------------------------------------------


def _onnx_artifact(tmp_path, converted, features=FEATURES):
    (tmp_path / "model.onnx").write_bytes(converted.SerializeToString())
    (tmp_path / "MLmodel").write_text(
        "flavors:\n  onnx: {data: model.onnx}\n"
        "  python_function: {loader_module: mlflow.onnx, data: model.onnx}\n"
    )
    ref = loader.ArtifactRef(
        digest="sha256:test", mlflow_name="x", mlflow_version="1", features=tuple(features)
    )
    return loader._load_onnx(ref, tmp_path, loader.read_mlmodel(tmp_path))


@pytest.mark.parametrize(
    ("dtype", "zipmap"), [(np.float32, True), (np.float32, False), (np.float64, False)]
)
def test_float_and_zipmap_outputs_give_the_positive_class_probability(tmp_path, dtype, zipmap):
    from skl2onnx import to_onnx

    from tests.serving.helpers import fitted

    estimator, frame = fitted(55)
    converted = to_onnx(
        estimator, frame.to_numpy(dtype), options={id(estimator): {"zipmap": zipmap}}
    )
    model = _onnx_artifact(tmp_path, converted)
    X = np.random.default_rng(1).normal(size=(30, 3))

    scores = model.score(X, tuple(FEATURES))

    expected = estimator.predict_proba(pd.DataFrame(X, columns=FEATURES))[:, 1]
    assert np.allclose(scores, expected, rtol=0, atol=1e-6)


def test_an_onnx_model_with_one_input_per_feature_is_fed_by_name(tmp_path):
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline

    from tests.serving.helpers import fitted

    order = ["f3", "f1", "f2"]  # not the version's order: each input is named
    pipeline, _ = fitted(
        56, make_pipeline(ColumnTransformer([("all", "passthrough", order)]), LogisticRegression())
    )
    converted = convert_sklearn(
        pipeline,
        initial_types=[(name, DoubleTensorType([None, 1])) for name in order],
        options={id(pipeline.steps[-1][1]): {"zipmap": False}},
    )
    model = _onnx_artifact(tmp_path, converted)
    X = np.random.default_rng(2).normal(size=(10, 3))  # f1, f2, f3: the version's order

    scores = model.score(X, tuple(FEATURES))

    expected = pipeline.predict_proba(pd.DataFrame(X, columns=FEATURES))[:, 1]
    assert np.allclose(scores, expected, rtol=0, atol=1e-9)


def test_an_executable_format_is_refused_where_the_policy_allows_none(mlflow_models):
    """The hook an artifact policy sets (``ArtifactRef.allow_executable``), before any load."""
    from dataclasses import replace

    pickled = ModelVersion.objects.get(pk=live(mlflow_models, seed=57).pk)
    onnx, _ = live_format("onnx", "1.0.0", seed=57)
    onnx = ModelVersion.objects.get(pk=onnx.pk)
    pickled_ref = replace(router._version_ref(pickled).artifact, allow_executable=False)
    onnx_ref = replace(router._version_ref(onnx).artifact, allow_executable=False)

    with pytest.raises(loader.ArtifactError) as refused:
        loader.load(pickled_ref)
    assert refused.value.kind == "policy_refused" and "cloudpickle" in refused.value.detail
    assert loader.load(onnx_ref).format == "onnx"

    loaded = loader.load(replace(pickled_ref, allow_executable=True))  # in memory now...
    assert loaded.format == "cloudpickle"
    with pytest.raises(loader.ArtifactError):  # ...and still refused once the policy says so
        loader.load(pickled_ref)


def test_a_model_whose_artifact_policy_forbids_executables_is_not_served_from_a_pickle(
    mlflow_models, ci, api_client, committed
):
    """The ML Lead's per-model policy reaches the gateway: the route carries it to the loader,
    and changing it reroutes at commit, so even a pickle already in memory stops serving."""
    v1 = live(mlflow_models, "1.0.0", seed=58)
    name = v1.model.name
    lead = api_client("ml_lead", username="policy-lead", model=name)
    policy = f"/api/v1/models/{name}/artifact-policy/"
    rows = instances(3, start=0.25)
    assert predict(ci, name, rows).json()["version"] == "1.0.0"  # cloudpickle, allowed
    assert router.route_for(name).live.artifact.allow_executable is True

    with committed():
        forbid = lead.put(policy, {"allow_executable": False, "reason": "no pickles"}, "json")
    assert forbid.status_code == 200
    refused = predict(ci, name, instances(3, start=5.0))  # answered by no cached prediction

    assert router.route_for(name).live.artifact.allow_executable is False
    assert refused.status_code == 503 and "policy_refused" in refused.json()["detail"]
    with pytest.raises(loader.ArtifactError) as direct:  # the loader itself, not only the route
        loader.load(router._version_ref(ModelVersion.objects.get(pk=v1.pk)).artifact)
    assert direct.value.kind == "policy_refused"

    with committed():
        allow = lead.put(policy, {"allow_executable": True, "reason": "reviewed"}, "json")
    assert allow.status_code == 200
    assert predict(ci, name, rows).json()["stale"] is False
