"""The gateway's per-process state lives in one ``Gateway``: one reset, one fork-safety point."""

import numpy as np
import pytest

from serving import cache, gateway, log, shadow
from tests.serving.helpers import FEATURES, instances, live, predict, staged, warm

pytestmark = pytest.mark.django_db


def busy_gateway(mlflow_models, ci) -> tuple[gateway.Gateway, str]:
    """A gateway that has routed, loaded, cached, logged, decided and shadow-scored."""
    v1 = live(mlflow_models, "1.0.0", seed=31)
    staged(mlflow_models, v1.model, "1.1.0", seed=32)
    warm(ci, v1.model.name)  # loads the shadow version
    assert predict(ci, v1.model.name, instances(4)).status_code == 200
    shadow.drain()
    return gateway.current(), v1.model.name


def test_one_reset_leaves_nothing_of_the_previous_gateway(mlflow_models, ci):
    used, name = busy_gateway(mlflow_models, ci)
    assert used.routes.routes and used.models.models and used.access.decisions
    assert used.answers.incoming and used.log.count == 8  # 4 live, 4 shadow
    assert used.shadow.stats["scored"] == 4 and shadow.counts(name)["1.1.0"]["scored"] == 4
    shadow_thread = used.shadow.thread

    fresh = gateway.reset()

    assert gateway.current() is fresh and fresh is not used
    assert not fresh.routes.routes and not fresh.models.models and not fresh.access.decisions
    assert not fresh.answers.incoming and log.buffered() == 0 and shadow.counts(name) == {}
    assert shadow.stats() == {
        "scored": 0,
        "dropped": 0,
        "skipped_features": 0,
        "failed": 0,
        "pending": 0,
    }
    shadow_thread.join(timeout=10)
    assert not shadow_thread.is_alive()  # the old gateway's thread ended with it


def test_a_forked_worker_gets_a_fresh_gateway_that_keeps_only_the_loaded_models(
    mlflow_models, ci, monkeypatch
):
    parent, name = busy_gateway(mlflow_models, ci)
    digests = set(parent.models.models)
    child_pid = parent.pid + 1
    monkeypatch.setattr(gateway.os, "getpid", lambda: child_pid)  # as after os.fork()

    child = gateway.current()

    assert child is not parent and child.pid == child_pid and gateway.current() is child
    assert set(child.models.models) == digests  # loading again would cost every worker
    assert child.models.lock is not parent.models.lock
    assert not child.routes.routes and child.log.count == 0 and child.shadow.thread is None
    assert child.background.thread is None and child.counts.file_name != parent.counts.file_name
    assert child.ingest is parent.ingest and child.enqueue_ingest is parent.enqueue_ingest
    assert predict(ci, name, instances(2)).json()["stale"] is False  # serves from the copy


def test_the_gateway_is_given_its_collaborators(mlflow_models, ci, cold_gateway):
    """The spool goes to the ingestion it was given, stamped by its clock."""
    handed: list[dict] = []
    cold_gateway.ingest = lambda **kwargs: handed.append(kwargs)
    cold_gateway.clock = lambda: 1_700_000_000.0
    version = live(mlflow_models, seed=33)

    predict(ci, version.model.name, instances(3))
    log.flush()
    assert log.ingest_spooled() == 3

    [call] = handed
    import pyarrow.parquet as pq

    stamps = pq.read_table(call["upload"]).column("timestamp").to_pylist()
    assert {s.timestamp() for s in stamps} == {1_700_000_000.0}
    assert call["model_name"] == version.model.name and call["source"] == "gateway"


def test_queued_shadow_requests_are_named_tuples(mlflow_models, ci, cold_gateway, monkeypatch):
    v1 = live(mlflow_models, "1.0.0", seed=34)
    staged(mlflow_models, v1.model, "1.1.0", seed=35)
    warm(ci, v1.model.name)
    monkeypatch.setattr(cold_gateway.shadow, "ensure_thread", lambda: None)  # keep it queued

    predict(ci, v1.model.name, instances(2))

    [queued] = cold_gateway.shadow.queue
    assert isinstance(queued, shadow.ShadowRequest) and queued.X.shape == (2, len(FEATURES))
    assert queued.shadow_X is None and len(queued.prediction_ids) == 2
    assert np.isfinite(queued.timestamp)
    noted = cold_gateway.answers.incoming[-1]
    assert isinstance(noted, cache.ServedBatch) and noted.model_name == v1.model.name
    assert noted.prediction_ids == queued.prediction_ids
    cold_gateway.shadow._score_queued()  # what the thread would have done
    assert cold_gateway.shadow.stats["scored"] == 2 and not cold_gateway.shadow.pending
