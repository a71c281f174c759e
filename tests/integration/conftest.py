"""A cold gateway per test, and the gateway's outage hook recorded (it must stay silent)."""

from __future__ import annotations

import pytest

from serving import gateway
from tests.integration.outage_recorder import OUTAGES


@pytest.fixture(autouse=True)
def cold_gateway(settings, tmp_path):
    settings.SERVING_LOG_FLUSH_SECONDS = 0
    settings.VAR_DIR = tmp_path
    settings.SERVING_OUTAGE_HOOK = "tests.integration.outage_recorder.record_outage"
    OUTAGES.clear()
    gateway.reset()
    yield
    gateway.reset()


@pytest.fixture
def outages() -> list[dict]:
    return OUTAGES
