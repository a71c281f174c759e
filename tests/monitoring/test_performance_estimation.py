"""Concept drift before labels arrive: the estimate from calibrated scores (CBPE) in the check,
its alert marked "estimated", no alert while calibration is broken, and the daily reconciliation
that judges the window again once its labels are in (resolves or keeps the alert, idempotent).
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from django.conf import settings as django_settings

from analytics import stats
from console import model_page
from governance.models import AuditEvent, Stage
from monitoring import checks, reconciliation, runs, tasks
from monitoring.checks import Skip
from monitoring.models import Alert, AlertStatus, MetricPoint, MonitorRun, RunStatus
from tests.factories import alert_of
from tests.monitoring.test_checks import baseline, run, synthetic
from tests.monitoring.test_runs import (  # noqa: F401 (autouse fixtures)
    _no_broker,
    _own_var_dir,
    create,
    live,
    put_labels,
    put_window,
)

pytestmark = pytest.mark.django_db

BASELINE_AUC = 0.86  # the calibrated model of ``window`` with scale 1 (slope 2)


def window(
    n: int,
    seed: int,
    *,
    true_slope: float = 2.0,
    score_slope: float = 2.0,
    scale: float = 1.0,
    labelled: float = 1.0,
) -> pd.DataFrame:
    """``synthetic()``'s records with scores ``sigmoid(score_slope z - 1)`` and labels drawn from
    ``sigmoid(true_slope z - 1)``: calibrated when the slopes agree; ``scale`` < 1 crowds the
    scores near the middle (a covariate shift: the AUC falls, the scores stay calibrated)."""
    frame = synthetic(n, seed=seed)
    rng = np.random.default_rng(seed + 10_000)
    z = rng.normal(size=n) * scale
    frame["score"] = 1 / (1 + np.exp(-(score_slope * z - 1)))
    frame["prediction"] = (frame["score"] >= 0.5).astype(float)
    labels = (rng.random(n) < 1 / (1 + np.exp(-(true_slope * z - 1)))).astype(float)
    labels[rng.random(n) >= labelled] = np.nan
    frame["label"] = labels
    return frame


def realised_auc(frame: pd.DataFrame) -> float:
    return stats.roc_auc(frame["label"], frame["score"])


# ---------------------------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def version():
    return live(Stage.PRODUCTION, profile=False)


def test_too_few_labels_estimate_the_metric_from_every_scored_row(version):
    baseline(version, BASELINE_AUC)
    frame = window(4_000, seed=1, labelled=0.02)
    result = run("concept_drift", frame, None, version)
    m = result.metrics
    assert m["estimated"] is True and m["estimate_reliable"] is True
    assert m["n"] == 4_000 and m["n_labelled"] == int(frame["label"].notna().sum()) < 200
    truth = realised_auc(window(4_000, seed=1))  # the labels that have not arrived yet
    assert abs(m["estimated_value"] - truth) < 0.02
    assert m["interval"][0] < m["estimated_value"] < m["interval"][1]
    assert m["current"] is None and result.breach is None
    points = {(metric, group): value for metric, _, group, value in result.points}
    assert points[("auc_estimated", "")] == m["estimated_value"]
    assert points[("auc_estimated_low", "")] == m["interval"][0]
    assert ("relative_drop_estimated", "") in points and ("f1_estimated", "") in points
    north = m["estimate"]["groups"]["area"]["north"]
    assert points[("fpr_estimated", "area=north")] == north["fpr"]["value"]
    assert north["fpr"]["low"] <= north["fpr"]["value"] <= north["fpr"]["high"]


def test_an_estimated_drop_wholly_beyond_the_threshold_alerts_marked_estimated(version):
    baseline(version, BASELINE_AUC)
    result = run("concept_drift", window(4_000, seed=2, scale=0.3, labelled=0.0), None, version)
    breach = result.breach
    assert breach is not None and breach.metric == "relative_drop_estimated"
    assert breach.details["estimated"] is True
    assert "Estimated, not measured" in breach.details["message"]
    low, high = breach.details["relative_drop_interval"]
    assert 0.05 < low <= breach.value <= high
    assert breach.value == pytest.approx(1 - result.metrics["estimated_value"] / BASELINE_AUC)


def test_an_estimated_drop_whose_interval_reaches_the_threshold_does_not_alert(version):
    frame = window(600, seed=3, labelled=0.0)
    baseline(version, 0.8)
    estimated = run("concept_drift", frame, None, version).metrics["estimated_value"]
    baseline(version, estimated / (1 - 0.06))  # the latest evaluation: a 6 % estimated drop
    result = run("concept_drift", frame, None, version)
    assert result.metrics["estimated_relative_drop"] == pytest.approx(0.06)
    assert result.metrics["estimated_relative_drop_interval"][0] < 0.05
    assert result.breach is None


def test_an_open_calibration_alert_marks_the_estimate_unreliable_and_silences_it(version):
    baseline(version, BASELINE_AUC)
    frame = window(4_000, seed=4, scale=0.3, labelled=0.0)
    calibration = create(version, "calibration")
    MonitorRun.objects.filter(pk=calibration.pk).update(status=RunStatus.SUCCEEDED)
    alert = alert_of(calibration, "medium")
    result = run("concept_drift", frame, None, version)
    assert result.metrics["estimate_reliable"] is False
    assert (
        f"calibration run ({calibration.pk}) breached"
        in result.metrics["estimate_unreliable_reason"]
    )
    assert result.metrics["estimated_relative_drop_interval"][0] > 0.05  # would have alerted
    assert result.breach is None
    Alert.objects.filter(pk=alert.pk).update(status=AlertStatus.RESOLVED)
    again = run("concept_drift", frame, None, version)
    assert again.metrics["estimate_reliable"] is True and again.breach is not None


def test_with_enough_labels_the_estimate_on_the_labelled_rows_and_its_gap_are_kept(version):
    baseline(version, BASELINE_AUC)
    result = run("concept_drift", window(4_000, seed=5, labelled=0.5), None, version)
    m = result.metrics
    assert m["estimated"] is False and m["n"] == m["performance"]["n"]
    assert m["estimate"]["realised"] == m["current"] and m["estimate"]["n"] == m["n"]
    assert m["estimate"]["gap"] == pytest.approx(m["estimate"]["value"] - m["current"])
    assert abs(m["estimate"]["gap"]) < 0.03
    points = {metric: value for metric, _, _, value in result.points}
    assert points["estimate_gap"] == m["estimate"]["gap"] and points["auc"] == m["current"]


def test_on_many_labelled_rows_the_gap_compares_both_on_the_same_sample(version, monkeypatch):
    monkeypatch.setattr(checks, "GAP_ROWS", 1_000)
    baseline(version, BASELINE_AUC)
    frame = window(4_000, seed=12)
    estimate = run("concept_drift", frame, None, version).metrics["estimate"]
    assert estimate["n"] == 1_000
    sample = frame.iloc[np.sort(np.random.default_rng(0).choice(4_000, 1_000, replace=False))]
    assert estimate["realised"] == pytest.approx(realised_auc(sample))
    assert estimate["gap"] == pytest.approx(estimate["value"] - estimate["realised"])


def test_a_miscalibrated_model_shows_its_gap_on_the_labelled_rows(version):
    baseline(version, BASELINE_AUC)
    frame = window(4_000, seed=6, true_slope=3.0, score_slope=0.5, labelled=0.5)
    gap = run("concept_drift", frame, None, version).metrics["estimate"]["gap"]
    assert gap < -0.2  # under-confident scores: the estimate is far too pessimistic


def test_a_window_too_small_to_estimate_from_is_skipped(version):
    baseline(version, BASELINE_AUC)
    with pytest.raises(Skip, match=r"labelled records in the window .* 300 predictions"):
        run("concept_drift", window(300, seed=7, labelled=0.1), None, version)


# ---------------------------------------------------------------------------------------------
# Runs and the reconciliation
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def sent(request) -> list[tuple[str, tuple]]:
    """The tasks sent (recorded, not sent, by test_runs' autouse ``_no_broker``)."""
    return request.getfixturevalue("_no_broker")


def estimate_run(version, frame: pd.DataFrame) -> MonitorRun:
    """Ingest the window's predictions without labels and run concept drift on it."""
    put_window(version, frame.assign(label=np.nan))
    return runs.run_execute(create(version, "concept_drift", trigger="api").pk)


def audited(action: str) -> int:
    return AuditEvent.objects.filter(action=action).count()


def test_an_estimate_the_labels_do_not_confirm_is_reconciled_and_its_alert_resolved(sent):
    version = live(Stage.VALIDATION, profile=False)
    baseline(version, BASELINE_AUC)
    frame = window(3_000, seed=8, true_slope=3.0, score_slope=0.5)  # under-confident scores
    estimated = estimate_run(version, frame)
    assert estimated.status == RunStatus.SUCCEEDED and estimated.metrics["estimated"] is True
    alert = Alert.objects.get(run=estimated)
    assert alert.metric == "relative_drop_estimated" and alert.details["estimated"] is True
    assert reconciliation.reconcile_run(estimated.pk) == "waiting"
    assert reconciliation.reconcile_estimates() == [estimated.pk]
    assert ("monitoring.reconcile_estimate", (estimated.pk,)) in sent

    put_labels(version, frame)
    assert reconciliation.reconcile_run(estimated.pk) == "reconciled"
    estimated.refresh_from_db()
    alert.refresh_from_db()
    done = estimated.metrics["reconciliation"]
    assert done["realised"] == pytest.approx(realised_auc(frame))
    assert done["estimate_gap"] == pytest.approx(done["estimated"] - done["realised"])
    assert done["breach"] is False and estimated.metrics["current"] == done["realised"]
    assert alert.status == AlertStatus.RESOLVED and alert.resolved_by == "system:monitoring"
    assert "does not breach" in alert.note and alert.details["reconciliation"] == done
    gap = MetricPoint.objects.get(run=estimated, metric="estimate_gap")
    assert gap.value == pytest.approx(done["estimate_gap"])
    assert gap.window_end == estimated.window_end
    assert MetricPoint.objects.get(run=estimated, metric="auc").value == done["realised"]
    event = AuditEvent.objects.get(action="monitoring.estimate_reconciled")
    assert event.actor == "system:monitoring" and event.object_id == str(estimated.pk)

    # idempotent: nothing is found, a duplicate task changes nothing
    counts = (MetricPoint.objects.count(), AuditEvent.objects.count())
    assert reconciliation.reconcile_estimates() == []
    assert reconciliation.reconcile_run(estimated.pk) == "nothing to do"
    assert tasks.reconcile_estimate.run(estimated.pk) == "nothing to do"
    assert (MetricPoint.objects.count(), AuditEvent.objects.count()) == counts


def test_the_model_pages_chart_shows_the_estimate_with_its_band_then_the_realised_value():
    version = live(Stage.VALIDATION, profile=False)
    baseline(version, BASELINE_AUC)
    frame = window(3_000, seed=12)
    estimated = estimate_run(version, frame)
    period = model_page.Period(
        datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC), None
    )

    def performance() -> dict[str, dict]:
        charts = {c["id"]: c for c in model_page.series(version.model, period)["charts"]}
        return {s["label"]: s for s in charts["performance"]["series"]}

    [point] = performance()["AUC estimated before labels"]["points"]
    m = estimated.metrics
    assert (point["lo"], point["y"], point["hi"]) == (
        m["interval"][0],
        m["estimated_value"],
        m["interval"][1],
    )
    assert performance()["AUC"]["points"][0]["y"] is None  # no label yet
    put_labels(version, frame)
    assert reconciliation.reconcile_run(estimated.pk) == "reconciled"
    series = performance()
    assert series["AUC"]["points"][0]["y"] == pytest.approx(realised_auc(frame))
    assert series["AUC estimated before labels"]["points"] == [point]  # kept beside it


