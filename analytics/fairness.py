"""The one fairness rule: which aggregates of an attribute pass, violate or cannot be judged.

The validation gates and the monitoring fairness check both call ``judge``, so the same data and
limits give the same verdict in both. An aggregate that is undefined (fewer than two judged
groups have the rate's denominator) is neither a pass nor a violation: it is ``undefined``. What a
caller does with a verdict is its own policy: a gate passes only a ``passed`` verdict (it needs
evidence of fairness); monitoring alerts only on (significant) violations (it needs evidence of
harm), and records undefined aggregates without alerting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

from .stats import AttributeFairness, FairnessReport

__all__ = [
    "LIMITED_AGGREGATES",
    "AttributeVerdict",
    "FairnessVerdict",
    "Finding",
    "judge",
    "judge_attribute",
]

Status = str  # "passed", "violated", "undefined" or "not_judged"

# (aggregate, limit key of the validation policy, which side of the limit is allowed)
LIMITED_AGGREGATES: tuple[tuple[str, str, Literal["max", "min"]], ...] = (
    ("equalized_odds_difference", "equalized_odds_difference_max", "max"),
    ("fpr_ratio", "fpr_ratio_min", "min"),
    ("fnr_ratio", "fnr_ratio_min", "min"),
)
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
    """One limited aggregate of one attribute against its limit."""

    attribute: str
    aggregate: str
    key: str  # the policy's limit key, e.g. "fpr_ratio_min"
    bound: Literal["max", "min"]
    limit: float
    value: float | None
    status: str  # "passed", "violated" or "undefined"

    @property
    def excess(self) -> float:
        """How far past the limit, relative to it (0 unless violated): ranks violations."""
        if self.status != "violated" or self.value is None or self.limit == 0:
            return 0.0
        gap = self.value - self.limit if self.bound == "max" else self.limit - self.value
        return gap / self.limit

    def describe(self) -> str:
        label = _LABELS[self.aggregate]
        if self.status == "undefined":
            return f"{self.attribute}: {label} is undefined ({_UNDEFINED_WHY[self.aggregate]})"
        verb = "exceeds" if self.bound == "max" else "is below"
        if self.status == "passed":
            verb = "is within"
        return f"{self.attribute}: {label} {self.value:.4f} {verb} {self.limit:g}"


@dataclasses.dataclass(frozen=True)
class AttributeVerdict:
    attribute: str
    judged: bool  # at least two groups of min_group_size records
    findings: tuple[Finding, ...]

    @property
    def violations(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "violated"]

    @property
    def undefined(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "undefined"]

    @property
    def status(self) -> Status:
        if not self.judged:
            return "not_judged"
        if self.violations:
            return "violated"
        return "undefined" if self.undefined else "passed"


@dataclasses.dataclass(frozen=True)
class FairnessVerdict:
    attributes: dict[str, AttributeVerdict]

    @property
    def status(self) -> Status:
        """``violated`` beats ``undefined`` beats ``passed``; ``not_judged`` when no attribute
        has two judged groups. Attributes that are not judged do not count against the rest."""
        statuses = {v.status for v in self.attributes.values()}
        for status in ("violated", "undefined", "passed"):
            if status in statuses:
                return status
        return "not_judged"

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def judge_attribute(result: AttributeFairness, limits: Mapping[str, Any]) -> AttributeVerdict:
    """The verdict on one attribute; ``limits`` holds the keys of ``LIMITED_AGGREGATES``."""
    judged = result.n_judged_groups >= 2
    findings = []
    if judged:
        for aggregate, key, bound in LIMITED_AGGREGATES:
            value = getattr(result, aggregate)
            limit = float(limits[key])
            if value is None:
                status = "undefined"
            elif value > limit if bound == "max" else value < limit:
                status = "violated"
            else:
                status = "passed"
            findings.append(Finding(result.attribute, aggregate, key, bound, limit, value, status))
    return AttributeVerdict(result.attribute, judged, tuple(findings))


def judge(report: FairnessReport, limits: Mapping[str, Any]) -> FairnessVerdict:
    """The verdict on every attribute of a fairness report."""
    return FairnessVerdict(
        {name: judge_attribute(result, limits) for name, result in report.attributes.items()}
    )
