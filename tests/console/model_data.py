"""A model with a history, for the model page's tests (server side and browser).

The story: 1.0.0 goes live, 1.0.1 is promoted over it on day 3 and rolled back to 1.0.0 on
day 7; the model is halted on day 8 and released on day 9; 1.1.0 waits in staging. Every day
has one run of each check with its metric points, and data batches of predictions and labels.
Runs, points and batches are bulk-created as ``monitoring.runs`` stores them; the audit events
are written by ``governance.audit.record`` at their time, as the lifecycle services write them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import time_machine
from django.db import transaction

from governance import audit
from governance.audit import Actor
from governance.models import Archive, Lifecycle, Stage
from governance.policies import policy_in_force
from monitoring.models import (
    Alert,
    BatchKind,
    Check,
    DataBatch,
    MetricPoint,
    MonitorRun,
    RunStatus,
    Severity,
)
from monitoring.runs import metric_points
from registry.models import ModelVersion
from serving.models import Halt
from tests.factories import ModelVersionFactory, RegisteredModelFactory

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
GROUPS = ("A", "B")
CHECKS = (
    Check.DATA_DRIFT,
    Check.PREDICTION_DRIFT,
    Check.FAIRNESS,
    Check.CALIBRATION,
    Check.CONCEPT_DRIFT,
)
LEAD = Actor.system("tests")


@dataclass
class Seeded:
    model: object
    versions: dict[str, ModelVersion]
    days: list[datetime]  # window ends, oldest first
    features: list[str]
    alerts: list[Alert] = field(default_factory=list)

    @property
    def promoted_1_0_1(self) -> datetime:
        return self.days[0] + timedelta(days=3, hours=-6)

    @property
    def rolled_back(self) -> datetime:
        return self.days[0] + timedelta(days=7, hours=-6)

    @property
    def halted(self) -> datetime:
        return self.days[0] + timedelta(days=8, hours=-6)

    @property
    def released(self) -> datetime:
        return self.days[0] + timedelta(days=9, hours=-6)


def _version(model, version: str, features: list[str], stage: str, archive: str = ""):
    v = ModelVersionFactory(
        model=model,
        version=version,
        feature_list=features,
        thresholds={"decision": 0.4567891},
    )
    Lifecycle.objects.filter(version=v).update(stage=stage, archive=archive)  # set-up only
    return v


def _lifecycle_event(moment: datetime, action: str, model, version: str, before, after) -> None:
    with time_machine.travel(moment, tick=False), transaction.atomic():
        audit.record(
            actor=LEAD,
            action=action,
            object_type="governance.Lifecycle",
            object_id=version,
            model_name=model.name,
            before={"version": version, "stage": before},
            after={"version": version, "stage": after},
        )


def seed(name: str = "hotspot", *, days: int = 10, features: int = 3, now=NOW) -> Seeded:
    model = RegisteredModelFactory(name=name)
    names = [f"f{i}" for i in range(1, features + 1)]
    versions = {
        "1.0.0": _version(model, "1.0.0", names, Stage.MONITORING),
        "1.0.1": _version(model, "1.0.1", names, Stage.RETIRED, Archive.COLD),
        "1.1.0": _version(model, "1.1.0", names, Stage.STAGING),
    }
    Lifecycle.objects.filter(version=versions["1.0.0"]).update(
        promoted_at=now - timedelta(days=days), stage_entered_at=now - timedelta(days=2)
    )
    ends = [now - timedelta(days=days - 1 - i) for i in range(days)]
    seeded = Seeded(model, versions, ends, names)
    _tell_the_story(seeded)
    runs = _runs(seeded)
    MetricPoint.objects.bulk_create(
        point for run in runs for point in metric_points(run, _points(run, seeded))
    )
    _batches(seeded)
    _alerts(seeded, runs)
    return seeded


def _tell_the_story(seeded: Seeded) -> None:
    """The lifecycle events (1.0.0 live, 1.0.1 promoted and rolled back) and the halt."""
    model, ends = seeded.model, seeded.days
    _lifecycle_event(
        ends[0] - timedelta(days=1), "lifecycle.promote", model, "1.0.0", "staging", "production"
    )
    _lifecycle_event(
        seeded.promoted_1_0_1, "lifecycle.promote", model, "1.0.1", "staging", "production"
    )
    _lifecycle_event(
        seeded.rolled_back, "lifecycle.restore", model, "1.0.0", "retired", "production"
    )
    _lifecycle_event(
        seeded.rolled_back, "lifecycle.start_rollback", model, "1.0.1", "monitoring", "rollback"
    )
    Halt.objects.create(
        scope=model.name,
        reason="suspected data leak",
        engaged_by_label="lee",
        engaged_at=seeded.halted,
        released_at=seeded.released,
    )


def _serving_on(seeded: Seeded, moment: datetime) -> ModelVersion:
    if seeded.promoted_1_0_1 <= moment < seeded.rolled_back:
        return seeded.versions["1.0.1"]
    return seeded.versions["1.0.0"]


def _runs(seeded: Seeded) -> list[MonitorRun]:
    """One succeeded run of each check a day, by the version serving then."""
    model = seeded.model
    policy = policy_in_force("monitoring", model, LEAD)
    runs = MonitorRun.objects.bulk_create(
        MonitorRun(
            model=model,
            version=_serving_on(seeded, end),
            kind=kind,
            window_start=end - timedelta(days=7),
            window_end=end,
            policy=policy,
            status=RunStatus.SUCCEEDED,
            rows=1000,
            metrics=(
                {
                    "metric": "auc",
                    "baseline": 0.8,
                    "current": round(0.79 - 0.004 * i, 4),
                    "relative_drop": round((0.8 - (0.79 - 0.004 * i)) / 0.8, 4),
                }
                if kind == Check.CONCEPT_DRIFT
                else {}
            ),
        )
        for i, end in enumerate(seeded.days)
        for kind in CHECKS
    )
    if runs[0].pk is None:  # a backend that does not return ids from a bulk insert
        runs = list(MonitorRun.objects.filter(model=model).order_by("window_end", "kind"))
    return runs


def _points(run: MonitorRun, seeded: Seeded) -> list[tuple[str, str, str, float]]:
    """A run's (metric, feature, group, value), drifting a little more each day."""
    names = seeded.features
    i = seeded.days.index(run.window_end)
    drift = 0.03 * i
    rows: list[tuple[str, str, str, float]] = []
    if run.kind == Check.DATA_DRIFT:
        rows += [("psi", f, "", round(0.01 * (n + 1) + drift, 4)) for n, f in enumerate(names)]
        rows.append(("max_psi", "", "", round(0.01 * len(names) + drift, 4)))
    elif run.kind == Check.PREDICTION_DRIFT:
        rows += [
            ("ks_statistic", "", "", 0.02 + 0.01 * i),
            ("ks_pvalue", "", "", 0.5 / (i + 1) ** 3),
        ]
        rows.append(("mean_score", "", "", 0.3))
    elif run.kind == Check.FAIRNESS:
        rows += [
            ("equalized_odds_difference", "race", "", 0.04 + 0.01 * i),
            ("fpr_ratio", "race", "", 0.95 - 0.02 * i),
            ("fnr_ratio", "race", "", 0.9),
            ("demographic_parity_ratio", "race", "", 0.9),
        ]
        for g, size in zip(GROUPS, (600, 90 + i), strict=True):
            rows += [
                ("tpr", "race", f"race={g}", 0.7 + (0.01 * i if g == "B" else 0)),
                ("fpr", "race", f"race={g}", 0.1),
                ("selection_rate", "race", f"race={g}", 0.2),
                ("n", "race", f"race={g}", float(size)),
            ]
    elif run.kind == Check.CALIBRATION:
        rows += [("ece", "", "", 0.02 + 0.002 * i), ("p_value", "", "", 0.4)]
    else:
        rows += [
            ("auc", "", "", run.metrics["current"]),
            ("relative_drop", "", "", run.metrics["relative_drop"]),
        ]
    return rows


