"""Monitor runs end to end against the Parquet store: create once, claim once, store every number,
raise one alert per (version, check, window) and hand it to routing after commit; the schedule's
fan-out and the monthly audit; monitoring policies.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext

from governance import services
from governance.audit import Actor
from governance.models import AuditEvent, Lifecycle, Stage
from governance.policies import policy_current, policy_in_force, policy_publish
from monitoring import checks, ingest, routing, runs, schedule, store, tasks
from monitoring.columns import attribute_of, feature_of, is_feature, is_sensitive
from monitoring.ingest.common import batch_rows
from monitoring.models import (
    Alert,
    AlertStatus,
    AuditTask,
    BatchKind,
    DataBatch,
    MetricPoint,
    MonitoringPolicy,
    MonitorRun,
    ReferenceProfile,
    ReviewItem,
    RunStatus,
)
from platform_core.errors import InvalidInput
from tests.concurrency import race
from tests.factories import ModelVersionFactory, RegisteredModelFactory, alert_of
from tests.monitoring.test_checks import FEATURES, baseline, reference_profile, synthetic

pytestmark = pytest.mark.django_db

SYSTEM = Actor.system("tests")
WINDOW_END = datetime(2026, 3, 8, tzinfo=UTC)  # daily window: 2026-03-01 to 2026-03-08
REFERENCE = synthetic(20_000, seed=1)
PROFILE = reference_profile(REFERENCE)


# ---------------------------------------------------------------------------------------------
# Data: ingested through the services; broken files written the way the store writes them
# ---------------------------------------------------------------------------------------------


def records_of(frame: pd.DataFrame, *, labels: bool = False) -> list[dict]:
    """``synthetic()`` rows as API records (labels only for the reference shape)."""
    features = [c for c in frame.columns if is_feature(c)]
    sensitive = [c for c in frame.columns if is_sensitive(c)]
    stamps = frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    out = []
    for i, row in enumerate(frame.to_dict("records")):
        record = {
            "prediction_id": row["prediction_id"],
            "timestamp": stamps.iloc[i],
            "score": row["score"],
            "features": {feature_of(c): row[c] for c in features},
            "sensitive": {attribute_of(c): row[c] for c in sensitive},
        }
        if "prediction" in row and not pd.isna(row["prediction"]):
            record["prediction"] = int(row["prediction"])
        if labels and not pd.isna(row["label"]):
            record["label"] = int(row["label"])
        out.append(record)
    return out


def put_window(version, frame: pd.DataFrame) -> None:
    """Ingest ``frame``'s predictions and then its labels, as the API does."""
    ingest.predictions_ingest(
        model_name=version.model.name,
        version=version.version,
        records=records_of(frame),
        actor=SYSTEM,
    )
    put_labels(version, frame)


def put_labels(version, frame: pd.DataFrame) -> None:
    """Ingest the labels of ``frame``'s labelled rows (predictions already stored)."""
    labelled = frame[frame["label"].notna()]
    if len(labelled):
        ingest.labels_ingest(
            model_name=version.model.name,
            records=[
                {"prediction_id": pid, "label": int(label)}
                for pid, label in zip(labelled["prediction_id"], labelled["label"], strict=True)
            ],
            actor=SYSTEM,
        )


def _timestamps(series: pd.Series) -> pa.Array:
    utc = series.dt.tz_convert(None).to_numpy().astype("datetime64[us]")
    return pa.array(utc, pa.timestamp("us")).cast(store.TIMESTAMP)


def _store_batch(version, table: pa.Table, kind: str, day) -> DataBatch:
    """A file written through the store and its batch row, as ingestion leaves them."""
    stored = store.write_file(table, model_name=version.model.name, kind=str(kind), day=day)
    (batch,) = batch_rows(
        [stored], model=version.model, version_id=version.pk, kind=kind, source="api", actor=SYSTEM
    )
    return batch


def put_raw_window(version, frame: pd.DataFrame) -> list[DataBatch]:
    """Write ``frame`` as prediction and label partitions exactly as the store lays them out,
    without ingestion's validation: how a damaged or hand-made file looks to a run."""
    frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    days = frame["timestamp"].dt.tz_convert(None).to_numpy().astype("datetime64[D]")
    written = []
    for day in np.unique(days):
        part = frame[days == day].reset_index(drop=True)
        columns = {
            "prediction_id": pa.array(part["prediction_id"], pa.string()),
            "timestamp": _timestamps(part["timestamp"]),
            "score": pa.array(part["score"], pa.float64()),
            "prediction": pa.array(
                part["prediction"] if "prediction" in part else [None] * len(part),
                pa.int8(),
                from_pandas=True,
            ),
        }
        for name in part.columns:
            if name.startswith("f."):
                columns[name] = pa.array(part[name], from_pandas=True)
            elif name.startswith("s."):
                columns[name] = pa.array(part[name].astype(object), pa.string(), from_pandas=True)
        columns["version"] = pa.array([version.version] * len(part), pa.string())
        day_date = day.astype(object)
        batch = _store_batch(version, pa.table(columns), BatchKind.PREDICTIONS, day_date)
        written.append(batch)
        rows = np.flatnonzero(part["label"].notna().to_numpy())
        if rows.size:
            labels = pa.table(
                {
                    "prediction_id": pa.array(part["prediction_id"].iloc[rows], pa.string()),
                    "label": pa.array(part["label"].iloc[rows].astype(int), pa.int8()),
                    "label_time": _timestamps(part["timestamp"].iloc[rows] + pd.Timedelta(days=1)),
                    "batch": pa.array([batch.pk] * rows.size, pa.int64()),
                    "row": pa.array(rows, pa.int64()),
                }
            )
            _store_batch(version, labels, BatchKind.LABELS, day_date)
    return written


