"""The feedback-loop check (monitoring/checks_feedback.py; docs/feedback-loops.md) as a run:
records of the urn model of Ensign et al. (2018) ingested through the API's services, the
cell named by the monitoring policy, periods counted back from the window's end; a runaway
loop raises a high alert routed to playbook 1 and the ML Lead, reported incidents do not;
a missing or broken configuration or window fails the run with the reason.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from analytics.feedback import urn_patrols
from console import model_page
from governance.models import Lifecycle, Stage
from governance.policies import policy_publish
from incidents.models import Incident, Notification
from monitoring import checks, runs, schedule
from monitoring.checks import CheckFailed, Skip
from monitoring.models import Alert, MetricPoint, MonitorRun, RunStatus
from monitoring.policies import MONITORING
from platform_core.errors import InvalidInput
from tests.factories import ModelVersionFactory
from tests.monitoring.test_runs import (  # noqa: F401  (autouse fixtures)
    NOW,
    SYSTEM,
    _no_broker,
    _own_var_dir,
    load_window_calls,
    put_raw_window,
    put_window,
    stage_of,
)

pytestmark = pytest.mark.django_db

WINDOW_END = datetime(2026, 3, 9, tzinfo=UTC)
PERIODS, DAYS, CELLS, RECORDS = 8, 7, 10, 56
POLICY = {"feedback_cell_field": "beat", "feedback_top_k": 1}
SETTINGS = {**MONITORING.defaults(), **POLICY}


def urn_frame(seed: int, *, discovered: bool = True, periods: int = PERIODS) -> pd.DataFrame:
    """The urn's counts as records: each cell scored RECORDS times a period (spread over its
    days), as many of them labelled 1 as incidents were recorded, the rest labelled 0."""
    rng = np.random.default_rng(seed)
    exposure, labels, score = urn_patrols(
        rng,
        rates=np.full(CELLS, 0.1),
        periods=periods,
        records=RECORDS,
        top_k=1,
        discovered=discovered,
    )
    start = WINDOW_END - timedelta(days=DAYS * PERIODS)
    rows = []
    for t in range(periods):
        for c in range(CELLS):
            for i in range(int(exposure[c, t])):
                moment = start + timedelta(days=DAYS * t, hours=3 * i + 1)
                rows.append(
                    {
                        "prediction_id": f"p-{t}-{c}-{i}",
                        "timestamp": pd.Timestamp(moment),
                        "score": float(score[c, t]),
                        "prediction": float(score[c, t] >= 0.5),
                        "f.beat": f"B{c:02d}",
                        "label": float(i < labels[c, t]),
                    }
                )
    return pd.DataFrame(rows)


def live():
    """A serving version whose requests carry the beat (the cell) as their one feature."""
    version = ModelVersionFactory(
        feature_list=["beat"], feature_types={"beat": "string"}, thresholds={"decision": 0.5}
    )
    Lifecycle.objects.filter(version=version).update(stage=Stage.PRODUCTION)  # set-up only
    return version


def configure(version, **values) -> None:
    policy_publish(
        "monitoring",
        model=version.model,
        values={**POLICY, **values},
        reason="the beat is the cell",
        actor=SYSTEM,
    )


def run_loop(version) -> MonitorRun:
    run = runs.run_create(
        model=version.model,
        version=version,
        check="feedback_loop",
        window_end=WINDOW_END,
        trigger="schedule",
        actor=SYSTEM,
    )
    return runs.run_execute(run.pk)


# ---------------------------------------------------------------------------------------------
# Runs end to end
# ---------------------------------------------------------------------------------------------


def test_a_runaway_loop_raises_a_high_alert_routed_to_playbook_1_and_the_ml_lead(
    django_capture_on_commit_callbacks,
):
    version = live()
    configure(version)
    put_window(version, urn_frame(seed=1))
    with django_capture_on_commit_callbacks(execute=True):
        run = run_loop(version)
    assert run.status == RunStatus.SUCCEEDED, run.reason
    assert run.window_end - run.window_start == timedelta(days=PERIODS * DAYS)
    metrics = run.metrics
    assert metrics["cell_field"] == "beat" and metrics["n_cells"] == CELLS
    assert metrics["records"] == CELLS * RECORDS * PERIODS == run.rows
    assert len(metrics["periods"]) == PERIODS - 1
    assert all(p["observed_share"] == 1.0 for p in metrics["periods"])  # only patrols record
    assert metrics["periods"][-1]["end"] == WINDOW_END.isoformat()
    alert = Alert.objects.get()
    assert (alert.kind, alert.severity, alert.metric, alert.feature) == (
        "feedback_loop",
        "high",
        "ratio",
        "beat",
    )
    assert alert.value == pytest.approx(metrics["ratio"]) and alert.threshold == 1.5
    assert alert.value > 1.5 and alert.details["p_value"] < 0.01
    ratio = MetricPoint.objects.get(run=run, metric="ratio")
    assert ratio.value == pytest.approx(metrics["ratio"]) and ratio.kind == "feedback_loop"
    assert {p.metric for p in MetricPoint.objects.filter(run=run)} == {
        "ratio",
        "p_value",
        "z",
        "topk_label_share",
        "expected_topk_share",
    }
    incident = Incident.objects.get()
    assert incident.playbook == "1" and stage_of(version) == "degraded"
    assert Notification.objects.filter(channel="page", role="ml_lead").exists()
    # the model page charts the series with its threshold and the alert
    period = model_page.Period(WINDOW_END - timedelta(days=30), WINDOW_END, None)
    chart = next(
        c for c in model_page.series(version.model, period)["charts"] if c["id"] == "feedback_loop"
    )
    assert [t["value"] for t in chart["thresholds"]] == [1.5]
    drawn = {s["label"]: (s["axis"], [p["y"] for p in s["points"]]) for s in chart["series"]}
    assert drawn["incidents in the top-k cells / expected from their history"] == (
        "y",
        [pytest.approx(metrics["ratio"])],
    )
    assert drawn["share of the last period's incidents in the top-k cells"] == ("y2", [1.0])
    assert [a["id"] for a in chart["alerts"]] == [alert.pk]


def test_incidents_reported_at_true_rates_raise_no_alert():
    version = live()
    configure(version)
    put_window(version, urn_frame(seed=1, discovered=False))
    run = run_loop(version)
    assert run.status == RunStatus.SUCCEEDED, run.reason
    assert run.metrics["ratio"] < 1.5 and not Alert.objects.exists()


def test_a_run_reads_the_time_the_score_and_the_cell_only(monkeypatch):
    version = live()
    configure(version)
    put_window(version, urn_frame(seed=2, periods=3))
    calls = load_window_calls(monkeypatch)
    run_loop(version)
    assert calls[0]["columns"] == ["timestamp", "score", "f.beat"] and calls[0]["with_labels"]


def test_without_a_cell_field_the_run_fails_saying_which_setting_to_publish():
    version = live()
    put_window(version, urn_frame(seed=3, periods=2))
    run = run_loop(version)
    assert run.status == RunStatus.FAILED
    assert "names no feedback_cell_field" in run.reason and not Alert.objects.exists()


def test_a_cell_field_no_record_carries_fails_the_run():
    version = live()
    configure(version, feedback_cell_field="district")
    put_window(version, urn_frame(seed=4, periods=2))
    run = run_loop(version)
    assert run.status == RunStatus.FAILED
    assert "cell field 'district' (column f.district)" in run.reason


def test_a_broken_window_fails_the_run_with_the_reason():
    version = live()
    configure(version)
    frame = urn_frame(seed=5, periods=3)
    frame.loc[:4, "score"] = np.nan  # ingestion refuses this; a damaged file can still hold it
    put_raw_window(version, frame)
    run = run_loop(version)
    assert run.status == RunStatus.FAILED
    assert run.reason == f"5 of {len(frame)} scores are missing or not numbers (NaN)"
    assert not MetricPoint.objects.exists()


def test_too_few_incidents_skip_the_run():
    version = live()
    configure(version, feedback_min_labels=10_000)
    put_window(version, urn_frame(seed=6, periods=3))
    run = run_loop(version)
    assert run.status == RunStatus.SKIPPED
    assert "the policy needs at least 10000 (feedback_min_labels)" in run.reason


def test_the_weekly_beat_schedules_the_check_for_models_naming_a_cell_only():
    configured, other = live(), live()
    configure(configured)
    schedule.schedule_weekly(now=NOW)
    loops = MonitorRun.objects.filter(kind="feedback_loop")
    assert [r.version_id for r in loops] == [configured.pk]
    assert loops[0].window_end - loops[0].window_start == timedelta(days=PERIODS * DAYS)
    assert MonitorRun.objects.filter(version=other).count() == 3  # the weekly three


def test_all_checks_on_demand_include_the_loop_only_for_models_naming_a_cell():
    configured, other = live(), live()
    configure(configured)
    for version, expected in ((configured, 7), (other, 6)):
        made = runs.runs_start(
            model=version.model, version=version, checks_to_run=None, actor=SYSTEM
        )
        assert len(made) == expected
        assert ("feedback_loop" in {r.kind for r in made}) == (expected == 7)
        # and the model page charts the loop only for the model that names a cell
        period = model_page.Period(WINDOW_END - timedelta(days=30), WINDOW_END, None)
        charted = {c["id"] for c in model_page.series(version.model, period)["charts"]}
        assert ("feedback_loop" in charted) == (expected == 7)


def test_the_policy_validates_the_cell_field_and_the_limits():
    with pytest.raises(InvalidInput) as refused:
        MONITORING.validate(
            {"feedback_cell_field": "beat; drop", "feedback_ratio_max": 1.0, "feedback_periods": 1}
        )
    errors = refused.value.errors
    assert set(errors) == {"feedback_cell_field", "feedback_ratio_max", "feedback_periods"}
    assert MONITORING.validate({"feedback_cell_field": ""}) == {"feedback_cell_field": ""}


# ---------------------------------------------------------------------------------------------
# The check on frames
# ---------------------------------------------------------------------------------------------


def check(frame: pd.DataFrame, **settings):
    frame.attrs["window_end"] = WINDOW_END
    return checks.run_check("feedback_loop", frame, None, None, {**SETTINGS, **settings}, {})


def test_periods_are_counted_back_from_the_window_end():
    frame = urn_frame(seed=7)
    result = check(frame)
    assert [p["period"] for p in result.metrics["periods"]] == list(range(1, PERIODS))
    # without the run's window end the midnight after the newest record is used: the same here
    frame.attrs.clear()
    assert checks.run_check("feedback_loop", frame, None, None, SETTINGS, {}).metrics == (
        result.metrics
    )
    # records before the window are left out
    older = frame.assign(timestamp=frame["timestamp"] - timedelta(days=DAYS * PERIODS))
    with pytest.raises(Skip, match="records in 0 of the 8 periods"):
        check(older)


def test_more_attended_cells_than_cells_fails_the_check():
    with pytest.raises(CheckFailed, match="10 cell\\(s\\) in 'beat' but feedback_top_k is 10"):
        check(urn_frame(seed=8, periods=2), feedback_top_k=10)


def test_labels_other_than_0_or_1_fail_the_check():
    frame = urn_frame(seed=9, periods=2)
    frame.loc[0, "label"] = 2.0
    with pytest.raises(CheckFailed, match="labels must be 0 or 1; found 2"):
        check(frame)


def test_records_without_a_cell_are_counted_and_left_out():
    frame = urn_frame(seed=10)
    frame.loc[:99, "f.beat"] = None
    result = check(frame)
    assert result.metrics["records_without_cell"] == 100
    assert result.metrics["records"] == len(frame) - 100
