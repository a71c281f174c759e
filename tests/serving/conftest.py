"""Each serving test starts with a cold gateway: no routes, models, buffers or cached answers."""

from __future__ import annotations

import pytest

from serving import gateway, signals
from tests.serving import helpers


@pytest.fixture(autouse=True)
def enqueued(monkeypatch) -> list[tuple[str, int]]:
    """Tasks the gateway enqueues after commit, recorded instead of sent to the broker."""
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(signals, "enqueue_verification", lambda i: calls.append(("verify", i)))
    monkeypatch.setattr(signals, "enqueue_warm_standby", lambda i: calls.append(("warm", i)))
    monkeypatch.setattr(
        signals, "enqueue_shadow_evaluation", lambda i: calls.append(("shadow_evaluation", i))
    )
    return calls


@pytest.fixture(autouse=True)
def cold_gateway(settings, tmp_path, enqueued) -> gateway.Gateway:
    """A new gateway for each test (the one reset), its prediction-log announcements recorded."""
    settings.SERVING_LOG_FLUSH_SECONDS = 0  # tests flush by hand
    settings.VAR_DIR = tmp_path  # each test its own prediction spool
    settings.SERVING_OUTAGE_HOOK = "tests.serving.helpers.record_outage"
    helpers.OUTAGES.clear()
    yield gateway.reset(enqueue_ingest=lambda: enqueued.append(("ingest", 0)))
    gateway.reset()


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
def lead(api_client):
    """An ML Lead: engages halts and is one of the two release approvers."""
    return api_client("ml_lead", username="lead")


@pytest.fixture
def ethicist(api_client):
    """An Ethics Officer: the other release approver."""
    return api_client("ethics_officer", username="ethicist")


@pytest.fixture
def ingested(cold_gateway) -> list[dict]:
    """The gateway's monitoring ingestion replaced by a recorder of what it is handed.

    Each call is recorded with its keyword arguments plus ``records``: the uploaded Parquet
    file's rows, with features as plain columns and sensitive attributes as ``sensitive.<name>``.
    """
    import pyarrow.parquet as pq

    calls: list[dict] = []

    def predictions_ingest(**kwargs):
        rows = pq.read_table(kwargs["upload"]).to_pylist()
        calls.append({**kwargs, "records": rows})

    cold_gateway.ingest = predictions_ingest
    return calls
