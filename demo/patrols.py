"""The demo's second model, patrol-allocation: labels that arrive late and patrols that find
crime where they are sent (issue 13's estimated performance and feedback-loop check, with data).

A weekly patrol-allocation score per beat (60 beats), trained like hotspot-classifier 1.0.0 on
the same synthetic city; its requests carry the beat, which its monitoring policy names as the
feedback-loop cell. Eight weeks of traffic, 14 scored requests per beat a week:

* Labels (a recorded incident) arrive late: weeks 0-4 are labelled when the weekly
  concept-drift runs go over the eight weeks (7-day windows), so weeks 5-7 are *estimated* from
  the calibrated scores (confidence-based performance estimation). Then the labels of weeks 5
  and 6 arrive and the reconciliation puts the realised AUC beside each estimate; week 7 stays an
  estimate.
* From week 5 patrols go to last week's five top-scored beats and record an incident on 60 % of
  the visits where nothing would otherwise have been recorded: labels concentrate where the
  model sent attention beyond those beats' history (Ensign et al., 2018). The weekly
  ``feedback_loop`` runs (4-week windows) stay under the 1.5 ratio until then and alert (high)
  once the loop has run for two weeks. The same discovered incidents are why the realised AUC
  of weeks 5-6 falls below its estimate: the gap the reconciliation shows is the loop, seen
  from the labels' side.

Its history happened before its data, as it would have: registered five days before the first
week, a day per review step, promoted the day before the first request (``LIFECYCLE_DAYS``,
written on the back-dated clock of ``demo/clock.py``). Its live version is then checked as
hotspot-classifier's is: the daily data-drift, prediction-drift and fairness checks and the
weekly calibration check against a reference profile, beside the checks above.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta

import numpy as np
import pandas as pd
from django.contrib.auth import get_user_model
from django.utils import timezone
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from governance import services
from governance.audit import Actor
from governance.policies import policy_publish
from monitoring.ingest import labels_ingest, predictions_ingest, reference_ingest
from monitoring.models import DAILY_CHECKS, Alert, Check, MonitorRun, RunStatus
from monitoring.reconciliation import reconcile_run
from registry.models import ModelVersion
from registry.services import VersionSpec

from . import data
from .traffic import SYSTEM, scheduled_run

MODEL_NAME = "patrol-allocation"
VERSION = "1.0.0"
BEATS, WEEKS, PER_BEAT_WEEK = 60, 8, 14
LABELLED_WEEKS = 5  # weeks 0-4 labelled when the checks run; 5-7 not yet
LATE_WEEKS = (5, 6)  # whose labels arrive after the estimates
LOOP_FROM_WEEK = 5  # patrols follow the scores from here
TOP_K, DISCOVERED = 5, 0.6  # attended beats; share of otherwise quiet visits that record one
LOOP_PERIODS = 4  # the feedback check's window: 4 weeks, the first history only
FEATURES = [*data.FEATURES_V1, "beat"]
# Registered LIFECYCLE_DAYS before the first week at 09:00 UTC, then a day per review step (the
# walk's four: validation, gates, staging, promotion): live the day before its first request.
LIFECYCLE_DAYS, LIFECYCLE_STEP = 5, timedelta(days=1)
REFERENCE_ROWS = 5000


def first_week() -> datetime:
    """The start of the first week of traffic: ``WEEKS`` weeks before today, midnight UTC."""
    return datetime.combine(timezone.now().date() - timedelta(days=7 * WEEKS), time(0), UTC)


def lifecycle_start() -> datetime:
    """When the model's history begins: its registration, days before its data."""
    return first_week() - timedelta(days=LIFECYCLE_DAYS) + timedelta(hours=9)


def _person(username: str) -> Actor:
    return Actor.for_user(get_user_model().objects.get(username=username), request_id="demo")


def _model(train: pd.DataFrame, seed: int) -> Pipeline:
    """hotspot-classifier 1.0.0's logistic regression; the beat is carried, not used."""
    columns = ColumnTransformer([("scale", StandardScaler(), data.FEATURES_V1)], remainder="drop")
    model = Pipeline(
        [("features", columns), ("clf", LogisticRegression(max_iter=1000, random_state=seed))]
    )
    return model.fit(train[FEATURES], train[data.TARGET])


