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
    policies = (
        policy_in_force("monitoring", model, actor),
        policy_in_force("validation", model, actor),
    )
    unsaved = _unsaved_run(version, check, window_end, policies, trigger=trigger, actor=actor)
    run, _ = MonitorRun.objects.get_or_create(
        version=version,
        kind=check,
        window_start=unsaved.window_start,
        window_end=window_end,
        defaults={
            "model": model,
            "policy": unsaved.policy,
            "validation_policy": unsaved.validation_policy,
            "trigger": trigger,
            "created_by": actor.label,
        },
    )
    return run


def _unsaved_run(
    version: ModelVersion, check: str, window_end: datetime, policies: tuple, **made
) -> MonitorRun:
    """The run ``run_create`` makes, unsaved: ``policies`` are the model's monitoring and
    validation policies in force, ``made`` its ``trigger`` and ``actor``."""
    policy, validation = policies
    return MonitorRun(
        model_id=version.model_id,
        version=version,
        kind=check,
        window_start=window_end - timedelta(days=window_days(check, policy.resolved)),
        window_end=window_end,
        policy=policy,
        validation_policy=validation,
        trigger=made["trigger"],
        created_by=made["actor"].label,
    )


def runs_create_scheduled(
    versions: Iterable[ModelVersion],
    checks_to_run: Iterable[str],
    window_end: datetime,
    *,
    actor: Actor,
) -> dict[int, list[int]]:
    """The scheduled runs of ``checks_to_run`` on these versions for the window ending at
    ``window_end``, those missing created in one transaction (a fleet's fan-out: one commit per
    chunk, not one per run); each version's pending runs of that window, by version id.

    What each run is and records is ``run_create``'s; an existing run (same version, check and
    window: another beat, a retried chunk) is found, not repeated. One version's trouble (its
    policies) is logged and leaves the others.
    """
    versions = list(versions)
    checks_to_run = tuple(checks_to_run)
    existing = set(
        MonitorRun.objects.filter(
            version__in=versions, kind__in=checks_to_run, window_end=window_end
        ).values_list("version_id", "kind")
    )
    missing: list[MonitorRun] = []
    for version in versions:
        wanted = [c for c in checks_to_run if (version.pk, c) not in existing]
        if not wanted:
            continue
        try:
            model = version.model
            policies = (
                policy_in_force("monitoring", model, actor),
                policy_in_force("validation", model, actor),
            )
            missing += [
                _unsaved_run(version, c, window_end, policies, trigger="schedule", actor=actor)
                for c in wanted
            ]
        except Exception:  # one model's trouble must not stop the others
            logger.exception("could not create the runs of %s", version)
    if missing:
        with transaction.atomic():
            MonitorRun.objects.bulk_create(missing, batch_size=500, ignore_conflicts=True)
    pending: dict[int, list[int]] = {}
    for pk, version_id in (
        MonitorRun.objects.filter(
            status=RunStatus.PENDING,
            kind__in=checks_to_run,
            window_end=window_end,
            version__in=versions,
        )
        .values_list("pk", "version_id")
        .order_by("pk")
    ):
        pending.setdefault(version_id, []).append(pk)
    return pending


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


def enqueue_run_groups(groups: Iterable[list[int]]) -> None:
    """One ``monitoring.execute_runs`` task per group: the runs of one version and window, which
    share one load of the window and one commit (a duplicate finds the runs claimed)."""
    for run_ids in groups:
        if run_ids:
            enqueue("monitoring.execute_runs", list(run_ids))


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
    return bool(_claim_runs([run_id], now))


def _claim_runs(run_ids: list[int], now: datetime) -> list[int]:
    """Claim the claimable runs of ``run_ids`` in one conditional UPDATE (pending, or running
    past ``STALE_AFTER``); the ids this worker now owns (their ``started_at`` is ``now``, the
    ownership token ``_store`` checks)."""
    claimed = (
        MonitorRun.objects.filter(pk__in=run_ids)
        .filter(
            Q(status=RunStatus.PENDING)
            | Q(status=RunStatus.RUNNING, started_at__lt=now - STALE_AFTER)
        )
        .update(status=RunStatus.RUNNING, started_at=now, finished_at=None, reason="")
    )
    if not claimed:
        return []
    if len(run_ids) == 1:
        return list(run_ids)
    owned = MonitorRun.objects.filter(pk__in=run_ids, status=RunStatus.RUNNING, started_at=now)
    return list(owned.values_list("pk", flat=True).order_by("pk"))


def _sensitive_columns(run: MonitorRun) -> list[str]:
    """The ``s.*`` columns stored for the run's window (read from the files' schemas)."""
    from . import store

    paths = DataBatch.objects.filter(
        version=run.version,
        kind=BatchKind.PREDICTIONS,
        day__gte=run.window_start.astimezone(UTC).date(),
        day__lte=(run.window_end - timedelta(microseconds=1)).astimezone(UTC).date(),
    ).values_list("path", "size")
    names: dict[str, None] = {}
    for path, size in paths:
        for name in store.read_schema(path, size).names:
            if is_sensitive(name):
                names[name] = None
    return list(names)


