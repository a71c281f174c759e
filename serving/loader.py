"""Load each artifact once per process, from the local artifact cache, verified by its digest.

A version's artifact lives at ``mlflow_bridge.cache_path(digest)``. Before loading, the directory is
hashed again: a tampered or partial copy is moved aside and fetched again from MLflow; if MLflow
cannot be reached, or what it returns has another digest, the load is refused (``ArtifactError``)
and the gateway falls back to stale predictions. Only the versions the router keeps (live and
shadow) stay in memory; warm standby means "cached on disk and verified loadable".
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .conf import setting

logger = logging.getLogger(__name__)

# The fast path hands sklearn an ndarray whose columns the gateway has already checked by name
# (see _without_feature_names; this filter covers estimators it cannot unname).
warnings.filterwarnings("ignore", message="X does not have valid feature names")


class ArtifactError(Exception):
    """The artifact cannot be served. ``kind``: digest_mismatch, mlflow_unreachable, load_failed."""

    def __init__(self, kind: str, detail: str):
        self.kind = kind
        self.detail = detail
        super().__init__(f"{kind}: {detail}")


@dataclass(frozen=True)
class ArtifactRef:
    """What the loader needs to know about a version."""

    digest: str
    mlflow_name: str
    mlflow_version: str
    features: tuple[str, ...]
    label: str = ""  # "model 1.2.0", for messages


@dataclass
class LoadedModel:
    digest: str
    path: Path
    pyfunc: Any
    load_seconds: float
    fast: Callable[[np.ndarray], np.ndarray] | None = None
    integer_features: frozenset[str] = field(default_factory=frozenset)
    loaded_at: float = field(default_factory=time.time)

    def score(self, X: np.ndarray, features: tuple[str, ...]) -> np.ndarray:
        """Positive-class probabilities for the rows of X (columns in ``features`` order)."""
        if self.fast is not None:
            return self.fast(X)
        return positive_scores(self.pyfunc.predict(self.frame(X, features)))

    def frame(self, X: np.ndarray, features: tuple[str, ...]):
        import pandas as pd

        frame = pd.DataFrame(X, columns=list(features))
        for name in self.integer_features:
            frame[name] = frame[name].astype("int64")
        return frame


def positive_scores(output: Any) -> np.ndarray:
    """Column 1 of a predict_proba output (ndarray or DataFrame), or a 1-D output as it is."""
    import pandas as pd

    if isinstance(output, pd.DataFrame | pd.Series):
        values = output.to_numpy()
    else:
        values = np.asarray(output)
    values = values.astype("float64", copy=False)
    if values.ndim == 2:
        values = values[:, 1] if values.shape[1] >= 2 else values[:, 0]
    if values.ndim != 1:
        raise ValueError(f"the model returned an array of shape {values.shape}, not scores")
    return values


_models: dict[str, LoadedModel] = {}
_failures: dict[str, tuple[float, ArtifactError]] = {}
_locks: dict[str, threading.Lock] = {}
_registry_lock = threading.Lock()


def _lock_for(digest: str) -> threading.Lock:
    with _registry_lock:
        return _locks.setdefault(digest, threading.Lock())


def loaded(digest: str) -> LoadedModel | None:
    return _models.get(digest)


def load(ref: ArtifactRef) -> LoadedModel:
    """The in-memory model for ``ref``, loading it (verified) on first use."""
    model = _models.get(ref.digest)
    if model is not None:
        return model
    with _lock_for(ref.digest):
        model = _models.get(ref.digest)
        if model is not None:
            return model
        failure = _failures.get(ref.digest)
        if failure is not None and time.monotonic() < failure[0]:
            raise failure[1]
        try:
            model = load_verified(ref)
        except ArtifactError as exc:
            retry_at = time.monotonic() + float(setting("SERVING_LOAD_RETRY_SECONDS"))
            _failures[ref.digest] = (retry_at, exc)
            raise
        _failures.pop(ref.digest, None)
        _models[ref.digest] = model
        return model


def retry_due(digest: str) -> bool:
    failure = _failures.get(digest)
    return failure is None or time.monotonic() >= failure[0]


def retain(digests: set[str]) -> None:
    """Drop every in-memory model not in ``digests`` (only live and shadow versions stay)."""
    with _registry_lock:
        for digest in list(_models):
            if digest not in digests:
                _models.pop(digest, None)
                logger.info("unloaded artifact %s", digest)


def clear() -> None:
    with _registry_lock:
        _models.clear()
        _failures.clear()


def ensure_cached(ref: ArtifactRef) -> Path:
    """The verified local copy of the artifact, fetched from MLflow when missing or tampered."""
    from registry import mlflow_bridge

    path = mlflow_bridge.cache_path(ref.digest)
    if path.is_dir():
        actual = mlflow_bridge.directory_digest(path)
        if actual == ref.digest:
            return path
        aside = _quarantine(path)
        logger.error(
            "cached artifact of %s has digest %s, not %s: moved to %s; fetching it again",
            ref.label or ref.digest,
            actual,
            ref.digest,
            aside,
        )
        problem = f"the cached copy has digest {actual}, not the registered {ref.digest}"
        kind = "digest_mismatch"
    else:
        problem = "the artifact is not in the local cache"
        kind = "mlflow_unreachable"
    try:
        mlflow_bridge.ping(timeout=2.0)
        fetched, digest = mlflow_bridge.fetch(ref.mlflow_name, ref.mlflow_version)
    except Exception as exc:
        raise ArtifactError(
            kind, f"{problem}, and MLflow could not provide it: {exc}".replace("\n", " ")[:500]
        ) from exc
    if digest != ref.digest:
        raise ArtifactError(
            "digest_mismatch",
            f"MLflow's models:/{ref.mlflow_name}/{ref.mlflow_version} has digest {digest}, "
            f"not the registered {ref.digest}: refusing to load it",
        )
    if mlflow_bridge.directory_digest(fetched) != ref.digest:
        raise ArtifactError("digest_mismatch", f"{fetched} changed while it was being verified")
    return fetched


def _quarantine(path: Path) -> Path:
    aside = path.with_name(f"{path.name}.tampered-{int(time.time() * 1000)}")
    with contextlib.suppress(OSError):  # another process moved it first
        path.rename(aside)
    return aside


def load_verified(ref: ArtifactRef) -> LoadedModel:
    """Verify the cached artifact's digest, load it as a pyfunc model and probe the fast path."""
    started = time.perf_counter()
    path = ensure_cached(ref)
    try:
        import mlflow.pyfunc

        pyfunc = mlflow.pyfunc.load_model(str(path))
    except Exception as exc:
        raise ArtifactError("load_failed", f"{ref.label}: {exc}"[:500]) from exc
    model = LoadedModel(
        digest=ref.digest,
        path=path,
        pyfunc=pyfunc,
        load_seconds=0.0,
        integer_features=_integer_features(pyfunc, ref.features),
    )
    model.fast = _fast_scorer(model, ref.features)
    model.load_seconds = time.perf_counter() - started
    logger.info(
        "loaded %s (%s) in %.0f ms%s",
        ref.label,
        ref.digest,
        model.load_seconds * 1000,
        " with the fast path" if model.fast else "",
    )
    return model


