"""The one fairness rule: which aggregates of an attribute pass, violate or cannot be judged.

The validation gates and the monitoring fairness check both call ``judge``, so the same data and
limits give the same verdict in both. An aggregate that is undefined (fewer than two judged
groups have the rate's denominator) is neither a pass nor a violation: it is ``undefined``.

Uncertainty (docs: README, "Fairness with uncertainty"): every per-group rate gets a two-sided
Wilson interval at the caller's confidence level, and every aggregate an interval whose two ends
are each a one-sided confidence bound at that level (Newcombe's hybrid score interval for a
difference, the Katz log interval for a ratio, Bonferroni-adjusted over the pairs of groups so
that the interval of the max-min spread, or of the min/max ratio, holds for all pairs at once).
A breach of a limit is ``violated`` only when the whole interval lies beyond the limit, so a
false violation happens in at most ``1 - level`` of windows at the limit itself (5 % at 95 %);
when the interval still includes the limit it is a ``watch``: reported, never acted on. Each
group also gets its power to detect a gap of the limit's size against the largest other judged
group, so a pass in small groups says how little it could have seen.

What a caller does with a verdict is its own policy: a gate passes ``passed`` and ``watch``
verdicts (a version is not blocked by noise) and fails ``violated`` and ``undefined`` ones;
monitoring alerts on ``violated`` at the specification's severity and on ``watch`` at the
``watch`` severity, and records undefined aggregates without alerting.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping
from typing import Any, Literal

from .stats import (
    AttributeFairness,
    FairnessReport,
    GroupFairness,
    Interval,
    jsonable,
    katz_ratio,
    newcombe_difference,
    two_proportion_power,
    wilson_interval,
)

__all__ = [
    "DEFAULT_CONFIDENCE_LEVEL",
    "GROUP_RATES",
    "LIMITED_AGGREGATES",
    "AttributeVerdict",
    "FairnessVerdict",
    "Finding",
    "GroupEvidence",
    "aggregate_interval",
    "beyond",
    "judge",
    "judge_attribute",
]

Status = str  # "passed", "watch", "violated", "undefined" or "not_judged"

DEFAULT_CONFIDENCE_LEVEL = 0.95

# (aggregate, limit key of the validation policy, which side of the limit is allowed)
LIMITED_AGGREGATES: tuple[tuple[str, str, Literal["max", "min"]], ...] = (
    ("equalized_odds_difference", "equalized_odds_difference_max", "max"),
    ("fpr_ratio", "fpr_ratio_min", "min"),
    ("fnr_ratio", "fnr_ratio_min", "min"),
)
GROUP_RATES = ("selection_rate", "tpr", "fpr", "fnr", "ppv")
# aggregate -> (kind, the per-group rates it is built from)
_AGGREGATES: dict[str, tuple[Literal["spread", "ratio"], tuple[str, ...]]] = {
    "equalized_odds_difference": ("spread", ("tpr", "fpr")),
    "tpr_difference": ("spread", ("tpr",)),
    "fpr_difference": ("spread", ("fpr",)),
    "fpr_ratio": ("ratio", ("fpr",)),
    "fnr_ratio": ("ratio", ("fnr",)),
    "demographic_parity_ratio": ("ratio", ("selection_rate",)),
}
_LABELS = {
    "equalized_odds_difference": "equalized odds difference",
    "fpr_ratio": "FPR ratio",
    "fnr_ratio": "FNR ratio",
}
_UNDEFINED_WHY = {
    "equalized_odds_difference": "fewer than two judged groups have positives or negatives",
    "fpr_ratio": "fewer than two judged groups have negatives",
    "fnr_ratio": "fewer than two judged groups have positives",
}


@dataclasses.dataclass(frozen=True)
class Finding:
    """One limited aggregate of one attribute against its limit, with its interval."""

    attribute: str
    aggregate: str
    key: str  # the policy's limit key, e.g. "fpr_ratio_min"
    bound: Literal["max", "min"]
    limit: float
    value: float | None
    status: str  # "passed", "watch", "violated" or "undefined"
    interval: Interval | None = None
    confidence_level: float = DEFAULT_CONFIDENCE_LEVEL
    power: float | None = None  # of the weakest judged group, for a gap of the limit's size

    @property
    def breached(self) -> bool:
        """The point estimate is beyond the limit (a violation or a watch)."""
        return self.status in ("violated", "watch")

    @property
    def excess(self) -> float:
        """How far past the limit, relative to it (0 unless breached): ranks breaches."""
        if not self.breached or self.value is None or self.limit == 0:
            return 0.0
        gap = self.value - self.limit if self.bound == "max" else self.limit - self.value
        return gap / self.limit

    def _interval_text(self) -> str:
        if self.interval is None:
            return "no interval"
        lo, hi = self.interval
        level = f"{self.confidence_level * 100:g} %"
        return f"{level} interval [{lo:.4f}, {hi:.4f}] (each end a one-sided {level} bound)"

    def describe(self) -> str:
        label = _LABELS[self.aggregate]
        if self.status == "undefined":
            return f"{self.attribute}: {label} is undefined ({_UNDEFINED_WHY[self.aggregate]})"
        verb = "exceeds" if self.bound == "max" else "is below"
        if self.status == "passed":
            verb = "is within"
        text = f"{self.attribute}: {label} {self.value:.4f} {verb} {self.limit:g}"
        if self.status == "violated":
            return f"{text} (its {self._interval_text()} lies wholly beyond the limit)"
        if self.status == "watch":
            power = "" if self.power is None else f"; power {self.power:.2f} for a gap this size"
            return (
                f"{text}, but its {self._interval_text()} includes the limit: a watch, not a "
                f"violation (the gap may be noise{power})"
            )
        return text


@dataclasses.dataclass(frozen=True)
class GroupEvidence:
    """One group's rates' Wilson intervals and its power per limited aggregate."""

    group: str
    judged: bool
    intervals: dict[str, Interval | None]
    power: dict[str, float | None]


@dataclasses.dataclass(frozen=True)
class AttributeVerdict:
    attribute: str
    judged: bool  # at least two groups of min_group_size records
    findings: tuple[Finding, ...]
    confidence_level: float = DEFAULT_CONFIDENCE_LEVEL
    intervals: dict[str, Interval | None] = dataclasses.field(default_factory=dict)
    groups: dict[str, GroupEvidence] = dataclasses.field(default_factory=dict)

    @property
    def violations(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "violated"]

    @property
    def watches(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "watch"]

    @property
    def undefined(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "undefined"]

    @property
    def status(self) -> Status:
        if not self.judged:
            return "not_judged"
        if self.violations:
            return "violated"
        if self.undefined:
            return "undefined"
        return "watch" if self.watches else "passed"

    def evidence(self) -> dict[str, Any]:
        """The intervals and powers as plain JSON, the same shape for the gates and the runs."""
        return jsonable(
            {
                "confidence_level": self.confidence_level,
                "intervals": self.intervals,
                "power": {f.aggregate: f.power for f in self.findings},
                "groups": {
                    g.group: {"intervals": g.intervals, "power": g.power}
                    for g in self.groups.values()
                },
            }
        )


@dataclasses.dataclass(frozen=True)
class FairnessVerdict:
    attributes: dict[str, AttributeVerdict]

    @property
    def status(self) -> Status:
        """``violated`` beats ``undefined`` beats ``watch`` beats ``passed``; ``not_judged`` when
        no attribute has two judged groups. Attributes not judged do not count against the rest."""
        statuses = {v.status for v in self.attributes.values()}
        for status in ("violated", "undefined", "watch", "passed"):
            if status in statuses:
                return status
        return "not_judged"

    @property
    def passed(self) -> bool:
        """A gate's reading: no violation beyond noise and nothing undefined."""
        return self.status in ("passed", "watch")


