"""The prediction log: every prediction reaches the monitoring store, batched; none is lost."""

import time

import pytest
from django.conf import settings as django_settings

from serving import background, log
from tests.serving.helpers import instances, live, predict

pytestmark = pytest.mark.django_db


def test_live_predictions_are_handed_to_monitoring_ingest_with_their_features(
    mlflow_models, ci, ingested
):
    version = live(mlflow_models, seed=41)
    rows = [*instances(2)]
    sensitive = [{"district": "north"}, {"district": "south"}]
    body = predict(ci, version.model.name, rows, sensitive=sensitive).json()
    assert ingested == []  # nothing is written on the request path

    assert log.flush() == 2

    [call] = ingested
    assert call["model_name"] == version.model.name
    assert call["version"] == "1.0.0"
    assert call["source"] == "gateway"
    assert call["actor"].label == "system:serving gateway"
    first = call["records"][0]
    assert first["prediction_id"] == body["predictions"][0]["prediction_id"]
    assert {f: first[f] for f in ("f1", "f2", "f3")} == rows[0]
    assert first["score"] == body["predictions"][0]["score"]
    assert first["prediction"] == body["predictions"][0]["prediction"]
    assert first["sensitive.district"] == "north"
    assert str(first["timestamp"].tzinfo) == "UTC"


def test_requests_are_batched_per_model_and_version(mlflow_models, ci, ingested):
    version = live(mlflow_models, seed=41)
    for _ in range(5):
        predict(ci, version.model.name, instances(3))
    assert log.buffered() == 15

    log.flush()

    assert len(ingested) == 1 and len(ingested[0]["records"]) == 15
    assert log.buffered() == 0


def test_without_monitoring_ingest_predictions_go_to_disk_and_are_ingested_once_it_exists(
    mlflow_models, ci, monkeypatch, settings, tmp_path, ingested
):
    settings.VAR_DIR = tmp_path
    version = live(mlflow_models, seed=41)
    monkeypatch.setattr(log, "_ingest", lambda: None)  # the monitoring app is not there yet
    body = predict(ci, version.model.name, instances(4)).json()

    assert log.flush() == 0
    assert log.buffered() == 0
    assert log.spilled_predictions() == 4

    monkeypatch.undo()  # a later process, with monitoring.ingest installed
    monkeypatch.setattr(django_settings, "VAR_DIR", tmp_path)
    ingested_now = _install_ingest(monkeypatch)
    assert log.flush() == 4
    [call] = ingested_now
    assert [r["prediction_id"] for r in call["records"]] == [
        p["prediction_id"] for p in body["predictions"]
    ]
    assert {f: call["records"][0][f] for f in ("f1", "f2", "f3")} == instances(4)[0]
    assert log.spilled_predictions() == 0
    assert not list((tmp_path / "serving" / "unflushed").glob("*.parquet*"))


def test_a_clean_shutdown_keeps_what_the_store_could_not_take(
    mlflow_models, ci, monkeypatch, settings, tmp_path, ingested
):
    settings.VAR_DIR = tmp_path
    version = live(mlflow_models, seed=41)
    predict(ci, version.model.name, instances(3))
    import sys

    def down(**kwargs):
        raise ConnectionError("database restarting")

    monkeypatch.setattr(sys.modules["monitoring.ingest"], "predictions_ingest", down)
    log._ingest_fn = None

    log.flush(final=True)  # what atexit does

    assert log.buffered() == 0
    assert log.spilled_predictions() == 3


def _install_ingest(monkeypatch):
    import importlib.machinery
    import sys
    import types

    import pyarrow.parquet as pq

    calls = []
    module = types.ModuleType("monitoring.ingest")
    module.__spec__ = importlib.machinery.ModuleSpec("monitoring.ingest", loader=None)
    module.predictions_ingest = lambda **kwargs: calls.append(
        {**kwargs, "records": pq.read_table(kwargs["upload"]).to_pylist()}
    )
    monkeypatch.setitem(sys.modules, "monitoring.ingest", module)
    log.clear()
    return calls