def _columns(
    run: MonitorRun, needs: checks.Needs, profile: dict | None, sensitive: list[str] | None = None
) -> list[str]:
    """Only what the check reads: a 1M-row window of 20 features is most of the load time.
    ``sensitive``: the window's ``s.*`` columns when the caller read them already."""
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
        columns += sensitive if sensitive is not None else _sensitive_columns(run)
    return columns


def _load_window(run: MonitorRun, needs: checks.Needs, profile: dict | None):
    return _read_window(run, _columns(run, needs, profile), needs.labels, needs.sensitive)


def _read_window(run: MonitorRun, columns: list[str], with_labels: bool, with_sensitive: bool):
    from . import store

    window = store.load_window(
        model=run.model,
        version=run.version,
        start=run.window_start,
        end=run.window_end,
        columns=columns,
        with_labels=with_labels,
        with_sensitive=with_sensitive,
    )
    # checks that split the window into periods count them back from its end
    window.attrs.update(window_start=run.window_start, window_end=run.window_end)
    return window


LABEL_COLUMNS = ["label", "label_time"]  # what load_window adds with_labels


class SharedWindow:
    """One load of a window for several runs of the same version and window: the union of the
    columns they read. Each run gets the frame it would have loaded alone (its own columns, in
    its order, labels only when its check reads them): with copy-on-write a column selection
    copies nothing."""

    def __init__(self, runs: list[MonitorRun], profiles: dict[int, dict | None]) -> None:
        sensitive = None
        if any(checks.NEEDS[run.kind].sensitive for run in runs):
            sensitive = _sensitive_columns(runs[0])
        self.columns = {
            run.pk: _columns(run, checks.NEEDS[run.kind], profiles.get(run.pk), sensitive)
            for run in runs
        }
        needs = [checks.NEEDS[run.kind] for run in runs]
        union = list(dict.fromkeys(c for columns in self.columns.values() for c in columns))
        self.frame = _read_window(
            runs[0],
            union,
            any(n.labels for n in needs),
            any(n.sensitive for n in needs),
        )

    def window(self, run: MonitorRun):
        columns = self.columns[run.pk]
        if checks.NEEDS[run.kind].labels:
            columns = columns + LABEL_COLUMNS
        window = self.frame[columns]
        window.attrs.update(window_start=run.window_start, window_end=run.window_end)
        return window


def _profile(run: MonitorRun, cache: dict[int, dict | None]) -> dict | None:
    """The version's reference profile (read once per version); CheckFailed when it has none."""
    if run.version_id not in cache:
        cache[run.version_id] = (
            ReferenceProfile.objects.filter(version=run.version)
            .values_list("profile", flat=True)
            .first()
        )
    profile = cache[run.version_id]
    if not profile:
        raise checks.CheckFailed(
            f"{run.version} has no reference profile: upload its reference data "
            f"(POST /api/v1/models/{run.model.name}/versions/{run.version.version}/reference/)"
        )
    return profile


def _compute(run: MonitorRun, profile: dict | None, shared: SharedWindow | None) -> Outcome:
    needs = checks.NEEDS[run.kind]
    settings = run.policy.resolved
    thresholds = (
        run.validation_policy.resolved
        if run.validation_policy
        else ValidationPolicy.schema.defaults()
    )
    if shared is not None and run.pk in shared.columns:
        window = shared.window(run)
    else:
        window = _load_window(run, needs, profile)
    rows = len(window)
    try:
        result = checks.run_check(run.kind, window, profile, run.version, settings, thresholds)
    except checks.Skip as skip:
        return Outcome(RunStatus.SKIPPED, skip.reason, rows)
    return Outcome(RunStatus.SUCCEEDED, "", rows, result.metrics, result.points, result.breach)


def _compute_all(runs: list[MonitorRun]) -> dict[int, Outcome]:
    """Every run's outcome; runs of one window share its load. Nothing raised escapes: a run
    whose check breaks ends ``failed`` with the reason, alone."""
    profiles: dict[int, dict | None] = {}
    outcomes: dict[int, Outcome] = {}
    ready: dict[int, dict | None] = {}
    for run in runs:
        try:
            ready[run.pk] = _profile(run, profiles) if checks.NEEDS[run.kind].profile else None
        except checks.CheckFailed as exc:
            outcomes[run.pk] = Outcome(RunStatus.FAILED, exc.reason)
    shared = None
    together = [run for run in runs if run.pk in ready]
    if len(together) > 1:
        try:
            shared = SharedWindow(together, ready)
        except Exception:  # each run loads its own window and fails (or not) alone, as before
            logger.warning("loading one window for runs %s failed", [r.pk for r in together])
    for run in together:
        try:
            outcomes[run.pk] = _compute(run, ready[run.pk], shared)
        except checks.CheckFailed as exc:
            outcomes[run.pk] = Outcome(RunStatus.FAILED, exc.reason)
        except Exception as exc:  # never let one run crash the scheduler
            logger.exception("monitor run %s (%s of %s) failed", run.pk, run.kind, run.version)
            outcomes[run.pk] = Outcome(RunStatus.FAILED, f"{type(exc).__name__}: {exc}"[:2000])
    return outcomes