# --- counts, intervals, power ---------------------------------------------------------------


def _counts(g: GroupFairness, rate: str) -> tuple[int, int]:
    """(numerator, denominator) of one group's rate, recovered exactly from its counts."""
    tp = round(g.tpr * g.n_positive) if g.tpr is not None else 0
    return {
        "selection_rate": (g.n_predicted_positive, g.n),
        "tpr": (tp, g.n_positive),
        "fpr": (g.n_predicted_positive - tp, g.n_negative),
        "fnr": (g.n_positive - tp, g.n_positive),
        "ppv": (tp, g.n_predicted_positive),
    }[rate]


def _defined(result: AttributeFairness, rate: str) -> list[GroupFairness]:
    """The groups an aggregate uses: judged, with the rate's denominator (as ``stats``)."""
    return [g for g in result.groups if g.judged and getattr(g, rate) is not None]


def _pairwise(
    groups: list[GroupFairness], rate: str, level: float, method: Callable[..., Interval | None]
) -> list[Interval]:
    """``method`` (Newcombe or Katz) for every ordered pair of groups: a - b, or a / b."""
    intervals = (
        method(*_counts(a, rate), *_counts(b, rate), level)
        for a, b in itertools.permutations(groups, 2)
    )
    return [iv for iv in intervals if iv is not None]


