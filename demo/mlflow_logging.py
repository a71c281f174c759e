"""Logging demo models to MLflow the way a CI pipeline would."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict, Unpack

import pandas as pd
import sklearn

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# Explicit requirements: inferring them costs about 5 s per model and may reach the network.
PIP_REQUIREMENTS = [f"scikit-learn=={sklearn.__version__}", f"pandas=={pd.__version__}"]


@dataclass(frozen=True)
class LoggedModel:
    uri: str  # models:/NAME/N
    run_id: str
    started_at: datetime


class RunSpec(TypedDict):
    """What every ``log_*_model`` takes besides the model: one run, one registered version."""

    registered_name: str
    input_example: pd.DataFrame
    params: dict
    metrics: dict[str, float]
    experiment_id: str
    run_name: str


def log_sklearn_model(model, **run: Unpack[RunSpec]) -> LoggedModel:
    """Log and register a fitted classifier whose pyfunc predicts the positive-class probability."""
    import mlflow

    return _log_run(
        mlflow.sklearn.log_model,
        model,
        model,
        run,
        pip_requirements=PIP_REQUIREMENTS,
        pyfunc_predict_fn="predict_proba",
        serialization_format="cloudpickle",
    )


def _log_run(log_model, artifact, model, run: RunSpec, **flavour_kwargs) -> LoggedModel:
    """One run logging params, metrics and ``artifact`` (through ``log_model``).

    The signature comes from the sklearn ``model`` (its ``predict_proba``) whatever flavour
    ``artifact`` is stored in, so every flavour declares the same inputs and outputs.
    """
    import mlflow
    from mlflow.models import infer_signature

    registered_name, input_example = run["registered_name"], run["input_example"]
    with mlflow.start_run(experiment_id=run["experiment_id"], run_name=run["run_name"]) as started:
        mlflow.log_params({k: str(v)[:500] for k, v in run["params"].items()})
        mlflow.log_metrics({k: float(v) for k, v in run["metrics"].items()})
        signature = infer_signature(input_example, model.predict_proba(input_example))
        info = log_model(
            artifact,
            name="model",
            registered_model_name=registered_name,
            signature=signature,
            **flavour_kwargs,
        )
    return LoggedModel(
        uri=f"models:/{registered_name}/{info.registered_model_version}",
        run_id=started.info.run_id,
        started_at=datetime.fromtimestamp(started.info.start_time / 1000).astimezone(),
    )


def log_skops_model(
    model, *, trusted_types: list[str] | None = None, **run: Unpack[RunSpec]
) -> LoggedModel:
    """Like ``log_sklearn_model``, stored with skops: the gateway loads it without unpickling.

    skops records the estimator's types. ``trusted_types`` are those beyond skops's defaults
    that MLflow may load back while logging; the gateway ignores what an artifact declares and
    refuses a file holding types outside its own ``SERVING_SKOPS_TRUSTED_TYPES``.
    """
    import mlflow
    import skops

    return _log_run(
        mlflow.sklearn.log_model,
        model,
        model,
        run,
        pip_requirements=[*PIP_REQUIREMENTS, f"skops=={skops.__version__}"],
        pyfunc_predict_fn="predict_proba",
        serialization_format="skops",
        skops_trusted_types=trusted_types,
    )


def log_onnx_model(model, **run: Unpack[RunSpec]) -> LoggedModel:
    """A fitted sklearn classifier converted to ONNX (skl2onnx) and logged with the onnx flavour.

    Converted in double precision, so its probabilities are sklearn's to ~1e-12, and without
    skl2onnx's ZipMap, so ``probabilities`` is a plain [n, 2] tensor. The signature names the
    columns in the order of the ONNX input's columns, which the gateway checks against the
    version's feature list. Needs skl2onnx (a development dependency).
    """
    import mlflow
    import onnx
    import onnxruntime
    from skl2onnx import to_onnx

    sample = run["input_example"].to_numpy(dtype="float64")
    converted = to_onnx(model, sample, options={id(model): {"zipmap": False}})
    return _log_run(
        mlflow.onnx.log_model,
        converted,
        model,
        run,
        pip_requirements=[
            f"onnx=={onnx.__version__}",
            f"onnxruntime=={onnxruntime.__version__}",
        ],
    )
