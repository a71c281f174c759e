"""The monitoring policy's schema: the checks' thresholds, windows and minimum sizes.

Read a model's values with ``governance.policies.policy_values("monitoring", model)`` and publish
a version with ``policy_publish("monitoring", ...)``; every monitor run records the version it
used, so an edit never rewrites history.
"""

from __future__ import annotations

import re
from typing import Any

from governance.policy_schema import PROBABILITY, Schema, Setting, choice, number, whole

# Higher is better for all but the Brier score (a loss); see checks.concept_drift.
PERFORMANCE_METRICS = ("auc", "accuracy", "precision", "recall", "f1", "brier")

# The p-values guard the noisy checks against false alerts on small samples (a fair,
# well-calibrated model's ECE and group gaps exceed their limits by chance at a few hundred rows).
_P_VALUE = {**PROBABILITY, "open_interval": True}

_FIELD_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")


def _field_name(value: Any) -> str:
    """A request field's name, or "" for none (the feedback-loop check then fails, saying so)."""
    if not isinstance(value, str) or (value and not _FIELD_NAME.match(value)):
        raise ValueError(
            "must be the name of a request field (letters, digits, _ . : -; at most 200), "
            'or "" for none'
        )
    return value


# The feedback-loop check (docs/feedback-loops.md): which request field names a cell (an area),
# the periods it compares and its limits.
FEEDBACK_LOOP = {
    "feedback_cell_field": Setting(
        "", _field_name, help="the request field naming the cell (area) a prediction is about"
    ),
    "feedback_period_days": whole(7, maximum=366, help="days in one period"),
    "feedback_periods": whole(
        8, minimum=2, maximum=104, help="periods in the window; the first is history only"
    ),
    "feedback_top_k": whole(5, help="the cells a period's attention goes to: top-k by score"),
    "feedback_ratio_max": number(1.5, low=1.0, open_interval=True),
    "feedback_pvalue_min": number(0.01, **_P_VALUE),
    "feedback_min_labels": whole(30, help="incidents in the tested periods needed to judge"),
}

MONITORING = Schema(
    "monitoring",
    {
        "psi_max": number(0.2, low=0.0, open_interval=True),
        "performance_metric": choice("auc", PERFORMANCE_METRICS),
        "performance_drop_max": number(0.05, **PROBABILITY),
        "ks_pvalue_min": number(0.01, **_P_VALUE),
        "label_pvalue_min": number(0.01, **_P_VALUE),
        "label_rate_change_max": number(0.25, low=0.0, open_interval=True),
        "ece_max": number(0.05, **PROBABILITY),
        "daily_window_days": whole(7),
        "weekly_window_days": whole(28),
        "min_rows": whole(500),
        "min_labeled_rows": whole(200),
        "retention_days": whole(365),
        "critical_alerts_for_rollback": whole(2),
        "rollback_window_hours": whole(24),
        "performance_pvalue_min": number(0.01, **_P_VALUE),
        "calibration_pvalue_min": number(0.01, **_P_VALUE),
        "fairness_pvalue_min": number(
            0.01, **_P_VALUE, help="kept for older versions; fairness uses confidence_level"
        ),
        "confidence_level": number(
            0.95,
            low=0.5,
            high=1.0,
            open_interval=True,
            help="level of the fairness intervals: a breach alerts at the check's severity only "
            "when its whole interval lies beyond the limit, else it is a watch",
        ),
        **FEEDBACK_LOOP,
    },
)