def aggregate_interval(
    result: AttributeFairness, aggregate: str, level: float = DEFAULT_CONFIDENCE_LEVEL
) -> Interval | None:
    """The interval of one aggregate over the judged groups: each end a one-sided confidence
    bound at ``level``, for all pairs of groups at once.

    The rule asks a one-sided question (is the aggregate beyond its limit?), so the policy's
    error rate ``1 - level`` is spent on one end: the pairwise intervals are two-sided at
    ``1 - 2 (1 - level) / k`` for an aggregate of ``k`` rates (``2 level - 1``, 90 % at 95 %, for
    a ratio or a one-rate spread; ``level`` for equalized odds, whose error is split between its
    TPR and FPR spreads). A two-sided interval at ``level`` would spend only half of it: at 95 %
    a limit breached by twice its size in groups of 500 was caught in 85 % of windows, not the
    90 % the same error budget buys (tests/monitoring/test_fairness_uncertainty.py).

    A max-min spread is at least every pairwise difference and at most the largest, so with the
    Newcombe interval of every ordered pair at the Bonferroni level ``1 - (1 - level) / m`` (``m``
    unordered pairs of groups, ``level`` here being the pairwise two-sided level above) the spread
    lies in ``[max of the lower bounds, max of the upper bounds]``. Likewise a min/max ratio lies
    in ``[min of the lower, min of the upper]`` Katz bounds of the pairwise ratios: each end errs
    with probability at most ``1 - level`` of the caller's level. Equalized odds is the larger of
    the TPR and FPR spreads: its lower bound errs (too high) only if one rate's does, each with
    probability at most ``(1 - level) / 2``, so a false "wholly beyond" stays within
    ``1 - level``, the policy's error rate; its upper bound errs only if the larger spread's
    does. None when undefined.
    """
    kind, rates = _AGGREGATES[aggregate]
    by_rate = {rate: _defined(result, rate) for rate in rates}
    by_rate = {rate: groups for rate, groups in by_rate.items() if len(groups) >= 2}
    if not by_rate:
        return None
    pairs = max(len(g) * (len(g) - 1) // 2 for g in by_rate.values())
    two_sided = 1.0 - 2.0 * (1.0 - level) / len(rates)
    adjusted = 1.0 - (1.0 - two_sided) / pairs
    method = newcombe_difference if kind == "spread" else katz_ratio
    bounds = [iv for rate, g in by_rate.items() for iv in _pairwise(g, rate, adjusted, method)]
    if kind == "spread":
        return max(0.0, max(lo for lo, _ in bounds)), max(hi for _, hi in bounds)
    return min(lo for lo, _ in bounds), min(1.0, min(hi for _, hi in bounds))


def beyond(interval: Interval | None, limit: float, bound: Literal["max", "min"]) -> bool:
    """The whole interval lies beyond the limit: the evidence of a breach, not just its estimate.
    (No interval is no evidence.)"""
    if interval is None:
        return False
    return interval[0] > limit if bound == "max" else interval[1] < limit


def _pooled(groups: list[GroupFairness], rate: str) -> float | None:
    counts = [_counts(g, rate) for g in groups]
    total = sum(n for _, n in counts)
    return sum(x for x, _ in counts) / total if total else None


def _gap_rates(pooled: float, aggregate: str, limit: float) -> tuple[float, float]:
    """Two rates around the pooled one whose gap is exactly the limit's: differ by ``limit``
    (a difference limit) or have ratio ``limit`` (a ratio floor); kept inside [0, 1]."""
    if _AGGREGATES[aggregate][0] == "spread":
        low = min(max(pooled - limit / 2.0, 0.0), 1.0 - limit)
        return low, low + limit
    high = min(2.0 * pooled / (1.0 + limit), 1.0)
    return limit * high, high


def _power(
    result: AttributeFairness, aggregate: str, limit: float, level: float
) -> dict[str, float | None]:
    """Each group's power to detect a gap of the limit's size against the largest other judged
    group (the weaker of TPR and FPR for equalized odds); None when it has no denominator."""
    out: dict[str, float | None] = {}
    judged = [g for g in result.groups if g.judged]
    rates = _AGGREGATES[aggregate][1]
    for group in result.groups:
        powers: list[float] = []
        for rate in rates:
            pooled = _pooled([g for g in judged if getattr(g, rate) is not None], rate)
            others = [g for g in judged if g is not group and _counts(g, rate)[1] > 0]
            n = _counts(group, rate)[1]
            if pooled is None or not others or n == 0:
                continue
            reference = max(others, key=lambda g: _counts(g, rate)[1])
            p_low, p_high = _gap_rates(pooled, aggregate, limit)
            power = two_proportion_power(p_low, p_high, n, _counts(reference, rate)[1], level)
            if power is not None:
                powers.append(power)
        out[group.group] = min(powers) if powers else None
    return out


# --- the rule ---------------------------------------------------------------------------------


def _status(value: float | None, interval: Interval | None, limit: float, bound: str) -> str:
    if value is None:
        return "undefined"
    if not (value > limit if bound == "max" else value < limit):
        return "passed"
    return "violated" if beyond(interval, limit, bound) else "watch"  # type: ignore[arg-type]


def judge_attribute(
    result: AttributeFairness,
    limits: Mapping[str, Any],
    *,
    confidence_level: float = DEFAULT_CONFIDENCE_LEVEL,
) -> AttributeVerdict:
    """The verdict on one attribute; ``limits`` holds the keys of ``LIMITED_AGGREGATES``."""
    level = float(confidence_level)
    judged = result.n_judged_groups >= 2
    intervals = {a: aggregate_interval(result, a, level) for a in _AGGREGATES}
    powers = {a: _power(result, a, float(limits[key]), level) for a, key, _ in LIMITED_AGGREGATES}
    findings = []
    if judged:
        for aggregate, key, bound in LIMITED_AGGREGATES:
            value = getattr(result, aggregate)
            limit = float(limits[key])
            interval = intervals[aggregate]
            judged_powers = [
                p
                for g in result.groups
                if g.judged and (p := powers[aggregate][g.group]) is not None
            ]
            findings.append(
                Finding(
                    result.attribute,
                    aggregate,
                    key,
                    bound,
                    limit,
                    value,
                    _status(value, interval, limit, bound),
                    interval,
                    level,
                    min(judged_powers) if judged_powers else None,
                )
            )
    groups = {
        g.group: GroupEvidence(
            g.group,
            g.judged,
            {rate: wilson_interval(*_counts(g, rate), level) for rate in GROUP_RATES},
            {a: powers[a][g.group] for a in powers},
        )
        for g in result.groups
    }
    return AttributeVerdict(result.attribute, judged, tuple(findings), level, intervals, groups)


def judge(
    report: FairnessReport,
    limits: Mapping[str, Any],
    *,
    confidence_level: float = DEFAULT_CONFIDENCE_LEVEL,
) -> FairnessVerdict:
    """The verdict on every attribute of a fairness report, at ``confidence_level``."""
    return FairnessVerdict(
        {
            name: judge_attribute(result, limits, confidence_level=confidence_level)
            for name, result in report.attributes.items()
        }
    )
