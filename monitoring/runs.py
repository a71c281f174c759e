"""Monitor runs: one check of one version over one window, created once and executed once.

``run_create`` is a get-or-create on (version, check, window), so a second scheduler or a retried
task finds the run instead of repeating it. ``run_execute`` claims a pending run with a
conditional UPDATE (pending -> running), so two workers never both run it; it loads only the
columns the check needs, computes outside any transaction, then commits the outcome, the metric
points and, on a breach, the alert with its audit event in one short transaction. After commit the
alert is handed to the routing hook. Nothing raised inside a run escapes it: the run ends
``failed`` with the reason instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from analytics.stats import jsonable
from governance import audit
from governance.audit import Actor
from governance.models import SERVING_STAGES, Lifecycle, ValidationPolicy
from governance.policies import policy_in_force
from governance.premises import Premise
from governance.selectors import live_version
from platform_core.errors import Conflict, InvalidInput
from platform_core.tasking import enqueue
from registry.models import ModelVersion, RegisteredModel

from . import checks, checks_feedback
from .columns import feature_column, is_sensitive
from .models import (
    DAILY_CHECKS,
    FEEDBACK_CHECKS,
    SEVERITY,
    Alert,
    BatchKind,
    Check,
    DataBatch,
    MetricPoint,
    MonitorRun,
    ReferenceProfile,
    RunStatus,
)

logger = logging.getLogger(__name__)

SYSTEM = Actor.system("monitoring")
# A run left "running" this long (its worker died) may be claimed again.
STALE_AFTER = timedelta(minutes=30)
ALL_CHECKS: tuple[str, ...] = tuple(Check.values)


def window_days(check: str, settings: dict[str, Any]) -> int:
    """Daily checks look back ``daily_window_days``, weekly ones ``weekly_window_days``."""
    if check == Check.FEEDBACK_LOOP:  # its periods, each feedback_period_days long
        return checks_feedback.window_days(settings)
    key = "daily_window_days" if check in DAILY_CHECKS else "weekly_window_days"
    return int(settings[key])


def run_create(
    *,
    model: RegisteredModel,
    version: ModelVersion,
    check: str,
    window_end: datetime,
    trigger: str,
    actor: Actor,
) -> MonitorRun:
    """The run of ``check`` on ``version`` for the window ending at ``window_end`` (created once).

    The window starts the policy's window length before its end. The current monitoring and
    validation policies are recorded on the run and used when it executes.
    """
    if check not in Check.values:
        raise InvalidInput({"check": f"unknown check '{check}'; use {', '.join(Check.values)}"})
    if version.model_id != model.pk:
        raise InvalidInput({"version": f"{version} is not a version of {model.name}"})
    policy = policy_in_force("monitoring", model, actor)
    start = window_end - timedelta(days=window_days(check, policy.resolved))
    run, _ = MonitorRun.objects.get_or_create(
        version=version,
        kind=check,
        window_start=start,
        window_end=window_end,
        defaults={
            "model": model,
            "policy": policy,
            "validation_policy": policy_in_force("validation", model, actor),
            "trigger": trigger,
            "created_by": actor.label,
        },
    )
    return run


def runs_start(
    *,
    model: RegisteredModel,
    version: ModelVersion | None,
    checks_to_run: Iterable[str] | None,
    actor: Actor,
    window_end: datetime | None = None,
) -> list[MonitorRun]:
    """Start runs now (the API): one per check, the window ending now; enqueued after commit.

    ``version`` None means the live version. Works for a version in any stage. No checks
    named means ``default_checks``.
    """
    requested = list(dict.fromkeys(checks_to_run)) if checks_to_run is not None else []
    if checks_to_run is not None and not requested:
        raise InvalidInput({"checks": "name at least one check, or leave it out for all"})
    unknown = [c for c in requested if c not in Check.values]
    if unknown:
        raise InvalidInput(
            {"checks": f"unknown check(s) {', '.join(unknown)}; use {', '.join(Check.values)}"}
        )
    if version is None:
        version = live_version(model)
        if version is None:
            raise Conflict(
                f"{model.name} has no live version; name the version to run the checks on"
            )
    window_end = window_end or timezone.now()
    with transaction.atomic():
        runs = [
            run_create(
                model=model,
                version=version,
                check=check,
                window_end=window_end,
                trigger="api",
                actor=actor,
            )
            for check in (requested or default_checks(model))
        ]
        ids = [run.pk for run in runs]
        audit.record(
            actor=actor,
            action="monitoring.runs_started",
            obj=runs[0],
            model_name=model.name,
            after={
                "version": version.version,
                "checks": [run.kind for run in runs],
                "runs": ids,
                "window_end": window_end,
            },
        )
        transaction.on_commit(partial(enqueue_runs, ids), robust=True)
    return runs


def default_checks(model: RegisteredModel) -> tuple[str, ...]:
    """What "all checks" means for a model: the feedback-loop check only when its monitoring
    policy names a cell field (as the weekly schedule)."""
    if checks_feedback.names_a_cell_field(model):
        return ALL_CHECKS
    return tuple(c for c in ALL_CHECKS if c not in FEEDBACK_CHECKS)


def enqueue_runs(run_ids: Iterable[int]) -> None:
    """One ``monitoring.execute_run`` task per run (a duplicate finds the run claimed)."""
    for run_id in run_ids:
        enqueue("monitoring.execute_run", run_id)


# --------------------------------------------------------------------------------------------
# Execution
# --------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    status: str
    reason: str = ""
    rows: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    points: list[checks.Point] = field(default_factory=list)
    breach: checks.Breach | None = None


def _claim(run_id: int, now: datetime) -> bool:
    """pending -> running (or a stale running run) in one conditional UPDATE."""
    return bool(
        MonitorRun.objects.filter(pk=run_id)
        .filter(
            Q(status=RunStatus.PENDING)
            | Q(status=RunStatus.RUNNING, started_at__lt=now - STALE_AFTER)
        )
        .update(status=RunStatus.RUNNING, started_at=now, finished_at=None, reason="")
    )


def _sensitive_columns(run: MonitorRun) -> list[str]:
    """The ``s.*`` columns stored for the run's window (read from the files' schemas)."""
    from . import store

    paths = DataBatch.objects.filter(
        version=run.version,
        kind=BatchKind.PREDICTIONS,
        day__gte=run.window_start.astimezone(UTC).date(),
        day__lte=(run.window_end - timedelta(microseconds=1)).astimezone(UTC).date(),
    ).values_list("path", flat=True)
    names: dict[str, None] = {}
    for path in paths:
        for name in store.read_schema(path).names:
            if is_sensitive(name):
                names[name] = None
    return list(names)


def _columns(run: MonitorRun, needs: checks.Needs, profile: dict | None) -> list[str]:
    """Only what the check reads: a 1M-row window of 20 features is most of the load time."""
    if needs.features:
        features = list(run.version.feature_list or []) or list(
            ((profile or {}).get("features") or {}).keys()
        )
        return [feature_column(name) for name in features]
    if run.kind == Check.FEEDBACK_LOOP:
        return checks_feedback.columns(run.policy.resolved)
    columns = ["score"]
    if run.kind != Check.LABEL_DRIFT and run.kind != Check.PREDICTION_DRIFT:
        columns.append("prediction")
    if needs.sensitive:
        columns += _sensitive_columns(run)
    return columns


def _load_window(run: MonitorRun, needs: checks.Needs, profile: dict | None):
    from . import store

    window = store.load_window(
        model=run.model,
        version=run.version,
        start=run.window_start,
        end=run.window_end,
        columns=_columns(run, needs, profile),
        with_labels=needs.labels,
        with_sensitive=needs.sensitive,
    )
    # checks that split the window into periods count them back from its end
    window.attrs.update(window_start=run.window_start, window_end=run.window_end)
    return window


def _compute(run: MonitorRun) -> Outcome:
    needs = checks.NEEDS[run.kind]
    profile = None
    if needs.profile:
        profile = (
            ReferenceProfile.objects.filter(version=run.version)
            .values_list("profile", flat=True)
            .first()
        )
        if not profile:
            raise checks.CheckFailed(
                f"{run.version} has no reference profile: upload its reference data "
                f"(POST /api/v1/models/{run.model.name}/versions/{run.version.version}/reference/)"
            )
    settings = run.policy.resolved
    thresholds = (
        run.validation_policy.resolved
        if run.validation_policy
        else ValidationPolicy.schema.defaults()
    )
    window = _load_window(run, needs, profile)
    rows = len(window)
    try:
        result = checks.run_check(run.kind, window, profile, run.version, settings, thresholds)
    except checks.Skip as skip:
        return Outcome(RunStatus.SKIPPED, skip.reason, rows)
    return Outcome(RunStatus.SUCCEEDED, "", rows, result.metrics, result.points, result.breach)


RUN_TASK = "monitoring.execute_run"


def _premise(run: MonitorRun) -> Premise:
    """A scheduled run watches a serving version; an on-demand run works in any stage."""
    statement = f"run {run.pk} ({run.kind}) is still claimable"
    if run.trigger == "schedule":
        statement = f"{run.version.version} of {run.model.name} still serves and " + statement
    return Premise(RUN_TASK, statement, model_id=run.model_id, model_name=run.model.name)


def _premise_failure(run: MonitorRun) -> str | None:
    """Why the run's premise no longer holds (None: it holds); call under the model lock."""
    if run.trigger != "schedule":
        return None
    stage = Lifecycle.objects.filter(version_id=run.version_id).values_list("stage", flat=True)
    now = stage.first()
    if now in SERVING_STAGES:
        return None
    return (
        f"{run.version.version} no longer serves (it is in {now or 'no stage'}): the scheduled "
        f"{run.kind} check of a version that was rolled back, replaced or retired is not run"
    )


