"""Playbook 3: when the live model cannot serve, the last cached predictions, marked stale."""

import shutil

import numpy as np
import pytest

from registry import mlflow_bridge
from registry.models import ModelVersion
from serving import cache, loader, router
from serving.models import StalePrediction
from tests.serving.helpers import instances, live, predict, promote_patch, rollback

pytestmark = pytest.mark.django_db


def restart_gateway() -> None:
    """What a new gateway process starts with: nothing in memory (the database is shared)."""
    router.clear()
    loader.clear()
    cache.clear()


@pytest.fixture
def mlflow_down(settings):
    def down():
        settings.MLFLOW_TRACKING_URI = settings.MLFLOW_REGISTRY_URI = "http://127.0.0.1:9"

    return down


def corrupt(version) -> None:
    path = mlflow_bridge.cache_path(version.artifact_digest)
    pickled = next(p for p in path.rglob("*.pkl"))
    pickled.write_bytes(b"not a model any more")


def test_a_corrupted_artifact_with_mlflow_unreachable_serves_cached_predictions_as_stale(
    mlflow_models, ci, mlflow_down, outages
):
    version = live(mlflow_models, seed=11)
    name = version.model.name
    rows = instances(4)
    fresh = predict(ci, name, rows).json()
    cache.flush()  # the background flusher's job: the shared copy other processes read

    corrupt(version)
    mlflow_down()
    restart_gateway()
    response = predict(ci, name, rows)

    assert response.status_code == 200
    body = response.json()
    assert body["stale"] is True
    assert body["version"] == "1.0.0"
    assert [p["score"] for p in body["predictions"]] == [p["score"] for p in fresh["predictions"]]
    assert [p["prediction_id"] for p in body["predictions"]] == [
        p["prediction_id"] for p in fresh["predictions"]
    ]
    from serving import background

    background.drain()
    assert [(o["model"], o["version"], o["kind"]) for o in outages] == [
        (name, "1.0.0", "digest_mismatch")
    ]
    assert "digest" in outages[0]["detail"]


def test_an_instance_with_no_cached_prediction_gets_503_stale(mlflow_models, ci, mlflow_down):
    version = live(mlflow_models, seed=11)
    name = version.model.name
    predict(ci, name, instances(2))
    shutil.rmtree(mlflow_bridge.cache_path(version.artifact_digest))
    mlflow_down()
    router.clear()
    loader.clear()

    response = predict(ci, name, [*instances(2), {"f1": 9.0, "f2": 9.0, "f3": 9.0}])

    assert response.status_code == 503
    assert response.json()["stale"] is True
    assert "instance(s) 2" in response.json()["detail"]
    assert "predictions" not in response.json()


def test_a_deleted_artifact_is_fetched_again_from_mlflow(mlflow_models, ci):
    version = live(mlflow_models, seed=11)
    shutil.rmtree(mlflow_bridge.cache_path(version.artifact_digest))
    restart_gateway()

    response = predict(ci, version.model.name, instances())

    assert response.status_code == 200
    assert response.json()["stale"] is False
    assert mlflow_bridge.cache_path(version.artifact_digest).is_dir()


def test_a_tampered_artifact_is_moved_aside_and_fetched_again(mlflow_models, ci):
    version = live(mlflow_models, seed=11)
    corrupt(version)
    restart_gateway()

    response = predict(ci, version.model.name, instances())

    assert response.status_code == 200 and response.json()["stale"] is False
    path = mlflow_bridge.cache_path(version.artifact_digest)
    assert mlflow_bridge.directory_digest(path) == version.artifact_digest
    assert list(path.parent.glob(path.name + ".tampered-*"))


def test_a_tampered_artifact_never_loads(mlflow_models, mlflow_down):
    version = live(mlflow_models, seed=11)
    corrupt(version)
    mlflow_down()
    # read as the router reads it: the stage travels with the version (it is in production)
    ref = router._version_ref(ModelVersion.objects.get(pk=version.pk)).artifact

    with pytest.raises(loader.ArtifactError) as refused:
        loader.load(ref)

    assert refused.value.kind == "digest_mismatch"
    assert loader.loaded(version.artifact_digest) is None


def test_a_predict_that_raises_falls_back_to_the_cache_and_reports_once(
    mlflow_models, ci, monkeypatch, outages
):
    version = live(mlflow_models, seed=11)
    name = version.model.name
    rows = instances(2)
    fresh = predict(ci, name, rows).json()
    model = loader.loaded(version.artifact_digest)

    def broken(X, features):
        raise MemoryError("model server out of memory")

    monkeypatch.setattr(model, "score", broken)
    first = predict(ci, name, rows)
    second = predict(ci, name, rows[:1])

    assert first.status_code == second.status_code == 200
    assert first.json()["stale"] is True
    assert first.json()["predictions"][0]["score"] == fresh["predictions"][0]["score"]
    from serving import background

    background.drain()
    assert [o["kind"] for o in outages] == ["predict_failed"]
    assert "out of memory" in outages[0]["detail"]