def live(stage: str = Stage.PRODUCTION, *, profile: bool = True, **kwargs):
    version = ModelVersionFactory(feature_list=FEATURES, thresholds={"decision": 0.5}, **kwargs)
    Lifecycle.objects.filter(version=version).update(stage=stage)  # set-up only
    if profile:
        ReferenceProfile.objects.create(version=version, profile=PROFILE, rows=PROFILE["n"])
    return version


def stage_of(version) -> str:
    return Lifecycle.objects.get(version=version).stage


def create(
    version, check: str, window_end: datetime = WINDOW_END, trigger: str = "schedule"
) -> MonitorRun:
    return runs.run_create(
        model=version.model,
        version=version,
        check=check,
        window_end=window_end,
        trigger=trigger,
        actor=SYSTEM,
    )


def execute(
    version, check: str, frame: pd.DataFrame | None = None, trigger: str = "schedule"
) -> MonitorRun:
    if frame is not None:
        put_window(version, frame)
    return runs.run_execute(create(version, check, trigger=trigger).pk)


@pytest.fixture(autouse=True)
def _own_var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch):
    """Tasks are recorded, never sent: tests call services and task bodies directly."""
    sent: list[tuple[str, tuple]] = []
    short = {
        "monitoring.execute_run": "execute",
        "monitoring.execute_runs": "execute_group",
        "monitoring.route_alert": "route",
    }

    def record(name, args=(), kwargs=None, **options):
        sent.append((short.get(name, name), tuple(args)))
        return ""

    monkeypatch.setattr("platform_core.tasking.send", record)
    return sent


# ---------------------------------------------------------------------------------------------
# Creating and claiming runs
# ---------------------------------------------------------------------------------------------


def test_run_create_finds_the_existing_run_of_the_same_version_check_and_window():
    version = live()
    first = create(version, "data_drift")
    again = create(version, "data_drift")
    assert again.pk == first.pk
    assert MonitorRun.objects.count() == 1
    assert first.window_start == WINDOW_END - timedelta(days=7)
    assert create(version, "calibration").window_start == WINDOW_END - timedelta(days=28)


def test_run_create_records_the_current_policy_versions():
    version = live()
    policy_publish(
        "monitoring", model=version.model, values={"psi_max": 0.3}, reason="looser", actor=SYSTEM
    )
    run = create(version, "data_drift")
    assert run.policy.version == 1 and run.policy.values["psi_max"] == 0.3
    assert run.validation_policy.version == 1
    assert run.status == RunStatus.PENDING and run.trigger == "schedule"


def test_run_create_refuses_an_unknown_check():
    version = live()
    with pytest.raises(InvalidInput) as caught:
        create(version, "vibes")
    assert "check" in caught.value.errors


def test_a_second_execute_of_a_finished_run_does_nothing():
    version = live()
    run = execute(version, "data_drift", synthetic(2_000, seed=30, shift={"f2": 1.0}))
    assert run.status == RunStatus.SUCCEEDED
    points = MetricPoint.objects.count()
    again = runs.run_execute(run.pk)
    assert again.status == RunStatus.SUCCEEDED and again.finished_at == run.finished_at
    assert MetricPoint.objects.count() == points
    assert Alert.objects.count() == 1


def test_a_run_claimed_by_another_worker_is_left_alone():
    version = live()
    put_window(version, synthetic(1_000, seed=31))
    run = create(version, "data_drift")
    MonitorRun.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING, started_at=datetime.now(UTC)
    )
    assert runs.run_execute(run.pk).status == RunStatus.RUNNING
    assert not MetricPoint.objects.exists()


def test_a_run_whose_worker_died_is_claimed_again_after_the_stale_limit():
    version = live()
    put_window(version, synthetic(1_000, seed=32))
    run = create(version, "data_drift")
    long_ago = datetime.now(UTC) - runs.STALE_AFTER - timedelta(minutes=1)
    MonitorRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, started_at=long_ago)
    assert runs.run_execute(run.pk).status == RunStatus.SUCCEEDED


