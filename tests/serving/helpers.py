"""Serving test helpers: versions backed by real MLflow models, walked through the lifecycle."""

from __future__ import annotations

import shutil

from registry import mlflow_bridge
from tests.governance.lifecycle_helpers import (
    new_version,
    person,
    sign_promotion,
    step,
    to_production_first,
    to_staging,
)

FEATURES = ["f1", "f2", "f3"]
MLFLOW_NAME = "serving-tests"
_fetched: dict[tuple[str, int], tuple[str, str, str]] = {}
OUTAGES: list[dict] = []


def record_outage(**report) -> None:
    """The outage hook of the tests (``SERVING_OUTAGE_HOOK``)."""
    OUTAGES.append(report)


def mlflow_ref(mlflow_models, seed: int) -> tuple[str, str, str]:
    """(mlflow name, mlflow version, digest) of a real logged model, fetched into the cache."""
    known = _fetched.get((MLFLOW_NAME, seed))
    if known is not None:
        path = mlflow_bridge.cache_path(known[2])
        if path.is_dir() and mlflow_bridge.directory_digest(path) == known[2]:
            return known
    name, number = mlflow_bridge.parse_models_uri(mlflow_models(MLFLOW_NAME, seed))
    path = mlflow_bridge.cache_path(known[2]) if known else None
    if path is not None and path.exists():  # left tampered by an earlier test
        shutil.rmtree(path)
    _, digest = mlflow_bridge.fetch(name, number)
    _fetched[(MLFLOW_NAME, seed)] = (name, number, digest)
    return _fetched[(MLFLOW_NAME, seed)]


def real_version(mlflow_models, version: str = "1.0.0", *, model=None, seed=0, **kwargs):
    name, number, digest = mlflow_ref(mlflow_models, seed)
    kwargs.setdefault("feature_list", FEATURES)
    kwargs.setdefault("thresholds", {"decision": 0.5})
    return new_version(
        version,
        model=model,
        mlflow_name=name,
        mlflow_version=number,
        artifact_uri=f"models:/{name}/{number}",
        artifact_digest=digest,
        **kwargs,
    )


def live(mlflow_models, version: str = "1.0.0", *, seed=0, **kwargs):
    """A first version walked to production."""
    v = real_version(mlflow_models, version, seed=seed, **kwargs)
    to_production_first(v)
    return v


def staged(mlflow_models, model, version: str, *, seed: int, **kwargs):
    v = real_version(mlflow_models, version, model=model, seed=seed, **kwargs)
    to_staging(v)
    return v


def promote_patch(mlflow_models, model, version: str, *, seed: int, **kwargs):
    """A PATCH successor (fast-tracked: no shadow period) promoted over the live version."""
    v = staged(mlflow_models, model, version, seed=seed, **kwargs)
    sign_promotion(v)
    step(v, "promote", actor=person("ci"))
    return v


def rollback(version, comment: str = "critical alerts"):
    return step(version, "start_rollback", comment=comment, actor=person("ml_lead"))


def pyfunc_scores(version, rows: list[dict]) -> list[float]:
    """What the plain MLflow pyfunc says for these rows (the reference for the gateway)."""
    import mlflow.pyfunc
    import pandas as pd

    path = mlflow_bridge.cache_path(version.artifact_digest)
    model = mlflow.pyfunc.load_model(str(path))
    output = model.predict(pd.DataFrame(rows, columns=version.feature_list))
    return [float(p[1]) for p in output]


def instances(n: int = 1, *, start: float = 0.0) -> list[dict]:
    return [{"f1": start + i * 0.1, "f2": -0.5 + i * 0.01, "f3": 1.0} for i in range(n)]


def predict(client, model: str, rows: list[dict], **extra):
    return client.post(f"/api/v1/predict/{model}/", {"instances": rows, **extra}, format="json")


def log_to_store() -> int:
    """What the gateway's flusher and then the worker do: spool the log, ingest the spool."""
    from serving import log

    log.flush()
    return log.ingest_spooled()


def warm(client, model: str) -> None:
    """One request, then wait for the background loads (shadow versions load off the path)."""
    from serving import background, log, shadow

    predict(client, model, instances(1))
    background.drain()
    shadow.drain()
    log.clear()