def run_execute(run_id: int) -> MonitorRun:
    """Execute a pending run once; a run already claimed or finished is returned unchanged.

    Premise (``governance.premises``): the run is still claimable and, when scheduled, its
    version still serves. It is checked after the claim and again, under the model lock the
    lifecycle takes, when the outcome commits: a version rolled back, replaced or retired
    meanwhile gets its run ``skipped`` with the reason - no metric point, no alert.
    """
    claimed_at = timezone.now()
    if not _claim(run_id, claimed_at):
        return MonitorRun.objects.get(pk=run_id)
    run = MonitorRun.objects.select_related("model", "version", "policy", "validation_policy").get(
        pk=run_id
    )
    if (reason := _premise_failure(run)) is not None:
        _finish(run, Outcome(RunStatus.SKIPPED, reason), claimed_at)
        run.refresh_from_db()
        return run
    try:
        outcome = _compute(run)
    except checks.CheckFailed as exc:
        outcome = Outcome(RunStatus.FAILED, exc.reason)
    except Exception as exc:  # never let one run crash the scheduler
        logger.exception("monitor run %s (%s of %s) failed", run.pk, run.kind, run.version)
        outcome = Outcome(RunStatus.FAILED, f"{type(exc).__name__}: {exc}"[:2000])
    try:
        _finish(run, outcome, claimed_at)
    except Exception as exc:
        logger.exception("monitor run %s: storing its outcome failed", run.pk)
        MonitorRun.objects.filter(
            pk=run.pk, status=RunStatus.RUNNING, started_at=claimed_at
        ).update(
            status=RunStatus.FAILED,
            reason=f"storing the outcome failed: {type(exc).__name__}: {exc}"[:2000],
            finished_at=timezone.now(),
        )
    run.refresh_from_db()
    return run


