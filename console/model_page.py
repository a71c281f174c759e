"""Reads behind the console's model page: the lifecycle diagram, the live version's facts and the
monitoring series of a period.

Every read is one query per kind of data (runs, metric points, alerts, lifecycle events, halts,
data batches), so the count does not grow with the days, features, groups or versions shown.
The console only reads here; state changes go through the apps' services (docs/architecture.md
§2). The series' JSON shape is the contract of ``static/console/charts.js`` (see its header).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.db.models import Case, F, JSONField, Q, Sum, When
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from governance.models import (
    SERVING_STAGES,
    AuditEvent,
    Lifecycle,
)
from governance.policies import policy_values
from monitoring.checks import HIGHER_IS_WORSE
from monitoring.models import (
    Alert,
    BatchKind,
    Check,
    DataBatch,
    MetricPoint,
    MonitorRun,
    RunStatus,
)
from platform_core.errors import InvalidInput
from registry.models import ModelVersion, RegisteredModel
from serving.models import Halt

from .lifecycle_diagram import Diagram, lifecycle_diagram

PERIOD_DAYS = (7, 30, 90, 365)
DEFAULT_DAYS = 90
MAX_DAYS = 731  # two years and a day: a longer span is a 400 rather than a slow page
GLOBAL = "global"
CUSTOM = "custom"  # the select's choice meaning "the from/to dates"

# Audit actions that become vertical annotations (docs/architecture.md §4).
PROMOTE, RESTORE, ROLLBACK = "lifecycle.promote", "lifecycle.restore", "lifecycle.start_rollback"
LIFECYCLE_ACTIONS = (PROMOTE, RESTORE, ROLLBACK)

FAIRNESS_RATIOS = ("fpr_ratio", "fnr_ratio")
FAIRNESS_GROUP_RATES = ("tpr", "fpr")
# Each charted fairness number's interval bounds (monitoring.checks: "<metric>_lower/_upper"),
# drawn as a band around its line (points' "lo"/"hi").
FAIRNESS_BANDED = ("equalized_odds_difference", *FAIRNESS_RATIOS, *FAIRNESS_GROUP_RATES)
FAIRNESS_BOUNDS = tuple(f"{m}_{side}" for m in FAIRNESS_BANDED for side in ("lower", "upper"))


# --------------------------------------------------------------------------------------------
# The period
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime
    days: int | None  # the preset chosen, None when from/to were given

    @property
    def query(self) -> str:
        """The series endpoint's query string for this period (exact instants, UTC)."""
        return f"from={_iso(self.start)}&to={_iso(self.end)}"


def _instant(raw: str, name: str, *, end_of_day: bool) -> datetime:
    """A date (the whole day: ``to`` includes it) or an ISO datetime (naive means UTC)."""
    raw = raw.strip()
    try:
        parsed_date = parse_date(raw)
        moment = None if parsed_date else parse_datetime(raw.replace(" ", "+"))
    except ValueError:
        parsed_date = moment = None
    if parsed_date is not None:
        if not 1970 <= parsed_date.year <= 2200:
            raise InvalidInput({name: "must lie between 1970 and 2200"})
        day = parsed_date + timedelta(days=1) if end_of_day else parsed_date
        return datetime.combine(day, time.min, tzinfo=UTC)
    if moment is None:
        raise InvalidInput({name: "must be a date (YYYY-MM-DD) or an ISO 8601 date and time"})
    if timezone.is_naive(moment):
        moment = moment.replace(tzinfo=UTC)
    if not 1970 <= moment.astimezone(UTC).year <= 2200:
        raise InvalidInput({name: "must lie between 1970 and 2200"})
    return moment.astimezone(UTC)