def test_claiming_is_one_conditional_update():
    version = live()
    run = create(version, "data_drift")
    with CaptureQueriesContext(connection) as queries:
        assert runs._claim(run.pk, datetime.now(UTC))
        assert not runs._claim(run.pk, datetime.now(UTC))
    updates = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert len(updates) == 2 and all("status" in sql for sql in updates)


# ---------------------------------------------------------------------------------------------
# Outcomes
# ---------------------------------------------------------------------------------------------


def test_a_clean_window_succeeds_with_every_number_and_no_alert():
    version = live()
    run = execute(version, "data_drift", synthetic(2_000, seed=33))
    assert run.status == RunStatus.SUCCEEDED and run.reason == ""
    assert run.rows == 2_000
    assert set(run.metrics["features"]) == set(FEATURES)
    json.dumps(run.metrics, allow_nan=False)
    psi = MetricPoint.objects.filter(run=run, metric="psi")
    assert sorted(psi.values_list("feature", flat=True)) == FEATURES
    assert all(p.window_end == WINDOW_END and p.kind == "data_drift" for p in psi)
    assert not Alert.objects.exists()


def test_drift_raises_one_medium_alert_audited_in_its_transaction(
    django_capture_on_commit_callbacks,
):
    version = live()
    with django_capture_on_commit_callbacks(execute=True):
        run = execute(version, "data_drift", synthetic(2_000, seed=34, shift={"f2": 1.0}))
    alert = Alert.objects.get()
    assert (alert.run_id, alert.kind, alert.severity) == (run.pk, "data_drift", "medium")
    assert (alert.feature, alert.metric, alert.threshold) == ("f2", "psi", 0.2)
    assert alert.value == pytest.approx(run.metrics["features"]["f2"]["psi"])
    assert (alert.window_start, alert.window_end) == (run.window_start, run.window_end)
    event = AuditEvent.objects.get(action="monitoring.alert_raised")
    assert event.object_id == str(alert.pk) and event.after["severity"] == "medium"
    # handed to routing after commit: medium goes to the review queue, the stage stays
    alert.refresh_from_db()
    assert alert.status == AlertStatus.QUEUED and ReviewItem.objects.filter(alert=alert).exists()
    assert stage_of(version) == Stage.PRODUCTION


def test_too_few_rows_end_the_run_skipped_with_the_reason():
    version = live()
    run = execute(version, "prediction_drift", synthetic(100, seed=35))
    assert run.status == RunStatus.SKIPPED
    assert run.reason == "100 predictions in the window; the policy needs at least 500"
    assert run.rows == 100 and not Alert.objects.exists()


def test_an_empty_window_ends_the_run_skipped():
    run = execute(live(), "fairness")
    assert run.status == RunStatus.SKIPPED and "no labelled records" in run.reason


def test_broken_data_ends_the_run_failed_with_the_reason():
    version = live()
    frame = synthetic(1_000, seed=36)
    frame.loc[:9, "score"] = np.nan  # ingestion refuses this; a damaged file can still hold it
    put_raw_window(version, frame)
    run = execute(version, "prediction_drift")
    assert run.status == RunStatus.FAILED
    assert run.reason == "10 of 1000 scores are missing or not numbers (NaN)"
    assert not Alert.objects.exists() and not MetricPoint.objects.exists()


def test_a_version_without_reference_profile_fails_the_drift_checks():
    version = live(profile=False)
    put_window(version, synthetic(1_000, seed=37))
    run = runs.run_execute(create(version, "data_drift").pk)
    assert run.status == RunStatus.FAILED and "no reference profile" in run.reason


def test_an_unexpected_error_fails_the_run_and_never_reaches_the_scheduler(monkeypatch):
    version = live()

    def boom(**kwargs):
        raise OSError("disk on fire")

    monkeypatch.setattr(store, "load_window", boom)
    run = runs.run_execute(create(version, "data_drift").pk)
    assert run.status == RunStatus.FAILED and run.reason == "OSError: disk on fire"
    assert run.finished_at is not None


def load_window_calls(monkeypatch) -> list[dict]:
    """The keyword arguments of every ``store.load_window`` call from now on (it still loads)."""
    calls = []
    real = store.load_window

    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(store, "load_window", spy)
    return calls


def test_a_run_loads_only_the_columns_its_check_needs(monkeypatch):
    version = live()
    put_window(version, synthetic(1_000, seed=38))
    calls = load_window_calls(monkeypatch)
    runs.run_execute(create(version, "data_drift").pk)
    runs.run_execute(create(version, "fairness").pk)
    runs.run_execute(create(version, "prediction_drift").pk)
    assert calls[0]["columns"] == ["f.f1", "f.f2", "f.f3"] and not calls[0]["with_labels"]
    assert calls[1]["columns"] == ["score", "prediction", "s.area"]
    assert calls[1]["with_labels"] and calls[1]["with_sensitive"]
    assert calls[2]["columns"] == ["score"] and not calls[2]["with_sensitive"]


