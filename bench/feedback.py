"""Benchmark of the feedback-loop check on a 1M-row window, with a peer on the same data.

    .venv/bin/python bench/feedback.py [--rows 1000000] [--cells 2000] [--repeats 5]

A window shaped like ``store.load_window``'s for the check (``timestamp``, ``score``, the cell
column ``f.beat``, ``label``) over the policy's 8 weekly periods: ``--cells`` cells scored
evenly, incidents drawn from the urn model of Ensign et al. (``analytics.feedback.urn_patrols``,
the runaway scenario, top-10 cells), so the check fires. Figures, one JSON object per line:

- ``feedback_loop_check``: ``checks.run_check("feedback_loop", ...)``: periods, cell codes,
  the cell-period counts and the score test (median of ``--repeats`` after one cold pass);
- its peer on the same frame: a pandas ``groupby`` of the cell-period counts, then the Poisson
  GLM with the attended indicator fitted by maximum likelihood (scipy BFGS) and its Wald test:
  the straightforward way to ask the same question (no statsmodels here).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the project's packages and bench._common

from bench._common import emit  # noqa: E402

PERIODS, DAYS, TOP_K = 8, 7, 10
WINDOW_END = datetime(2026, 3, 9, tzinfo=UTC)


def make_window(rows: int, cells: int, seed: int):
    """The urn's counts spread over ``rows`` records (each cell-period gets its share)."""
    import numpy as np
    import pandas as pd

    from analytics.feedback import urn_patrols

    rng = np.random.default_rng(seed)
    per = rows // (cells * PERIODS)
    _, labels, score = urn_patrols(
        rng,
        rates=rng.uniform(0.02, 0.2, cells),
        periods=PERIODS,
        records=per,
        top_k=TOP_K,
    )
    cell = np.repeat(np.arange(cells), PERIODS * per)
    period = np.tile(np.repeat(np.arange(PERIODS), per), cells)
    within = np.tile(np.arange(per), cells * PERIODS)
    label = (within < labels[cell, period]).astype(np.float64)
    start = WINDOW_END - timedelta(days=PERIODS * DAYS)
    offset_us = period * DAYS * 86_400_000_000 + rng.integers(0, DAYS * 86_400_000_000, cell.size)
    stamps = pd.to_datetime(int(start.timestamp() * 1e6) + offset_us, unit="us", utc=True)
    frame = pd.DataFrame(
        {
            "timestamp": stamps,
            "score": score[cell, period],
            "f.beat": pd.Categorical.from_codes(cell, [f"B{c:04d}" for c in range(cells)])
            .astype(str)
            .astype(object),
            "label": label,
        }
    )
    frame.attrs["window_end"] = WINDOW_END
    return frame


def peer_glm(frame) -> float:
    """groupby counts, then a Poisson GLM (period effects, prior-rate offset, attended) fitted
    with scipy, and the attended coefficient's Wald z."""
    import numpy as np
    import pandas as pd
    from scipy import optimize

    end_us = int(WINDOW_END.timestamp() * 1e6)
    stamps = frame["timestamp"].to_numpy(dtype="datetime64[us]").astype(np.int64)
    period = PERIODS - 1 - (end_us - 1 - stamps) // (DAYS * 86_400_000_000)
    table = (
        pd.DataFrame(
            {"cell": frame["f.beat"], "t": period, "s": frame["score"], "y": frame["label"]}
        )
        .groupby(["cell", "t"])
        .agg(n=("s", "size"), y=("y", "sum"), s=("s", "mean"))
    )
    n = table["n"].unstack().to_numpy()
    y = table["y"].unstack().to_numpy()
    s = table["s"].unstack().to_numpy()
    rows = []
    for t in range(1, PERIODS):
        past_n, past_y = n[:, :t].sum(1), y[:, :t].sum(1)
        overall = past_y.sum() / past_n.sum()
        rate = (past_y + 1) / (past_n + 1 / overall)
        top = np.argsort(-s[:, t - 1], kind="stable")[:TOP_K]
        attended = np.zeros(len(n), dtype=float)
        attended[top] = 1.0
        rows.append((np.log(n[:, t] * rate), np.full(len(n), t), attended, y[:, t]))
    offset = np.concatenate([r[0] for r in rows])
    t_of = np.concatenate([r[1] for r in rows])
    x = np.column_stack([(t_of == t).astype(float) for t in range(1, PERIODS)])
    x = np.column_stack([x, np.concatenate([r[2] for r in rows])])
    counts = np.concatenate([r[3] for r in rows])

    def nll(beta):
        eta = offset + x @ beta
        return float(np.sum(np.exp(eta) - counts * eta))

    def grad(beta):
        return x.T @ (np.exp(offset + x @ beta) - counts)

    levels = [
        math.log(counts[t_of == t].sum() / np.exp(offset[t_of == t]).sum())
        for t in range(1, PERIODS)
    ]
    fit = optimize.minimize(nll, np.array([*levels, 0.0]), jac=grad, method="BFGS")
    mu = np.exp(offset + x @ fit.x)
    covariance = np.linalg.inv(x.T @ (x * mu[:, None]))
    return float(fit.x[-1] / math.sqrt(covariance[-1, -1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    import django

    django.setup()
    from monitoring import checks, checks_feedback  # noqa: F401  (registers the check)
    from monitoring.policies import MONITORING

    settings = {**MONITORING.defaults(), "feedback_cell_field": "beat", "feedback_top_k": TOP_K}
    frame = make_window(args.rows, args.cells, seed=1)
    result = checks.run_check("feedback_loop", frame, None, None, settings, {})  # cold
    timings = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        result = checks.run_check("feedback_loop", frame, None, None, settings, {})
        timings.append(time.perf_counter() - t0)
    peer = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        z = peer_glm(frame)
        peer.append(time.perf_counter() - t0)
    emit(
        "feedback_loop_check",
        round(statistics.median(timings), 4),
        "s",
        peer="pandas groupby + scipy Poisson GLM (Wald)",
        peer_value=round(statistics.median(peer), 4),
        rows=len(frame),
        cells=args.cells,
        periods=PERIODS,
        fired=result.breach is not None,
        ratio=round(result.metrics["ratio"], 3),
        score_z=round(result.metrics["z"], 2),
        peer_wald_z=round(z, 2),
    )


if __name__ == "__main__":
    main()
