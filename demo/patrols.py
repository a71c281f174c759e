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
from monitoring.ingest import labels_ingest, predictions_ingest
from monitoring.models import Alert, Check, MonitorRun
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
    start = datetime.combine(timezone.now().date() - timedelta(days=7 * WEEKS), time(0), UTC)
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


def _records(rows: pd.DataFrame) -> list[dict]:
    features = rows[data.FEATURES_V1].to_numpy(dtype=float)
    return [
        {
            "prediction_id": pid,
            "timestamp": stamp.isoformat(),
            "score": round(float(score), 6),
            "features": {**dict(zip(data.FEATURES_V1, values.tolist(), strict=True)), "beat": b},
            "sensitive": {data.GROUP: str(group)},
        }
        for pid, stamp, score, values, b, group in zip(
            rows["prediction_id"],
            rows["timestamp"],
            rows["score"],
            features,
            rows["beat"],
            rows[data.GROUP],
            strict=True,
        )
    ]


def _labels(rows: pd.DataFrame) -> list[dict]:
    return [
        {"prediction_id": pid, "label": int(y)}
        for pid, y in zip(rows["prediction_id"], rows["label"], strict=True)
    ]


def seed_patrols(*, model, frame: pd.DataFrame, seed: int) -> Iterator[str]:
    version = ModelVersion.objects.get(model__name=MODEL_NAME, version=VERSION)
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
    week_end = [start + timedelta(days=7 * (w + 1)) for w in range(WEEKS)]
    concept = {w: scheduled_run(version, Check.CONCEPT_DRIFT, week_end[w]) for w in range(WEEKS)}
    estimated = [w for w, run in concept.items() if (run.metrics or {}).get("estimated")]
    yield f"{MODEL_NAME}: weekly AUC realised for weeks 0-4, estimated for weeks {estimated}"
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
        scheduled_run(version, Check.FEEDBACK_LOOP, week_end[w])
    loops = Alert.objects.filter(version=version, kind=Check.FEEDBACK_LOOP)
    yield (
        f"{MODEL_NAME}: weekly feedback-loop runs; {loops.count()} alert(s) "
        f"(labels concentrate in the beats patrols were sent to from week {LOOP_FROM_WEEK})"
    )
