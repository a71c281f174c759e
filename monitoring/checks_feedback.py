"""The feedback-loop check: do recorded incidents concentrate where the model sent attention,
beyond what each cell's own history explains? (docs/feedback-loops.md; the maths in
``analytics.feedback``.)

Same contract as the checks in ``checks.py`` (window in, ``CheckResult`` out, ``Skip`` for too
little data, ``CheckFailed`` for a broken window or configuration). It lives in its own module
and registers itself in ``checks.CHECKS``/``checks.NEEDS`` when imported (``runs`` imports it),
so ``checks.py`` does not import it back.

The window is ``feedback_periods`` periods of ``feedback_period_days`` days counted back from the
window's end; the cell of a record is the request field the monitoring policy names
(``feedback_cell_field``), stored as the feature column ``f.<field>``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from analytics import feedback as loop_stats
from analytics.stats import jsonable
from governance.policies import policy_values

from . import checks
from .checks import Breach, CheckFailed, CheckResult, Needs, Point, Skip
from .columns import feature_column
from .models import Check

# Shrinkage of a cell's prior rate towards the overall rate, in pseudo-incidents.
PRIOR_LABELS = 1.0
# Cells listed per period in the run's metrics (the attended ones are all listed).
_MAX_CELLS_LISTED = 50


def window_days(settings: dict[str, Any]) -> int:
    """The check's window: all its periods."""
    return int(settings["feedback_period_days"]) * int(settings["feedback_periods"])


def names_a_cell_field(model) -> bool:
    """Whether the model's monitoring policy names a cell field: the check is then scheduled
    weekly and run by "all checks" (on demand it runs for any model and, without one, fails
    saying so)."""
    return bool(policy_values("monitoring", model)["feedback_cell_field"])


def cell_field(settings: dict[str, Any]) -> str:
    field = str(settings.get("feedback_cell_field") or "")
    if not field:
        raise CheckFailed(
            "the monitoring policy names no feedback_cell_field: publish a monitoring policy "
            "naming the request field that identifies a cell (area), e.g. "
            '{"feedback_cell_field": "beat"}, before this check can run'
        )
    return field


def columns(settings: dict[str, Any]) -> list[str]:
    """What the check reads from the store: the time, the score and the cell's column (a policy
    without a cell field reads the first two and fails with the reason in the check)."""
    field = str(settings.get("feedback_cell_field") or "")
    return ["timestamp", "score", *([feature_column(field)] if field else [])]


def _window_end(window: pd.DataFrame, times: pd.Series) -> datetime:
    """The run's window end (``attrs``, set by ``runs``), else the midnight after the newest
    record (a window passed in directly)."""
    end = window.attrs.get("window_end")
    if end is not None:
        return end
    last = times.max().to_pydatetime().astimezone(UTC)
    return last.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)