def parse_period(params, *, now: datetime | None = None) -> Period:
    """``days`` (a number) picks the last N days; else ``from``/``to`` (dates or datetimes; the
    page's select sends ``days=custom`` for them); neither: the last 90 days."""
    now = now or timezone.now()
    raw_days = (params.get("days") or "").strip()
    raw_from, raw_to = (params.get("from") or "").strip(), (params.get("to") or "").strip()
    if raw_days and raw_days != CUSTOM:
        if not raw_days.isdigit() or not 1 <= int(raw_days) <= MAX_DAYS:
            raise InvalidInput(
                {"days": f"must be a whole number from 1 to {MAX_DAYS}, or '{CUSTOM}'"}
            )
        return Period(now - timedelta(days=int(raw_days)), now, int(raw_days))
    if not raw_from and not raw_to:
        if raw_days == CUSTOM:
            raise InvalidInput({"from": "give a date (or choose a number of days)"})
        return Period(now - timedelta(days=DEFAULT_DAYS), now, DEFAULT_DAYS)
    end = _instant(raw_to, "to", end_of_day=True) if raw_to else now
    start = (
        _instant(raw_from, "from", end_of_day=False)
        if raw_from
        else end - timedelta(days=DEFAULT_DAYS)
    )
    if start >= end:
        raise InvalidInput({"from": "must be before 'to'"})
    if end - start > timedelta(days=MAX_DAYS):
        raise InvalidInput({"to": f"the period may span at most {MAX_DAYS} days"})
    return Period(start, end, None)


# --------------------------------------------------------------------------------------------
# Numbers as people read them
# --------------------------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def rounded(value: Any) -> str:
    """Three significant digits: 0.2, 0.0512, 1.2e-05; whole numbers as they are."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3g}" if math.isfinite(value) else str(value)
    return str(value)


# --------------------------------------------------------------------------------------------
# The page: diagram, versions, the live version's facts
# --------------------------------------------------------------------------------------------


@dataclass
class LiveFacts:
    version: ModelVersion
    lifecycle: Lifecycle
    thresholds: list[tuple[str, str]]
    owners: list[str]
    card_summary: str


@dataclass
class ModelPage:
    model: RegisteredModel
    versions: list[ModelVersion]
    live: LiveFacts | None
    diagram: Diagram


def model_page(model: RegisteredModel) -> ModelPage:
    """Every version with its stage (one query), the diagram and the live version's facts."""
    versions = list(
        model.versions.select_related("lifecycle", "responsible_engineer", "card").newest_first()
    )
    live = next(
        (v for v in versions if hasattr(v, "lifecycle") and v.lifecycle.stage in SERVING_STAGES),
        None,
    )
    facts = None
    if live is not None:
        card = getattr(live, "card", None)
        facts = LiveFacts(
            version=live,
            lifecycle=live.lifecycle,
            thresholds=[(k, rounded(v)) for k, v in sorted((live.thresholds or {}).items())],
            owners=[str(o) for o in (card.owners if card else [])],
            card_summary=(card.intended_use if card else ""),
        )
    stages = [
        (v.version, v.lifecycle.stage, v.lifecycle.archive)
        for v in versions
        if hasattr(v, "lifecycle")
    ]
    diagram = lifecycle_diagram(
        model.name, stages, live=(live.version, live.lifecycle.stage) if live else None
    )
    return ModelPage(model=model, versions=versions, live=facts, diagram=diagram)


# --------------------------------------------------------------------------------------------
# The series
# --------------------------------------------------------------------------------------------


def _policies(model: RegisteredModel) -> tuple[dict[str, Any], dict[str, Any]]:
    """The monitoring and validation values in force (read only: no default row is created)."""
    return policy_values("monitoring", model), policy_values("validation", model)


def _chart(
    chart_id: str,
    title: str,
    check: str,
    y_label: str,
    *,
    y_type: str = "linear",
    y_min: float | None = 0,
    y2: dict | None = None,
) -> dict[str, Any]:
    return {
        "id": chart_id,
        "title": title,
        "check": check,
        "y": {"label": y_label, "type": y_type, "min": y_min},
        "y2": y2,
        "thresholds": [],
        "series": [],
        "alerts": [],
    }


