"""Set-up shared by the benches that need a database of their own and a logged, registered model.

Imported as ``bench._common`` (the repository on ``sys.path``) or as ``_common`` (``bench/`` on
it, as ``bench/fleet.py`` has it): plain functions, Django and MLflow imported only when called.
"""

from __future__ import annotations


def create_database(admin_url: str, name: str) -> str:
    """A new, empty PostgreSQL database next to ``admin_url``'s; its URL."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{admin_url.rsplit('/', 1)[0]}/{name}"


def drop_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def log_model(name: str, seed: int, *, features: list[str], rows: int, run_name: str) -> str:
    """A logistic regression on ``rows`` random rows, logged to MLflow as ``name``; its URI."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from demo.mlflow_logging import log_sklearn_model
    from registry import mlflow_bridge

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, len(features))), columns=features)
    weights = rng.normal(size=len(features))
    labels = (frame.to_numpy() @ weights + rng.normal(size=rows) > 0).astype(int)
    return log_sklearn_model(
        LogisticRegression().fit(frame, labels),
        registered_name=name,
        input_example=frame.head(3),
        params={"C": 1.0},
        metrics={"auc": 0.8},
        experiment_id=mlflow_bridge.ensure_experiment(),
        run_name=run_name,
    ).uri


def register(model: str, version: str, uri: str, *, features: list[str], engineer: str, use: str):
    """Register ``uri`` as ``version`` of ``model`` (by the system actor ``bench``)."""
    from datetime import date

    from governance import services
    from governance.audit import Actor
    from registry.services import VersionSpec

    return services.version_register(
        model_name=model,
        spec=VersionSpec(
            version=version,
            mlflow_uri=uri,
            training_data_hash="sha256:" + "ab" * 32,
            training_data_start=date(2025, 1, 1),
            training_data_end=date(2025, 12, 31),
            responsible_engineer=engineer,
            feature_list=features,
            thresholds={"decision": 0.5},
            model_card={"intended_use": use, "owners": [engineer]},
        ),
        actor=Actor.system("bench"),
    )


def worker_environment(database_url: str, var: str, redis_url: str, **extra: str) -> dict:
    """The process environment of a bench and of the Celery workers it starts (dev settings)."""
    import os

    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.dev",
        "DJANGO_DEBUG": "false",
        "DATABASE_URL": database_url,
        "GOVERNANCE_VAR_DIR": var,
        "CELERY_BROKER_URL": redis_url,
        "LOG_LEVEL": "WARNING",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        **extra,
    }