def _periods(window: pd.DataFrame, settings: dict[str, Any]) -> tuple[np.ndarray, datetime]:
    if "timestamp" not in window.columns:
        raise CheckFailed("the window has no timestamp column")
    times = window["timestamp"]
    if times.isna().any():
        raise CheckFailed(f"{int(times.isna().sum())} records have no timestamp")
    end = _window_end(window, times)
    period = timedelta(days=int(settings["feedback_period_days"]))
    n_periods = int(settings["feedback_periods"])
    stamps = times.to_numpy(dtype="datetime64[us]").astype(np.int64)
    end_us = int(pd.Timestamp(end).value // 1000)
    back = (end_us - 1 - stamps) // int(period / timedelta(microseconds=1))
    return n_periods - 1 - back, end  # 0 is the oldest period; outside the window: < 0


def _scores_and_labels(window: pd.DataFrame, field: str, column: str):
    """The window's scores and labels (NaN where none arrived yet), once it is known to carry
    the cell field, labels that are 0 or 1, and at least one record."""
    if column not in window.columns or (len(window) and window[column].isna().all()):
        raise CheckFailed(
            f"no record in the window carries the cell field {field!r} (column {column}) that "
            "the monitoring policy's feedback_cell_field names: log it with every prediction"
        )
    if "label" not in window.columns:
        raise CheckFailed("the window has no label column")
    if len(window) == 0:
        raise Skip("no predictions in the window")
    scores = checks._scores(window)
    labels = checks._numeric(window, "label")
    bad = ~np.isnan(labels) & (labels != 0.0) & (labels != 1.0)
    if bad.any():
        found = ", ".join(f"{v:g}" for v in np.unique(labels[bad])[:5])
        raise CheckFailed(f"labels must be 0 or 1; found {found}")
    return scores, labels


def _per_period(result, names, window_end: datetime, settings: dict[str, Any]) -> list[dict]:
    """Each tested period's figures, its top cells by name and the period's end."""
    n_periods = int(settings["feedback_periods"])
    period_len = timedelta(days=int(settings["feedback_period_days"]))
    names = [str(n) for n in names]
    per_period = []
    for row in result.periods:
        data = row.to_dict()
        data["top_cells"] = [names[c] for c in row.top_cells[:_MAX_CELLS_LISTED]]
        data["end"] = (window_end - (n_periods - 1 - row.period) * period_len).isoformat()
        per_period.append(data)
    return per_period


def _loop_breach(result, field: str, ratio_max: float, pmin: float, top_k: int) -> Breach | None:
    """A breach when the ratio exceeds ``feedback_ratio_max`` and the p-value is below
    ``feedback_pvalue_min``."""
    if not (result.ratio is not None and result.ratio > ratio_max and result.p_value < pmin):
        return None
    return Breach(
        "ratio",
        field,
        result.ratio,
        ratio_max,
        {
            "p_value": result.p_value,
            "z": result.z,
            "observed": result.observed,
            "expected": result.expected,
            "top_k": top_k,
            "periods_tested": len(result.periods),
            "dispersion": result.dispersion,
        },
    )


def feedback_loop(window, profile, version, settings, thresholds) -> CheckResult:
    """The score test of last period's top-k cells on this period's incidents, conditional on
    each cell's prior rate; breach when the ratio exceeds ``feedback_ratio_max`` and the
    p-value is below ``feedback_pvalue_min``."""
    field = cell_field(settings)
    column = feature_column(field)
    n_periods = int(settings["feedback_periods"])
    top_k = int(settings["feedback_top_k"])
    scores, labels = _scores_and_labels(window, field, column)
    period, window_end = _periods(window, settings)
    cells = window[column]
    # factorised once over the whole column (hashing; no copy of a million strings), then kept
    codes, names = pd.factorize(cells, sort=True)
    keep = (period >= 0) & (period < n_periods) & (codes >= 0)
    without_cell = int(cells.isna().sum())
    used_periods = int(np.count_nonzero(np.bincount(period[keep], minlength=n_periods)))
    if used_periods < 2:
        raise Skip(
            f"records in {used_periods} of the {n_periods} periods; the check needs at "
            "least two (history, then a tested period)"
        )
    n_cells = int(np.count_nonzero(np.bincount(codes[keep], minlength=len(names))))
    if n_cells <= top_k:
        raise CheckFailed(
            f"the window has {n_cells} cell(s) in {field!r} but feedback_top_k is {top_k}: "
            "the check compares the top-k cells with the others, so it needs more cells than k"
        )
    exposure, counts, mean_score = loop_stats.cell_period_counts(
        codes[keep],
        period[keep],
        scores[keep],
        labels[keep],
        n_cells=len(names),
        n_periods=n_periods,
    )
    result = loop_stats.feedback_loop_test(
        exposure, counts, mean_score, top_k=top_k, prior_labels=PRIOR_LABELS
    )
    min_labels = int(settings["feedback_min_labels"])
    if result.tested_labels < min_labels:
        raise Skip(
            f"{result.tested_labels} incident(s) in the tested periods; the policy needs at "
            f"least {min_labels} (feedback_min_labels)"
        )
    ratio_max = float(settings["feedback_ratio_max"])
    pmin = float(settings["feedback_pvalue_min"])
    per_period = _per_period(result, names, window_end, settings)
    last = result.periods[-1] if result.periods else None
    metrics = {
        **result.to_dict(),
        "n_cells": n_cells,  # cells with records in the window's periods
        "periods": per_period,
        "cell_field": field,
        "period_days": int(settings["feedback_period_days"]),
        "records": int(keep.sum()),
        "records_without_cell": without_cell,
        "feedback_ratio_max": ratio_max,
        "feedback_pvalue_min": pmin,
        "last_observed_share": last.observed_share if last else None,
        "last_expected_share": last.expected_share if last else None,
    }
    points: list[Point] = [
        ("ratio", "", "", result.ratio),
        ("p_value", "", "", result.p_value),
        ("z", "", "", result.z),
        ("topk_label_share", "", "", metrics["last_observed_share"]),
        ("expected_topk_share", "", "", metrics["last_expected_share"]),
    ]
    breach = _loop_breach(result, field, ratio_max, pmin, top_k)
    return CheckResult(jsonable(metrics), points, breach)


checks.CHECKS[Check.FEEDBACK_LOOP] = feedback_loop
checks.NEEDS[Check.FEEDBACK_LOOP] = Needs(labels=True)