DAILY = ("data_drift", "prediction_drift", "fairness")


def _facts(run: MonitorRun):
    points = sorted(
        (p.metric, p.feature, p.group, p.value) for p in MetricPoint.objects.filter(run=run)
    )
    alerts = sorted(
        (a.kind, a.severity, a.metric, a.feature, a.value, a.threshold)
        for a in Alert.objects.filter(run=run)
    )
    return run.status, run.reason, run.rows, run.metrics, points, alerts


def test_the_runs_of_one_version_and_window_load_it_once_with_the_same_outcomes(
    monkeypatch, django_capture_on_commit_callbacks
):
    frame = synthetic(4_000, seed=58, shift={"f2": 1.0}, unfair_fpr=0.3)
    apart, together = live(), live()
    put_window(apart, frame)
    put_window(together, frame)
    with django_capture_on_commit_callbacks(execute=True):
        alone = [runs.run_execute(create(apart, check).pk) for check in DAILY]
    calls = load_window_calls(monkeypatch)
    ids = [create(together, check).pk for check in DAILY]
    with django_capture_on_commit_callbacks(execute=True) as handed:
        done = runs.runs_execute(ids)
    assert [run.pk for run in done] == ids
    assert len(calls) == 1  # the union of the three checks' columns, with labels
    assert calls[0]["columns"] == ["f.f1", "f.f2", "f.f3", "score", "prediction", "s.area"]
    assert calls[0]["with_labels"] and calls[0]["with_sensitive"]
    assert [_facts(run) for run in done] == [_facts(run) for run in alone]
    assert {run.status for run in done} == {RunStatus.SUCCEEDED}
    hand_offs = [c for c in handed if getattr(c, "func", None) is runs.hand_off]
    assert len(hand_offs) == Alert.objects.filter(run__in=ids).count() == 2  # after the commit
    raised = AuditEvent.objects.filter(action="monitoring.alert_raised")
    assert raised.count() == 2 * Alert.objects.filter(run__in=ids).count()
    assert runs.runs_execute(ids) == done  # claimed and finished: left alone


@pytest.mark.parametrize(
    ("module", "name", "kind", "error", "reason", "seed"),
    [
        pytest.param(
            checks,
            "run_check",
            "fairness",
            ZeroDivisionError("broken check"),
            "ZeroDivisionError: broken check",
            59,
            id="its-check-breaks",
        ),
        pytest.param(
            runs,
            "points_store",
            "prediction_drift",
            RuntimeError("disk full"),
            "storing the outcome failed: RuntimeError: disk full",
            60,
            id="its-outcome-cannot-be-stored",
        ),
    ],
)
def test_a_run_claimed_with_others_fails_alone_and_the_others_commit(
    monkeypatch, module, name, kind, error, reason, seed
):
    """``module.name`` raises for the run of ``kind`` only: that run fails with ``reason`` and
    stores nothing; the others keep their points, and the data-drift alert."""
    version = live()
    put_window(version, synthetic(2_000, seed=seed, shift={"f1": 1.0}))
    real = getattr(module, name)

    def failing_for_kind(first, *args):  # first: the check's kind, or the run to store
        if getattr(first, "kind", first) == kind:
            raise error
        return real(first, *args)

    monkeypatch.setattr(module, name, failing_for_kind)
    done = runs.runs_execute([create(version, check).pk for check in DAILY])
    fails = [check == kind for check in DAILY]
    assert [run.status for run in done] == [
        RunStatus.FAILED if failed else RunStatus.SUCCEEDED for failed in fails
    ]
    assert done[fails.index(True)].reason == reason
    assert [MetricPoint.objects.filter(run=run).exists() for run in done] == [
        not failed for failed in fails
    ]
    assert Alert.objects.filter(run=done[0]).count() == 1  # the data-drift alert kept


def test_runs_of_a_version_retired_before_they_commit_are_skipped_each_with_its_event(
    monkeypatch,
):
    version = live()
    put_window(version, synthetic(2_000, seed=61, shift={"f1": 1.0}))
    real = runs._compute_all

    def retire_meanwhile(claimed):
        outcomes = real(claimed)
        Lifecycle.objects.filter(version=version).update(stage=Stage.RETIRED)
        return outcomes

    monkeypatch.setattr(runs, "_compute_all", retire_meanwhile)
    done = runs.runs_execute([create(version, check).pk for check in DAILY])
    assert {run.status for run in done} == {RunStatus.SKIPPED}
    assert not Alert.objects.exists() and not MetricPoint.objects.exists()
    skipped = AuditEvent.objects.filter(action="task.skipped")
    assert sorted(e.after["run"] for e in skipped) == [run.pk for run in done]