def _finish(run: MonitorRun, outcome: Outcome, claimed_at: datetime) -> None:
    """Commit the outcome, the metric points and any alert, if this worker still owns the run."""
    now = timezone.now()
    premise = _premise(run)
    with premise.locked():
        stale = _premise_failure(run)
        if stale is not None:
            outcome = Outcome(RunStatus.SKIPPED, stale, outcome.rows)
        owned = MonitorRun.objects.filter(
            pk=run.pk, status=RunStatus.RUNNING, started_at=claimed_at
        ).update(
            status=outcome.status,
            reason=outcome.reason,
            rows=outcome.rows,
            metrics=outcome.metrics,
            finished_at=now,
        )
        if not owned:
            logger.warning("monitor run %s was claimed again by another worker", run.pk)
            return
        if stale is not None:
            premise.skip(stale, obj=run, run=run.pk, version=run.version.version)
            return
        points_store(run, outcome.points)
        if outcome.breach is not None:
            alert = _raise_alert(run, outcome.breach)
            if alert is not None:
                transaction.on_commit(partial(hand_off, alert.pk), robust=True)


def metric_points(run: MonitorRun, points) -> list[MetricPoint]:
    """The unsaved rows of a run's ``points`` ((metric, feature, group, value), as a check
    returns them): the one shape of a stored time-series point, for the seeders too."""
    return [
        MetricPoint(
            run=run,
            model_id=run.model_id,
            version_id=run.version_id,
            kind=run.kind,
            metric=metric[:60],
            feature=(feature or "")[:200],
            group=(group or "")[:200],
            value=_float_or_none(value),
            window_end=run.window_end,
        )
        for metric, feature, group, value in points
    ]


def points_store(run: MonitorRun, points: Iterable[checks.Point]) -> None:
    """The run's numbers as metric points at its window end (inside the caller's transaction)."""
    MetricPoint.objects.bulk_create(metric_points(run, points), batch_size=1000)


def _float_or_none(value: Any) -> float | None:
    number = jsonable(value)
    return float(number) if isinstance(number, int | float) else None


def _raise_alert(run: MonitorRun, breach: checks.Breach) -> Alert | None:
    """The alert of this (version, check, window) and its audit event; None if it existed."""
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                run=run,
                model_id=run.model_id,
                version_id=run.version_id,
                kind=run.kind,
                severity=breach.severity or SEVERITY[run.kind],
                feature=(breach.feature or "")[:200],
                metric=breach.metric[:60],
                value=breach.value,
                threshold=breach.threshold,
                details=breach.details,
                window_start=run.window_start,
                window_end=run.window_end,
            )
    except IntegrityError:
        return None
    audit.record(
        actor=SYSTEM,
        action="monitoring.alert_raised",
        obj=alert,
        model_name=run.model.name,
        after={
            "version": run.version.version,
            "check": alert.kind,
            "severity": alert.severity,
            "metric": alert.metric,
            "feature": alert.feature or None,
            "value": alert.value,
            "threshold": alert.threshold,
            "window_start": alert.window_start,
            "window_end": alert.window_end,
            "run": run.pk,
        },
    )
    return alert


def hand_off(alert_id: int) -> None:
    """Route the alert now; if routing fails, a retrying task takes it over."""
    from . import routing

    try:
        routing.route(alert_id)
    except Exception:
        logger.exception("routing alert %s failed; retrying in a task", alert_id)
        enqueue("monitoring.route_alert", alert_id)
