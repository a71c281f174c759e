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


def mlflow_ref(mlflow_models, seed: int, features: list[str] = FEATURES) -> tuple[str, str, str]:
    """(mlflow name, mlflow version, digest) of a real logged model, fetched into the cache.

    A model on other ``features`` than f1..f3 (a MAJOR's feature set) is logged here, once.
    """
    key = (MLFLOW_NAME if features == FEATURES else "-".join([MLFLOW_NAME, *features]), seed)
    known = _fetched.get(key)
    if known is not None:
        path = mlflow_bridge.cache_path(known[2])
        if path.is_dir() and mlflow_bridge.directory_digest(path) == known[2]:
            return known
    if features == FEATURES:
        uri = mlflow_models(MLFLOW_NAME, seed)
    else:
        uri = _logged.get(key) or _log_model(key[0], features, seed)
        _logged[key] = uri
    return _fetch(key, uri, known)


def _fetch(key, uri: str, known) -> tuple[str, str, str]:
    name, number = mlflow_bridge.parse_models_uri(uri)
    path = mlflow_bridge.cache_path(known[2]) if known else None
    if path is not None and path.exists():  # left tampered by an earlier test
        shutil.rmtree(path)
    _, digest = mlflow_bridge.fetch(name, number)
    _fetched[key] = (name, number, digest)
    return _fetched[key]


_logged: dict[tuple[str, int], str] = {}


def _log_model(name: str, features: list[str], seed: int) -> str:
    """A logistic regression on ``features``: f1 decides, the others (f4...) weigh a little."""
    from demo.mlflow_logging import log_sklearn_model

    model, frame = fitted(seed, features=features)
    return log_fitted(log_sklearn_model, model, frame, name=name, seed=seed)


def log_fitted(log, model, frame, *, name: str, seed: int, **extra) -> str:
    """``model`` logged by ``log`` (a ``demo.mlflow_logging`` function) as ``name``, with the
    suite's usual example, parameters and metrics; its ``models:/`` URI."""
    return log(
        model,
        **extra,
        registered_name=name,
        input_example=frame.head(3),
        params={"C": 1.0},
        metrics={"auc": 0.8},
        experiment_id=mlflow_bridge.ensure_experiment(),
        run_name=f"{name}-{seed}",
    ).uri


def fitted(seed: int, estimator=None, features: list[str] = FEATURES):
    """``estimator`` (a logistic regression by default) fitted on the seed's data, and the data.

    The same data and labels as ``_log_model``; fitting is deterministic, so a test can fit the
    model a logged artifact came from again and compare the gateway's scores with it.
    """
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(400, len(features))), columns=features)
    signal = frame["f1"] + 0.1 * frame[features[-1]]
    labels = (signal + rng.normal(scale=0.5, size=len(frame)) > 0).astype(int)
    return (estimator if estimator is not None else LogisticRegression()).fit(frame, labels), frame


def format_ref(fmt: str, seed: int, estimator=None) -> tuple[tuple[str, str, str], object]:
    """(mlflow name, version, digest) of ``fitted(seed, estimator)`` logged as ``fmt``
    ("onnx", "skops" or "cloudpickle") and fetched into the cache; and the fitted estimator."""
    from demo import mlflow_logging

    model, frame = fitted(seed, estimator)
    key = (f"{MLFLOW_NAME}-{fmt}-{type(model).__name__.lower()}", seed)
    known = _fetched.get(key)
    if known is not None:
        path = mlflow_bridge.cache_path(known[2])
        if path.is_dir() and mlflow_bridge.directory_digest(path) == known[2]:
            return known, model
    uri = _logged.get(key)
    if uri is None:
        log = {
            "onnx": mlflow_logging.log_onnx_model,
            "skops": mlflow_logging.log_skops_model,
            "cloudpickle": mlflow_logging.log_sklearn_model,
        }[fmt]
        extra = {}
        if fmt == "skops":  # what a CI declares for an unusual estimator (the gateway ignores it)
            import skops.io

            extra["trusted_types"] = skops.io.get_untrusted_types(data=skops.io.dumps(model))
        uri = log_fitted(log, model, frame, name=key[0], seed=seed, **extra)
        _logged[key] = uri
    return _fetch(key, uri, known), model


def format_version(fmt: str, version: str = "1.0.0", *, model=None, seed=0, estimator=None, **kw):
    """A development version whose artifact is ``fmt``; returns it with the fitted estimator."""
    ref, fitted_model = format_ref(fmt, seed, estimator)
    kw.setdefault("feature_list", FEATURES)
    return _version_of(ref, version, model=model, **kw), fitted_model


def real_version(mlflow_models, version: str = "1.0.0", *, model=None, seed=0, **kwargs):
    kwargs.setdefault("feature_list", FEATURES)
    ref = mlflow_ref(mlflow_models, seed, list(kwargs["feature_list"]))
    return _version_of(ref, version, model=model, **kwargs)


def _version_of(ref: tuple[str, str, str], version: str, *, model, **kwargs):
    """A development version whose artifact is the logged model ``ref`` (name, number, digest)."""
    name, number, digest = ref
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
    from serving import log, shadow_counts

    log.flush()
    shadow_counts.flush()
    return log.ingest_spooled()


def warm(client, model: str) -> None:
    """One request, then wait for the background loads (shadow versions load off the path)."""
    from serving import background, log, shadow

    predict(client, model, instances(1))
    background.drain()
    shadow.drain()
    log.clear()


def shadowed(client, model: str, rows: list[dict], ingested: list[dict]) -> tuple[dict, dict]:
    """One request once the shadow version has loaded, scored by both and logged: (the answer,
    the ingested log by version)."""
    from serving import shadow

    warm(client, model)
    body = predict(client, model, rows).json()
    assert shadow.drain()
    log_to_store()
    return body, {call["version"]: call for call in ingested}


def hold_shadow_scoring(monkeypatch, version):
    """The shadow ``version``'s scorer records each call's row count, then waits for ``gate``
    (5 s at most) before it scores: (entered, gate, calls)."""
    import threading

    from serving import router

    # The route holds the shadow's model object; the loader's table may already have dropped it
    # (another model's route rebuild retains only attached models, racing the background attach).
    route = router.cached_route(version.model.name)
    shadow_model = (
        next((m for ref, m in route.shadows if m.digest == version.artifact_digest), None)
        if route is not None
        else None
    )
    assert shadow_model is not None, f"{version} is not attached as a shadow of the live route"
    real = shadow_model.score
    entered, gate, calls = threading.Event(), threading.Event(), []

    def held(X, features):
        calls.append(len(X))
        entered.set()
        gate.wait(5)
        return real(X, features)

    monkeypatch.setattr(shadow_model, "score", held)
    return entered, gate, calls


def scores_with_and_without_fast_path(client, version, settings) -> tuple[list, list]:
    """The scores of 20 rows through the fast path, then with it turned off (caches cleared)."""
    from serving import loader, router

    rows = instances(20, start=-1.0)
    fast = predict(client, version.model.name, rows).json()
    assert loader.loaded(version.artifact_digest).fast is not None
    settings.SERVING_FAST_PATH = False
    loader.clear()
    router.clear()
    slow = predict(client, version.model.name, rows).json()
    assert loader.loaded(version.artifact_digest).fast is None
    return [p["score"] for p in fast["predictions"]], [p["score"] for p in slow["predictions"]]