def _batches(seeded: Seeded) -> None:
    """Two prediction batches and one label batch a day."""
    DataBatch.objects.bulk_create(
        DataBatch(
            model=seeded.model,
            version=_serving_on(seeded, end),
            kind=kind,
            day=end.date(),
            path=f"monitoring/{seeded.model.name}/{kind}/{end:%Y-%m-%d}/{n}.parquet",
            rows=rows,
            digest="sha256:" + "0" * 64,
            created_by="tests",
        )
        for end in seeded.days
        for kind, n, rows in (
            (BatchKind.PREDICTIONS, 0, 1000),
            (BatchKind.PREDICTIONS, 1, 200),
            (BatchKind.LABELS, 0, 300),
        )
    )


def _alerts(seeded: Seeded, runs: list[MonitorRun]) -> None:
    """Three alerts on day 6: data drift, a critical fairness breach and concept drift."""
    by_kind = {(r.kind, r.window_end): r for r in runs}
    alert_day = seeded.days[min(5, len(seeded.days) - 1)]
    for kind, severity, metric, feature, value, threshold, details in (
        (Check.DATA_DRIFT, Severity.MEDIUM, "psi", seeded.features[-1], 0.25, 0.2, {}),
        (Check.FAIRNESS, Severity.CRITICAL, "equalized_odds_difference", "race", 0.12, 0.1, {}),
        (Check.CONCEPT_DRIFT, Severity.HIGH, "relative_drop", "", 0.06, 0.05, {"current": 0.752}),
    ):
        run = by_kind[(kind, alert_day)]
        seeded.alerts.append(
            Alert.objects.create(
                run=run,
                model=seeded.model,
                version=run.version,
                kind=kind,
                severity=severity,
                metric=metric,
                feature=feature,
                value=value,
                threshold=threshold,
                details=details,
                window_start=run.window_start,
                window_end=run.window_end,
            )
        )
