"""The bridge to MLflow: resolve and verify model versions, log artifacts, mirror governance state.

MLflow's stage API is deprecated since 2.9; the platform mirrors its truth with the
``governance.stage`` tag and the ``production``/``staging`` aliases only. Every mirror call is
idempotent, so a retried task converges on the platform's state.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import yaml
from django.conf import settings

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

logger = logging.getLogger(__name__)

STAGE_TAG = "governance.stage"
VERSION_TAG = "governance.version"
MIRRORED_ALIASES = ("production", "staging")
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")


class MlflowBridgeError(Exception):
    """MLflow refused or could not find what was asked; the message says what to do."""


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    version: str
    source: str
    run_id: str | None
    flavor: str
    digest: str
    created_at: datetime
    local_path: Path


@lru_cache(maxsize=4)
def _client(tracking_uri: str, registry_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)


def client():
    """An MlflowClient for the configured store (the embedded default is a local SQLite store)."""
    import mlflow

    mlflow.set_tracking_uri(settings.MLFLOW_TRACKING_URI)
    mlflow.set_registry_uri(settings.MLFLOW_REGISTRY_URI)
    return _client(settings.MLFLOW_TRACKING_URI, settings.MLFLOW_REGISTRY_URI)


def ensure_experiment() -> str:
    """The platform's experiment id, created with artifacts under the configured root."""
    mlf = client()
    experiment = mlf.get_experiment_by_name(settings.MLFLOW_EXPERIMENT)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if settings.MLFLOW_TRACKING_URI.startswith("sqlite:"):
        Path(settings.MLFLOW_ARTIFACT_ROOT).mkdir(parents=True, exist_ok=True)
        location = Path(settings.MLFLOW_ARTIFACT_ROOT).resolve().as_uri()
    return mlf.create_experiment(settings.MLFLOW_EXPERIMENT, artifact_location=location)


def parse_models_uri(uri: str) -> tuple[str, str]:
    match = _MODELS_URI.match(uri or "")
    if match is None:
        raise ValueError(
            f"{uri!r} is not an MLflow model version URI: use models:/<registered name>/<version>"
        )
    return match["name"], match["version"]


