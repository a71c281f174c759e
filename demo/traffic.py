"""The demo's production traffic: 35 days of logged predictions with drift and a fairness shift.

Days 0-19 look like training data; from day 20 calls for service rise by 60 % (data drift, PSI
well above 0.2); from day 25 hotspots in one neighbourhood become less predictable, so that group's
false-negative rate climbs (fairness drift). Daily and weekly checks then run for every day of
the period, so the admin and API show real runs, time series and alerts.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta

import pandas as pd
from django.utils import timezone

from governance.audit import Actor
from monitoring.ingest import labels_ingest, predictions_ingest, reference_ingest
from monitoring.models import DAILY_CHECKS, WEEKLY_CHECKS, MonitorRun, RunStatus
from monitoring.runs import run_create, run_execute
from registry.models import ModelVersion

from . import data

DAYS = 35
DRIFT_FROM_DAY, FAIRNESS_FROM_DAY = 20, 25
DRIFT = {"calls_for_service_lag_1w": 1.6}
SYSTEM = Actor.system("manage.py demo")


def _records(model, frame: pd.DataFrame, features: list[str], *, label: bool) -> list[dict]:
    scores = model.predict_proba(frame[features])[:, 1]
    out = []
    for row, score, (_, values) in zip(
        frame.itertuples(index=False), scores, frame[features].iterrows(), strict=True
    ):
        record = {
            "prediction_id": row.prediction_id,
            "timestamp": pd.Timestamp(row.timestamp).isoformat(),
            "score": round(float(score), 6),
            "features": {k: float(v) for k, v in values.items()},
            "sensitive": {data.GROUP: str(getattr(row, data.GROUP))},
        }
        if label:
            record["label"] = int(getattr(row, data.TARGET))
        out.append(record)
    return out


def scheduled_run(version: ModelVersion, check: str, window_end: datetime) -> MonitorRun:
    """What beat and the worker do for one scheduled check, done here at once."""
    run = run_create(
        model=version.model,
        version=version,
        check=check,
        window_end=window_end,
        trigger="schedule",
        actor=SYSTEM,
    )
    return run_execute(run.pk)


def seed_traffic(
    *, version: ModelVersion, model, frame: pd.DataFrame, validation: pd.DataFrame, seed: int
) -> Iterator[str]:
    features = list(version.feature_list)
    name, text = version.model.name, version.version
    # The reference is a training-time sample of what the traffic is drawn from.
    reference = frame.sample(n=min(5000, len(frame)), random_state=seed).reset_index(drop=True)
    reference["prediction_id"] = [f"ref-{text}-{i}" for i in range(len(reference))]
    reference["timestamp"] = [
        datetime.combine(d, time(12), tzinfo=UTC) for d in reference["week_start"]
    ]
    reference_ingest(
        model_name=name,
        version=text,
        records=_records(model, reference, features, label=True),
        actor=SYSTEM,
    )
    yield f"{text}: reference profile from {len(reference)} sampled training records"
    today = timezone.now().date()
    start = today - timedelta(days=DAYS)
    traffic = data.make_production_traffic(
        frame,
        seed=seed,
        days=DAYS,
        start=start,
        drift_from_day=DRIFT_FROM_DAY,
        drift_features=DRIFT,
        fairness_shift_from_day=FAIRNESS_FROM_DAY,
        fairness_group=sorted(frame[data.GROUP].unique())[0],
    )
    records = _records(model, traffic, features, label=False)
    for i in range(0, len(records), 5000):
        predictions_ingest(
            model_name=name, version=text, records=records[i : i + 5000], actor=SYSTEM
        )
    labels = [
        {"prediction_id": r.prediction_id, "label": int(getattr(r, data.TARGET))}
        for r in traffic.itertuples(index=False)
    ]
    for i in range(0, len(labels), 10000):
        labels_ingest(model_name=name, records=labels[i : i + 10000], actor=SYSTEM)
    yield f"{text}: {len(records)} logged predictions over {DAYS} days, with labels"
    for offset in range(7, DAYS + 1):
        window_end = datetime.combine(start + timedelta(days=offset), time(0), tzinfo=UTC)
        checks = list(DAILY_CHECKS)
        if window_end.weekday() == 0 and offset >= 28:
            checks += list(WEEKLY_CHECKS)
        for check in checks:
            scheduled_run(version, check, window_end)
    runs = MonitorRun.objects.filter(version=version)
    yield (
        f"{text}: {runs.count()} monitor runs "
        f"({runs.filter(status=RunStatus.SUCCEEDED).count()} succeeded), "
        f"{version.alerts.count()} alerts"
    )