def test_an_estimate_the_labels_confirm_keeps_its_alert_open_and_says_so():
    version = live(Stage.VALIDATION, profile=False)
    baseline(version, BASELINE_AUC)
    frame = window(3_000, seed=9, scale=0.3)  # calibrated, crowded scores: a real drop
    estimated = estimate_run(version, frame)
    alert = Alert.objects.get(run=estimated)
    put_labels(version, frame)
    assert tasks.reconcile_estimate.run(estimated.pk) == "reconciled"
    alert.refresh_from_db()
    assert alert.status == AlertStatus.OPEN
    assert alert.details["reconciliation"]["breach"] is True
    assert alert.details["reconciliation"]["realised_within_interval"] is True
    reconciled = AuditEvent.objects.get(action="monitoring.alert_reconciled")
    assert "confirms the estimated breach" in reconciled.reason
    assert audited("monitoring.alert_resolved") == 0


def test_a_breach_the_estimate_missed_is_raised_when_the_put_labels(
    django_capture_on_commit_callbacks,
):
    version = live(Stage.VALIDATION, profile=False)
    baseline(version, BASELINE_AUC)
    frame = window(3_000, seed=10, true_slope=0.5, score_slope=3.0)  # over-confident scores
    estimated = estimate_run(version, frame)
    assert not Alert.objects.exists()
    put_labels(version, frame)
    with django_capture_on_commit_callbacks() as callbacks:
        assert reconciliation.reconcile_run(estimated.pk) == "reconciled"
    alert = Alert.objects.get(run=estimated)
    assert alert.metric == "relative_drop" and alert.details["reconciled"] is True
    assert alert.details["estimated"] is False and len(callbacks) == 1  # routed after commit
    assert audited("monitoring.alert_raised") == 1


def test_the_daily_task_fans_out_only_estimate_only_runs_awaiting_reconciliation(sent):
    version = live(Stage.VALIDATION, profile=False)
    baseline(version, BASELINE_AUC)
    estimated = estimate_run(version, window(1_000, seed=11))
    labelled = create(version, "concept_drift", window_end=datetime(2026, 3, 15, tzinfo=UTC))
    MonitorRun.objects.filter(pk=labelled.pk).update(
        status=RunStatus.SUCCEEDED, metrics={"estimated": False}
    )
    assert tasks.reconcile_estimates.run() == 1
    assert sent[-1] == ("monitoring.reconcile_estimate", (estimated.pk,))
    # past the data's retention nothing can reconcile it any more
    late = datetime(2028, 1, 1, tzinfo=UTC)
    assert reconciliation.reconcile_estimates(now=late) == []


def test_the_reconciliation_is_on_the_beat_schedule_and_the_monitoring_queue():
    entry = django_settings.CELERY_BEAT_SCHEDULE["reconcile-performance-estimates"]
    assert entry == {"task": "monitoring.reconcile_estimates", "schedule": 86400.0}
    assert django_settings.CELERY_TASK_ROUTES["monitoring.*"] == {"queue": "monitoring"}
