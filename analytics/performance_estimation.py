"""Confidence-based performance estimation (CBPE): a classifier's performance before labels arrive.

If the scores are calibrated (``P(y = 1 | score = p) = p``), each record's unknown label is a
Bernoulli(p) draw, so the confusion matrix and every metric built on it have a distribution given
the scores alone (Kivimäki et al.; NannyML's CBPE). With ``pp`` the predicted positives:

* ``E[TP] = sum p`` over ``pp``, ``E[FP] = sum (1 - p)`` over ``pp``, ``E[FN] = sum p`` over the
  predicted negatives, ``E[TN] = sum (1 - p)`` over them;
* accuracy, precision (``E[TP] / |pp|``) and the Brier score (``mean p (1 - p)``) are exact
  expectations; recall, F1 and the per-group TPR/FPR/FNR are ratios of expectations;
* AUC is ``E[U] / E[n_pos n_neg]`` with ``U`` the Mann-Whitney count, both taken exactly (the
  ranks of the scores are fixed, only the labels are random).

Every metric of a realised labelling is a function of four sums linear in the labels, ``TP``,
``FN``, ``A = sum y_i rank_i`` and ``sum y_i (1 - 2 p_i)`` (plus TP and FN per group), so the
interval comes from drawing those sums: ``K`` labellings ``Y ~ Bernoulli(p)`` (seeded) multiplied
by the fixed matrix of indicators and ranks (``Y @ M``, ranks computed once); past a budget of
rows x draws the same sums are drawn from their exact mean and covariance (a sum of independent
Bernoullis over 10k rows is normal to far better than the interval's own resolution). The
interval is where the *realised* metric will fall if calibration holds; it says nothing when
calibration breaks, which is why the monitoring check marks the estimate unreliable then.

Pure numpy/scipy; imports nothing of the project.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_DRAWS",
    "DEFAULT_LEVEL",
    "GROUP_RATES",
    "METRICS",
    "Estimate",
    "MetricEstimate",
    "estimate_performance",
]

DEFAULT_DRAWS = 200
DEFAULT_LEVEL = 0.95
METRICS = ("auc", "accuracy", "precision", "recall", "f1", "brier")
GROUP_RATES = ("selection_rate", "tpr", "fpr", "fnr", "ppv")
# Rows x draws above which the label sums are drawn from their normal law instead of labels.
EXACT_DRAW_BUDGET = 2_000_000
_CHUNK_ELEMENTS = 2_000_000  # labels drawn per matrix product (16 MB as float64)

Method = Literal["auto", "bernoulli", "normal"]


@dataclasses.dataclass(frozen=True)
class MetricEstimate:
    """The expected value of a metric and the central ``level`` interval of its realised value."""

    value: float | None
    low: float | None
    high: float | None

    def to_dict(self) -> dict[str, float | None]:
        return {"value": self.value, "low": self.low, "high": self.high}


@dataclasses.dataclass(frozen=True)
class Estimate:
    """Expected confusion matrix, metrics with intervals, and per-group rates per attribute."""

    n: int
    n_predicted_positive: int
    expected_positives: float
    tp: float
    fp: float
    fn: float
    tn: float
    metrics: dict[str, MetricEstimate]
    groups: dict[str, dict[str, dict[str, Any]]]
    draws: int
    level: float
    method: str
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "n_predicted_positive": self.n_predicted_positive,
            "expected_positives": self.expected_positives,
            "confusion": {"tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn},
            "metrics": {name: m.to_dict() for name, m in self.metrics.items()},
            "groups": {
                attribute: {
                    group: {
                        key: (value.to_dict() if isinstance(value, MetricEstimate) else value)
                        for key, value in rates.items()
                    }
                    for group, rates in groups.items()
                }
                for attribute, groups in self.groups.items()
            },
            "draws": self.draws,
            "level": self.level,
            "method": self.method,
            "seed": self.seed,
        }


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _ratio(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _group_codes(values: Any) -> tuple[np.ndarray, list[str]]:
    """``(codes, names)`` as given (a GroupCodes-like pair) or factorised from labels."""
    if isinstance(values, tuple) and len(values) == 2:
        codes, names = values
        return np.asarray(codes, dtype=np.int64), [str(name) for name in names]
    names, codes = np.unique(np.asarray(values).astype(str), return_inverse=True)
    return codes.astype(np.int64), [str(name) for name in names]


def _mid_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing their mean rank (``scipy.stats.rankdata``'s default,
    several times faster on a million scores: one sort, no second pass over ties)."""
    order = np.argsort(values)
    ordered = values[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    ends = np.append(starts[1:], values.size)
    ranks = np.empty(values.size)
    ranks[order] = np.repeat((starts + ends + 1) / 2, ends - starts)
    return ranks


def _draw_sums(
    p: np.ndarray,
    columns: np.ndarray,
    expected: np.ndarray,
    draws: int,
    rng: np.random.Generator,
    method: str,
) -> np.ndarray:
    """``draws`` realisations of ``y @ columns`` with ``y ~ Bernoulli(p)``: shape (draws, m)."""
    if method == "bernoulli":
        chunk = max(1, min(draws, _CHUNK_ELEMENTS // max(p.size, 1)))
        out = np.empty((draws, columns.shape[1]))
        for start in range(0, draws, chunk):
            stop = min(draws, start + chunk)
            labels = rng.random((stop - start, p.size)) < p
            out[start:stop] = labels.astype(np.float64) @ columns
        return out
    weights = p * (1 - p)
    covariance = (columns * weights[:, None]).T @ columns
    return _normal_sums(expected, covariance, draws, rng)


def _normal_sums(
    expected: np.ndarray, covariance: np.ndarray, draws: int, rng: np.random.Generator
) -> np.ndarray:
    """``draws`` label sums from their normal law: shape (draws, m)."""
    # eigh, negative round-off clipped: the group columns sum to the overall ones (singular)
    eigenvalues, vectors = np.linalg.eigh(covariance)
    root = vectors * np.sqrt(np.clip(eigenvalues, 0.0, None))
    return expected + rng.standard_normal((draws, expected.size)) @ root.T


# Joint cells (predicted class x a group of every attribute) above which the normal law's
# moments are taken from the full indicator matrix instead.
_MAX_JOINT_CELLS = 65_536


def _normal_moments(
    p: np.ndarray, positive: np.ndarray, ranks: np.ndarray, layout: list, width: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """The label sums' mean ``p @ M`` and covariance ``M' diag(p (1 - p)) M`` without building
    the n x m matrix ``M``: its indicator columns are constant within a joint cell (predicted
    class x group of each attribute), so one weighted ``bincount`` per moment gives them, and
    the two continuous columns (the ranks and ``1 - 2p``) add a few dot products. Same numbers
    as the matrix products to rounding, ~10x faster on a million rows. None when the joint
    cells are too many (then the caller builds the matrix)."""
    cls = (~positive).astype(np.int64)  # column 1 - the class: 0 predicted positive, 1 not
    joint, radix = cls.copy(), 2
    for _, names, codes in layout:
        joint += radix * codes
        radix *= max(len(names), 1)
        if radix > _MAX_JOINT_CELLS:
            return None
    w = p * (1 - p)
    q = 1 - 2 * p
    wr, wq = w * ranks, w * q
    sums = {
        name: np.bincount(joint, weights=weights, minlength=radix)
        for name, weights in (("p", p), ("w", w), ("wr", wr), ("wq", wq))
    }
    # the indicator columns of each joint cell (columns 2 and 3 are the continuous ones)
    cell = np.arange(radix)
    indicators = np.zeros((radix, width))
    indicators[:, 0] = cell % 2 == 0
    indicators[:, 1] = cell % 2 == 1
    column, rest = 4, cell // 2
    for _, names, _ in layout:
        size = max(len(names), 1)
        indicators[cell, column + (rest % size) * 2 + cell % 2] = 1.0
        column += 2 * len(names)
        rest //= size
    expected = sums["p"] @ indicators
    expected[2], expected[3] = p @ ranks, p @ q
    covariance = indicators.T @ (indicators * sums["w"][:, None])
    for index, key in ((2, "wr"), (3, "wq")):
        covariance[index, :] = covariance[:, index] = sums[key] @ indicators
    covariance[2, 2], covariance[3, 3] = wr @ ranks, wq @ q
    covariance[2, 3] = covariance[3, 2] = wr @ q
    return expected, covariance


def _metrics_of(sums: np.ndarray, n: int, n_pp: int, sum_p2: float) -> dict[str, np.ndarray]:
    """Every metric of each row of label sums ``[TP, FN, A, sum y (1 - 2p), ...]``."""
    tp, fn, rank_sum, brier_part = sums[:, 0], sums[:, 1], sums[:, 2], sums[:, 3]
    positives = tp + fn
    tn = (n - n_pp) - fn
    return {
        "auc": _ratio(rank_sum - positives * (positives + 1) / 2, positives * (n - positives)),
        "accuracy": (tp + tn) / n,
        "precision": _ratio(tp, np.full_like(tp, n_pp)),
        "recall": _ratio(tp, positives),
        "f1": _ratio(2 * tp, n_pp + positives),
        "brier": (sum_p2 + brier_part) / n,
    }


def _interval(
    value: float, draws: np.ndarray, level: float, always: bool = False
) -> MetricEstimate:
    defined = draws[np.isfinite(draws)]
    if not math.isfinite(value) or (defined.size == 0 and not always):
        return MetricEstimate(_finite(value), None, None)
    if defined.size == 0:
        return MetricEstimate(float(value), float(value), float(value))
    tail = (1 - level) / 2
    low, high = np.quantile(defined, [tail, 1 - tail])
    return MetricEstimate(float(value), float(low), float(high))


def estimate_performance(
    scores: npt.ArrayLike,
    predicted: npt.ArrayLike,
    *,
    groups: Mapping[str, Any] | None = None,
    draws: int = DEFAULT_DRAWS,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
    method: Method = "auto",
) -> Estimate:
    """The expected performance of a calibrated classifier on these scored records.

    ``scores``: calibrated positive-class probabilities in [0, 1]; ``predicted``: the decided
    class (0/1) of each record; ``groups``: per sensitive attribute, each record's group (labels,
    or a ``(codes, names)`` pair). ``method`` "auto" draws labels while ``rows x draws`` stays
    under ``EXACT_DRAW_BUDGET`` and the label sums' normal law above it.
    """
    p = np.asarray(scores, dtype=np.float64).ravel()
    pred = np.asarray(predicted).ravel()
    if p.size == 0:
        raise ValueError("scores must not be empty")
    if pred.shape != p.shape:
        raise ValueError(f"length mismatch: {p.size} scores, {pred.size} predictions")
    if np.isnan(p).any() or p.min() < 0.0 or p.max() > 1.0:
        raise ValueError("scores must be numbers in [0, 1]")
    if not np.isin(pred, (0, 1)).all():
        raise ValueError("predictions must be 0 or 1")
    if not (isinstance(draws, int) and draws >= 2):
        raise ValueError(f"draws must be an integer of at least 2, got {draws!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    if method not in ("auto", "bernoulli", "normal"):
        raise ValueError(f"method must be auto, bernoulli or normal, got {method!r}")
    n = p.size
    if method == "auto":
        method = "bernoulli" if n * draws <= EXACT_DRAW_BUDGET else "normal"
    positive = pred == 1
    n_pp = int(np.count_nonzero(positive))
    layout: list[tuple[str, list[str], np.ndarray]] = []
    for attribute, values in (groups or {}).items():
        codes, names = _group_codes(values)
        if codes.shape != p.shape:
            raise ValueError(f"groups of {attribute}: {codes.size} values for {n} scores")
        layout.append((attribute, names, codes))
    width = 4 + 2 * sum(len(names) for _, names, _ in layout)
    variance = p * (1 - p)
    rng = np.random.default_rng(seed)
    ranks = _mid_ranks(p)  # ties count 1/2, as in the realised AUC
    # The mean from the joint cells whatever the method, so both give the same point estimates
    moments = _normal_moments(p, positive, ranks, layout, width)
    if moments is not None and method == "normal":
        expected, covariance = moments
        sums = _normal_sums(expected, covariance, draws, rng)
    else:
        expected, sums = _matrix_sums(p, positive, ranks, layout, width, draws, rng, method)
        if moments is not None:
            expected = moments[0]
    return _estimate(
        p, positive, n_pp, layout, expected, variance, sums, draws, level, method, seed
    )


def _matrix_sums(
    p: np.ndarray,
    positive: np.ndarray,
    ranks: np.ndarray,
    layout: list,
    width: int,
    draws: int,
    rng: np.random.Generator,
    method: str,
) -> tuple[np.ndarray, np.ndarray]:
    """The label sums' mean and ``draws`` realisations from the n x m matrix of the sums'
    columns (labels drawn, or the normal law's moments taken from the matrix)."""
    n = p.size
    # One column per label sum; Fortran order so each column is written contiguously.
    columns = np.zeros((n, width), order="F")
    columns[:, 0] = positive
    columns[:, 1] = ~positive
    columns[:, 2] = ranks
    columns[:, 3] = 1 - 2 * p
    column = 4
    for _, names, codes in layout:
        cell = codes * 2 + ~positive  # (group, predicted class) as one code
        for code in range(2 * len(names)):
            columns[:, column + code] = cell == code
        column += 2 * len(names)
    expected = p @ columns
    return expected, _draw_sums(p, columns, expected, draws, rng, method)


def _estimate(
    p, positive, n_pp, layout, expected, variance, sums, draws, level, method, seed
) -> Estimate:
    """The point estimates and intervals from the label sums' mean and draws."""
    n = p.size
    # Point estimates: exact expectations, AUC as E[U] / E[n_pos n_neg].
    e_tp, e_fn = float(expected[0]), float(expected[1])
    e_pos = e_tp + e_fn
    var_pos = float(variance.sum())
    e_pos_sq = e_pos * e_pos + var_pos
    e_u = float(expected[2]) - (e_pos_sq + e_pos) / 2
    e_pairs = n * e_pos - e_pos_sq
    sum_p2 = float(p @ p)
    point = _metrics_of(expected[None, :], n, n_pp, sum_p2)
    point["auc"] = np.array([e_u / e_pairs if e_pairs > 0 else math.nan])
    per_draw = _metrics_of(sums, n, n_pp, sum_p2)
    metrics = {name: _interval(float(point[name][0]), per_draw[name], level) for name in METRICS}

    estimated_groups: dict[str, dict[str, dict[str, Any]]] = {}
    column = 4
    for attribute, names, codes in layout:
        sizes = np.bincount(codes, minlength=len(names))
        sizes_pp = np.bincount(codes[positive], minlength=len(names))
        out: dict[str, dict[str, Any]] = {}
        for code, name in enumerate(names):
            tp_e, fn_e = expected[column], expected[column + 1]
            tp_d, fn_d = sums[:, column], sums[:, column + 1]
            column += 2
            size, size_pp = int(sizes[code]), int(sizes_pp[code])
            if size == 0:
                continue
            rates_point = _group_rates(tp_e, fn_e, size, size_pp)
            rates_draws = _group_rates(tp_d, fn_d, size, size_pp)
            out[name] = {
                "n": size,
                "n_predicted_positive": size_pp,
                "expected_positives": float(tp_e + fn_e),
                **{
                    rate: _interval(
                        float(rates_point[rate]), rates_draws[rate], level, rate == "selection_rate"
                    )
                    for rate in GROUP_RATES
                },
            }
        estimated_groups[attribute] = out
    return Estimate(
        n=n,
        n_predicted_positive=n_pp,
        expected_positives=e_pos,
        tp=e_tp,
        fp=n_pp - e_tp,
        fn=e_fn,
        tn=(n - n_pp) - e_fn,
        metrics=metrics,
        groups=estimated_groups,
        draws=draws,
        level=level,
        method=method,
        seed=seed,
    )


def _group_rates(tp, fn, size: int, size_pp: int) -> dict[str, np.ndarray]:
    tp, fn = np.asarray(tp, dtype=np.float64), np.asarray(fn, dtype=np.float64)
    positives = tp + fn
    tpr = _ratio(tp, positives)
    return {
        "selection_rate": np.full_like(tp, size_pp / size),
        "tpr": tpr,
        "fpr": _ratio(size_pp - tp, size - positives),
        "fnr": 1 - tpr,
        "ppv": _ratio(tp, np.full_like(tp, size_pp)),
    }