def _series(
    label: str, *, role: str = "value", axis: str = "y", dash: bool = False
) -> dict[str, Any]:
    return {"label": label, "role": role, "axis": axis, "dash": dash, "points": []}


def _point(moment: datetime, value: Any, version: str, **extra: Any) -> dict[str, Any]:
    return {"t": _ms(moment), "y": _finite(value), "version": version, **extra}


def _limit(
    chart: dict[str, Any],
    value: Any,
    name: str,
    kind: str = "max",
    *,
    axis: str = "y",
    after: str = "",
) -> None:
    """Draw a policy limit on ``chart``, labelled with its rounded value (one label format)."""
    label = f"{name} {rounded(value)}{after}"
    chart["thresholds"].append({"value": value, "axis": axis, "label": label, "kind": kind})


def _drift_charts(monitoring: dict[str, Any]) -> tuple[dict, dict]:
    """Data drift (PSI per feature) and prediction drift (KS on scores)."""
    psi = _chart("psi", "Data drift: PSI per feature", Check.DATA_DRIFT, "PSI")
    _limit(psi, monitoring["psi_max"], "PSI limit")
    ks = _chart(
        "ks",
        "Prediction drift: KS test on scores",
        Check.PREDICTION_DRIFT,
        "KS statistic",
        y2={"label": "p-value (log)", "type": "logarithmic"},
    )
    _limit(
        ks, monitoring["ks_pvalue_min"], "p-value limit", "min", axis="y2", after=" (below: drift)"
    )
    return psi, ks


def _performance_chart(monitoring: dict[str, Any]) -> dict[str, Any]:
    """The monitored metric against the validated baseline, with its allowed drop as a band."""
    metric = str(monitoring["performance_metric"])
    performance = _chart(
        "performance",
        f"Performance: {metric.upper()} against the validated baseline",
        Check.CONCEPT_DRIFT,
        metric.upper(),
        y_min=None,
    )
    performance["band"] = {
        "relative": float(monitoring["performance_drop_max"]),
        "metric": metric,
        "higher_is_better": metric not in HIGHER_IS_WORSE,
    }
    return performance


def _fairness_charts(
    monitoring: dict[str, Any], validation: dict[str, Any]
) -> tuple[dict, dict, dict]:
    """The equalized-odds gap, the FPR/FNR ratios and the rates per group with their sizes."""
    gap = _chart(
        "fairness_gap",
        "Fairness: equalized-odds difference per attribute",
        Check.FAIRNESS,
        "difference",
    )
    _limit(gap, validation["equalized_odds_difference_max"], "limit")
    ratio = _chart(
        "fairness_ratio", "Fairness: FPR and FNR ratios per attribute", Check.FAIRNESS, "ratio"
    )
    for key, name in (("fpr_ratio_min", "FPR"), ("fnr_ratio_min", "FNR")):
        _limit(ratio, validation[key], f"{name} ratio floor", "min")
    groups = _chart(
        "fairness_groups",
        "Fairness: true- and false-positive rate per group (with group sizes)",
        Check.FAIRNESS,
        "rate",
    )
    groups["min_group_size"] = validation["min_group_size"]
    for chart in (gap, ratio, groups):
        chart["confidence_level"] = monitoring["confidence_level"]
    return gap, ratio, groups


def _empty_charts(monitoring: dict[str, Any], validation: dict[str, Any]) -> dict[str, dict]:
    psi, ks = _drift_charts(monitoring)
    performance = _performance_chart(monitoring)
    gap, ratio, groups = _fairness_charts(monitoring, validation)
    ece = _chart("ece", "Calibration: expected calibration error", Check.CALIBRATION, "ECE")
    _limit(ece, monitoring["ece_max"], "ECE limit")
    labels = _chart(
        "labels", "Label arrival: records stored per day", Check.LABEL_DRIFT, "records per day"
    )
    charts = {c["id"]: c for c in (psi, ks, performance, gap, ratio, groups, ece, labels)}
    if monitoring["feedback_cell_field"]:  # only models that name a cell run the check
        charts["feedback_loop"] = _feedback_chart(monitoring)
    return charts


