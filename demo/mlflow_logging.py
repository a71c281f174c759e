"""Logging demo models to MLflow the way a CI pipeline would."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime

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


def log_sklearn_model(
    model,
    *,
    registered_name: str,
    input_example: pd.DataFrame,
    params: dict,
    metrics: dict[str, float],
    experiment_id: str,
    run_name: str,
) -> LoggedModel:
    """Log and register a fitted classifier whose pyfunc predicts the positive-class probability."""
    import mlflow
    from mlflow.models import infer_signature

    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        signature = infer_signature(input_example, model.predict_proba(input_example))
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=registered_name,
            signature=signature,
            pip_requirements=PIP_REQUIREMENTS,
            pyfunc_predict_fn="predict_proba",
            serialization_format="cloudpickle",
        )
    started = datetime.fromtimestamp(run.info.start_time / 1000).astimezone()
    return LoggedModel(
        uri=f"models:/{registered_name}/{info.registered_model_version}",
        run_id=run.info.run_id,
        started_at=started,
    )
