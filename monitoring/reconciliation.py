"""Reconciling performance estimates with the labels that arrived after them (beat, daily).

A concept-drift run over a window with too few labels estimated its metric from the calibrated
scores (``checks._estimated_concept_drift``). Once that window holds ``min_labeled_rows`` labels,
``reconcile_run`` computes the realised metric on it against the baseline the estimate used and,
in one transaction with its audit event (the monitoring service as actor): records the realised
metric and the gap (estimate - realised) as points at the run's window end, so the estimate and
its outcome are one series; writes the reconciliation into the run's metrics; resolves the
estimate's alert when the realised value does not breach, or keeps it and says so when it does;
raises the realised alert when the estimate missed a breach. A reconciled run is never
reconciled again, so a retried or duplicated task changes nothing.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.db import transaction
from django.utils import timezone

from analytics.stats import jsonable
from governance import audit
from platform_core.tasking import enqueue

from . import checks, store
from .alerts import alert_resolve_on_finding
from .models import Alert, Check, MonitorRun, RunStatus
from .runs import SYSTEM, _raise_alert, hand_off, points_store

logger = logging.getLogger(__name__)

TASK = "monitoring.reconcile_estimate"


def _estimate_only() -> Any:
    return MonitorRun.objects.filter(
        kind=Check.CONCEPT_DRIFT, status=RunStatus.SUCCEEDED, metrics__estimated=True
    ).exclude(metrics__has_key="reconciliation")


def reconcile_estimates(*, now: datetime | None = None) -> list[int]:
    """Enqueue one reconciliation per estimate-only concept-drift run still within its data
    retention (older windows lost their predictions: nothing will ever reconcile them)."""
    now = now or timezone.now()
    ids = [
        run.pk
        for run in _estimate_only().select_related("policy").order_by("window_end", "pk")
        if run.window_end >= now - timedelta(days=int(run.policy.resolved["retention_days"]))
    ]
    for run_id in ids:
        enqueue(TASK, run_id)
    return ids


def reconcile_run(run_id: int) -> str:
    """Reconcile one estimate-only run: "reconciled", "waiting" (too few labels yet),
    "undetermined" (the realised metric is undefined), "failed" (broken data, logged; the next
    day tries again) or "nothing to do"."""
    run = MonitorRun.objects.select_related("model", "version", "policy").get(pk=run_id)
    if not _pending(run.metrics, run.status):
        return "nothing to do"
    window = store.load_window(
        model=run.model,
        version=run.version,
        start=run.window_start,
        end=run.window_end,
        columns=["score", "prediction"],
        with_labels=True,
        with_sensitive=False,
    )
    try:
        result = checks.reconcile_concept_drift(
            window, run.version, run.policy.resolved, run.metrics
        )
    except checks.Skip as skip:  # enough labels, but the metric is undefined on them
        return _record(run_id, None, skip.reason)
    except checks.CheckFailed as exc:  # broken data: tried again tomorrow, maybe repaired
        logger.warning("reconciling run %s failed: %s", run_id, exc.reason)
        return "failed"
    if result is None:
        return "waiting"
    return _record(run_id, result, "")


def _pending(metrics: dict[str, Any], status: str) -> bool:
    return (
        status == RunStatus.SUCCEEDED
        and bool((metrics or {}).get("estimated"))
        and "reconciliation" not in (metrics or {})
    )


def _record(run_id: int, result: checks.CheckResult | None, reason: str) -> str:
    """Store the reconciliation under the run's row lock (the first worker wins)."""
    with transaction.atomic():
        run = (
            MonitorRun.objects.select_for_update().select_related("model", "version").get(pk=run_id)
        )
        if not _pending(run.metrics, run.status):
            return "nothing to do"
        estimate = run.metrics
        realised = result.metrics if result else {}
        breach = checks.jsonable_breach(result.breach) if result else None
        reconciliation = jsonable(
            {
                "at": timezone.now().isoformat(),
                "status": "reconciled" if result else "undetermined",
                "reason": reason or None,
                "n_labelled": realised.get("n"),
                "realised": realised.get("current"),
                "estimated": estimate.get("estimated_value"),
                "estimate_gap": realised.get("estimate_gap"),
                "realised_within_interval": realised.get("realised_within_interval"),
                "relative_drop": realised.get("relative_drop"),
                "p_value": realised.get("p_value"),
                "breach": breach is not None,
            }
        )
        metrics = {**estimate, "reconciliation": reconciliation}
        if result:
            metrics["current"] = realised.get("current")
            metrics["relative_drop"] = realised.get("relative_drop")
        run.metrics = metrics
        run.save(update_fields=["metrics"])
        points_store(run, result.points if result else [])
        alert = (
            Alert.objects.select_for_update(of=("self",))
            .select_related("model", "version")
            .filter(run=run)
            .first()
        )
        audit.record(
            actor=SYSTEM,
            action="monitoring.estimate_reconciled",
            obj=run,
            before={"estimated": estimate.get("estimated_value"), "current": None},
            after={**reconciliation, "version": run.version.version, "alert": alert and alert.pk},
            reason=reason,
        )
        if alert is not None:
            _settle_alert(alert, reconciliation, estimate.get("metric", ""))
        elif breach is not None:
            raised = _raise_alert(
                run,
                breach._replace(
                    details={
                        **breach.details,
                        "estimated": False,
                        "reconciled": True,
                        "message": "realised on the labels that arrived after the window was "
                        "estimated; the estimate did not breach",
                    }
                ),
            )
            if raised is not None:
                transaction.on_commit(partial(hand_off, raised.pk), robust=True)
    return reconciliation["status"]


def _settle_alert(alert: Alert, reconciliation: dict[str, Any], metric: str) -> None:
    """The estimate's alert after its labels: resolved unless the realised value breaches."""
    realised, estimated = reconciliation["realised"], reconciliation["estimated"]
    if reconciliation["status"] != "reconciled":
        finding = f"the realised {metric} is undetermined ({reconciliation['reason']})"
    elif reconciliation["breach"]:
        finding = f"the realised {metric} {realised:.4g} confirms the estimated breach"
    else:
        finding = (
            f"the realised {metric} {realised:.4g} (estimated {estimated:.4g}) does not breach"
        )
    before = alert.details
    alert.details = jsonable({**(alert.details or {}), "reconciliation": reconciliation})
    alert.save(update_fields=["details"])
    audit.record(
        actor=SYSTEM,
        action="monitoring.alert_reconciled",
        obj=alert,
        before={"reconciliation": (before or {}).get("reconciliation")},
        after={"reconciliation": reconciliation, "status": alert.status},
        reason=finding,
    )
    if reconciliation["status"] == "reconciled" and not reconciliation["breach"]:
        alert_resolve_on_finding(
            alert, actor=SYSTEM, note=f"estimate reconciled with the labels: {finding}"
        )