# The feedback-loop check's points (docs/feedback-loops.md): metric -> (label, axis).
_LOOP_SERIES = {
    "ratio": ("incidents in the top-k cells / expected from their history", "y"),
    "topk_label_share": ("share of the last period's incidents in the top-k cells", "y2"),
    "expected_topk_share": ("share expected from their history", "y2"),
}


def _feedback_chart(monitoring: dict[str, Any]) -> dict[str, Any]:
    chart = _chart(
        "feedback_loop",
        "Feedback loop: incidents where the model sent attention, against their history",
        Check.FEEDBACK_LOOP,
        "ratio",
        y2={"label": "share of incidents", "type": "linear"},
    )
    _limit(chart, monitoring["feedback_ratio_max"], "ratio limit")
    return chart


POINT_KINDS = (
    Check.DATA_DRIFT,
    Check.PREDICTION_DRIFT,
    Check.FAIRNESS,
    Check.CALIBRATION,
    Check.FEEDBACK_LOOP,
)


@dataclass
class Runs:
    """The period's runs of the charted checks, read once (bench/console.py).

    ``times``: each run's window end (epoch ms) and version by run id. A metric point's
    ``window_end`` is its run's (``monitoring.runs`` writes both from the run), so the points'
    query reads the run id alone: a year of points converts a few hundred datetimes instead of
    tens of thousands and joins no version. ``performance``: the succeeded concept-drift runs,
    oldest first, with their metrics (the only runs whose metrics JSON is read).
    """

    times: dict[int, tuple[int, str]]
    performance: list[tuple[int, str, dict]]


def _runs(model: RegisteredModel, period: Period) -> Runs:
    """One query for the runs behind every chart but label arrival."""
    performance = Q(kind=Check.CONCEPT_DRIFT, status=RunStatus.SUCCEEDED)
    rows = (
        MonitorRun.objects.filter(
            model=model,
            kind__in=(*POINT_KINDS, Check.CONCEPT_DRIFT),
            window_end__gte=period.start,
            window_end__lte=period.end,
        )
        .order_by("window_end", "id")
        .values_list(
            "pk",
            "window_end",
            "version__version",
            "kind",
            "status",
            Case(When(performance, then=F("metrics")), output_field=JSONField()),
        )
    )
    out = Runs({}, [])
    for pk, moment, version, kind, status, metrics in rows:
        t = _ms(moment)
        out.times[pk] = (t, version)
        if kind == Check.CONCEPT_DRIFT and status == RunStatus.SUCCEEDED:
            out.performance.append((t, version, metrics or {}))
    return out


# Routes of the metric rows that are no series point: fairness sizes and rates (kept for after the
# loop), interval bounds (kept for the bands), and feedback-loop numbers of a model no longer
# naming a cell field (no chart: skipped).
SIZE, RATE, BOUND, SKIP = "size", "rate", "bound", "skip"


@dataclass
class _Kept:
    """What the metric points' loop keeps for the phases after it (``_fill_points``).

    ``sizes``: a fairness group's size by (group, t, version); ``group_rates``: the per-group
    rates, drawn once every size is read; ``bounds``: the interval's lower/upper by (metric,
    feature, group, t, version); ``banded``: the points that get "lo"/"hi" once all are read.
    """

    sizes: dict[tuple[str, int, str], Any] = field(default_factory=dict)
    group_rates: list[tuple[str, str, str, Any, int, str]] = field(default_factory=list)
    bounds: dict[tuple, dict[str, Any]] = field(default_factory=dict)
    banded: list[tuple[tuple, dict]] = field(default_factory=list)


