"""Each serving test starts with a cold gateway: no routes, models, buffers or cached answers."""

from __future__ import annotations

import pytest

from serving import access, background, cache, generation, loader, log, router, shadow, signals
from tests.serving import helpers


def _reset() -> None:
    shadow.drain()
    shadow.clear()
    background.drain()
    router.clear()
    loader.clear()
    cache.clear()
    log.clear()
    access.clear()
    generation.reset()


@pytest.fixture(autouse=True)
def cold_gateway(settings, tmp_path):
    settings.SERVING_LOG_FLUSH_SECONDS = 0  # tests flush by hand
    settings.VAR_DIR = tmp_path  # each test its own prediction spool
    settings.SERVING_OUTAGE_HOOK = "tests.serving.helpers.record_outage"
    helpers.OUTAGES.clear()
    _reset()
    yield
    _reset()


@pytest.fixture(autouse=True)
def enqueued(monkeypatch) -> list[tuple[str, int]]:
    """Tasks the gateway enqueues after commit, recorded instead of sent to the broker."""
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(signals, "enqueue_verification", lambda i: calls.append(("verify", i)))
    monkeypatch.setattr(signals, "enqueue_warm_standby", lambda i: calls.append(("warm", i)))
    monkeypatch.setattr(log, "enqueue_ingest", lambda: calls.append(("ingest", 0)))
    monkeypatch.setattr(
        signals, "enqueue_shadow_evaluation", lambda i: calls.append(("shadow_evaluation", i))
    )
    return calls


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """``with committed():`` runs the on-commit callbacks (Redis bumps, task enqueues) at exit."""

    def make():
        return django_capture_on_commit_callbacks(execute=True)

    return make


@pytest.fixture
def outages() -> list[dict]:
    return helpers.OUTAGES


@pytest.fixture
def ci(api_client):
    return api_client("ci", username="gateway-ci")


@pytest.fixture
def ingested(monkeypatch) -> list[dict]:
    """A stand-in ``monitoring.ingest`` recording what the gateway hands it.

    Each call is recorded with its keyword arguments plus ``records``: the uploaded Parquet
    file's rows, with features as plain columns and sensitive attributes as ``sensitive.<name>``.
    """
    import importlib.machinery
    import sys
    import types

    import pyarrow.parquet as pq

    from serving import log

    calls: list[dict] = []
    module = types.ModuleType("monitoring.ingest")
    module.__spec__ = importlib.machinery.ModuleSpec("monitoring.ingest", loader=None)

    def predictions_ingest(**kwargs):
        rows = pq.read_table(kwargs["upload"]).to_pylist()
        calls.append({**kwargs, "records": rows})

    module.predictions_ingest = predictions_ingest
    monkeypatch.setitem(sys.modules, "monitoring.ingest", module)
    log.clear()
    yield calls
    log.clear()
