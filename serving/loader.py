"""Load each artifact once per process, from the local artifact cache, verified by its digest.

A version's artifact lives at ``mlflow_bridge.cache_path(digest)``. Before loading, the directory is
hashed again: a tampered or partial copy is moved aside and fetched again from MLflow; if MLflow
cannot be reached, or what it returns has another digest, the load is refused (``ArtifactError``)
and the gateway falls back to stale predictions. Only the versions the router keeps (live and
shadow) stay in memory; warm standby means "cached on disk and verified loadable".

Only a version that passed validation is ever loaded: every load (live, shadow, warm standby,
readiness, the promotion and rollback probes: all go through ``load`` or ``load_verified``) first
checks the stage the version was read with (``ArtifactRef.stage``): one in development or
validation, or of unknown stage, is refused before its artifact is even fetched.

The format is read from the artifact's MLmodel file (``yaml.safe_load``: reading it runs
nothing). ONNX artifacts are scored by onnxruntime and skops artifacts are loaded by
``skops.io.load`` after a trusted-types check: neither runs code from the artifact. Pickled
sklearn models and custom python_function models are code; they are loaded by MLflow's pyfunc.
``artifact_format`` and ``is_executable`` tell which is which (for an artifact policy).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .conf import setting

logger = logging.getLogger(__name__)

# The fast path hands sklearn an ndarray whose columns the gateway has already checked by name
# (see _without_feature_names; this filter covers estimators it cannot unname).
warnings.filterwarnings("ignore", message="X does not have valid feature names")


class ArtifactError(Exception):
    """The artifact cannot be served.

    ``kind``: digest_mismatch, mlflow_unreachable, load_failed, not_validated (the version has
    not passed validation), untrusted_types (a skops file holds types outside the allowlist),
    policy_refused (an executable format where the model's artifact policy allows none).
    """

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
    # The version's lifecycle stage, read with it from the database: checked before every load.
    stage: str | None = None
    # False: the model's artifact policy allows no executable format (see is_executable).
    allow_executable: bool = True


@dataclass
class LoadedModel:
    digest: str
    path: Path
    load_seconds: float
    pyfunc: Any = None  # the MLflow pyfunc model (pickled and python_function formats only)
    format: str = "python_function"  # see artifact_format
    # Positive-class scores of (X, features) by the format's own loader: what ``fast`` must equal.
    reference: Callable[[np.ndarray, tuple[str, ...]], np.ndarray] | None = None
    fast: Callable[[np.ndarray], np.ndarray] | None = None
    integer_features: frozenset[str] = field(default_factory=frozenset)
    loaded_at: float = field(default_factory=time.time)

    def score(self, X: np.ndarray, features: tuple[str, ...]) -> np.ndarray:
        """Positive-class probabilities for the rows of X (columns in ``features`` order)."""
        if self.fast is not None:
            return self.fast(X)
        if self.reference is not None:
            return self.reference(X, features)
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


class Models:
    """One gateway's models in memory by artifact digest, recent load failures, a lock per load.

    A forked worker keeps its parent's models (``forked``: read-only after loading), with fresh
    locks and no remembered failures.
    """

    def __init__(self, models: dict[str, LoadedModel] | None = None) -> None:
        self.models: dict[str, LoadedModel] = dict(models or {})
        self.failures: dict[str, tuple[float, ArtifactError]] = {}
        self.locks: dict[str, threading.Lock] = {}
        self.lock = threading.Lock()

    def lock_for(self, digest: str) -> threading.Lock:
        with self.lock:
            return self.locks.setdefault(digest, threading.Lock())

    def forked(self) -> Models:
        return Models(self.models)


def _state() -> Models:
    from .process import current

    return current().models


def loaded(digest: str) -> LoadedModel | None:
    return _state().models.get(digest)


# Stages of a version that has not passed validation (governance.models.Stage): never served.
UNVALIDATED_STAGES = frozenset({"development", "validation"})


def check_servable(ref: ArtifactRef) -> None:
    """Refuse a version that has not passed validation (and its approvals) before any load.

    Only development and validation precede ``approve_for_staging``; every other stage is
    reached through it. A reference without a stage is refused too: nothing is loaded by default.
    """
    label = ref.label or ref.digest
    if ref.stage is None:
        raise ArtifactError(
            "not_validated", f"{label}: its lifecycle stage is unknown, so it is not loaded"
        )
    if ref.stage in UNVALIDATED_STAGES:
        raise ArtifactError(
            "not_validated",
            f"{label} is in stage {ref.stage}: only versions that passed validation are loaded "
            "to serve",
        )


def load(ref: ArtifactRef) -> LoadedModel:
    """The in-memory model for ``ref``, loading it (verified) on first use."""
    check_servable(ref)
    state = _state()
    model = state.models.get(ref.digest)
    if model is not None:
        check_policy(ref, model.format)  # the policy may have changed since it was loaded
        return model
    with state.lock_for(ref.digest):
        model = state.models.get(ref.digest)
        if model is not None:
            check_policy(ref, model.format)
            return model
        failure = state.failures.get(ref.digest)
        if failure is not None and time.monotonic() < failure[0]:
            raise failure[1]
        try:
            model = _load(ref)
        except ArtifactError as exc:
            if exc.kind != "policy_refused":  # a verdict on this reference, not the artifact
                retry_at = time.monotonic() + float(setting("SERVING_LOAD_RETRY_SECONDS"))
                state.failures[ref.digest] = (retry_at, exc)
            raise
        state.failures.pop(ref.digest, None)
        state.models[ref.digest] = model
        return model


def retry_due(digest: str) -> bool:
    failure = _state().failures.get(digest)
    return failure is None or time.monotonic() >= failure[0]


def retain(digests: set[str]) -> None:
    """Drop every in-memory model not in ``digests`` (only live and shadow versions stay)."""
    state = _state()
    with state.lock:
        for digest in list(state.models):
            if digest not in digests:
                state.models.pop(digest, None)
                logger.info("unloaded artifact %s", digest)


def clear() -> None:
    from .process import current

    current().models = Models()


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


# --- formats ------------------------------------------------------------------------------------

FORMATS = ("onnx", "skops", "pickle", "cloudpickle", "python_function")
_NON_EXECUTABLE = frozenset({"onnx", "skops"})


def read_mlmodel(path: Path) -> dict:
    """The artifact's MLmodel file as data (``yaml.safe_load``: reading it executes nothing)."""
    try:
        data = yaml.safe_load((Path(path) / "MLmodel").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError("load_failed", "the artifact has no MLmodel file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ArtifactError("load_failed", f"the MLmodel file is unreadable: {exc}"[:500]) from exc
    if not isinstance(data, dict) or not isinstance(data.get("flavors"), dict):
        raise ArtifactError("load_failed", "the MLmodel file lists no flavours")
    return data


def _format_of(mlmodel: dict) -> str:
    flavors = mlmodel["flavors"]
    pyfunc = flavors.get("python_function") or {}
    loader_module = pyfunc.get("loader_module") if isinstance(pyfunc, dict) else None
    onnx, sklearn, sk_loader = flavors.get("onnx"), flavors.get("sklearn"), "mlflow.sklearn"
    # A flavour is taken at its word only when MLflow's own pyfunc would load it the same way and
    # it brings no code of its own: anything else is treated as executable.
    if isinstance(onnx, dict) and not onnx.get("code") and loader_module in (None, "mlflow.onnx"):
        return "onnx"
    if isinstance(sklearn, dict) and not sklearn.get("code") and loader_module in (None, sk_loader):
        fmt = sklearn.get("serialization_format") or "pickle"
        if fmt in ("skops", "pickle", "cloudpickle"):
            return fmt
    return "python_function"


def artifact_format(path: Path | str) -> str:
    """How the artifact at ``path`` is stored: onnx, skops, pickle, cloudpickle, python_function.

    ``python_function`` is any other MLflow model (a custom pyfunc, another library's flavour):
    loaded by MLflow, so it runs the artifact's code like a pickle does.
    """
    return _format_of(read_mlmodel(Path(path)))


def is_executable(fmt: str) -> bool:
    """Whether loading an artifact of format ``fmt`` can run code the artifact brings."""
    return fmt not in _NON_EXECUTABLE


def check_policy(ref: ArtifactRef, fmt: str) -> None:
    """Refuse an executable format when the model's artifact policy allows none."""
    if not ref.allow_executable and is_executable(fmt):
        raise ArtifactError(
            "policy_refused",
            f"{ref.label or ref.digest}: the artifact is {fmt}, which runs code when loaded, and "
            "the model's artifact policy allows no executable formats (ONNX or skops only)",
        )


def load_verified(ref: ArtifactRef) -> LoadedModel:
    """Verify the cached artifact's digest, load it by its format and probe the fast path."""
    check_servable(ref)
    return _load(ref)


def _load(ref: ArtifactRef) -> LoadedModel:
    started = time.perf_counter()
    path = ensure_cached(ref)
    mlmodel = read_mlmodel(path)
    fmt = _format_of(mlmodel)
    check_policy(ref, fmt)  # before anything of the artifact is deserialized
    try:
        if fmt == "onnx":
            model = _load_onnx(ref, path, mlmodel)
        elif fmt == "skops":
            model = _load_skops(ref, path, mlmodel)
        else:
            model = _load_pyfunc(ref, path, fmt)
    except ArtifactError:
        raise
    except Exception as exc:
        raise ArtifactError("load_failed", f"{ref.label}: {exc}"[:500]) from exc
    model.load_seconds = time.perf_counter() - started
    logger.info(
        "loaded %s (%s, %s) in %.0f ms%s",
        ref.label,
        ref.digest,
        fmt,
        model.load_seconds * 1000,
        " with the fast path" if model.fast else "",
    )
    return model


def _load_pyfunc(ref: ArtifactRef, path: Path, fmt: str) -> LoadedModel:
    """Pickled sklearn and custom python_function models: MLflow's pyfunc (runs their code)."""
    import mlflow.pyfunc

    pyfunc = mlflow.pyfunc.load_model(str(path))
    model = LoadedModel(
        digest=ref.digest,
        path=path,
        load_seconds=0.0,
        pyfunc=pyfunc,
        format=fmt,
        integer_features=_integer_features(pyfunc, ref.features),
    )
    flavors = pyfunc.metadata.flavors
    predict_fn = flavors.get("python_function", {}).get("predict_fn", "predict")
    if "sklearn" in flavors and predict_fn == "predict_proba":
        model.fast = _fast_scorer(model, ref.features, pyfunc.get_raw_model)
    return model


def _input_types(mlmodel: dict) -> dict[str, str]:
    """Input name -> type of the MLmodel's column signature (empty without one)."""
    inputs = (mlmodel.get("signature") or {}).get("inputs")
    try:
        columns = json.loads(inputs) if isinstance(inputs, str) else []
        return {c["name"]: str(c.get("type", "")) for c in columns if c.get("name")}
    except (ValueError, TypeError, KeyError, AttributeError):
        return {}


def _signature_matches(ref: ArtifactRef, names: list[str]) -> None:
    if names and set(names) != set(ref.features):
        raise ArtifactError(
            "load_failed",
            f"{ref.label}: the artifact's signature takes {', '.join(names)}, the version lists "
            f"{', '.join(ref.features)}",
        )


# skops: loaded by skops.io.load after its types are checked against an allowlist.


def _load_skops(ref: ArtifactRef, path: Path, mlmodel: dict) -> LoadedModel:
    import skops.io
    from sklearn.base import BaseEstimator

    sk = mlmodel["flavors"]["sklearn"]
    file = _inside(path, sk.get("pickled_model") or "model.skops")
    untrusted = skops.io.get_untrusted_types(file=file)
    allowed = set(setting("SERVING_SKOPS_TRUSTED_TYPES"))
    refused = sorted(t for t in untrusted if t not in allowed)
    if refused:
        raise ArtifactError(
            "untrusted_types",
            f"{ref.label}: the skops file holds types outside SERVING_SKOPS_TRUSTED_TYPES: "
            + ", ".join(refused),
        )
    estimator = skops.io.load(file, trusted=list(untrusted))
    if not isinstance(estimator, BaseEstimator):
        raise ArtifactError(
            "load_failed", f"{ref.label}: the skops file holds a {type(estimator).__name__}"
        )
    types = _input_types(mlmodel)
    _signature_matches(ref, list(types))
    predict_fn = (mlmodel["flavors"].get("python_function") or {}).get("predict_fn", "predict")
    if predict_fn not in ("predict_proba", "predict") or not hasattr(estimator, predict_fn):
        raise ArtifactError(
            "load_failed", f"{ref.label}: the estimator cannot be served by {predict_fn!r}"
        )
    method = getattr(estimator, predict_fn)
    model = LoadedModel(
        digest=ref.digest,
        path=path,
        load_seconds=0.0,
        format="skops",
        integer_features=_integer_types(types, ref.features),
    )

    def reference(X: np.ndarray, features: tuple[str, ...]) -> np.ndarray:
        frame = model.frame(X, features)
        return positive_scores(method(frame if hasattr(estimator, "feature_names_in_") else X))

    model.reference = reference
    if predict_fn == "predict_proba":
        model.fast = _fast_scorer(model, ref.features, lambda: estimator)
    return model


def _inside(root: Path, name: str) -> Path:
    """``root / name``, refused when the MLmodel points outside the artifact."""
    target = (root / str(name)).resolve()
    if not target.is_relative_to(root.resolve()) or not target.is_file():
        raise ArtifactError("load_failed", f"the MLmodel names {name!r}, not a file of the model")
    return target


# ONNX: scored by onnxruntime on the model file; no Python object is deserialized.

_ONNX_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
}


def _load_onnx(ref: ArtifactRef, path: Path, mlmodel: dict) -> LoadedModel:
    import onnxruntime

    onnx = mlmodel["flavors"]["onnx"]
    file = _inside(path, onnx.get("data") or "model.onnx")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # a request's rows are few; workers are the parallelism
    options.inter_op_num_threads = 1
    # From bytes, not the path: a model loaded without a directory cannot name external-data
    # files, so it cannot make onnxruntime read other files of the server.
    session = onnxruntime.InferenceSession(
        file.read_bytes(), sess_options=options, providers=["CPUExecutionProvider"]
    )
    types = _input_types(mlmodel)
    _signature_matches(ref, list(types))
    feed, integers = _onnx_feed(ref, session, list(types))
    output = _onnx_output(ref, session)
    model = LoadedModel(
        digest=ref.digest,
        path=path,
        load_seconds=0.0,
        format="onnx",
        integer_features=integers | _integer_types(types, ref.features),
    )

    def score(X: np.ndarray) -> np.ndarray:
        return output(session.run([output.name], feed(X))[0])

    model.reference = lambda X, features: score(X)
    return model


def _onnx_feed(ref: ArtifactRef, session, names: list[str]):
    """X (columns in the version's feature order) -> the session's input dict; and the features
    that must be whole numbers (an int64 input: a float would be truncated).

    One 2-D input (skl2onnx's ``X``): the columns in the signature's order when it names them,
    else in the version's. Or one input per feature, by name.
    """
    inputs = session.get_inputs()
    width = len(ref.features)
    for i in inputs:
        if i.type not in _ONNX_DTYPES:
            raise ArtifactError(
                "load_failed", f"{ref.label}: ONNX input {i.name} is a {i.type}, not a number"
            )
    if len(inputs) == 1 and len(inputs[0].shape) == 2 and inputs[0].shape[1] in (width, None):
        name, dtype = inputs[0].name, _ONNX_DTYPES[inputs[0].type]
        order = [ref.features.index(n) for n in names] if names else list(range(width))
        same = order == list(range(width))

        def feed(X: np.ndarray) -> dict:
            return {name: (X if same else X[:, order]).astype(dtype, copy=False)}

        return feed, frozenset(ref.features) if dtype is np.int64 else frozenset()
    if {i.name for i in inputs} == set(ref.features) and all(len(i.shape) <= 2 for i in inputs):
        columns = [
            (i.name, ref.features.index(i.name), _ONNX_DTYPES[i.type], len(i.shape) == 2)
            for i in inputs
        ]

        def feed(X: np.ndarray) -> dict:
            return {
                name: (X[:, [j]] if two_d else X[:, j]).astype(dtype)
                for name, j, dtype, two_d in columns
            }

        return feed, frozenset(name for name, _, dtype, _ in columns if dtype is np.int64)
    shown = ", ".join(f"{i.name} {i.shape}" for i in inputs)
    raise ArtifactError(
        "load_failed",
        f"{ref.label}: the ONNX inputs ({shown}) do not take the version's {width} features",
    )


class _OnnxOutput:
    """Which output holds the probabilities, and how to read the positive class from it."""

    def __init__(self, name: str, zipmap: bool):
        self.name = name
        self.zipmap = zipmap

    def __call__(self, values) -> np.ndarray:
        if self.zipmap:  # a list of {class: probability}: the classes in sklearn's (sorted) order
            if not values:
                return np.zeros(0)
            keys = sorted(values[0])
            values = [[row[k] for k in keys] for row in values]
        return positive_scores(values)


def _onnx_output(ref: ArtifactRef, session) -> _OnnxOutput:
    """skl2onnx's ``probabilities`` (zipmap off) or ``output_probability`` (a ZipMap)."""
    outputs = session.get_outputs()
    by_name = {o.name: o for o in outputs}
    for name in ("probabilities", "output_probability"):
        if name in by_name:
            return _OnnxOutput(name, by_name[name].type.startswith("seq(map"))
    for o in outputs:
        if o.type.startswith("seq(map"):
            return _OnnxOutput(o.name, True)
    floats = [o for o in outputs if o.type in ("tensor(float)", "tensor(double)")]
    if len(floats) == 1:
        return _OnnxOutput(floats[0].name, False)
    shown = ", ".join(f"{o.name} {o.type}" for o in outputs)
    raise ArtifactError("load_failed", f"{ref.label}: no ONNX output holds scores ({shown})")


def _integer_types(types: dict[str, str], features: tuple[str, ...]) -> frozenset[str]:
    return frozenset(n for n in features if types.get(n, "").lower() in {"long", "integer"})


def _integer_features(pyfunc, features: tuple[str, ...]) -> frozenset[str]:
    try:
        schema = pyfunc.metadata.get_input_schema()
        if schema is None or not schema.has_input_names():
            return frozenset()
        types = dict(zip(schema.input_names(), schema.input_types(), strict=False))
    except Exception:
        return frozenset()
    return frozenset(n for n in features if str(types.get(n, "")).lower() in {"long", "integer"})


def _fast_scorer(model: LoadedModel, features: tuple[str, ...], raw_model: Callable[[], Any]):
    """For an sklearn binary classifier served through predict_proba: call it directly.

    Accepted only when it gives the format's own answers (the pyfunc's, or the skops estimator's
    on a DataFrame) on probe rows, so it is an optimisation (the gateway has already done the
    schema checks), never a change of meaning.
    """
    if not setting("SERVING_FAST_PATH") or not features or model.integer_features:
        return None
    try:
        raw = raw_model()
        classes = getattr(raw, "classes_", None)
        if not hasattr(raw, "predict_proba") or classes is None or len(classes) != 2:
            return None
        rng = np.random.default_rng(0)
        probe = np.vstack([np.zeros(len(features)), rng.normal(size=(8, len(features)))])
        expected = model.score(probe, features)  # ``fast`` is not set yet: the reference

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