RUN_TASK = "monitoring.execute_run"


def _premise(run: MonitorRun) -> Premise:
    """A scheduled run watches a serving version; an on-demand run works in any stage."""
    statement = f"run {run.pk} ({run.kind}) is still claimable"
    if run.trigger == "schedule":
        statement = f"{run.version.version} of {run.model.name} still serves and " + statement
    return Premise(RUN_TASK, statement, model_id=run.model_id, model_name=run.model.name)


def _premise_failure(run: MonitorRun, stages: dict[int, str | None] | None = None) -> str | None:
    """Why the run's premise no longer holds (None: it holds); call under the model lock.
    ``stages``: the versions' stages read so far in this check (one query per version)."""
    if run.trigger != "schedule":
        return None
    stages = {} if stages is None else stages
    if run.version_id not in stages:
        stage = Lifecycle.objects.filter(version_id=run.version_id).values_list("stage", flat=True)
        stages[run.version_id] = stage.first()
    now = stages[run.version_id]
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
    done = runs_execute([run_id])
    if not done:
        raise MonitorRun.DoesNotExist(f"no monitor run {run_id}")
    return done[0]


def runs_execute(run_ids: Iterable[int]) -> list[MonitorRun]:
    """``run_execute`` for several runs in one task (what the schedule sends: the checks of one
    version and day), returned in the order given (ids of no run left out).

    The claimable ones are claimed in one UPDATE; the runs of one version and window load the
    window once (the union of their columns) and commit their outcomes in one transaction under
    the model lock, each in a savepoint of its own: every run keeps its own record, points,
    alert and audit events, its premise checked as ``run_execute`` does, and a run whose
    outcome cannot be stored ends ``failed`` alone. Alerts are handed off after the commit.
    """
    ids = list(dict.fromkeys(run_ids))
    claimed_at = timezone.now()
    mine = _claim_runs(ids, claimed_at) if ids else []
    if mine:
        claimed = MonitorRun.objects.select_related(
            "model", "version", "policy", "validation_policy"
        ).filter(pk__in=mine)
        groups: dict[tuple, list[MonitorRun]] = {}
        for run in claimed.order_by("pk"):
            run.version.model = run.model  # the same row: str(version) needs no query
            key = (run.version_id, run.window_start, run.window_end)
            groups.setdefault(key, []).append(run)
        for group in groups.values():
            _execute_group(group, claimed_at)
    done = MonitorRun.objects.in_bulk(ids)
    return [done[pk] for pk in ids if pk in done]


def _execute_group(runs: list[MonitorRun], claimed_at: datetime) -> None:
    """Compute and store the claimed runs of one version and window."""
    stages: dict[int, str | None] = {}
    outcomes: dict[int, Outcome] = {}
    for run in runs:
        if (reason := _premise_failure(run, stages)) is not None:
            outcomes[run.pk] = Outcome(RunStatus.SKIPPED, reason)
    outcomes.update(_compute_all([run for run in runs if run.pk not in outcomes]))
    failed: dict[int, Exception] = {}
    try:
        with _premise(runs[0]).locked():  # the model's row lock, once for the group
            locked_stages: dict[int, str | None] = {}
            for run in runs:
                try:
                    with transaction.atomic():  # a savepoint: one run's failure is its own
                        _store(run, outcomes[run.pk], claimed_at, locked_stages)
                except Exception as exc:
                    failed[run.pk] = exc
    except Exception as exc:  # the lock or the commit: nothing of the group was stored
        failed = {run.pk: exc for run in runs}
    for pk, exc in failed.items():
        logger.error("monitor run %s: storing its outcome failed", pk, exc_info=exc)
        MonitorRun.objects.filter(pk=pk, status=RunStatus.RUNNING, started_at=claimed_at).update(
            status=RunStatus.FAILED,
            reason=f"storing the outcome failed: {type(exc).__name__}: {exc}"[:2000],
            finished_at=timezone.now(),
        )


def _store(
    run: MonitorRun, outcome: Outcome, claimed_at: datetime, stages: dict[int, str | None]
) -> None:
    """Commit the outcome, the metric points and any alert, if this worker still owns the run
    (inside the model's lock, which the caller holds)."""
    stale = _premise_failure(run, stages)
    if stale is not None:
        outcome = Outcome(RunStatus.SKIPPED, stale, outcome.rows)
    owned = MonitorRun.objects.filter(
        pk=run.pk, status=RunStatus.RUNNING, started_at=claimed_at
    ).update(
        status=outcome.status,
        reason=outcome.reason,
        rows=outcome.rows,
        metrics=outcome.metrics,
        finished_at=timezone.now(),
    )
    if not owned:
        logger.warning("monitor run %s was claimed again by another worker", run.pk)
        return
    if stale is not None:
        _premise(run).skip(stale, obj=run, run=run.pk, version=run.version.version)
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
                model=run.model,  # loaded with the run: the audit event names them, no query
                version=run.version,
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