def _integer_features(pyfunc, features: tuple[str, ...]) -> frozenset[str]:
    try:
        schema = pyfunc.metadata.get_input_schema()
        if schema is None or not schema.has_input_names():
            return frozenset()
        types = dict(zip(schema.input_names(), schema.input_types(), strict=False))
    except Exception:
        return frozenset()
    return frozenset(n for n in features if str(types.get(n, "")).lower() in {"long", "integer"})


def _fast_scorer(model: LoadedModel, features: tuple[str, ...]):
    """For an sklearn binary classifier served through predict_proba: call it directly.

    Accepted only when it gives the pyfunc's own answers on probe rows, so it is an
    optimisation (the gateway has already done the schema checks), never a change of meaning.
    """
    if not setting("SERVING_FAST_PATH") or not features or model.integer_features:
        return None
    try:
        flavors = model.pyfunc.metadata.flavors
        predict_fn = flavors.get("python_function", {}).get("predict_fn", "predict")
        if "sklearn" not in flavors or predict_fn != "predict_proba":
            return None
        raw = model.pyfunc.get_raw_model()
        classes = getattr(raw, "classes_", None)
        if not hasattr(raw, "predict_proba") or classes is None or len(classes) != 2:
            return None
        rng = np.random.default_rng(0)
        probe = np.vstack([np.zeros(len(features)), rng.normal(size=(8, len(features)))])
        expected = positive_scores(model.pyfunc.predict(model.frame(probe, features)))

        fast = _linear_scorer(raw)
        if fast is None:
            unnamed = _without_feature_names(raw)

            def fast(X: np.ndarray) -> np.ndarray:
                return unnamed.predict_proba(X)[:, 1]

        if not np.allclose(fast(probe), expected, rtol=0, atol=1e-12):
            return None
        return fast
    except Exception as exc:
        logger.info("no fast path for %s: %s", model.digest, exc)
        return None


def _linear_scorer(raw):
    """A binary LogisticRegression's predict_proba, the same arithmetic without input checks.

    sklearn's ``expit(X @ coef_.T + intercept_)``; its argument checks cost more than the product
    for a request's rows, and the gateway has already checked them (numbers, finite, in order).
    """
    from sklearn.linear_model import LogisticRegression

    if type(raw) is not LogisticRegression or raw.coef_.shape[0] != 1:
        return None
    from scipy.special import expit

    coef, intercept = raw.coef_, raw.intercept_

    def fast(X: np.ndarray) -> np.ndarray:
        decision = X @ coef.T + intercept
        return expit(decision.ravel())

    return fast


def _without_feature_names(estimator):
    """A shallow copy that takes an ndarray without warning about missing column names.

    The gateway has already put the columns in the fitted order by name; the arrays (weights,
    trees) are shared with the original, so this costs no memory.
    """
    import copy

    unnamed = copy.copy(estimator)
    steps = getattr(unnamed, "steps", None)
    if isinstance(steps, list) and steps:  # a Pipeline: only its first step sees the input
        first_name, first = steps[0]
        unnamed.steps = [(first_name, _without_feature_names(first)), *steps[1:]]
    elif "feature_names_in_" in vars(unnamed):
        del unnamed.feature_names_in_
    return unnamed