def test_execute_runs_task_executes_a_group_and_reports_each_status():
    version = live()
    put_window(version, synthetic(1_000, seed=62))
    ids = [create(version, check).pk for check in DAILY]
    assert tasks.execute_runs.run(ids) == [MonitorRun.objects.get(pk=pk).status for pk in ids]
    assert RunStatus.PENDING not in tasks.execute_runs.run(ids)


def test_the_scheduled_fan_out_creates_in_one_transaction(django_assert_max_num_queries):
    for _ in range(4):
        live()
    schedule.schedule_daily(now=NOW)  # policies published on first use
    MonitorRun.objects.all().delete()
    with CaptureQueriesContext(connection) as queries:
        schedule.schedule_daily(now=NOW)
    assert MonitorRun.objects.count() == 12
    inserts = [q for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    assert len(inserts) == 1  # one bulk insert of the 12 runs


def test_fairness_run_stores_each_groups_rates_and_degrades_a_production_version(
    django_capture_on_commit_callbacks,
):
    version = live(Stage.PRODUCTION)
    with django_capture_on_commit_callbacks(execute=True):
        run = execute(version, "fairness", synthetic(6_000, seed=39, unfair_fpr=0.3))
    groups = run.metrics["attributes"]["area"]["groups"]
    assert set(groups) == {"north", "south"}
    assert all(isinstance(g["fpr"], float) and isinstance(g["fnr"], float) for g in groups.values())
    point = MetricPoint.objects.get(run=run, metric="fpr", group="area=south")
    assert point.value == pytest.approx(groups["south"]["fpr"])
    alert = Alert.objects.get()
    assert alert.severity == "critical" and alert.feature == "area"
    assert stage_of(version) == Stage.DEGRADED


def test_concept_drift_on_a_version_in_validation_raises_the_alert_but_keeps_the_stage(
    django_capture_on_commit_callbacks,
):
    version = live(Stage.VALIDATION)
    baseline(version, 0.85)
    frame = synthetic(3_000, seed=40, noisy_scores=0.8)
    with django_capture_on_commit_callbacks(execute=True):  # on demand: the schedule runs
        run = execute(version, "concept_drift", frame, trigger="api")  # serving versions only
    assert run.status == RunStatus.SUCCEEDED
    alert = Alert.objects.get()
    assert alert.severity == "high" and alert.status == AlertStatus.OPEN
    assert stage_of(version) == Stage.VALIDATION


def test_weekly_checks_read_the_labels_joined_by_the_store():
    version = live()
    baseline(version, 0.8)
    frame = synthetic(3_000, seed=41, labelled=0.5, start="2026-02-10", days=26)
    for check in ("calibration", "label_drift", "concept_drift"):
        run = execute(version, check, frame if check == "calibration" else None)
        assert run.status == RunStatus.SUCCEEDED, run.reason
        assert run.metrics["n"] == int(frame["label"].notna().sum())
    assert not Alert.objects.exists()


# ---------------------------------------------------------------------------------------------
# Routing
# ---------------------------------------------------------------------------------------------


def alert_on(version, check: str, severity: str) -> Alert:
    return alert_of(create(version, check), severity)


def test_medium_alert_goes_to_the_review_queue_and_keeps_the_stage():
    version = live(Stage.MONITORING)
    alert = alert_on(version, "data_drift", "medium")
    assert routing.default_route(alert) == "queued"
    assert routing.default_route(alert) == "already queued"  # a retried hand-off
    assert ReviewItem.objects.filter(alert=alert).count() == 1
    alert.refresh_from_db()
    assert alert.status == AlertStatus.QUEUED and stage_of(version) == Stage.MONITORING
    assert AuditEvent.objects.filter(action="monitoring.alert_queued").count() == 1


@pytest.mark.parametrize(
    ("stage", "severity"),
    [
        (Stage.PRODUCTION, "high"),
        (Stage.PRODUCTION, "critical"),
        (Stage.MONITORING, "high"),
        (Stage.MONITORING, "critical"),
    ],
)
def test_high_and_critical_alerts_degrade_a_serving_version(stage, severity):
    version = live(stage)
    alert = alert_on(version, "concept_drift", severity)
    assert routing.default_route(alert) == "degraded"
    assert stage_of(version) == Stage.DEGRADED
    event = AuditEvent.objects.get(action="lifecycle.mark_degraded")
    assert event.actor == "system:monitoring" and f"alert {alert.pk}" in event.reason
    assert routing.default_route(alert).startswith("nothing")  # retried: already degraded
    assert not ReviewItem.objects.exists()


@pytest.mark.parametrize("stage", [Stage.VALIDATION, Stage.STAGING, Stage.DEGRADED, Stage.RETIRED])
def test_high_alerts_leave_a_non_degradable_version_alone(stage):
    version = live(stage)
    alert = alert_on(version, "fairness", "critical")
    assert routing.default_route(alert).startswith("nothing")
    assert stage_of(version) == stage


def test_route_calls_the_hook_named_in_settings(settings):
    version = live()
    alert = alert_on(version, "fairness", "critical")
    seen = []
    settings.MONITORING_ALERT_HOOK = "tests.monitoring.test_runs.recording_hook"
    recording_hook.calls = seen
    routing.route(alert.pk)
    assert seen == [alert.pk] and stage_of(version) == Stage.PRODUCTION


def recording_hook(alert):
    recording_hook.calls.append(alert.pk)


def test_a_failing_hand_off_is_retried_by_a_task(settings, _no_broker):
    version = live()
    alert = alert_on(version, "fairness", "critical")
    settings.MONITORING_ALERT_HOOK = "tests.monitoring.test_runs.failing_hook"
    runs.hand_off(alert.pk)
    assert ("route", (alert.pk,)) in _no_broker


def failing_hook(alert):
    raise ConnectionError("incident service down")


def test_route_alert_task_routes_with_the_default_hook():
    version = live()
    alert = alert_on(version, "concept_drift", "high")
    tasks.route_alert.run(alert.pk)
    assert stage_of(version) == Stage.DEGRADED


# ---------------------------------------------------------------------------------------------
# Schedule: fan-out, duplicate beats, monthly audit, beat rows
# ---------------------------------------------------------------------------------------------

NOW = datetime(2026, 3, 9, 2, 0, 7, tzinfo=UTC)  # a Monday, just after the daily beat


def test_daily_fan_out_creates_one_run_per_live_model_and_check_and_enqueues_it(_no_broker):
    first, second = live(), live(Stage.MONITORING)
    live(Stage.STAGING)  # not serving: no runs
    fan = schedule.schedule_daily(now=NOW)
    made = MonitorRun.objects.all()
    assert fan.created == 6 and made.count() == 6
    assert {(r.version_id, r.kind) for r in made} == {
        (v.pk, c) for v in (first, second) for c in ("data_drift", "prediction_drift", "fairness")
    }
    assert {r.window_end for r in made} == {datetime(2026, 3, 9, tzinfo=UTC)}
    assert sorted(executed(_no_broker)) == sorted(made.values_list("pk", flat=True))
    # one task per version: its three checks share one load of the window
    groups = [ids for kind, (ids,) in _no_broker if kind == "execute_group"]
    assert sorted(
        sorted(made.filter(pk__in=ids).values_list("version_id", flat=True)) for ids in groups
    ) == [
        [first.pk] * 3,
        [second.pk] * 3,
    ]


def executed(sent) -> list[int]:
    """The run ids the recorded tasks execute, one task per run or per group."""
    ids = [args[0] for kind, args in sent if kind == "execute"]
    return ids + [pk for kind, args in sent if kind == "execute_group" for pk in args[0]]


def test_a_second_beat_the_same_day_creates_nothing_new():
    live()
    schedule.schedule_daily(now=NOW)
    again = schedule.schedule_daily(now=NOW + timedelta(hours=3))
    assert again.created == 0 and MonitorRun.objects.count() == 3
    assert len(again.enqueued) == 3  # still pending: sent again, a duplicate finds it claimed


def test_a_run_abandoned_by_a_dead_worker_is_sent_again_by_the_next_beat():
    live()
    schedule.schedule_daily(now=NOW)
    died, fresh = MonitorRun.objects.order_by("pk")[:2]
    MonitorRun.objects.filter(pk=died.pk).update(
        status=RunStatus.RUNNING, started_at=NOW - runs.STALE_AFTER - timedelta(minutes=1)
    )
    MonitorRun.objects.filter(pk=fresh.pk).update(
        status=RunStatus.RUNNING, started_at=NOW - timedelta(minutes=5)
    )

    again = schedule.schedule_daily(now=NOW)

    assert died.pk in again.enqueued  # _claim takes it back once it is past STALE_AFTER
    assert fresh.pk not in again.enqueued  # still being worked on


def test_a_pending_run_whose_task_was_lost_is_sent_again_by_the_next_beat(_no_broker):
    version = live()
    lost = create(version, "data_drift", window_end=WINDOW_END - timedelta(days=3))
    MonitorRun.objects.filter(pk=lost.pk).update(created_at=NOW - timedelta(hours=2))
    retired = live()
    today = create(retired, "fairness", window_end=schedule.day_start(NOW))
    Lifecycle.objects.filter(version=retired).update(stage=Stage.RETIRED)
    fan = schedule.schedule_daily(now=NOW)
    assert lost.pk in fan.enqueued and today.pk in fan.enqueued
    sent = executed(_no_broker)
    assert lost.pk in sent and today.pk in sent  # sent, not only listed


def test_a_chunked_fan_out_leaves_the_other_chunks_to_tasks_that_create_the_same_runs(
    _no_broker, settings
):
    versions = [live() for _ in range(5)]
    settings.MONITORING_FAN_OUT_CHUNK = 2
    assert tasks.run_daily_checks.run() == 6  # its own chunk: 2 versions x 3 checks
    chunks = [args for kind, args in _no_broker if kind == "monitoring.schedule_chunk"]
    fleet = [lc.version_id for lc in schedule.live_lifecycles()]  # ordered by model name
    assert sorted(fleet) == sorted(v.pk for v in versions)
    assert [ids for _, _, ids in chunks] == [fleet[2:4], fleet[4:]]
    assert set(MonitorRun.objects.values_list("version_id", flat=True)) == set(fleet[:2])
    assert MonitorRun.objects.count() == 6
    for args in chunks:  # what a worker runs for each
        tasks.schedule_chunk.run(*args)
    unchunked = {(r.version_id, r.kind, r.window_end) for r in MonitorRun.objects.all()}
    assert unchunked == {
        (v.pk, c, datetime.combine(datetime.now(UTC).date(), datetime.min.time(), UTC))
        for v in versions
        for c in ("data_drift", "prediction_drift", "fairness")
    }
    assert sorted(executed(_no_broker)) == sorted(
        MonitorRun.objects.values_list("pk", flat=True)
    )  # each once
    for args in chunks:  # a second beat's chunk creates nothing and re-sends its pending runs
        assert tasks.schedule_chunk.run(*args) == 3 * len(args[2])
    assert MonitorRun.objects.count() == 15


def test_a_chunk_skips_a_version_that_stopped_serving_meanwhile(_no_broker):
    kept, retired = live(), live()
    Lifecycle.objects.filter(version=retired).update(stage=Stage.RETIRED)
    made = schedule.schedule_chunk(
        checks=("data_drift",),
        window_end=schedule.day_start(NOW),
        version_ids=[kept.pk, retired.pk],
    )
    assert made == 1
    assert list(MonitorRun.objects.values_list("version_id", flat=True)) == [kept.pk]


def test_the_weekly_fan_out_runs_the_weekly_checks_over_the_weekly_window():
    live()
    schedule.schedule_weekly(now=NOW)
    kinds = set(MonitorRun.objects.values_list("kind", flat=True))
    assert kinds == {"concept_drift", "calibration", "label_drift"}
    run = MonitorRun.objects.first()
    assert run.window_end - run.window_start == timedelta(days=28)


def test_run_daily_checks_task_fans_out_and_execute_run_task_runs_one(_no_broker):
    version = live()
    put_window(version, synthetic(1_000, seed=42, start="2026-03-02"))
    assert tasks.run_daily_checks.run() == 3  # today: no data, but the runs exist
    run_id = executed(_no_broker)[0]
    assert tasks.execute_run.run(run_id) in {"succeeded", "skipped", "failed"}
    assert MonitorRun.objects.get(pk=run_id).status != RunStatus.PENDING
    assert tasks.execute_run.run(run_id) == MonitorRun.objects.get(pk=run_id).status


def test_monthly_audit_creates_one_task_per_live_model_due_in_seven_days(
    django_capture_on_commit_callbacks, monkeypatch
):
    from incidents.notifications import deliver_due

    # The ML Lead is told through the incidents outbox; its delivery task is run by hand here.
    monkeypatch.setattr("incidents.notifications.enqueue_delivery", lambda countdown=None: None)
    version = live()
    other = live(Stage.MONITORING)
    live(Stage.DEVELOPMENT)
    services.role_grant(username="lead", roles=["ml_lead"], actor=SYSTEM)
    from django.contrib.auth import get_user_model

    get_user_model().objects.filter(username="lead").update(email="lead@example.org")
    with django_capture_on_commit_callbacks(execute=True):
        made = schedule.audit_tasks_create_monthly(now=NOW)
    assert {t.model_id for t in made} == {version.model_id, other.model_id}
    task = AuditTask.objects.get(model=version.model)
    assert task.period == "2026-03" and task.version == version
    assert task.due_at == NOW + timedelta(days=7)
    assert deliver_due() == {"sent": 2}
    assert len(mail.outbox) == 2 and mail.outbox[0].to == ["lead@example.org"]
    assert "2026-03" in mail.outbox[0].subject
    assert AuditEvent.objects.filter(action="monitoring.audit_task_created").count() == 2
    assert schedule.audit_tasks_create_monthly(now=NOW + timedelta(days=2)) == []


def test_create_monthly_audits_task_wraps_the_service():
    live()
    assert tasks.create_monthly_audits.run() == 1
    assert tasks.create_monthly_audits.run() == 0


def test_the_beat_schedule_rows_exist_for_the_admin():
    from django_celery_beat.models import PeriodicTask

    rows = {t.task: t.crontab for t in PeriodicTask.objects.filter(task__startswith="monitoring.")}
    daily = rows["monitoring.run_daily_checks"]
    weekly = rows["monitoring.run_weekly_checks"]
    monthly = rows["monitoring.create_monthly_audits"]
    assert (daily.minute, daily.hour, daily.day_of_week) == ("0", "2", "*")
    assert (weekly.hour, weekly.day_of_week) == ("3", "1")
    assert (monthly.hour, monthly.day_of_month) == ("4", "1")
    assert str(daily.timezone) == "UTC"


# ---------------------------------------------------------------------------------------------
# Monitoring policies
# ---------------------------------------------------------------------------------------------


def test_a_model_without_a_policy_reads_the_defaults_and_a_run_pins_version_1():
    model = RegisteredModelFactory()
    read = policy_current("monitoring", model)
    assert read.pk is None and read.version == 0 and read.resolved["psi_max"] == 0.2
    assert not MonitoringPolicy.objects.exists()  # reading writes no row
    policy = policy_in_force("monitoring", model, SYSTEM)
    assert policy.version == 1 and policy.values == MonitoringPolicy.schema.defaults()
    assert policy_in_force("monitoring", model, SYSTEM).pk == policy.pk


def test_a_policy_update_is_a_new_audited_version():
    model = RegisteredModelFactory()
    policy = policy_publish(
        "monitoring",
        model=model,
        values={"psi_max": 0.25, "min_rows": 1000},
        reason="fewer",
        actor=SYSTEM,
    )
    assert policy.version == 1 and policy.values["psi_max"] == 0.25
    assert policy_current("monitoring", model).pk == policy.pk
    event = AuditEvent.objects.get(action="monitoring_policy.updated")
    assert event.before is None and event.after["values"]["psi_max"] == 0.25
    assert event.reason == "fewer"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"psi_maximum": 0.3}, "psi_maximum"),
        ({"psi_max": -1}, "psi_max"),
        ({"psi_max": "high"}, "psi_max"),
        ({"ks_pvalue_min": 1.5}, "ks_pvalue_min"),
        ({"min_rows": 0}, "min_rows"),
        ({"daily_window_days": 2.5}, "daily_window_days"),
        ({"performance_metric": "vibes"}, "performance_metric"),
        ({}, "values"),
    ],
)
def test_a_policy_update_refuses_bad_settings_naming_the_field(changes, field):
    model = RegisteredModelFactory()
    with pytest.raises(InvalidInput) as caught:
        policy_publish("monitoring", model=model, values=changes, reason="", actor=SYSTEM)
    assert field in caught.value.errors
    assert not MonitoringPolicy.objects.filter(model=model).exists()


