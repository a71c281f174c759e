"""Performance estimated before labels arrive: ours (analytics.performance_estimation) beside
NannyML's CBPE on the same windows, with the realised value and both times, one JSON line each.

    .venv/bin/python bench/estimation.py [--rows 10000] [--seeds 3] [--big 1000000]
        [--nannyml-python /tmp/nannyml-venv/bin/python]

NannyML is not a dependency of the project: it runs in its own virtualenv (see bench/README.md),
in a child process that reads the same data from a temporary .npz file (``--peer`` mode, which
imports nothing of the project). Scenarios, each a reference set (50k labelled rows, what NannyML
fits its calibrator on; ours uses none) and analysis windows:

* ``calibrated``: the windows come from the reference distribution;
* ``covariate_shift``: the scores crowd near the middle (features with a third of their spread),
  so the AUC falls while the scores stay calibrated: what CBPE can see;
* ``underconfident``: the scores are a monotone, under-confident map of the true probability, in
  the reference too. NannyML recalibrates on the reference labels and is right; ours takes the
  scores as probabilities and is wrong (the documented failure mode, which the calibration check
  catches: it marks the estimate unreliable).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# our name -> NannyML's
METRICS = {
    "auc": "roc_auc",
    "precision": "precision",
    "recall": "recall",
    "f1": "f1",
    "accuracy": "accuracy",
}
PARTS = ("scores", "predicted", "labels")
SCENARIOS = {
    "calibrated": {"scale": 1.0, "true_slope": 2.0, "score_slope": 2.0},
    "covariate_shift": {"scale": 0.33, "true_slope": 2.0, "score_slope": 2.0},
    "underconfident": {"scale": 1.0, "true_slope": 3.0, "score_slope": 1.0},
}


def simulate(n: int, seed: int, *, scale: float, true_slope: float, score_slope: float):
    """Scores, decisions (score >= 0.5) and labels drawn from the true probability."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n) * scale
    truth = 1 / (1 + np.exp(-(true_slope * z - 1)))
    scores = 1 / (1 + np.exp(-(score_slope * z - 1)))
    return scores, (scores >= 0.5).astype(np.int8), (rng.random(n) < truth).astype(np.int8)


def _load1() -> float:
    return round(os.getloadavg()[0], 2)


# --------------------------------------------------------------------------------------------
# The peer, in NannyML's virtualenv: imports numpy, pandas and nannyml only
# --------------------------------------------------------------------------------------------


def peer(path: str) -> None:
    """Fit CBPE on the reference, estimate each window as one chunk; one JSON line per window."""
    import warnings

    import nannyml as nml
    import pandas as pd

    warnings.filterwarnings("ignore")
    data = np.load(path)

    def frame(prefix: str) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "y_pred_proba": data[f"{prefix}_scores"],
                "y_pred": data[f"{prefix}_predicted"],
                "y_true": data[f"{prefix}_labels"],
            }
        )

    for scenario in [str(s) for s in data["scenarios"]]:
        started = time.perf_counter()
        estimator = nml.CBPE(
            metrics=list(METRICS.values()),
            y_pred_proba="y_pred_proba",
            y_pred="y_pred",
            y_true="y_true",
            problem_type="classification_binary",
            chunk_number=1,
        ).fit(frame(f"{scenario}_reference"))
        fit_seconds = time.perf_counter() - started
        keys = [
            name.removesuffix("_scores")
            for name in data.files
            if name.startswith(f"{scenario}_w") and name.endswith("_scores")
        ]
        for key in keys:
            window = frame(key).drop(columns=["y_true"])
            started = time.perf_counter()
            results = estimator.estimate(window).filter(period="analysis").to_df()
            seconds = time.perf_counter() - started
            row = results.iloc[0]
            out = {"window": key, "seconds": seconds, "fit_seconds": fit_seconds, "metrics": {}}
            for ours, theirs in METRICS.items():
                out["metrics"][ours] = {
                    "value": float(row[(theirs, "value")]),
                    "low": float(row[(theirs, "lower_confidence_boundary")]),
                    "high": float(row[(theirs, "upper_confidence_boundary")]),
                }
            print(json.dumps(out), flush=True)


# --------------------------------------------------------------------------------------------
# Ours, and the comparison
# --------------------------------------------------------------------------------------------


def _ours(scores, predicted) -> tuple[dict, float]:
    from analytics.performance_estimation import estimate_performance

    started = time.perf_counter()
    estimate = estimate_performance(scores, predicted)
    return estimate.to_dict()["metrics"], time.perf_counter() - started