class _SeriesMaker:
    """The charts' series, each made (and added to its chart) on its first point."""

    def __init__(self, charts: dict[str, dict]) -> None:
        self.charts = charts
        self.made: dict[tuple[str, str], list] = {}

    def points(self, chart_id: str, label: str, **options: Any) -> list:
        key = (chart_id, label)
        found = self.made.get(key)
        if found is None:
            made = _series(label, **options)
            self.charts[chart_id]["series"].append(made)
            found = self.made[key] = made["points"]
        return found

    def route(self, kind: str, metric: str, feature: str) -> list | str:
        """Where a (check, metric, feature) goes: a series' points, or SIZE, RATE, BOUND, SKIP."""
        points = self.points
        if kind == Check.DATA_DRIFT:
            return points("psi", feature or "(feature)")
        if kind == Check.PREDICTION_DRIFT:
            if metric == "ks_statistic":
                return points("ks", "KS statistic")
            return points("ks", "p-value", axis="y2")
        if kind == Check.CALIBRATION:
            return points("ece", "ECE")
        if kind == Check.FEEDBACK_LOOP:
            if "feedback_loop" not in self.charts:
                return SKIP
            label, axis = _LOOP_SERIES[metric]
            dash = metric == "expected_topk_share"
            return points("feedback_loop", label, axis=axis, dash=dash)
        if metric in FAIRNESS_BOUNDS:
            return BOUND
        if metric == "equalized_odds_difference":
            return points("fairness_gap", feature)
        if metric in FAIRNESS_RATIOS:
            name = metric.split("_")[0].upper()
            return points("fairness_ratio", f"{name} ratio ({feature})")
        return SIZE if metric == "n" else RATE


def _point_rows(model: RegisteredModel, period: Period):
    """The period's metric points of every chart they draw on, oldest first: one query."""
    wanted = (
        Q(kind=Check.DATA_DRIFT, metric="psi")
        | Q(kind=Check.PREDICTION_DRIFT, metric__in=("ks_statistic", "ks_pvalue"))
        | Q(
            kind=Check.FAIRNESS,
            metric__in=(*FAIRNESS_BANDED, *FAIRNESS_BOUNDS, "n"),
        )
        | Q(kind=Check.CALIBRATION, metric="ece")
        | Q(kind=Check.FEEDBACK_LOOP, metric__in=tuple(_LOOP_SERIES))
    )
    return (
        MetricPoint.objects.filter(
            wanted, model=model, window_end__gte=period.start, window_end__lte=period.end
        )
        .order_by("window_end", "id")
        .values_list("run_id", "kind", "metric", "feature", "group", "value")
    )


def _collect_points(rows, times: dict[int, tuple[int, str]], maker: _SeriesMaker) -> _Kept:
    """Append each row's point to its series; keep sizes, rates and bounds for after.

    This loop runs once per stored number of the period (a year of one model: ~11,000), so
    each (check, metric, feature) is routed once and _point is inlined. Each route also
    says whether its points get a confidence band (the fairness aggregates).
    """
    kept = _Kept()
    sizes, group_rates, bounds, banded = kept.sizes, kept.group_rates, kept.bounds, kept.banded
    finite = math.isfinite
    routes: dict[tuple[str, str, str], tuple[list | str, bool]] = {}
    for run_id, kind, metric, feature, group, value in rows:
        t, version = times[run_id]
        y = float(value) if value is not None and finite(value) else None
        key = (kind, metric, feature)
        found = routes.get(key)
        if found is None:
            found = routes[key] = (
                maker.route(kind, metric, feature),
                kind == Check.FAIRNESS and metric in FAIRNESS_BANDED,
            )
        target, band = found
        if target is SKIP:
            continue
        if target is SIZE:
            sizes[(group, t, version)] = value
        elif target is RATE:
            group_rates.append((metric, feature, group, y, t, version))
        elif target is BOUND:
            base, side = metric.rsplit("_", 1)
            bounds.setdefault((base, feature, group, t, version), {})[side] = value
        else:
            point = {"t": t, "y": y, "version": version}
            target.append(point)
            if band:
                banded.append(((metric, feature, group, t, version), point))
    return kept


