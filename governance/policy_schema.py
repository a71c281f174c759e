"""What a versioned policy may hold: one schema per kind, validating values and giving defaults.

A schema is the single place that knows a policy's keys, their defaults and their ranges. Stored
values are read through ``resolve`` (the defaults under the stored values), so a key added to a
schema later still has a value in older versions; see docs/architecture.md section 3.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from platform_core.errors import InvalidInput

# A cleaner returns the clean value, or raises ValueError (its message is the field's error) or
# InvalidInput (for errors under nested names such as ``fairness_limits.fpr_ratio``).
Cleaner = Callable[[Any], Any]


@dataclass(frozen=True)
class Setting:
    default: Any
    clean: Cleaner
    help: str = ""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def number(
    default: float,
    *,
    low: float | None = None,
    high: float | None = None,
    open_interval: bool = False,
    help: str = "",
) -> Setting:
    """A finite number within ``[low, high]`` (``(low, high)`` when ``open_interval``)."""

    def clean(value: Any) -> float:
        if not _is_number(value):
            raise ValueError("must be a number")
        if low is not None and high is not None:
            inside = low < value < high if open_interval else low <= value <= high
            if not inside:
                strictly = "strictly " if open_interval else ""
                raise ValueError(f"must lie {strictly}between {low:g} and {high:g}")
        elif low is not None and not (value > low if open_interval else value >= low):
            raise ValueError(f"must be {'greater than' if open_interval else 'at least'} {low:g}")
        return value

    return Setting(default, clean, help)


def whole(default: int, *, minimum: int = 1, maximum: int | None = None, help: str = "") -> Setting:
    """A whole number of at least ``minimum`` (and at most ``maximum``)."""

    def clean(value: Any) -> int:
        if not (isinstance(value, int) and not isinstance(value, bool)) or value < minimum:
            raise ValueError(f"must be a whole number of at least {minimum}")
        if maximum is not None and value > maximum:
            raise ValueError(f"must be a whole number of at most {maximum}")
        return value

    return Setting(default, clean, help)


def choice(default: str, options: Sequence[str], *, help: str = "") -> Setting:
    def clean(value: Any) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value

    return Setting(default, clean, help)


@dataclass(frozen=True)
class Schema:
    """The keys of one kind of policy, each with its default and its cleaner."""

    kind: str
    settings: Mapping[str, Setting]
    reason_required: bool = False

    def defaults(self) -> dict[str, Any]:
        return {key: copy.deepcopy(s.default) for key, s in self.settings.items()}

    def resolve(self, stored: Mapping[str, Any] | None) -> dict[str, Any]:
        """The values in force: the defaults under the stored values (unknown keys dropped)."""
        values = self.defaults()
        values.update({k: v for k, v in (stored or {}).items() if k in self.settings})
        return values

    def validate(self, values: Any) -> dict[str, Any]:
        """The clean values; InvalidInput names every unknown key and every bad value."""
        if not isinstance(values, Mapping) or not values:
            raise InvalidInput({"values": f"give at least one {self.kind} policy setting"})
        errors: dict[str, Any] = {}
        clean: dict[str, Any] = {}
        for key, value in values.items():
            setting = self.settings.get(key)
            if setting is None:
                errors[key] = (
                    f"not a {self.kind} policy setting; use one of {', '.join(self.settings)}"
                )
                continue
            try:
                clean[key] = setting.clean(value)
            except ValueError as exc:
                errors[key] = str(exc)
            except InvalidInput as exc:
                errors.update(exc.errors)
        if errors:
            raise InvalidInput(errors)
        return clean


PROBABILITY = {"low": 0.0, "high": 1.0}


# The validation gates' limits (docs/architecture.md section 4; spec defaults).
VALIDATION = Schema(
    "validation",
    {
        "auc_min": number(0.70, **PROBABILITY, help="lowest AUC the metrics gate accepts"),
        "equalized_odds_difference_max": number(0.10, **PROBABILITY),
        "fpr_ratio_min": number(0.80, **PROBABILITY, help="min/max FPR over groups, in [0, 1]"),
        "fnr_ratio_min": number(0.80, **PROBABILITY, help="min/max FNR over groups, in [0, 1]"),
        "min_group_size": whole(30, help="groups with fewer records are reported, not judged"),
        "confidence_level": number(
            0.95,
            low=0.5,
            high=1.0,
            open_interval=True,
            help="level of the fairness intervals: the gate fails on a limit only when the whole "
            "interval lies beyond it",
        ),
        "ece_max": number(0.05, **PROBABILITY),
        "shadow_days": whole(7, maximum=365, help="days a MAJOR/MINOR version shadows live"),
        "shadow_agreement_min": number(0.90, **PROBABILITY),
        "shadow_ks_pvalue_min": number(0.01, **PROBABILITY, open_interval=True),
    },
)