def directory_digest(path: Path) -> str:
    """sha256 over every file's relative path and bytes, in sorted order."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode())
        digest.update(b"\0")
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return "sha256:" + digest.hexdigest()


def _flavor(local_path: Path) -> str:
    mlmodel = local_path / "MLmodel"
    if not mlmodel.exists():
        raise MlflowBridgeError(f"{local_path} is not an MLflow model: it has no MLmodel file")
    flavors = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors") or {}
    if "python_function" not in flavors:
        raise MlflowBridgeError("the model has no python_function flavour, so it cannot be served")
    specific = sorted(f for f in flavors if f != "python_function")
    return specific[0] if specific else "python_function"


def cache_path(digest: str) -> Path:
    return Path(settings.ARTIFACT_CACHE_DIR) / digest.replace(":", "-")


def fetch(name: str, version: str) -> tuple[Path, str]:
    """Download a model version into the local artifact cache; returns (path, digest)."""
    client()
    staging = Path(tempfile.mkdtemp(prefix="fetch-", dir=_cache_root()))
    try:
        import mlflow

        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}",
                dst_path=str(staging),
                tracking_uri=settings.MLFLOW_TRACKING_URI,
                registry_uri=settings.MLFLOW_REGISTRY_URI,
            )
        )
        digest = directory_digest(local)
        target = cache_path(digest)
        if not target.exists():
            os.replace(local, target)
        return target, digest
    except MlflowBridgeError:
        raise
    except Exception as exc:  # MLflow raises many types; the caller needs one.
        raise MlflowBridgeError(f"could not download models:/{name}/{version}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _cache_root() -> Path:
    root = Path(settings.ARTIFACT_CACHE_DIR)
    root.mkdir(parents=True, exist_ok=True)
    return root


def verify_loadable(local_path: Path) -> None:
    """Load the artifact as a pyfunc model, the way the gateway will."""
    import mlflow.pyfunc

    try:
        mlflow.pyfunc.load_model(str(local_path))
    except Exception as exc:
        raise MlflowBridgeError(f"the model cannot be loaded as a pyfunc model: {exc}") from exc


def resolve(uri: str) -> ResolvedModel:
    """Find an MLflow model version, download it, hash it and check that it loads."""
    name, version = parse_models_uri(uri)
    mlf = client()
    try:
        mv = mlf.get_model_version(name, version)
    except Exception as exc:
        raise MlflowBridgeError(
            f"MLflow has no model version {uri}: register it in MLflow first "
            f"(mlflow.register_model) or send artifact_uri instead"
        ) from exc
    local, digest = fetch(name, version)
    flavor = _flavor(local)
    verify_loadable(local)
    created = _training_time(mv)
    return ResolvedModel(
        name=name,
        version=str(mv.version),
        source=mv.source or "",
        run_id=mv.run_id or None,
        flavor=flavor,
        digest=digest,
        created_at=created,
        local_path=local,
    )


def _training_time(mv) -> datetime:
    """The run's start (the training timestamp) when MLflow knows it, else the version's."""
    millis = mv.creation_timestamp
    if mv.run_id:
        try:
            millis = client().get_run(mv.run_id).info.start_time or millis
        except Exception:
            logger.info(
                "run %s of %s/%s not found; using version time", mv.run_id, mv.name, mv.version
            )
    return datetime.fromtimestamp(millis / 1000, tz=UTC)


def log_and_register(artifact_uri: str, name: str, *, on_logged=None) -> str:
    """Log an MLflow model directory (any URI MLflow can download) and register it under ``name``.

    ``on_logged(run_id, version)`` is called as soon as MLflow holds something, so the caller can
    record it for orphan cleanup. Returns the ``models:/`` URI of the new version.
    """
    import mlflow

    client()
    staging = Path(tempfile.mkdtemp(prefix="log-", dir=_cache_root()))
    try:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri, dst_path=str(staging)))
        except Exception as exc:
            raise MlflowBridgeError(f"cannot read artifact_uri {artifact_uri!r}: {exc}") from exc
        _flavor(local)
        verify_loadable(local)
        experiment_id = ensure_experiment()
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"import-{name}") as run:
            mlflow.log_artifacts(str(local), artifact_path="model")
            if on_logged:
                on_logged(run.info.run_id, "")
        try:
            result = mlflow.register_model(f"runs:/{run.info.run_id}/model", name)
        except Exception as exc:
            raise MlflowBridgeError(f"MLflow refused to register {name}: {exc}") from exc
        if on_logged:
            on_logged(run.info.run_id, str(result.version))
        return f"models:/{name}/{result.version}"
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def mirror_stage(
    name: str, version: str, *, stage: str, platform_version: str, aliases: tuple[str, ...] = ()
) -> None:
    """Write the platform's stage onto the MLflow version and point the given aliases at it.

    Aliases in MIRRORED_ALIASES that are not given and currently point at this version are removed.
    """
    mlf = client()
    mlf.set_model_version_tag(name, version, STAGE_TAG, stage)
    mlf.set_model_version_tag(name, version, VERSION_TAG, platform_version)
    current = mlf.get_model_version(name, version)
    held = set(getattr(current, "aliases", []) or [])
    for alias in aliases:
        if alias not in held:
            mlf.set_registered_model_alias(name, alias, version)
    for alias in MIRRORED_ALIASES:
        if alias in held and alias not in aliases:
            mlf.delete_registered_model_alias(name, alias)


def delete_version(name: str, version: str) -> None:
    """Remove an orphaned MLflow version (registered, but its platform row never committed)."""
    client().delete_model_version(name, version)


def ping(*, timeout: float = 2.0) -> None:
    """Raise if the MLflow store cannot be reached; a server gets one quick try, no retries."""
    uri = settings.MLFLOW_TRACKING_URI
    if uri.startswith(("http://", "https://")):
        import urllib.request

        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            if response.status != 200:
                raise MlflowBridgeError(f"MLflow server answered {response.status}")
        return
    client().search_registered_models(max_results=1)