def test_a_run_uses_the_policy_recorded_on_it():
    version = live()
    put_window(version, synthetic(600, seed=43))
    run = create(version, "prediction_drift")
    policy_publish(
        "monitoring", model=version.model, values={"min_rows": 5_000}, reason="", actor=SYSTEM
    )
    assert runs.run_execute(run.pk).status == RunStatus.SUCCEEDED  # v1: min_rows 500


def test_check_failed_and_skip_carry_their_reason():
    assert checks.Skip("few").reason == "few" and checks.CheckFailed("bad").reason == "bad"


# ---------------------------------------------------------------------------------------------
# With the stored reference profile, under failure, and with two workers at once
# ---------------------------------------------------------------------------------------------


def test_runs_use_the_profile_that_reference_ingestion_stored():
    version = live(profile=False)
    reference = synthetic(5_000, seed=44)
    ingest.reference_ingest(
        model_name=version.model.name,
        version=version.version,
        records=records_of(reference, labels=True),
        actor=SYSTEM,
    )
    put_window(version, synthetic(2_000, seed=45, shift={"f3": 1.0}, start="2026-03-02", days=5))
    drift = runs.run_execute(create(version, "data_drift").pk)
    assert drift.status == RunStatus.SUCCEEDED
    assert drift.metrics["breaching_features"] == ["f3"]
    labels = runs.run_execute(create(version, "label_drift").pk)
    assert labels.status == RunStatus.SUCCEEDED and labels.metrics["reference_n"] == 5_000


def test_a_failure_while_storing_the_outcome_still_ends_the_run_failed(monkeypatch):
    version = live()
    put_window(version, synthetic(1_000, seed=46))

    def refuse(*args, **kwargs):
        raise RuntimeError("database said no")

    monkeypatch.setattr(MetricPoint.objects, "bulk_create", refuse)
    run = runs.run_execute(create(version, "data_drift").pk)
    assert run.status == RunStatus.FAILED
    assert run.reason == "storing the outcome failed: RuntimeError: database said no"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_workers_executing_the_same_run_compute_it_once():
    version = live()
    put_window(version, synthetic(2_000, seed=47, shift={"f1": 1.0}))
    run = create(version, "data_drift")
    outcomes, errors = race(lambda _: runs.run_execute(run.pk).status, 2)
    assert errors == []
    assert RunStatus.SUCCEEDED in outcomes
    assert MetricPoint.objects.filter(run=run, metric="psi").count() == 3
    assert Alert.objects.filter(run=run).count() == 1
    assert AuditEvent.objects.filter(action="monitoring.alert_raised").count() == 1
