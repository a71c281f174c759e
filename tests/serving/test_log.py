"""The prediction log: gateways spool every prediction, a worker ingests the spool; none is lost."""

import io
import os
import sys
import time
from pathlib import Path

import pytest

from platform_core.errors import InvalidInput
from serving import background, gateway, log, tasks
from tests.serving.helpers import instances, live, log_to_store, predict

pytestmark = pytest.mark.django_db


def _store(fn) -> None:
    """Replace the gateway's (stand-in) monitoring ingestion."""
    gateway.current().ingest = fn


def _down(**kwargs):
    raise ConnectionError("database restarting")


def test_live_predictions_are_spooled_by_the_gateway_and_ingested_by_the_worker(
    mlflow_models, ci, ingested, enqueued
):
    version = live(mlflow_models, seed=41)
    rows = [*instances(2)]
    sensitive = [{"district": "north"}, {"district": "south"}]
    body = predict(ci, version.model.name, rows, sensitive=sensitive).json()
    assert ingested == []  # nothing is written on the request path

    assert log.flush() == 2
    assert ingested == []  # the gateway only writes the spool ...
    assert log.spilled_predictions() == 2
    assert enqueued == [("ingest", 0)]  # ... and tells the workers

    assert log.ingest_spooled() == 2

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
    assert log.spilled_predictions() == 0
    assert not list(log.spool_dir().iterdir())


def test_requests_are_batched_per_flush_and_flushes_merged_per_ingestion(
    mlflow_models, ci, ingested
):
    version = live(mlflow_models, seed=41)
    for _ in range(5):
        predict(ci, version.model.name, instances(3))
    assert log.buffered() == 15
    log.flush()
    assert log.buffered() == 0
    for _ in range(2):  # two more spool files
        predict(ci, version.model.name, instances(2))
        log.flush()

    assert log.ingest_spooled() == 19

    assert [len(call["records"]) for call in ingested] == [19]  # one call for three files


def test_the_worker_caps_one_ingestion_at_the_configured_rows(
    mlflow_models, ci, ingested, settings
):
    settings.SERVING_LOG_INGEST_MAX_ROWS = 4
    version = live(mlflow_models, seed=41)
    for _ in range(3):
        predict(ci, version.model.name, instances(3))
        log.flush()

    assert log.ingest_spooled() == 9

    assert [len(call["records"]) for call in ingested] == [6, 3]


def test_the_ingestion_is_enqueued_at_most_once_per_interval_and_never_forgotten(
    mlflow_models, ci, ingested, enqueued, settings
):
    settings.SERVING_LOG_INGEST_SECONDS = 3600
    version = live(mlflow_models, seed=41)
    predict(ci, version.model.name, instances(1))
    log.flush()
    predict(ci, version.model.name, instances(1))
    log.flush()
    assert enqueued == [("ingest", 0)]  # the second file waits for the interval

    settings.SERVING_LOG_INGEST_SECONDS = 0  # the interval is over
    assert log.flush() == 0  # the flusher's next round, with nothing new buffered

    assert enqueued == [("ingest", 0), ("ingest", 0)]
    log.flush()
    assert len(enqueued) == 2  # nothing new, nothing announced


def test_a_clean_shutdown_spools_everything_and_announces_it_at_once(
    mlflow_models, ci, ingested, enqueued, settings
):
    settings.SERVING_LOG_INGEST_SECONDS = 3600
    version = live(mlflow_models, seed=41)
    predict(ci, version.model.name, instances(2))
    log.flush()
    predict(ci, version.model.name, instances(3))

    background.flush_all(final=True)  # what atexit does

    assert log.buffered() == 0
    assert log.spilled_predictions() == 5
    assert enqueued == [("ingest", 0), ("ingest", 0)]


def test_a_new_gateway_process_announces_what_an_earlier_one_left_in_the_spool(
    mlflow_models, ci, ingested, enqueued
):
    version = live(mlflow_models, seed=41)
    predict(ci, version.model.name, instances(2))
    log.flush()
    enqueued.clear()

    log.clear()  # a fresh process: nothing buffered, nothing announced yet
    log.flush()

    assert enqueued == [("ingest", 0)]


def test_a_spool_that_cannot_be_written_keeps_the_predictions_for_the_next_flush(
    mlflow_models, ci, ingested, monkeypatch
):
    version = live(mlflow_models, seed=41)
    predict(ci, version.model.name, instances(3))
    written = log._spool

    def disk_full(batches, *, tag):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(log, "_spool", disk_full)
    assert log.flush() == 0
    assert log.buffered() == 3

    monkeypatch.setattr(log, "_spool", written)
    assert log.flush() == 3
    assert log.ingest_spooled() == 3