def _with_beats(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    frame = frame.copy()
    frame["beat"] = [f"beat-{b:02d}" for b in rng.integers(0, BEATS, len(frame))]
    return frame


def register(*, frame: pd.DataFrame, seed: int, ci: Actor, experiment_id: str, log) -> tuple:
    """Register the model and its version (logged to MLflow as a CI pipeline would); the
    Ethics Officer's ratio floors and the ML Lead's monitoring policy naming the beat."""
    rng = np.random.default_rng(seed)
    weeks = sorted(frame["week_start"].unique())
    window = _with_beats(frame[frame["week_start"] <= weeks[79]], rng)
    train, validation = data.split_by_time(window, validation_weeks=12)
    model = _model(train, seed)
    metrics = data.evaluate(model, validation, FEATURES)
    services.model_register(
        name=MODEL_NAME,
        description="Weekly patrol-allocation score per beat (synthetic demo of issue 13).",
        actor=SYSTEM,
    )
    policy_publish(
        "validation",
        _model_row(),
        {"fpr_ratio_min": 0.5, "fnr_ratio_min": 0.5},
        _person("olu-ethics"),
        reason="As for hotspot-classifier: ~40 false positives a group on the validation split.",
    )
    policy_publish(
        "monitoring",
        _model_row(),
        {
            "feedback_cell_field": "beat",
            "feedback_periods": LOOP_PERIODS,
            "weekly_window_days": 7,
        },
        _person("lee-lead"),
        reason=(
            "Patrols go where this model points, so watch for a feedback loop per beat; labels "
            "(recorded incidents) come in weekly, so judge performance week by week."
        ),
    )
    logged = log(
        model, validation, FEATURES, {"C": 1.0}, metrics, experiment_id, VERSION, MODEL_NAME
    )
    spec = VersionSpec(
        version=VERSION,
        mlflow_uri=logged.uri,
        training_data_hash=data.dataset_hash(train),
        training_data_start=pd.Timestamp(train["week_start"].min()).date(),
        training_data_end=pd.Timestamp(train["week_start"].max()).date() + timedelta(days=6),
        hyperparameters={"kind": "logreg", "seed": seed, "C": 1.0},
        metrics=metrics,
        feature_list=FEATURES,
        thresholds={"decision": 0.5},
        responsible_engineer="erin-engineer",
        model_card=_card(metrics),
    )
    services.version_register(model_name=MODEL_NAME, spec=spec, actor=ci)
    return model, validation


def _model_row():
    from registry.models import RegisteredModel

    return RegisteredModel.objects.get(name=MODEL_NAME)


def _card(metrics: dict) -> dict:
    return {
        "intended_use": (
            "Rank beats for next week's patrol review. Decision support: a supervisor reviews "
            "every allocation."
        ),
        "out_of_scope_uses": "Decisions about individuals; any use without the weekly review.",
        "training_data": "The hotspot-classifier data set, each cell-week assigned to a beat.",
        "evaluation_data": "The last 12 weeks of the training window, held out by time.",
        "metrics": ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float)),
        "ethical_considerations": (
            "Its labels are incidents recorded by the patrols it allocates: a feedback loop "
            "is monitored weekly (docs/feedback-loops.md)."
        ),
        "caveats_and_limitations": "Synthetic data; labels arrive a week or more late.",
        "owners": ["erin-engineer", "lee-lead"],
    }


def traffic(model, frame: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, datetime]:
    """Eight weeks of scored requests with the labels the patrols record (the loop from
    ``LOOP_FROM_WEEK``); returns the records and the first week's start."""
    rng = np.random.default_rng(seed + 13)
    start = first_week()
    n = WEEKS * BEATS * PER_BEAT_WEEK
    rows = frame.iloc[rng.integers(0, len(frame), n)].reset_index(drop=True)
    week = np.repeat(np.arange(WEEKS), BEATS * PER_BEAT_WEEK)
    beat = np.tile(np.repeat(np.arange(BEATS), PER_BEAT_WEEK), WEEKS)
    rows["beat"] = [f"beat-{b:02d}" for b in beat]
    rows["score"] = model.predict_proba(rows[FEATURES])[:, 1]
    rows["week"] = week
    offsets = week * 7 * 86_400 + rng.integers(0, 7 * 86_400, n)
    rows["timestamp"] = pd.to_datetime(start) + pd.to_timedelta(offsets, "s")
    rows["prediction_id"] = [f"patrol-{i:05d}" for i in range(n)]
    label = rows[data.TARGET].to_numpy().astype(int)
    for w in range(LOOP_FROM_WEEK, WEEKS):
        last = rows[week == w - 1].groupby("beat")["score"].mean()
        attended = set(last.sort_values(ascending=False, kind="stable").index[:TOP_K])
        visited = (week == w) & rows["beat"].isin(attended).to_numpy()
        label[visited & (label == 0) & (rng.random(n) < DISCOVERED)] = 1
    rows["label"] = label
    return rows, start


def _records(rows: pd.DataFrame, *, label: str = "") -> list[dict]:
    """Logged predictions; with ``label`` (a column), each carries its label (a reference)."""
    features = rows[data.FEATURES_V1].to_numpy(dtype=float)
    labels = rows[label].astype(int).tolist() if label else [None] * len(rows)
    return [
        {
            "prediction_id": pid,
            "timestamp": stamp.isoformat(),
            "score": round(float(score), 6),
            "features": {**dict(zip(data.FEATURES_V1, values.tolist(), strict=True)), "beat": b},
            "sensitive": {data.GROUP: str(group)},
            **({"label": y} if label else {}),
        }
        for pid, stamp, score, values, b, group, y in zip(
            rows["prediction_id"],
            rows["timestamp"],
            rows["score"],
            features,
            rows["beat"],
            rows[data.GROUP],
            labels,
            strict=True,
        )
    ]