def _fill_group_rates(kept: _Kept, maker: _SeriesMaker) -> None:
    """Rates after sizes: each point carries the size of its group in that window."""
    for metric, feature, group, y, t, version in kept.group_rates:
        n = kept.sizes.get((group, t, version))
        target = maker.points("fairness_groups", f"{metric.upper()} {group}", dash=metric == "fpr")
        size = int(n) if _finite(n) is not None else None
        point = {"t": t, "y": y, "version": version, "n": size}
        target.append(point)
        kept.banded.append(((metric, feature, group, t, version), point))


def _attach_bands(kept: _Kept) -> None:
    """Each banded point's interval; runs before the intervals were kept have no band."""
    for key, point in kept.banded:
        if (interval := kept.bounds.get(key)) is not None:
            point["lo"] = _finite(interval.get("lower"))
            point["hi"] = _finite(interval.get("upper"))


def _fill_points(
    charts: dict[str, dict], model: RegisteredModel, period: Period, runs: Runs
) -> None:
    """PSI, KS, fairness, ECE and the feedback loop from the metric points: one query."""
    maker = _SeriesMaker(charts)
    kept = _collect_points(_point_rows(model, period), runs.times, maker)
    _fill_group_rates(kept, maker)
    _attach_bands(kept)
    charts["fairness_groups"]["series"].sort(key=lambda s: (s["label"][:3] != "TPR", s["label"]))


def _fill_performance(chart: dict, runs: Runs, drop_max: float) -> None:
    """Current metric, validated baseline and the band, from the concept-drift runs."""
    metric = chart["band"]["metric"]
    current = _series(metric.upper())
    baseline = _series("validated baseline", role="baseline")
    limit = _series(f"{rounded(drop_max * 100)} % band", role="limit")
    factor = 1 + drop_max if metric in HIGHER_IS_WORSE else 1 - drop_max
    # windows without enough labels: the estimate from calibrated scores, dashed
    estimated = _series(f"{metric.upper()} estimated before labels", dash=True)
    for t, version, metrics in runs.performance:
        if metrics.get("estimated"):
            low, high = metrics.get("interval") or (None, None)  # drawn as its band
            estimated["points"].append(
                {
                    "t": t,
                    "y": _finite(metrics.get("estimated_value")),
                    "version": version,
                    "lo": _finite(low),
                    "hi": _finite(high),
                }
            )
        base = _finite(metrics.get("baseline"))
        current["points"].append(
            {
                "t": t,
                "y": _finite(metrics.get("current")),
                "version": version,
                "drop": _finite(metrics.get("relative_drop")),
            }
        )
        baseline["points"].append({"t": t, "y": base, "version": version})
        bound = _finite(base * factor) if base is not None else None
        limit["points"].append({"t": t, "y": bound, "version": version})
    chart["series"] += [current, baseline, limit] + ([estimated] if estimated["points"] else [])


def _fill_labels(chart: dict, model: RegisteredModel, period: Period) -> None:
    """Predictions and labels stored per UTC day, from the batch manifest: one query."""
    first, last = period.start.date(), (period.end - timedelta(microseconds=1)).date()
    rows = (
        DataBatch.objects.filter(
            model=model,
            kind__in=(BatchKind.PREDICTIONS, BatchKind.LABELS),
            day__gte=first,
            day__lte=last,
        )
        .values("kind", "day")
        .annotate(total=Sum("rows"))
        .order_by("day", "kind")
    )
    series = {
        BatchKind.PREDICTIONS: _series("predictions logged"),
        BatchKind.LABELS: _series("labels arrived"),
    }
    for row in rows:
        day: date = row["day"]
        moment = datetime.combine(day, time(12), tzinfo=UTC)  # the middle of its day
        series[row["kind"]]["points"].append(_point(moment, row["total"], ""))
    chart["series"] += [series[BatchKind.LABELS], series[BatchKind.PREDICTIONS]]