def test_the_model_serves_again_once_its_artifact_is_back(mlflow_models, ci, mlflow_down, settings):
    settings.SERVING_LOAD_RETRY_SECONDS = 0
    version = live(mlflow_models, seed=11)
    name = version.model.name
    predict(ci, name, instances())
    path = mlflow_bridge.cache_path(version.artifact_digest)
    backup = path.with_name("backup")
    shutil.copytree(path, backup)
    corrupt(version)
    original = (settings.MLFLOW_TRACKING_URI, settings.MLFLOW_REGISTRY_URI)
    mlflow_down()
    restart_gateway()
    assert predict(ci, name, instances()).json()["stale"] is True

    settings.MLFLOW_TRACKING_URI, settings.MLFLOW_REGISTRY_URI = original
    response = predict(ci, name, instances())

    assert response.json()["stale"] is False
    shutil.rmtree(backup)


def test_cached_predictions_are_shared_with_other_processes_through_the_database(mlflow_models, ci):
    version = live(mlflow_models, seed=11)
    rows = instances(3)
    predict(ci, version.model.name, rows)

    assert cache.flush() == 3
    cache.clear()  # another process: nothing in its LRU

    X = np.array([[r["f1"], r["f2"], r["f3"]] for r in rows])
    found = cache.lookup(version.model.name, ("f1", "f2", "f3"), X)
    assert [e.version for e in found] == ["1.0.0"] * 3
    assert StalePrediction.objects.count() == 3


def test_the_instance_key_ignores_feature_order_and_int_or_float():
    a = cache.instance_key(("f1", "f2"), [1, 2.5])
    b = cache.instance_key(("f2", "f1"), [2.5, 1.0])
    assert a == b


def test_the_in_process_cache_is_bounded(mlflow_models, ci, settings, cold_gateway):
    settings.SERVING_STALE_CACHE_SIZE = 5
    version = live(mlflow_models, seed=11)
    predict(ci, version.model.name, instances(8))
    cache._absorb()
    assert len(cold_gateway.answers.lru) == 5


def test_predictions_of_a_rolled_back_version_are_never_served_stale(
    mlflow_models, ci, mlflow_down, committed
):
    v1 = live(mlflow_models, "1.0.0", seed=11)
    name = v1.model.name
    rows = instances(2)
    with committed():
        v2 = promote_patch(mlflow_models, v1.model, "1.0.1", seed=12)
    assert predict(ci, name, rows).json()["version"] == "1.0.1"  # cached: v2's predictions
    cache.flush()
    with committed():
        rollback(v2)
    corrupt(v1)
    mlflow_down()
    restart_gateway()

    response = predict(ci, name, rows)

    assert response.status_code == 503  # v2 was rolled back: its answers are not deployable
    assert response.json()["stale"] is True


def test_serving_does_no_per_row_cache_work_until_the_cache_is_read(
    mlflow_models, ci, cold_gateway
):
    version = live(mlflow_models, seed=11)
    predict(ci, version.model.name, instances(4))

    assert len(cold_gateway.answers.lru) == 0  # the request only noted its arrays

    X = np.array([[r["f1"], r["f2"], r["f3"]] for r in instances(4)])
    found = cache.lookup(version.model.name, ("f1", "f2", "f3"), X)
    assert [e.version for e in found] == ["1.0.0"] * 4
    assert len(cold_gateway.answers.lru) == 4


def test_the_shared_copy_gets_new_or_changed_answers_only(mlflow_models, ci):
    version = live(mlflow_models, seed=11)
    name = version.model.name
    predict(ci, name, instances(3))
    predict(ci, name, instances(3))  # the same instances, the same answers

    assert cache.flush() == 3
    predict(ci, name, instances(3))
    assert cache.flush() == 0  # the shared copy already has these answers
    assert StalePrediction.objects.count() == 3


def test_each_flush_offers_at_most_the_newest_rows_to_the_shared_copy(mlflow_models, ci, settings):
    settings.SERVING_STALE_STORE_MAX_PER_FLUSH = 2
    version = live(mlflow_models, seed=11)
    name = version.model.name
    first = predict(ci, name, instances(2, start=0.0)).json()
    newest = predict(ci, name, instances(2, start=5.0)).json()

    assert cache.flush() == 2

    stored = set(StalePrediction.objects.values_list("prediction_id", flat=True))
    assert stored == {p["prediction_id"] for p in newest["predictions"]}
    assert not stored & {p["prediction_id"] for p in first["predictions"]}
