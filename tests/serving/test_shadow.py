"""Shadow mode: the staging version scores the same traffic after the response, and is logged."""

import threading
import time

import pytest

from serving import loader, shadow
from tests.serving.helpers import (
    hold_shadow_scoring,
    instances,
    live,
    log_to_store,
    predict,
    pyfunc_scores,
    shadowed,
    staged,
    warm,
)

pytestmark = pytest.mark.django_db


def test_the_staging_version_scores_each_request_and_is_logged_as_its_shadow(
    mlflow_models, ci, ingested
):
    v1 = live(mlflow_models, "1.0.0", seed=31)
    v2 = staged(mlflow_models, v1.model, "1.1.0", seed=32)
    rows = instances(3)
    body, by_version = shadowed(ci, v1.model.name, rows, ingested)

    assert body["version"] == "1.0.0"
    assert set(by_version) == {"1.0.0", "1.1.0"}
    shadow_records = by_version["1.1.0"]["records"]
    assert [r["prediction_id"] for r in shadow_records] == [
        p["prediction_id"] for p in body["predictions"]
    ]
    assert [r["score"] for r in shadow_records] == pytest.approx(pyfunc_scores(v2, rows))
    assert [r["score"] for r in by_version["1.0.0"]["records"]] == pytest.approx(
        pyfunc_scores(v1, rows)
    )


def test_the_response_does_not_wait_for_the_shadow(mlflow_models, ci, monkeypatch):
    v1 = live(mlflow_models, "1.0.0", seed=31)
    v2 = staged(mlflow_models, v1.model, "1.1.0", seed=32)
    warm(ci, v1.model.name)
    gate = threading.Event()
    shadow_model = loader.loaded(v2.artifact_digest)
    real = shadow_model.score

    def slow(X, features):
        gate.wait(5)
        return real(X, features)

    monkeypatch.setattr(shadow_model, "score", slow)
    started = time.perf_counter()
    response = predict(ci, v1.model.name, instances())
    elapsed = time.perf_counter() - started

    assert response.status_code == 200
    assert shadow.stats()["pending"] == 1  # still scoring after the response was built
    assert elapsed < 1.0
    gate.set()
    assert shadow.drain()


def test_a_full_shadow_queue_drops_shadow_scoring_never_requests(
    mlflow_models, ci, settings, monkeypatch
):
    settings.SERVING_SHADOW_MAX_PENDING = 1
    v1 = live(mlflow_models, "1.0.0", seed=31)
    v2 = staged(mlflow_models, v1.model, "1.1.0", seed=32)
    warm(ci, v1.model.name)
    gate = threading.Event()
    shadow_model = loader.loaded(v2.artifact_digest)
    monkeypatch.setattr(shadow_model, "score", lambda X, f: gate.wait(5) and X[:, 0])
    dropped = shadow.stats()["dropped"]

    codes = [predict(ci, v1.model.name, instances()).status_code for _ in range(3)]

    assert codes == [200, 200, 200]
    assert shadow.stats()["dropped"] == dropped + 2
    gate.set()
    shadow.drain()


def test_no_shadow_without_a_staging_version(mlflow_models, ci, ingested):
    v1 = live(mlflow_models, "1.0.0", seed=31)
    predict(ci, v1.model.name, instances(2))
    shadow.drain()
    log_to_store()
    assert [c["version"] for c in ingested] == ["1.0.0"]


def test_a_shadow_that_cannot_load_never_holds_up_live_requests(mlflow_models, ci):
    from serving import background
    from tests.governance.lifecycle_helpers import new_version, to_staging

    v1 = live(mlflow_models, "1.0.0", seed=31)
    broken = new_version("1.1.0", model=v1.model)  # its MLflow reference does not exist
    to_staging(broken)

    answers = [predict(ci, v1.model.name, instances()) for _ in range(3)]
    background.drain()

    assert [(a.status_code, a.json()["version"]) for a in answers] == [(200, "1.0.0")] * 3
    assert loader.loaded(broken.artifact_digest) is None


def test_queued_requests_are_shadow_scored_in_one_call_and_logged_per_request(
    mlflow_models, ci, ingested, monkeypatch
):
    v1 = live(mlflow_models, "1.0.0", seed=31)
    v2 = staged(mlflow_models, v1.model, "1.1.0", seed=32)
    warm(ci, v1.model.name)
    entered, gate, calls = hold_shadow_scoring(monkeypatch, v2)
    first = predict(ci, v1.model.name, instances(1)).json()
    assert entered.wait(5)  # the shadow thread holds the first request
    queued = [predict(ci, v1.model.name, instances(n, start=n)).json() for n in (2, 3, 4)]
    gate.set()
    assert shadow.drain()
    log_to_store()

    assert calls == [1, 9]  # the three queued requests in one model call
    shadow_records = [c["records"] for c in ingested if c["version"] == "1.1.0"]
    logged = {r["prediction_id"]: r["score"] for records in shadow_records for r in records}
    for body, n in zip([first, *queued], (1, 2, 3, 4), strict=True):
        rows = instances(n, start=n) if n > 1 else instances(1)
        assert [logged[p["prediction_id"]] for p in body["predictions"]] == pytest.approx(
            pyfunc_scores(v2, rows)
        )