def _alert_place(kind: str, metric: str, value: Any, details: dict) -> tuple[str, Any, str]:
    """Which chart an alert marks, at which height, on which axis."""
    if kind == Check.DATA_DRIFT:
        return "psi", value, "y"
    if kind == Check.PREDICTION_DRIFT:
        return "ks", value, "y2"
    if kind == Check.CONCEPT_DRIFT:
        return "performance", (details or {}).get("current"), "y"
    if kind == Check.FAIRNESS:
        return ("fairness_ratio" if metric in FAIRNESS_RATIOS else "fairness_gap"), value, "y"
    if kind == Check.CALIBRATION:
        return "ece", value, "y"
    if kind == Check.FEEDBACK_LOOP:
        return "feedback_loop", value, "y"
    return "labels", None, "y"  # label drift: a rate change, drawn at the top of the counts


def _fill_alerts(charts: dict[str, dict], model: RegisteredModel, period: Period) -> None:
    rows = (
        Alert.objects.filter(model=model, window_end__gte=period.start, window_end__lte=period.end)
        .order_by("window_end", "id")
        .values_list(
            "pk",
            "kind",
            "severity",
            "metric",
            "feature",
            "value",
            "threshold",
            "details",
            "status",
            "window_end",
            "version__version",
        )
    )
    for (
        pk,
        kind,
        severity,
        metric,
        feature,
        value,
        threshold,
        details,
        status,
        moment,
        version,
    ) in rows:
        chart_id, y, axis = _alert_place(kind, metric, value, details)
        if chart_id not in charts:  # a feedback-loop alert after its cell field was unset
            continue
        about = f"{metric} of {feature}" if feature else metric
        charts[chart_id]["alerts"].append(
            {
                "id": pk,
                "t": _ms(moment),
                "y": _finite(y),
                "axis": axis,
                "severity": severity,
                "status": status,
                "version": version,
                "label": f"{severity} alert #{pk} on {version}: {about} {rounded(value)}"
                f" (limit {rounded(threshold)}), {status}",
            }
        )


def _annotations(model: RegisteredModel, period: Period) -> list[dict[str, Any]]:
    """Promotions, rollbacks (with the version restored) and halts, each naming a version.

    Lifecycle events come from the audit log (all of the model's, to know which version was
    live when a halt began); halts from the kill switch's rows, the global ones included.
    """
    events = list(
        AuditEvent.objects.filter(model_name=model.name, action__in=LIFECYCLE_ACTIONS)
        .order_by("seq")
        .values_list("action", "created_at", "before", "after")
    )
    timeline: list[tuple[datetime, str]] = []  # (when, the version live from then)
    notes: list[dict[str, Any]] = []
    restored: str = ""

    def version_of(payload: Any) -> str:
        return str((payload or {}).get("version", "")) if isinstance(payload, dict) else ""

    for action, moment, before, after in events:
        if action == RESTORE:  # written just before the start_rollback it belongs to
            restored = version_of(after) or version_of(before)
            timeline.append((moment, restored))
            continue
        if action == PROMOTE:
            version = version_of(after) or version_of(before)
            timeline.append((moment, version))
            note = {"kind": "promotion", "version": version, "label": f"{version} promoted"}
        else:
            version = version_of(before) or version_of(after)
            label = f"{version} rolled back" + (f" to {restored}" if restored else "")
            note = {"kind": "rollback", "version": version, "label": label}
            restored = ""
        if period.start <= moment <= period.end:
            notes.append({"t": _ms(moment), "at": _iso(moment), "when": _when(moment), **note})

    def live_at(moment: datetime) -> str:
        live = ""
        for when, version in timeline:
            if when > moment:
                break
            live = version
        return live

    halts = Halt.objects.filter(Q(scope=model.name) | Q(scope=GLOBAL)).filter(
        Q(engaged_at__lte=period.end),
        Q(released_at__isnull=True) | Q(released_at__gte=period.start),
    )
    fields = ("scope", "where", "engaged_at", "released_at", "reason")
    for halt in halts.order_by("engaged_at").only(*fields):
        where = "global halt" if halt.scope == GLOBAL else "halt"
        if halt.where:
            where = f"halt where {halt.where_text}"
        for kind, moment in (("halt", halt.engaged_at), ("halt_released", halt.released_at)):
            if moment is None or not period.start <= moment <= period.end:
                continue
            version = live_at(moment)
            what = where if kind == "halt" else f"{where} released"
            notes.append(
                {
                    "t": _ms(moment),
                    "at": _iso(moment),
                    "when": _when(moment),
                    "kind": kind,
                    "version": version,
                    "label": f"{what} ({version})" if version else what,
                    "reason": halt.reason[:200],
                }
            )
    return sorted(notes, key=lambda n: n["t"])


