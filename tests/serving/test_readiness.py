"""What /readyz learns from the gateway: per model, the live version loaded and verified."""

import pytest

from registry import mlflow_bridge
from serving import background
from serving.readiness import serving_status
from tests.serving.helpers import live, staged

pytestmark = pytest.mark.django_db


def test_serving_status_reports_each_live_version_loaded_with_a_verified_digest(mlflow_models):
    v1 = live(mlflow_models, "1.0.0", seed=51)
    staged(mlflow_models, v1.model, "1.1.0", seed=52)
    serving_status()
    background.drain()  # the shadow version loads off the request path

    status = serving_status()

    assert status["ok"] is True
    entry = status["models"][v1.model.name]
    assert entry["live_version"] == "1.0.0"
    assert entry["loaded"] and entry["digest_verified"]
    assert entry["shadow_versions"] == ["1.1.0"]
    assert entry["halted"] is False


def test_serving_status_is_not_ok_when_a_live_version_cannot_load(mlflow_models, settings):
    v1 = live(mlflow_models, "1.0.0", seed=51)
    pickled = next(mlflow_bridge.cache_path(v1.artifact_digest).rglob("*.pkl"))
    pickled.write_bytes(b"tampered")
    settings.MLFLOW_TRACKING_URI = settings.MLFLOW_REGISTRY_URI = "http://127.0.0.1:9"

    status = serving_status()

    assert status["ok"] is False
    entry = status["models"][v1.model.name]
    assert entry["loaded"] is False
    assert "digest_mismatch" in entry["error"]


def test_serving_status_without_load_only_reports_this_process(mlflow_models):
    v1 = live(mlflow_models, "1.0.0", seed=51)
    status = serving_status(load=False)
    assert status["models"][v1.model.name]["loaded"] is False


def test_verifying_a_version_that_no_longer_exists_is_skipped_not_retried():
    from serving.readiness import verify_promotion

    result = verify_promotion(version_id=987654)
    assert result["status"] == "skipped" and result["reason"] == "no such version"
    assert result["version_id"] == 987654
