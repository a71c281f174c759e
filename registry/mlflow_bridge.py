"""The bridge to MLflow: resolve and verify model versions, log artifacts, mirror governance state.

MLflow's stage API is deprecated since 2.9; the platform mirrors its truth with the
``governance.stage`` tag and the ``production``/``staging`` aliases only. Every mirror call is
idempotent, so a retried task converges on the platform's state.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from django.conf import settings

from . import artifact_sources, sandbox
from .artifact_probe import NON_EXECUTABLE, directory_digest

__all__ = ["directory_digest"]

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

logger = logging.getLogger(__name__)

STAGE_TAG = "governance.stage"
VERSION_TAG = "governance.version"
MIRRORED_ALIASES = ("production", "staging")


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
    serialization_format: str = "other"
    executable: bool = True
    signature: dict[str, Any] | None = None
    source_commit: str = ""
    size: int = 0


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
    """``(name, version)`` of a strict ``models:/NAME/N``; ValueError otherwise (aliases too)."""
    return artifact_sources.parse_models_uri(uri)


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


def _probe_request(
    source: artifact_sources.Source, policy: Any, *, load: bool = True
) -> dict[str, Any]:
    return {
        "kind": source.kind,
        "source": source.uri,
        "root": source.root,
        "name": source.name,
        "version": source.version,
        "tracking_uri": settings.MLFLOW_TRACKING_URI,
        "registry_uri": settings.MLFLOW_REGISTRY_URI,
        "policy": {
            "allowed_flavors": list(getattr(policy, "allowed_flavors", []) or []),
            "allow_executable": bool(getattr(policy, "allow_executable", True)),
        },
        "load": load,
    }


def probe_message(
    exc: sandbox.ProbeFailed, *, field: str, uri: str, mlflow_name: str, policy: Any
) -> str:
    """What the caller reads for a refused artifact: never a server path or an upstream answer."""
    code, detail = exc.code, exc.detail
    if code == "source_not_allowed":
        return str(artifact_sources.refused(field, mlflow_name))
    if code == "no_such_version":
        return (
            f"MLflow has no model version {uri}: register it in MLflow first "
            "(mlflow.register_model) or send artifact_uri instead"
        )
    if code == "too_large":
        return (
            f"the artifact is larger than the limit of {settings.ARTIFACT_MAX_BYTES} bytes "
            "(ARTIFACT_MAX_BYTES): it was not copied"
        )
    if code == "timeout":
        return (
            f"the artifact probe did not finish within {detail} (ARTIFACT_PROBE_TIMEOUT): "
            "loading the model takes too long or hangs"
        )
    if code in ("crashed", "out_of_memory"):
        return (
            "the artifact probe crashed or ran out of memory (limit "
            f"{settings.ARTIFACT_PROBE_MEMORY_BYTES // 1024**2} MB, ARTIFACT_PROBE_MEMORY_BYTES) "
            "while loading the model"
        )
    if code == "download_failed":
        return f"MLflow could not download the artifact given as {field}"
    if code == "not_mlflow_model":
        return f"the artifact is not an MLflow model: {detail or 'it has no MLmodel file'}"
    if code == "no_pyfunc":
        return "the model has no python_function flavour, so it cannot be served"
    if code == "flavor_not_allowed":
        allowed = ", ".join(getattr(policy, "allowed_flavors", []) or [])
        return (
            f"the artifact's flavour is '{detail}'; this model's artifact policy allows only: "
            f"{allowed}"
        )
    if code == "executable_not_allowed":
        what = f"a {detail}" if detail in ("pickle", "cloudpickle") else f"in the '{detail}' format"
        return (
            f"the artifact is {what}, which runs code when loaded; this model's artifact policy "
            f"allows only non-executable formats: {', '.join(sorted(NON_EXECUTABLE))}"
        )
    if code == "load_failed":
        return f"the model cannot be loaded as a pyfunc model ({detail or 'error'})"
    if code == "predict_failed":
        return f"the model loads but cannot predict its own input example ({detail or 'error'})"
    if code == "changed":
        return "the artifact's files changed while it was being probed"
    return "the artifact could not be probed"


def _probe(
    source: artifact_sources.Source,
    *,
    field: str,
    mlflow_name: str,
    policy: Any,
    load: bool = True,
):
    try:
        return sandbox.run_probe(_probe_request(source, policy, load=load))
    except sandbox.ProbeFailed as exc:
        raise MlflowBridgeError(
            probe_message(exc, field=field, uri=source.uri, mlflow_name=mlflow_name, policy=policy)
        ) from exc


def _resolved(
    facts: dict[str, Any],
    *,
    name: str,
    version: str,
    source: str,
    run_id: str,
    created_ms: int | None,
    local_path: Path,
) -> ResolvedModel:
    started = facts.get("run_started_ms") or created_ms
    created = datetime.fromtimestamp(started / 1000, tz=UTC) if started else datetime.now(tz=UTC)
    return ResolvedModel(
        name=name,
        version=version,
        source=source,
        run_id=run_id or None,
        flavor=str(facts["flavor"]),
        digest=str(facts["digest"]),
        created_at=created,
        local_path=local_path,
        serialization_format=str(facts.get("serialization_format") or "other"),
        executable=bool(facts.get("executable", True)),
        signature=facts.get("signature"),
        source_commit=str(facts.get("source_commit") or "")[:64],
        size=int(facts.get("size") or 0),
    )


def resolve(uri: str, *, policy: Any = None, field: str = "mlflow_uri") -> ResolvedModel:
    """Download, hash, classify and load-test an MLflow model version in the probe child.

    Nothing of the artifact is deserialized in this process; the verified copy is moved into the
    artifact cache, where the gateway finds it by digest.
    """
    name, version = parse_models_uri(uri)
    source = artifact_sources.Source(
        "models", f"models:/{name}/{version}", name=name, version=version
    )
    probed = _probe(source, field=field, mlflow_name=name, policy=policy)
    try:
        local = sandbox.move_into_cache(probed)
    finally:
        probed.cleanup()
    facts = probed.facts
    return _resolved(
        facts,
        name=name,
        version=str(facts.get("mlflow_version") or version),
        source=str(facts.get("source") or ""),
        run_id=str(facts.get("run_id") or ""),
        created_ms=facts.get("created_ms"),
        local_path=local,
    )


def log_and_register(
    source: artifact_sources.Source,
    name: str,
    *,
    policy: Any = None,
    on_logged=None,
    check=None,
) -> ResolvedModel:
    """Probe an allowed artifact source, then log the verified copy and register it as ``name``.

    ``check(resolved)`` may refuse the artifact before MLflow holds anything. ``on_logged(run_id,
    version)`` is called as soon as MLflow holds something, so the caller can record it for
    orphan cleanup. This process only copies the files into MLflow; it never loads them.
    """
    import mlflow

    probed = _probe(source, field="artifact_uri", mlflow_name=name, policy=policy)
    facts = probed.facts
    try:
        if check is not None:
            check(
                _resolved(
                    facts,
                    name=name,
                    version="",
                    source="",
                    run_id="",
                    created_ms=None,
                    local_path=probed.path,
                )
            )
        client()
        experiment_id = ensure_experiment()
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"import-{name}") as run:
            mlflow.log_artifacts(str(probed.path), artifact_path="model")
            if facts.get("source_commit"):
                mlflow.set_tag("mlflow.source.git.commit", facts["source_commit"])
            if on_logged:
                on_logged(run.info.run_id, "")
        try:
            result = mlflow.register_model(f"runs:/{run.info.run_id}/model", name)
        except Exception as exc:
            logger.warning("MLflow refused to register %s: %s", name, exc)
            raise MlflowBridgeError(f"MLflow refused to register {name}") from exc
        if on_logged:
            on_logged(run.info.run_id, str(result.version))
    finally:
        probed.cleanup()
    # MLflow rewrites metadata when it registers: bind the digest to what it now serves (the
    # gateway fetches models:/NAME/N), read again in the child; the code was probed above.
    number = str(result.version)
    registered = artifact_sources.Source(
        "models", f"models:/{name}/{number}", name=name, version=number
    )
    again = _probe(registered, field="artifact_uri", mlflow_name=name, policy=policy, load=False)
    try:
        if any(
            again.facts.get(key) != facts.get(key)
            for key in ("flavor", "serialization_format", "executable")
        ):
            raise MlflowBridgeError("the artifact MLflow registered is not the one probed")
        local = sandbox.move_into_cache(again)
    finally:
        again.cleanup()
    facts = {**facts, "digest": again.facts["digest"], "size": again.facts.get("size")}
    return _resolved(
        facts,
        name=name,
        version=str(result.version),
        source=str(result.source or ""),
        run_id=run.info.run_id,
        created_ms=facts.get("run_started_ms") or facts.get("created_ms"),
        local_path=local,
    )


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