def _reference(model, frame: pd.DataFrame, seed: int) -> int:
    """The reference profile: a training-time sample of what the traffic is drawn from (as for
    hotspot-classifier, demo/traffic.py), each row assigned a beat; returns its size."""
    rng = np.random.default_rng(seed + 17)
    rows = _with_beats(frame.sample(n=min(REFERENCE_ROWS, len(frame)), random_state=seed), rng)
    rows = rows.reset_index(drop=True)
    rows["prediction_id"] = [f"ref-{MODEL_NAME}-{i}" for i in range(len(rows))]
    rows["timestamp"] = [datetime.combine(d, time(12), tzinfo=UTC) for d in rows["week_start"]]
    rows["score"] = model.predict_proba(rows[FEATURES])[:, 1]
    records = _records(rows, label=data.TARGET)
    reference_ingest(model_name=MODEL_NAME, version=VERSION, records=records, actor=SYSTEM)
    return len(records)


def _labels(rows: pd.DataFrame) -> list[dict]:
    return [
        {"prediction_id": pid, "label": int(y)}
        for pid, y in zip(rows["prediction_id"], rows["label"], strict=True)
    ]


def seed_lifecycle(*, model, validation: pd.DataFrame, ci: Actor, clock) -> Iterator[str]:
    """The demo's lifecycle walk (demo/lifecycle_walk.py) for 1.0.0, a day per review step on
    ``clock`` (registered a step before), so it goes live before its first request."""
    from .lifecycle_walk import walk

    version = ModelVersion.objects.get(model__name=MODEL_NAME, version=VERSION)
    clock.advance(LIFECYCLE_STEP)
    for line in walk(version=version, model=model, validation=validation, features=FEATURES, ci=ci):
        yield line
        clock.advance(LIFECYCLE_STEP)


def _scheduled_checks(version: ModelVersion, start: datetime) -> dict[int, MonitorRun]:
    """What beat runs for the live version over the eight weeks: the daily checks from the end
    of the first week on, the weekly calibration and concept-drift checks (7-day windows)."""
    for offset in range(7, 7 * WEEKS + 1):
        for check in DAILY_CHECKS:
            scheduled_run(version, check, start + timedelta(days=offset))
    concept = {}
    for w in range(WEEKS):
        week_end = start + timedelta(days=7 * (w + 1))
        scheduled_run(version, Check.CALIBRATION, week_end)
        concept[w] = scheduled_run(version, Check.CONCEPT_DRIFT, week_end)
    return concept


def seed_patrols(*, model, frame: pd.DataFrame, seed: int) -> Iterator[str]:
    version = ModelVersion.objects.get(model__name=MODEL_NAME, version=VERSION)
    yield f"{MODEL_NAME}: reference profile from {_reference(model, frame, seed)} sampled records"
    rows, start = traffic(model, frame, seed)
    predictions_ingest(model_name=MODEL_NAME, version=VERSION, records=_records(rows), actor=SYSTEM)
    labels_ingest(
        model_name=MODEL_NAME,
        records=_labels(rows[rows["week"] < LABELLED_WEEKS]),
        actor=SYSTEM,
    )
    yield (
        f"{MODEL_NAME}: {len(rows)} logged predictions over {WEEKS} weeks ({BEATS} beats); "
        f"labels for weeks 0-{LABELLED_WEEKS - 1} only"
    )
    concept = _scheduled_checks(version, start)
    estimated = [w for w, run in concept.items() if (run.metrics or {}).get("estimated")]
    runs = MonitorRun.objects.filter(version=version)
    succeeded = runs.filter(status=RunStatus.SUCCEEDED).count()
    yield (
        f"{MODEL_NAME}: {runs.count()} monitor runs ({succeeded} succeeded); weekly AUC "
        f"realised for weeks 0-4, estimated for weeks {estimated}"
    )
    late = rows[rows["week"].isin(LATE_WEEKS)]
    labels_ingest(model_name=MODEL_NAME, records=_labels(late), actor=SYSTEM)
    outcomes = {w: reconcile_run(concept[w].pk) for w in LATE_WEEKS}
    gaps = []
    for w in LATE_WEEKS:
        rec = MonitorRun.objects.get(pk=concept[w].pk).metrics.get("reconciliation") or {}
        gaps.append(
            f"week {w} {outcomes[w]}: estimated {rec.get('estimated', 0):.3f}, "
            f"realised {rec.get('realised') or 0:.3f}"
        )
    yield f"{MODEL_NAME}: labels of weeks {list(LATE_WEEKS)} arrived; " + "; ".join(gaps)
    for w in range(2, WEEKS):
        scheduled_run(version, Check.FEEDBACK_LOOP, start + timedelta(days=7 * (w + 1)))
    loops = Alert.objects.filter(version=version, kind=Check.FEEDBACK_LOOP)
    yield (
        f"{MODEL_NAME}: weekly feedback-loop runs; {loops.count()} alert(s) "
        f"(labels concentrate in the beats patrols were sent to from week {LOOP_FROM_WEEK}); "
        f"{version.alerts.count()} alerts in all"
    )
