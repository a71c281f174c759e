"""The MLflow bridge against a real local MLflow store (SQLite backend, local artifacts)."""

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from registry import mlflow_bridge
from registry.models import ModelVersion, PendingArtifact
from registry.services import sweep_orphans

pytestmark = pytest.mark.django_db


def test_resolve_hashes_and_loads_a_registered_model(mlflow_models):
    uri = mlflow_models("bridge-resolve")
    first = mlflow_bridge.resolve(uri)
    again = mlflow_bridge.resolve(uri)
    assert first.flavor == "sklearn"
    assert first.digest == again.digest and first.digest.startswith("sha256:")
    assert (first.local_path / "MLmodel").exists()


def test_digest_changes_when_any_file_changes(tmp_path: Path):
    (tmp_path / "a.txt").write_text("one")
    before = mlflow_bridge.directory_digest(tmp_path)
    (tmp_path / "a.txt").write_text("two")
    assert mlflow_bridge.directory_digest(tmp_path) != before


def test_unknown_model_version_is_a_clear_error(mlflow_models):
    mlflow_models()
    with pytest.raises(mlflow_bridge.MlflowBridgeError, match="MLflow has no model version"):
        mlflow_bridge.resolve("models:/never-registered/3")


def test_mirror_sets_stage_tag_and_moves_aliases(mlflow_models):
    uri = mlflow_models("bridge-mirror")
    name, version = mlflow_bridge.parse_models_uri(uri)
    client = mlflow_bridge.client()
    mlflow_bridge.mirror_stage(
        name, version, stage="production", platform_version="1.0.0", aliases=("production",)
    )
    mv = client.get_model_version(name, version)
    assert mv.tags["governance.stage"] == "production"
    assert mv.tags["governance.version"] == "1.0.0"
    assert str(client.get_model_version_by_alias(name, "production").version) == version
    mlflow_bridge.mirror_stage(name, version, stage="retired", platform_version="1.0.0")
    assert client.get_model_version(name, version).tags["governance.stage"] == "retired"
    assert "production" not in client.get_registered_model(name).aliases


def test_registration_mirrors_development_stage_after_commit(
    api_client, version_body, django_capture_on_commit_callbacks
):
    ci = api_client("ci")
    ci.post("/api/v1/models/", {"name": "mirrored"})
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = ci.post(
            "/api/v1/models/mirrored/versions/",
            version_body("1.0.0", model="mirrored"),
            format="json",
        )
    assert response.status_code == 201 and len(callbacks) == 1
    version = ModelVersion.objects.get()
    mv = mlflow_bridge.client().get_model_version(version.mlflow_name, version.mlflow_version)
    assert mv.tags["governance.stage"] == "development"


def test_artifact_uri_is_logged_into_mlflow_and_registered(
    api_client, version_body, mlflow_models, settings
):
    local, _ = mlflow_bridge.fetch(*mlflow_bridge.parse_models_uri(mlflow_models()))
    source = Path(settings.MLFLOW_ARTIFACT_ROOT) / "imports" / "from-artifact"
    shutil.rmtree(source, ignore_errors=True)
    shutil.copytree(local, source)
    ci = api_client("ci")
    ci.post("/api/v1/models/", {"name": "from-artifact"})
    body = version_body("1.0.0", mlflow_uri="", artifact_uri=source.as_uri())
    response = ci.post("/api/v1/models/from-artifact/versions/", body, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["mlflow_uri"].startswith("models:/from-artifact/")
    assert not PendingArtifact.objects.exists()  # committed: nothing left to sweep
    version = ModelVersion.objects.get()
    # what the gateway fetches from MLflow has the digest the probe recorded
    _, digest = mlflow_bridge.fetch(version.mlflow_name, version.mlflow_version)
    assert digest == version.artifact_digest


def test_artifact_uri_that_is_not_an_mlflow_model_is_400(api_client, version_body, settings):
    tmp_path = Path(settings.MLFLOW_ARTIFACT_ROOT) / "imports" / "not-a-model"
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "model.pkl").write_bytes(b"not a model")
    ci = api_client("ci")
    ci.post("/api/v1/models/", {"name": "bad-artifact"})
    body = version_body("1.0.0", mlflow_uri="", artifact_uri=str(tmp_path))
    response = ci.post("/api/v1/models/bad-artifact/versions/", body, format="json")
    assert response.status_code == 400
    assert "MLmodel" in response.json()["errors"]["artifact_uri"][0]
    assert not ModelVersion.objects.exists()


def test_orphan_sweeper_removes_mlflow_versions_that_never_committed(mlflow_models):
    uri = mlflow_models("orphaned")
    name, version = mlflow_bridge.parse_models_uri(uri)
    PendingArtifact.objects.create(
        mlflow_name=name, mlflow_version=version, created_at=timezone.now() - timedelta(days=1)
    )
    removed = sweep_orphans(older_than=timezone.now() - timedelta(hours=1))
    assert removed == [uri]
    assert not PendingArtifact.objects.exists()
    with pytest.raises(Exception):  # noqa: B017 - MLflow raises its own RestException
        mlflow_bridge.client().get_model_version(name, version)


def test_sweeper_keeps_committed_and_recent_artifacts(mlflow_models, engineer):
    uri = mlflow_models()
    name, version = mlflow_bridge.parse_models_uri(uri)
    PendingArtifact.objects.create(mlflow_name=name, mlflow_version=version)
    assert sweep_orphans(older_than=timezone.now() - timedelta(hours=1)) == []
    assert PendingArtifact.objects.count() == 1


def test_a_down_mlflow_server_sends_the_mirror_to_a_task_without_waiting_on_its_retries(
    settings, monkeypatch
):
    from governance import services as governance_services

    settings.MLFLOW_TRACKING_URI = settings.MLFLOW_REGISTRY_URI = "http://127.0.0.1:9"
    mirrored, queued = [], []
    monkeypatch.setattr(governance_services, "mlflow_mirror", lambda **kw: mirrored.append(kw))
    monkeypatch.setattr(
        "platform_core.tasking.send",
        lambda name, args=(), kwargs=None, **options: queued.append((name, *args)),
    )

    governance_services.mlflow_mirror_or_retry(42)

    assert mirrored == []  # the slow, retrying client was never used
    assert queued == [("governance.mirror_stage_to_mlflow", 42)]