def _realised(labels, scores, predicted) -> dict[str, float]:
    from analytics import stats

    perf = stats.performance_metrics(labels, scores, predicted)
    return {name: getattr(perf, name) for name in METRICS}


def _windows(rows: int, seeds: int, big: int) -> tuple[dict[str, np.ndarray], dict]:
    """Every scenario's reference set and analysis windows, as the arrays the peer reads (
    ``{scenario}_reference_{part}``, ``{window}_{part}``) and ``window -> (scenario, rows)``."""
    arrays: dict[str, np.ndarray] = {"scenarios": np.array(list(SCENARIOS))}
    windows: dict[str, tuple[str, int]] = {}
    for scenario, shape in SCENARIOS.items():
        reference = simulate(50_000, 0, **{**shape, "scale": 1.0})
        for name, values in zip(PARTS, reference, strict=True):
            arrays[f"{scenario}_reference_{name}"] = values
        sizes = [(seed, rows) for seed in range(1, seeds + 1)]
        if scenario == "calibrated" and big:
            sizes.append((99, big))
        for seed, n in sizes:
            key = f"{scenario}_w{seed}"
            windows[key] = (scenario, n)
            for name, values in zip(PARTS, simulate(n, seed, **shape), strict=True):
                arrays[f"{key}_{name}"] = values
    return arrays, windows


def _peers(arrays: dict[str, np.ndarray], python: Path) -> tuple[dict[str, dict], str]:
    """NannyML's figures by window, from a child process in its own virtualenv, and its status
    (what the ``peer`` field of every line says)."""
    if not python.exists():
        return {}, f"nannyml not installed at {python} (see bench/README.md)"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "windows.npz"
        np.savez(path, **arrays)
        done = subprocess.run(
            [str(python), __file__, "--peer", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
    peers = {row["window"]: row for row in map(json.loads, done.stdout.splitlines())}
    if done.returncode:
        return peers, f"nannyml.CBPE failed: {done.stderr.strip().splitlines()[-1:]}"
    return peers, "nannyml.CBPE"


def _metric_line(
    metric: str, mine: dict, realised: float, theirs: dict | None, where: dict, status: str
) -> dict:
    """One metric's estimate, ours beside the peer's, each with its error against the realised
    value (the peer's fields None where it did not run)."""
    peer = theirs and theirs["metrics"][metric]
    return {
        "bench": f"estimated_{metric}",
        **where,
        "value": mine["value"],
        "low": mine["low"],
        "high": mine["high"],
        "unit": metric,
        "realised": realised,
        "error": mine["value"] - realised,
        "peer": status,
        "peer_value": peer and peer["value"],
        "peer_low": peer and peer["low"],
        "peer_high": peer and peer["high"],
        "peer_error": peer and peer["value"] - realised,
        "load1": _load1(),
    }


def _report(key: str, scenario: str, rows: int, arrays: dict, peers: dict, status: str) -> None:
    """A window's lines: each metric's estimate, then the time ours and the peer's took."""
    scores, predicted, labels = (arrays[f"{key}_{part}"] for part in PARTS)
    ours, seconds = _ours(scores, predicted)
    realised = _realised(labels, scores, predicted)
    theirs = peers.get(key)
    where = {"scenario": scenario, "window": key, "rows": rows}
    for metric in METRICS:
        line = _metric_line(metric, ours[metric], realised[metric], theirs, where, status)
        print(json.dumps(line), flush=True)
    timing = {
        "bench": "estimate_seconds",
        **where,
        "value": round(seconds, 4),
        "unit": "s",
        "peer": status,
        "peer_value": theirs and round(theirs["seconds"], 4),
        "peer_fit_seconds": theirs and round(theirs["fit_seconds"], 4),
        "load1": _load1(),
    }
    print(json.dumps(timing), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000, help="rows per analysis window")
    parser.add_argument("--seeds", type=int, default=3, help="windows per scenario")
    parser.add_argument("--big", type=int, default=1_000_000, help="rows of the timing window")
    parser.add_argument("--nannyml-python", default="/tmp/nannyml-venv/bin/python")
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        peer(args.peer)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    arrays, windows = _windows(args.rows, args.seeds, args.big)
    peers, status = _peers(arrays, Path(args.nannyml_python))
    for key, (scenario, rows) in windows.items():
        _report(key, scenario, rows, arrays, peers, status)


if __name__ == "__main__":
    main()