def test_a_failing_store_keeps_the_records_for_the_next_flush(
    mlflow_models, ci, monkeypatch, ingested
):
    version = live(mlflow_models, seed=41)
    predict(ci, version.model.name, instances(2))
    import sys

    module = sys.modules["monitoring.ingest"]
    working = module.predictions_ingest

    def down(**kwargs):
        raise ConnectionError("database restarting")

    monkeypatch.setattr(module, "predictions_ingest", down)
    log._ingest_fn = None
    assert log.flush() == 0
    assert log.buffered() == 2

    monkeypatch.setattr(module, "predictions_ingest", working)
    log._ingest_fn = None
    assert log.flush() == 2
    assert len(ingested[0]["records"]) == 2


def test_records_the_store_refuses_are_set_aside_not_retried(
    mlflow_models, ci, monkeypatch, settings, tmp_path, ingested
):
    from registry.errors import InvalidInput

    settings.VAR_DIR = tmp_path
    version = live(mlflow_models, seed=41)
    predict(ci, version.model.name, instances(2))
    import sys

    def refuse(**kwargs):
        raise InvalidInput({"records[0].score": "bad"})

    monkeypatch.setattr(sys.modules["monitoring.ingest"], "predictions_ingest", refuse)
    log._ingest_fn = None

    assert log.flush() == 0
    assert log.buffered() == 0
    assert list((tmp_path / "serving" / "unflushed").glob("refused-*.parquet"))


@pytest.mark.django_db(transaction=True)
def test_the_background_flusher_writes_every_n_predictions(mlflow_models, ci, settings, ingested):
    settings.SERVING_LOG_FLUSH_SECONDS = 30
    settings.SERVING_LOG_BATCH_SIZE = 5
    version = live(mlflow_models, seed=41)
    predict(ci, version.model.name, instances(5))  # a full batch wakes the flusher

    deadline = time.monotonic() + 5
    while not ingested and time.monotonic() < deadline:
        time.sleep(0.02)
    settings.SERVING_LOG_FLUSH_SECONDS = 0  # let the thread end
    background.wake()

    assert [len(c["records"]) for c in ingested] == [5]


def test_sensitive_attributes_must_be_the_same_on_every_instance(mlflow_models, ci):
    version = live(mlflow_models, seed=41)
    response = predict(
        ci, version.model.name, instances(2), sensitive=[{"district": "n"}, {"age": "30"}]
    )
    assert response.status_code == 400
    assert "sensitive[1]" in response.json()["errors"]


def test_predictions_reach_the_real_monitoring_store(mlflow_models, ci, committed):
    """With the monitoring app's ingest and store: live and shadow predictions, per version."""
    pytest.importorskip("monitoring.ingest")
    store = pytest.importorskip("monitoring.store")
    from datetime import timedelta

    from django.utils import timezone

    from monitoring.models import DataBatch
    from serving import shadow
    from tests.serving.helpers import staged, warm

    v1 = live(mlflow_models, "1.0.0", seed=41)
    v2 = staged(mlflow_models, v1.model, "1.1.0", seed=42)
    warm(ci, v1.model.name)
    body = predict(
        ci, v1.model.name, instances(3), sensitive=[{"district": d} for d in "nns"]
    ).json()
    shadow.drain()

    with committed():
        assert log.flush() == 6

    assert set(DataBatch.objects.values_list("source", flat=True)) == {"gateway"}
    now = timezone.now()
    window = {"start": now - timedelta(hours=1), "end": now + timedelta(hours=1)}
    for version in (v1, v2):
        frame = store.load_window(model=v1.model, version=version, with_sensitive=True, **window)
        assert sorted(frame["prediction_id"]) == sorted(
            p["prediction_id"] for p in body["predictions"]
        )
    live_frame = store.load_window(model=v1.model, version=v1, **window)
    assert sorted(live_frame["score"]) == pytest.approx(
        sorted(p["score"] for p in body["predictions"])
    )
