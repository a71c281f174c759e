"""The monitoring policy's schema: the checks' thresholds, windows and minimum sizes.

Read a model's values with ``governance.policies.policy_values("monitoring", model)`` and publish
a version with ``policy_publish("monitoring", ...)``; every monitor run records the version it
used, so an edit never rewrites history.
"""

from __future__ import annotations

from governance.policy_schema import PROBABILITY, Schema, choice, number, whole

# Higher is better for all but the Brier score (a loss); see checks.concept_drift.
PERFORMANCE_METRICS = ("auc", "accuracy", "precision", "recall", "f1", "brier")

# The p-values guard the noisy checks against false alerts on small samples (a fair,
# well-calibrated model's ECE and group gaps exceed their limits by chance at a few hundred rows).
_P_VALUE = {**PROBABILITY, "open_interval": True}

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
        "fairness_pvalue_min": number(0.01, **_P_VALUE),
    },
)
