"""Monitoring policies: versioned thresholds and windows, edited only through audited services.

Every monitor run records the policy version it used, so an edit never rewrites history.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from governance import audit
from governance.audit import Actor
from registry.errors import InvalidInput
from registry.models import RegisteredModel

from .models import MonitoringPolicy

# Higher is better for all but the Brier score (a loss); see checks.concept_drift.
PERFORMANCE_METRICS = ("auc", "accuracy", "precision", "recall", "f1", "brier")

# Significance levels guarding the noisy checks against false alerts on small samples (a fair,
# well-calibrated model's ECE and group gaps exceed their limits by chance at a few hundred rows).
# Kept here until MonitoringPolicy.DEFAULTS carries them; policies store them like any setting.
EXTRA_DEFAULTS: dict[str, Any] = {
    "performance_pvalue_min": 0.01,
    "calibration_pvalue_min": 0.01,
    "fairness_pvalue_min": 0.01,
}
DEFAULTS: dict[str, Any] = {**MonitoringPolicy.DEFAULTS, **EXTRA_DEFAULTS}

_PROBABILITY = ("ks_pvalue_min", "label_pvalue_min", *EXTRA_DEFAULTS)
_FRACTION = ("performance_drop_max", "ece_max")
_POSITIVE = ("psi_max", "label_rate_change_max")
_COUNTS = (
    "daily_window_days",
    "weekly_window_days",
    "min_rows",
    "min_labeled_rows",
    "retention_days",
    "critical_alerts_for_rollback",
    "rollback_window_hours",
)


def policy_settings(policy: MonitoringPolicy) -> dict[str, Any]:
    """The policy's settings over the defaults (a key added to DEFAULTS later still has a value)."""
    return {**DEFAULTS, **policy.settings}


def monitoring_policy_current(model: RegisteredModel) -> MonitoringPolicy:
    """The newest policy version; a model without one gets version 1 with the defaults."""
    policy = model.monitoring_policies.order_by("-version").first()
    if policy is not None:
        return policy
    try:
        with transaction.atomic():
            return MonitoringPolicy.objects.create(
                model=model,
                version=1,
                settings=dict(DEFAULTS),
                created_by="system",
                comment="defaults of the specification",
            )
    except IntegrityError:  # a concurrent caller created version 1 first
        return model.monitoring_policies.order_by("-version").first()


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _problem(key: str, value: Any) -> str | None:
    """Why ``value`` is not acceptable for ``key``, or None."""
    if key == "performance_metric":
        if value not in PERFORMANCE_METRICS:
            return f"must be one of {', '.join(PERFORMANCE_METRICS)}"
        return None
    if key in _COUNTS:
        if not (isinstance(value, int) and not isinstance(value, bool)) or value < 1:
            return "must be a whole number of at least 1"
        return None
    if not _number(value):
        return "must be a number"
    if key in _PROBABILITY and not 0 < value < 1:
        return "must lie strictly between 0 and 1"
    if key in _FRACTION and not 0 <= value <= 1:
        return "must lie between 0 and 1"
    if key in _POSITIVE and not value > 0:
        return "must be greater than 0"
    return None


def validate_changes(changes: dict[str, Any]) -> None:
    """Raise InvalidInput naming every unknown key and every bad value."""
    if not isinstance(changes, dict) or not changes:
        raise InvalidInput({"changes": "give at least one setting to change"})
    errors: dict[str, str] = {}
    for key, value in changes.items():
        if key not in DEFAULTS:
            errors[key] = f"not a monitoring policy setting; use one of {', '.join(DEFAULTS)}"
        elif (problem := _problem(key, value)) is not None:
            errors[key] = problem
    if errors:
        raise InvalidInput(errors)


def monitoring_policy_update(
    *, model: RegisteredModel, changes: dict[str, Any], comment: str, actor: Actor
) -> MonitoringPolicy:
    """A new policy version with ``changes`` applied; earlier runs keep the version they used."""
    validate_changes(changes)
    with transaction.atomic():
        RegisteredModel.objects.select_for_update().get(pk=model.pk)
        current = monitoring_policy_current(model)
        merged = {**policy_settings(current), **changes}
        policy = MonitoringPolicy.objects.create(
            model=model,
            version=current.version + 1,
            settings=merged,
            created_by=actor.label,
            comment=comment,
        )
        audit.record(
            actor=actor,
            action="monitoring_policy.updated",
            obj=policy,
            model_name=model.name,
            before={"version": current.version, "settings": current.settings},
            after={"version": policy.version, "settings": policy.settings},
            reason=comment,
        )
    return policy
