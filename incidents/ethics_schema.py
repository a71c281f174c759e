"""The ethics policy's schema: hard bounds on fairness aggregates and prohibited features.

``fairness_limits`` maps an aggregate to its hard bound, e.g.
``{"equalized_odds_difference": {"max": 0.2}, "fpr_ratio": {"min": 0.5}}``;
``prohibited_features`` lists features no serving version may use; ``scoped_attributes`` lists
the sensitive attributes whose breach, when confined to one group, halts that group's requests
only (a scoped halt, ``sensitive.<attribute> in {group}``) instead of the whole model. The
defaults are empty: a model without an ethics policy has no hard limits.
"""

from __future__ import annotations

import math
from typing import Any

from governance.policy_schema import Schema, Setting
from platform_core.errors import InvalidInput

# The per-attribute aggregates monitoring's fairness check stores (monitoring.checks.fairness):
# ratios are min/max over groups and differences max-min, so every one lies in [0, 1].
FAIRNESS_AGGREGATES = (
    "equalized_odds_difference",
    "fpr_ratio",
    "fnr_ratio",
    "demographic_parity_ratio",
    "tpr_difference",
    "fpr_difference",
)
BOUNDS = ("max", "min")


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def validate_limits(fairness_limits: Any) -> dict[str, dict[str, float]]:
    """The limits as ``{aggregate: {"max"|"min": float}}``; InvalidInput names each bad entry."""
    if not isinstance(fairness_limits, dict):
        raise InvalidInput(
            {"fairness_limits": 'must be an object such as {"fpr_ratio": {"min": 0.5}}'}
        )
    errors: dict[str, str] = {}
    clean: dict[str, dict[str, float]] = {}
    for key, bound in fairness_limits.items():
        field = f"fairness_limits.{key}"
        if key not in FAIRNESS_AGGREGATES:
            errors[field] = f"not a fairness aggregate; use one of {', '.join(FAIRNESS_AGGREGATES)}"
            continue
        if not isinstance(bound, dict) or not bound or set(bound) - set(BOUNDS):
            errors[field] = 'must be {"max": number} or {"min": number} (or both)'
            continue
        for side, limit in bound.items():
            if not is_number(limit):
                errors[f"{field}.{side}"] = "must be a number"
            elif not 0 <= limit <= 1:
                errors[f"{field}.{side}"] = "must lie between 0 and 1 (fairness aggregates do)"
        if f"{field}.max" not in errors and f"{field}.min" not in errors:
            if "max" in bound and "min" in bound and bound["min"] > bound["max"]:
                errors[field] = "the minimum is above the maximum: nothing could pass"
            else:
                clean[key] = {side: float(limit) for side, limit in sorted(bound.items())}
    if errors:
        raise InvalidInput(errors)
    return clean


def _names(values: Any, field: str, what: str, *, dots: bool = True) -> list[str]:
    """A list of distinct non-empty names (stripped); InvalidInput names each bad entry."""
    if not isinstance(values, list):
        raise InvalidInput({field: f"must be a list of {what}"})
    rule = "must be a non-empty string" + ("" if dots else " without '.'")
    errors = {
        f"{field}.{i}": rule
        for i, name in enumerate(values)
        if not isinstance(name, str) or not name.strip() or (not dots and "." in name)
    }
    if errors:
        raise InvalidInput(errors)
    return list(dict.fromkeys(name.strip() for name in values))


def validate_prohibited(prohibited_features: Any) -> list[str]:
    return _names(prohibited_features, "prohibited_features", "feature names")


def validate_scoped(scoped_attributes: Any) -> list[str]:
    """Sensitive attribute names (as requests and the fairness runs name them)."""
    return _names(scoped_attributes, "scoped_attributes", "sensitive attribute names", dots=False)


ETHICS = Schema(
    "ethics",
    {
        "fairness_limits": Setting({}, validate_limits, "hard bounds per fairness aggregate"),
        "prohibited_features": Setting([], validate_prohibited, "features no version may use"),
        "scoped_attributes": Setting(
            [],
            validate_scoped,
            "sensitive attributes whose breach confined to one group halts that group only",
        ),
    },
    reason_required=True,
)