def test_a_failing_store_puts_the_files_back_for_the_retry(
    mlflow_models, ci, ingested, monkeypatch
):
    version = live(mlflow_models, seed=41)
    predict(ci, version.model.name, instances(2))
    log.flush()
    working = gateway.current().ingest

    _store(_down)
    with pytest.raises(ConnectionError):
        log.ingest_spooled()
    assert log.spilled_predictions() == 2
    assert not list(log.spool_dir().glob("*.claimed-*"))

    _store(working)
    assert log.ingest_spooled() == 2
    assert len(ingested[0]["records"]) == 2


def test_a_file_the_store_refuses_is_set_aside_and_the_others_are_ingested(
    mlflow_models, ci, ingested, monkeypatch
):
    version = live(mlflow_models, seed=41)
    for start in (0.0, 99.0, 5.0):
        predict(ci, version.model.name, instances(2, start=start))
        log.flush()
    working = gateway.current().ingest

    def refuse_99(**kwargs):
        import pyarrow.parquet as pq

        f1 = pq.read_table(io.BytesIO(kwargs["upload"].getvalue())).column("f1").to_pylist()
        if 99.0 in f1:
            raise InvalidInput({"records[0].f1": "out of range"})
        working(**kwargs)

    _store(refuse_99)

    assert log.ingest_spooled() == 4

    assert [len(call["records"]) for call in ingested] == [2, 2]
    assert len(list(log.spool_dir().glob("refused-*.arrow"))) == 1
    assert log.spilled_predictions() == 0


def test_a_claim_left_by_a_dead_worker_is_taken_again(mlflow_models, ci, ingested, settings):
    settings.SERVING_LOG_CLAIM_SECONDS = 60
    version = live(mlflow_models, seed=41)
    predict(ci, version.model.name, instances(2))
    log.flush()
    [path] = log.spool_dir().glob("spool-*.arrow")
    path.rename(path.with_name(f"{path.name}.claimed-{int(time.time()) - 30}"))

    assert log.ingest_spooled() == 0  # a live claim: another worker is on it

    [claimed] = log.spool_dir().glob("*.claimed-*")
    claimed.rename(path.with_name(f"{path.name}.claimed-{int(time.time()) - 120}"))
    half = log.spool_dir() / "spool-1-2-3.arrow.partial"  # a gateway killed mid-write
    half.write_bytes(b"ARROW1")
    os.utime(half, (time.time() - 120, time.time() - 120))
    assert log.ingest_spooled() == 2
    assert not half.exists()


def test_the_task_ingests_the_spool(mlflow_models, ci, ingested):
    version = live(mlflow_models, seed=41)
    predict(ci, version.model.name, instances(3))
    log.flush()

    assert tasks.ingest_prediction_log.apply().get() == 3

    assert len(ingested[0]["records"]) == 3


@pytest.mark.django_db(transaction=True)
def test_the_background_flusher_writes_every_n_predictions(
    mlflow_models, ci, settings, ingested, enqueued
):
    settings.SERVING_LOG_FLUSH_SECONDS = 30
    settings.SERVING_LOG_BATCH_SIZE = 5
    version = live(mlflow_models, seed=41)
    enqueued.clear()  # the promotion's own tasks
    predict(ci, version.model.name, instances(5))  # a full batch wakes the flusher

    deadline = time.monotonic() + 5
    while not enqueued and time.monotonic() < deadline:
        time.sleep(0.02)
    settings.SERVING_LOG_FLUSH_SECONDS = 0  # let the thread end
    background.wake()

    assert enqueued == [("ingest", 0)]
    assert log.spilled_predictions() == 5


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
        assert log_to_store() == 6

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


EXITING_GATEWAY = """
import django, numpy as np
django.setup()
from serving import log
from serving.gateway import prediction_ids
X = np.arange(12, dtype=float).reshape(4, 3)
log.record(log.LoggedBatch(
    model_name="m", version="1.0.0", features=("f1", "f2", "f3"), prediction_ids=prediction_ids(4),
    timestamp=1.0, X=X, scores=np.full(4, 0.5), predictions=np.ones(4, dtype=np.int8),
))
from django.conf import settings
print(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_out"])  # the test run's own broker
"""


def test_a_process_that_exits_normally_leaves_its_buffer_in_the_spool(tmp_path, settings):
    """No flush was due: atexit writes what was buffered (gunicorn's clean worker exit)."""
    import subprocess

    from django.conf import settings as django_settings

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "GOVERNANCE_VAR_DIR": str(tmp_path),
        "CELERY_BROKER_URL": "filesystem://",
    }
    env.pop("DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-c", EXITING_GATEWAY],
        env=env,
        cwd=django_settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr[-2000:]
    settings.VAR_DIR = tmp_path
    assert log.spilled_predictions() == 4
    queue = Path(done.stdout.strip().splitlines()[-1])
    assert [m.name for m in queue.iterdir() if "ingest" in m.read_text()]  # and it was enqueued