def series(model: RegisteredModel, period: Period) -> dict[str, Any]:
    """Everything the charts draw, in a fixed number of queries whatever the period or model."""
    monitoring, validation = _policies(model)
    charts = _empty_charts(monitoring, validation)
    runs = _runs(model, period)
    _fill_points(charts, model, period, runs)
    _fill_performance(charts["performance"], runs, float(monitoring["performance_drop_max"]))
    _fill_labels(charts["labels"], model, period)
    _fill_alerts(charts, model, period)
    return {
        "model": model.name,
        "from": _iso(period.start),
        "to": _iso(period.end),
        "from_ms": _ms(period.start),
        "to_ms": _ms(period.end),
        "annotations": _annotations(model, period),
        "charts": list(charts.values()),
    }


# --------------------------------------------------------------------------------------------
# Text alternatives: the latest value of every series, its threshold and the alerts
# --------------------------------------------------------------------------------------------


@dataclass
class SummaryRow:
    series: str
    latest: str
    at: str
    version: str
    extra: str = ""


@dataclass
class ChartSummary:
    chart: dict[str, Any]
    rows: list[SummaryRow]
    limits: list[str]
    alerts: list[dict[str, Any]]


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def summaries(data: dict[str, Any]) -> list[ChartSummary]:
    """What each chart says in words, for the tables behind its ``<details>`` toggle."""
    out = []
    for chart in data["charts"]:
        rows = []
        for s in chart["series"]:
            known = [p for p in s["points"] if p["y"] is not None]
            if not known:
                continue
            last = known[-1]
            extra = []
            if last.get("n") is not None:
                extra.append(f"group size {last['n']}")
            if last.get("drop") is not None:
                extra.append(f"relative drop {rounded(last['drop'] * 100)} %")
            if last.get("lo") is not None and last.get("hi") is not None:
                level = rounded(float(chart.get("confidence_level", 0.95)) * 100)
                extra.append(f"{level} % interval {rounded(last['lo'])} to {rounded(last['hi'])}")
            if chart["id"] == "labels":
                extra.append(f"{sum(int(p['y']) for p in known)} in the period")
            rows.append(
                SummaryRow(
                    s["label"],
                    rounded(int(last["y"]) if chart["id"] == "labels" else last["y"]),
                    _day(last["t"]),
                    last["version"],
                    ", ".join(extra),
                )
            )
        limits = [t["label"] for t in chart["thresholds"]]
        if band := chart.get("band"):
            side = "below" if band["higher_is_better"] else "above"
            limits.append(
                f"alert when {rounded(band['relative'] * 100)} % or more {side} the validated "
                "baseline"
            )
        if chart.get("min_group_size"):
            limits.append(f"groups under {chart['min_group_size']} records are not judged")
        out.append(ChartSummary(chart, rows, limits, chart["alerts"]))
    return out
