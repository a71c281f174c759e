"""Benchmark of the monitoring checks against the plain alternatives, on this machine, in one run.

    .venv/bin/python bench/drift.py [--rows 1000000] [--repeats 5] [--no-peers] [--no-store]

One model, a window of ``--rows`` production records (20 numeric features, score, logged
prediction, label, one sensitive attribute with 5 groups) against its stored reference profile
(built from ``--rows`` reference records). Five features are shifted by 0.6 to 1.0 standard
deviations; the other 15 differ from the reference only immaterially (mean offsets of 0.005 to
0.03 standard deviations, PSI below 0.001), as real production data always does.

Each part runs in a child process of its own, so its peak memory is its own:

- ``profile``: the reference profile (``stats.build_reference_profile``, what
  ``profiles.profile_for`` stores once per version);
- ``ours``: all six checks (daily: data drift, prediction drift, fairness; weekly: concept drift,
  calibration, label drift) through ``checks.run_check``, each on the columns a run loads for it
  (``runs._columns``), from a DataFrame shaped like ``store.load_window``'s: one cold pass, then
  ``--repeats`` timed passes (median reported). No database: the validated baseline of concept
  drift (one indexed query in a real run) is the reference AUC, patched in. Then the checks
  issue 13 added: concept drift on the window before its labels arrive
  (``concept_drift_estimated``: the labels all missing, so the AUC, precision, recall and the
  per-group rates are estimated from the scores; the calibration look-up, one query, patched to
  "reliable"), and ``feedback_loop`` on a 1M-row window of 8 weekly periods and 2000 cells
  (``bench/feedback.py``'s urn-model window), in a child process of their own (``new``);
  ``checks_all_old_and_new`` adds the two medians (each check is a run of its own);
- peers on the same data: ``scipy.stats.ks_2samp`` per feature, a straightforward numpy PSI that
  recomputes the reference quantiles, and Evidently's data-drift preset and NannyML's univariate
  drift when they are importable (they are an optional extra in their own environment; when
  absent their figures are printed as ``peer_unavailable`` with the figures quoted in the issue);
- ``store``: the same window ingested through the real services (Parquet upload of predictions,
  then labels) into a temporary var directory and SQLite database, and ``store.load_window``
  timed on it: the whole window, and the columns each check loads.

Peak memory is the child's peak resident set (VmHWM) over the measured phase, reset after the
data were built, so it includes the data the phase holds (``data_mb``, resident before it) and
the interpreter. Every figure is one JSON object per line:
``{"bench": ..., "value": ..., "unit": ..., "peer": ..., "peer_value": ..., ...}``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the project's packages and bench._common

from bench._common import emit  # noqa: E402

FEATURES = [f"x{i}" for i in range(20)]
SHIFTED = {f"x{15 + i}": shift for i, shift in enumerate((0.6, 0.7, 0.8, 0.9, 1.0))}
GROUPS = ("white", "black", "asian", "hispanic", "other")
GROUP_SHARES = (0.5, 0.2, 0.15, 0.1, 0.05)
DAYS = 7
KS_ALPHA = 0.01  # the policy's level for the KS test on scores, used for the per-feature KS peer
PSI_MAX = 0.2
TARGETS = {"checks_s": 0.5, "all_checks_s": 1.0, "peak_mb": 600, "load_s": 0.5}


def against(target: str, value: float) -> dict:
    """A figure's target and whether ``value`` meets it (at most the target), for ``emit``."""
    return {"target": TARGETS[target], "met": value <= TARGETS[target]}


# The checks issue 13 added, timed beside the six: (name in the figures, check kind)
NEW_CHECKS = (("concept_drift_estimated", "concept_drift"), ("feedback_loop", "feedback_loop"))
# CPU seconds of each pass (all threads of the process): steadier than the wall clock on a
# machine shared with other work; the first (cold) pass is left out of the median.
CPU: list[float] = []


def cpu_median() -> float:
    return statistics.median(CPU[1:] or CPU)


QUOTED = {  # the figures for the peers, measured at 1M rows x 20 features
    "scipy_ks_2samp_loop": {"value": 4.9, "unit": "s"},
    "numpy_psi_recomputing_quantiles": {"value": 1.7, "unit": "s"},
    "evidently_data_drift_preset": {
        "version": "0.7.23",
        "value": 133,
        "unit": "s",
        "peak_mb": 1900,
    },
    "nannyml_univariate_drift_ks": {
        "version": "0.13.1",
        "value": 3.9,
        "unit": "s",
        "peak_mb": 1200,
        "note": "with a single reference chunk it alerted on all 20 features, 15 unshifted",
    },
}


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------


def feature_params(n_features: int = len(FEATURES)):
    """Per-feature mean, scale and immaterial offset (in standard deviations), fixed by a seed."""
    import numpy as np

    rng = np.random.default_rng(7)
    means = rng.normal(0, 3, n_features)
    scales = rng.uniform(0.5, 4.0, n_features)
    offsets = rng.uniform(0.005, 0.03, n_features) * rng.choice([-1, 1], n_features)
    return means, scales, offsets


def make_data(n: int, *, seed: int, current: bool, features=FEATURES, shifted=SHIFTED):
    """A dict of numpy columns: ``x*`` features, ``score``, ``prediction`` (int8), ``label``
    (int8), ``race`` (str). Scores depend on x0..x5 only; labels are drawn from the scores (a
    calibrated model); the model ignores the group, so fairness holds. ``current`` applies the
    shifts and the immaterial offsets."""
    import numpy as np

    rng = np.random.default_rng(seed)
    means, scales, offsets = feature_params(len(features))
    data = {}
    logit = np.full(n, -0.3)
    weights = (1.2, -0.8, 0.6, 0.5, -0.4, 0.3)
    for j, name in enumerate(features):
        z = rng.standard_normal(n)
        if j < len(weights):
            logit += weights[j] * z
        if current:
            z += shifted.get(name, offsets[j])
        data[name] = means[j] + scales[j] * z
    score = 1.0 / (1.0 + np.exp(-logit))
    data["score"] = score
    data["prediction"] = (score >= 0.5).astype(np.int8)
    data["label"] = (rng.random(n) < score).astype(np.int8)
    data["race"] = np.asarray(GROUPS, dtype=object)[rng.choice(len(GROUPS), size=n, p=GROUP_SHARES)]
    return data


def window_frame(data, features=FEATURES):
    """The DataFrame ``store.load_window(..., with_labels=True, with_sensitive=True)`` returns for
    these records: Arrow columns of the stored types, converted by the store's ``_to_frame``."""
    import pyarrow as pa

    from monitoring import store
    from monitoring.columns import feature_column, sensitive_column

    columns = {
        "score": pa.array(data["score"]),
        "prediction": pa.array(data["prediction"], type=pa.int8()),
    }
    for name in features:
        columns[feature_column(name)] = pa.array(data[name])
    columns[sensitive_column("race")] = pa.array(data["race"], type=pa.string())
    columns["label"] = pa.array(data["label"].astype("float64"))
    return store.to_frame(pa.table(columns))


def version_fields(model, user, features=FEATURES) -> dict:
    """The registry facts of a bench version 1.0.0 (no MLflow run behind it)."""
    from datetime import UTC, date, datetime

    return {
        "model": model,
        "version": "1.0.0",
        "major": 1,
        "minor": 0,
        "patch": 0,
        "mlflow_name": model.name,
        "mlflow_version": "1",
        "artifact_uri": f"models:/{model.name}/1",
        "artifact_digest": "sha256:" + "0" * 64,
        "flavor": "sklearn",
        "training_data_hash": "sha256:" + "1" * 64,
        "training_data_start": date(2025, 1, 1),
        "training_data_end": date(2025, 12, 31),
        "feature_list": list(features),
        "thresholds": {"decision": 0.5},
        "responsible_engineer": user,
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
    }


def parquet_upload(table) -> io.BytesIO:
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    buffer.seek(0)
    return buffer


def upload_files(data, *, start, days: int = DAYS, reference: bool = False):
    """Parquet uploads of these records, as the ingestion API takes them: predictions timed
    uniformly over ``days`` from ``start`` (sorted), and their labels by ``prediction_id``; or,
    with ``reference``, one reference upload (labels inline, no ids or times)."""
    import numpy as np
    import pyarrow as pa

    from monitoring import store

    n = data["score"].size
    columns = {
        "score": pa.array(data["score"]),
        "prediction": pa.array(data["prediction"], type=pa.int8()),
        **{name: pa.array(data[name]) for name in FEATURES if name in data},
        "sensitive.race": pa.array(data["race"], type=pa.string()),
    }
    if reference:
        columns["label"] = pa.array(data["label"], type=pa.int8())
        return parquet_upload(pa.table(columns))
    stamps = np.sort(np.random.default_rng(3).integers(0, days * 86_400_000_000, n))
    ids = pa.array([f"p{i:08d}" for i in range(n)], type=pa.string())
    predictions = pa.table(
        {
            "prediction_id": ids,
            "timestamp": pa.array(stamps + store.to_us(start), type=pa.int64()).cast(
                store.TIMESTAMP
            ),
            **columns,
        }
    )
    labels = pa.table({"prediction_id": ids, "label": pa.array(data["label"], type=pa.int8())})
    return parquet_upload(predictions), parquet_upload(labels)


# ------------------------------------------------------------------------------------------------
# Measuring
# ------------------------------------------------------------------------------------------------


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the peak is the measured phase's."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def peak_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def tag(rows: int) -> str:
    """``1m``, ``100k``: the window size in bench names."""
    if rows % 1_000_000 == 0:
        return f"{rows // 1_000_000}m"
    return f"{rows // 1000}k" if rows % 1000 == 0 else str(rows)


def r(value: float, digits: int = 4) -> float:
    return round(float(value), digits)


def setup_django(settings: str = "config.settings.test") -> None:
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", settings)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import django

    django.setup()


# ------------------------------------------------------------------------------------------------
# Parts (each runs in its own process)
# ------------------------------------------------------------------------------------------------


def part_profile(args) -> None:
    import numpy as np

    from analytics import stats

    data = make_data(args.rows, seed=1, current=False)
    features = {name: data[name] for name in FEATURES}
    reset_peak()
    t0 = time.perf_counter()
    profile = stats.build_reference_profile(features, data["score"], data["label"])
    elapsed = time.perf_counter() - t0
    auc = stats.roc_auc(data["label"], data["score"])
    Path(args.workdir, "profile.json").write_text(json.dumps({"profile": profile, "auc": auc}))
    emit(
        "reference_profile_build",
        r(elapsed),
        "s",
        rows=args.rows,
        features=len(FEATURES),
        peak_mb=round(peak_mb()),
        note="once per version, when its reference data arrive (not part of a daily run)",
    )
    del features, data, np


# The checks in the order a day runs them: the daily three, then the weekly ones.
def _check_order():
    from monitoring.models import Check

    return [
        Check.DATA_DRIFT,
        Check.PREDICTION_DRIFT,
        Check.FAIRNESS,
        Check.CONCEPT_DRIFT,
        Check.CALIBRATION,
        Check.LABEL_DRIFT,
    ]


def part_ours(args) -> None:
    import gc
    from types import SimpleNamespace

    from governance.models import ValidationPolicy
    from monitoring import checks
    from monitoring.models import MonitoringPolicy

    stored = json.loads(Path(args.workdir, "profile.json").read_text())
    profile, baseline_auc = stored["profile"], stored["auc"]
    checks.validated_baseline = lambda version, metric: (baseline_auc, 0)  # no database here
    version = SimpleNamespace(thresholds={"decision": 0.5}, feature_list=FEATURES, pk=0)
    settings = MonitoringPolicy.schema.defaults()
    thresholds = ValidationPolicy.schema.defaults()
    order = _check_order()
    window = window_frame(make_data(args.rows, seed=2, current=True))  # held, as a run holds it
    windows = _check_windows(window, order)
    gc.collect()
    data_mb = rss_mb()
    reset_peak()
    named = [(kind, kind) for kind in order]
    passes, results = _passes(args, named, windows, (profile, version, settings, thresholds))
    _report_ours(args, order, passes, results, peak=peak_mb(), data_mb=data_mb)


def _passes(args, named, windows: dict, context: tuple) -> tuple[list[dict[str, float]], dict]:
    """One cold pass then ``--repeats`` timed ones over the ``(name, check kind)`` pairs, each
    on ``windows[name]``; ``context`` is ``(profile, version, settings, thresholds)``. Each
    pass's CPU seconds go to ``CPU``."""
    from monitoring import checks

    passes: list[dict[str, float]] = []
    results = {}
    for _ in range(1 + args.repeats):
        times = {}
        c0 = time.process_time()
        for name, kind in named:
            t0 = time.perf_counter()
            results[name] = checks.run_check(kind, windows[name], *context)
            times[name] = time.perf_counter() - t0
        passes.append(times)
        CPU.append(time.process_time() - c0)
    return passes, results


def part_new(args) -> None:
    """The checks issue 13 added, in a child of their own (so the six's peak memory stays
    theirs): each on its 1M-row window, one cold pass then ``--repeats`` timed ones."""
    import gc
    from types import SimpleNamespace

    from governance.models import ValidationPolicy
    from monitoring import checks
    from monitoring.models import Check, MonitoringPolicy

    baseline_auc = json.loads(Path(args.workdir, "profile.json").read_text())["auc"]
    checks.validated_baseline = lambda version, metric: (baseline_auc, 0)  # no database here
    checks.calibration_reliability = lambda version: (True, "", None)  # nor here
    version = SimpleNamespace(thresholds={"decision": 0.5}, feature_list=FEATURES, pk=0)
    settings = {**MonitoringPolicy.schema.defaults(), "feedback_cell_field": "beat"}
    thresholds = ValidationPolicy.schema.defaults()
    window = window_frame(make_data(args.rows, seed=2, current=True))
    windows = _new_check_windows(_check_windows(window, [Check.CONCEPT_DRIFT]), args.rows)
    del window
    gc.collect()
    data_mb = rss_mb()
    reset_peak()
    passes, results = _passes(args, NEW_CHECKS, windows, (None, version, settings, thresholds))
    _report_new(args, passes, results, peak=peak_mb(), data_mb=data_mb)


def _new_check_windows(windows: dict, rows: int) -> dict:
    """The windows of the checks issue 13 added: concept drift's window with no label arrived
    yet, and the urn-model window of ``bench/feedback.py`` (its periods, cells and incidents)."""
    import importlib.util

    import numpy as np

    from monitoring import checks_feedback  # noqa: F401  (registers the feedback-loop check)

    unlabelled = windows["concept_drift"].copy()
    unlabelled["label"] = np.nan
    spec = importlib.util.spec_from_file_location("bench_feedback", REPO / "bench/feedback.py")
    feedback = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(feedback)
    return {
        "concept_drift_estimated": unlabelled,
        "feedback_loop": feedback.make_window(rows, 2000, seed=1),
    }


def _report_new(args, passes, results, *, peak: float, data_mb: float) -> None:
    """The new checks' cost (and ``new.json``: the parent adds it to the six's)."""
    warm = passes[1:] or passes[:1]
    new = [name for name, _ in NEW_CHECKS]
    for name in new:
        emit(
            f"check_{name}_{tag(args.rows)}",
            r(statistics.median(p[name] for p in warm)),
            "s",
            cold=r(passes[0][name]),
            outcome=("breach" if results[name].breach else "ok"),
        )
    added = [sum(p.values()) for p in warm]
    emit(
        f"checks_new_{tag(args.rows)}",
        r(statistics.median(added)),
        "s",
        checks=new,
        min=r(min(added)),
        cpu=r(cpu_median()),
        cold=r(sum(passes[0].values())),
        peak_mb=round(peak),
        data_mb=round(data_mb),
        note="the cost issue 13's checks add to a day's and a week's runs",
    )
    Path(args.workdir, "new.json").write_text(
        json.dumps({"checks_s": statistics.median(added), "cpu_s": cpu_median()})
    )


def _all_checks(args, ours: dict, new: dict) -> None:
    """All eight checks, old and new, against the 1 s target: the sum of the two medians (in
    production each check is a run of its own, loading its own window)."""
    total = ours["checks_s"] + new["checks_s"]
    emit(
        f"checks_all_old_and_new_{tag(args.rows)}",
        r(total),
        "s",
        **against("all_checks_s", total),
        old=r(ours["checks_s"]),
        new=r(new["checks_s"]),
        cpu=r(ours["cpu_s"] + new["cpu_s"]),
        checks=[*(str(k) for k in ours["check_s"]), *(name for name, _ in NEW_CHECKS)],
    )


def _check_windows(window, order) -> dict:
    """Per check, the columns of ``window`` that ``runs._columns`` loads for it."""
    from monitoring import checks
    from monitoring.columns import feature_column, sensitive_column
    from monitoring.models import Check

    windows = {}
    for kind in order:
        needs = checks.NEEDS[kind]
        if needs.features:
            columns = [feature_column(name) for name in FEATURES]
        else:
            columns = ["score"]
            if kind not in (Check.LABEL_DRIFT, Check.PREDICTION_DRIFT):
                columns.append("prediction")
            if needs.sensitive:
                columns.append(sensitive_column("race"))
        if needs.labels:
            columns.append("label")
        windows[kind] = window[columns]
    return windows


def _report_ours(args, order, passes, results, *, peak: float, data_mb: float) -> None:
    """Our figures (the first pass is the cold one) and ``ours.json`` for the peers' lines."""
    import threadpoolctl

    from monitoring.models import Check

    cold, warm = passes[0], passes[1:] or passes[:1]
    totals = [sum(p.values()) for p in warm]
    daily = [sum(p[k] for k in order[:3]) for p in warm]
    blas = threadpoolctl.threadpool_info()
    emit(
        f"checks_all_daily_weekly_{tag(args.rows)}",
        r(statistics.median(totals)),
        "s",
        rows=args.rows,
        features=len(FEATURES),
        **against("checks_s", statistics.median(totals)),
        min=r(min(totals)),
        cpu=r(cpu_median()),
        cold=r(sum(cold.values())),
        repeats=len(warm),
        cores=os.cpu_count(),
        blas=[
            f"{b['internal_api']} {b.get('architecture')} threads={b['num_threads']}" for b in blas
        ],
    )
    emit(
        f"checks_daily_{tag(args.rows)}",
        r(statistics.median(daily)),
        "s",
        rows=args.rows,
        checks=[str(k) for k in order[:3]],
    )
    emit(
        f"checks_peak_memory_{tag(args.rows)}",
        round(peak),
        "MB",
        **against("peak_mb", peak),
        data_mb=round(data_mb),
        note="process peak RSS over all passes, incl. the interpreter and the window it holds",
    )
    for kind in order:
        emit(
            f"check_{kind}_{tag(args.rows)}",
            r(statistics.median(p[kind] for p in warm)),
            "s",
            cold=r(cold[kind]),
            outcome=("breach" if results[kind].breach else "ok"),
        )
    flagged = results[Check.DATA_DRIFT].metrics["breaching_features"]
    Path(args.workdir, "ours.json").write_text(
        json.dumps(
            {
                "data_drift_s": statistics.median(p[Check.DATA_DRIFT] for p in warm),
                "checks_s": statistics.median(totals),
                "cpu_s": cpu_median(),
                "check_s": {kind: statistics.median(p[kind] for p in warm) for kind in order},
                "peak_mb": peak,
                "flagged": flagged,
            }
        )
    )
    emit(
        "data_drift_features_flagged",
        len(flagged),
        "features",
        expected=len(SHIFTED),
        exact=sorted(flagged) == sorted(SHIFTED),
        flagged=sorted(flagged),
        rule=f"PSI > {PSI_MAX} against the stored profile",
    )


def _peer_data(rows: int):
    import numpy as np

    ref = make_data(rows, seed=1, current=False)
    cur = make_data(rows, seed=2, current=True)
    ref = {name: np.ascontiguousarray(ref[name]) for name in FEATURES}
    cur = {name: np.ascontiguousarray(cur[name]) for name in FEATURES}
    return ref, cur


def _measure_peer(args, out: str, run, flag, *, frames: bool = False, package: str = "") -> None:
    """Time ``run(reference, current)`` on the peers' data, then ``flag(result)`` (the drifted
    features, outside the timer); the figures go to ``out`` in the work dir. The same set-up for
    every peer: data loaded before the memory peak is reset and the clock starts."""
    ref, cur = _peer_data(args.rows)
    if frames:
        import pandas as pd

        ref, cur = pd.DataFrame(ref), pd.DataFrame(cur)
    data_mb = rss_mb()
    reset_peak()
    t0 = time.perf_counter()
    result = run(ref, cur)
    elapsed = time.perf_counter() - t0
    flagged = flag(result)
    figures = {"s": elapsed, "peak_mb": peak_mb(), "data_mb": data_mb, "flagged": flagged}
    if package:
        figures["version"] = importlib.metadata.version(package)
    Path(args.workdir, out).write_text(json.dumps(figures))


def part_ks_loop(args) -> None:
    from scipy import stats as sps

    def run(ref, cur) -> dict[str, float]:
        return {name: float(sps.ks_2samp(ref[name], cur[name]).pvalue) for name in FEATURES}

    _measure_peer(
        args,
        "ks_loop.json",
        run,
        lambda pvalues: sorted(name for name, p in pvalues.items() if p < KS_ALPHA),
    )


def naive_psi(reference, current, bins: int = 10) -> float:
    """What one writes first: reference quantiles every run, open-ended outer bins, 1e-4 floor."""
    import numpy as np

    edges = np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1])
    ref = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=bins)
    cur = np.bincount(np.searchsorted(edges, current, side="right"), minlength=bins)
    ref = np.maximum(ref / reference.size, 1e-4)
    cur = np.maximum(cur / current.size, 1e-4)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def part_naive_psi(args) -> None:
    _measure_peer(
        args,
        "naive_psi.json",
        lambda ref, cur: {name: naive_psi(ref[name], cur[name]) for name in FEATURES},
        lambda values: sorted(name for name, v in values.items() if v > PSI_MAX),
    )


def part_evidently(args) -> None:
    """Evidently's data-drift preset (API of 0.7): reference and current as DataFrames."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    def flag(snapshot) -> list[str]:
        flagged = []
        for metric in snapshot.dict().get("metrics", []):
            config = metric.get("config") or {}
            column = config.get("column")
            value = metric.get("value")
            threshold = config.get("threshold")
            method = str(config.get("method", ""))
            if column in FEATURES and isinstance(value, int | float) and threshold is not None:
                # p-value tests drift below the threshold; distances drift above it
                drifted = value < threshold if "p_value" in method else value >= threshold
                if drifted:
                    flagged.append(column)
        return sorted(set(flagged))

    _measure_peer(
        args,
        "evidently.json",
        lambda ref, cur: Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref),
        flag,
        frames=True,
        package="evidently",
    )


def part_nannyml(args) -> None:
    """NannyML's univariate drift with the KS test, one reference chunk and one analysis chunk."""
    import nannyml as nml

    def run(ref, cur):
        calculator = nml.UnivariateDriftCalculator(
            column_names=FEATURES,
            continuous_methods=["kolmogorov_smirnov"],
            chunk_number=1,
        )
        calculator.fit(ref)
        return calculator.calculate(cur)

    def flag(results) -> list[str]:
        frame = results.filter(period="analysis").to_df()
        return [
            name
            for name in FEATURES
            if bool(frame[(name, "kolmogorov_smirnov", "alert")].astype(bool).any())
        ]

    _measure_peer(args, "nannyml.json", run, flag, frames=True, package="nannyml")


def part_store(args) -> None:
    """Ingest the window through the real services, then time ``store.load_window``."""
    from django.core.management import call_command

    t0 = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    migrate_s = time.perf_counter() - t0
    window = _ingested_window(args.rows)
    cases = _load_cases()
    medians: dict[str, float] = {}
    for name, (columns, kwargs) in cases.items():
        times = []
        for _ in range(1 + args.repeats):
            t0 = time.perf_counter()
            frame = window.load(columns, **kwargs)
            times.append(time.perf_counter() - t0)
            assert len(frame) == args.rows, (name, len(frame))
            del frame
        medians[name] = statistics.median(times[1:])
        extra = {}
        if name == "all_columns":
            extra = against("load_s", statistics.median(times[1:]))
        emit(
            f"load_window_{tag(args.rows)}_{name}",
            r(statistics.median(times[1:])),
            "s",
            cold=r(times[0]),
            columns=len(columns) + (2 if kwargs["with_labels"] else 0),
            **extra,
            note="files in the OS page cache (just written); SQLite manifest",
        )
    Path(args.workdir, "store.json").write_text(json.dumps(medians))
    emit(
        "store_setup_migrate", r(migrate_s), "s", note="temporary SQLite database, not timed above"
    )
    if args.profile:
        from bench._common import profiled

        columns, kwargs = cases["all_columns"]

        def loads() -> None:
            for _ in range(args.repeats):
                window.load(columns, **kwargs)  # each frame dropped before the next load, as timed

        path = profiled(
            loads,
            REPO / "bench" / "profiles" / f"load_window_{tag(args.rows)}.txt",
            title=f"bench/drift.py --profile: {args.repeats} x load_window of the whole "
            f"{tag(args.rows)} window (25 columns + labels)",
        )
        emit("profile", path, "file")


class _Window:
    """A version's stored window: ``load`` is ``store.load_window`` over it."""

    def __init__(self, model, version, start, end):
        self.model, self.version, self.start, self.end = model, version, start, end

    def load(self, columns, *, with_labels: bool, with_sensitive: bool):
        from monitoring import store

        return store.load_window(
            model=self.model,
            version=self.version,
            start=self.start,
            end=self.end,
            columns=columns,
            with_labels=with_labels,
            with_sensitive=with_sensitive,
        )


def _ingested_window(n: int) -> _Window:
    """``n`` predictions and their labels over ``DAYS`` days, ingested as uploads through the
    real services; the ingest figures printed."""
    from datetime import UTC, datetime, timedelta

    from django.contrib.auth import get_user_model

    from governance.audit import Actor
    from monitoring import store
    from monitoring.ingest import labels_ingest, predictions_ingest
    from registry.models import ModelVersion, RegisteredModel

    user = get_user_model().objects.create(username="bench")
    model = RegisteredModel.objects.create(name="bench-drift")
    version = ModelVersion.objects.create(**version_fields(model, user))
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=DAYS)
    predictions, labels = upload_files(make_data(n, seed=2, current=True), start=start)
    actor = Actor.system("bench")
    t0 = time.perf_counter()
    predictions_ingest(
        model_name=model.name, version=version.version, upload=predictions, actor=actor
    )
    ingest_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    labels_ingest(model_name=model.name, upload=labels, actor=actor)
    labels_s = time.perf_counter() - t0
    del predictions, labels
    files = list(Path(store.root()).rglob("*.parquet"))
    disk_mb = sum(f.stat().st_size for f in files) / 2**20
    emit(
        f"ingest_predictions_{tag(n)}_upload",
        r(ingest_s),
        "s",
        rows=n,
        files=len(files),
        disk_mb=round(disk_mb),
        note="predictions_ingest of a Parquet upload: validation, one file per day, manifest rows",
    )
    emit(
        f"ingest_labels_{tag(n)}_upload",
        r(labels_s),
        "s",
        rows=n,
        note="labels_ingest of a Parquet upload: every id found among the stored predictions",
    )
    return _Window(model, version, start, end)


def _load_cases() -> dict:
    """What is loaded: every column, and each check's own columns."""
    from monitoring.columns import feature_column, sensitive_column
    from monitoring.models import Check

    features = [feature_column(name) for name in FEATURES]
    return {
        "all_columns": (
            ["score", "prediction", *features, sensitive_column("race")],
            {"with_labels": True, "with_sensitive": True},
        ),
        Check.DATA_DRIFT: (features, {"with_labels": False, "with_sensitive": False}),
        Check.PREDICTION_DRIFT: (["score"], {"with_labels": False, "with_sensitive": False}),
        Check.FAIRNESS: (
            ["score", "prediction", sensitive_column("race")],
            {"with_labels": True, "with_sensitive": True},
        ),
        Check.CONCEPT_DRIFT: (
            ["score", "prediction"],
            {"with_labels": True, "with_sensitive": False},
        ),
    }


PARTS = {
    "profile": part_profile,
    "ours": part_ours,
    "new": part_new,
    "ks_loop": part_ks_loop,
    "naive_psi": part_naive_psi,
    "evidently": part_evidently,
    "nannyml": part_nannyml,
    "store": part_store,
}


# ------------------------------------------------------------------------------------------------
# Orchestration
# ------------------------------------------------------------------------------------------------


def run_part(name: str, args, *, env: dict | None = None) -> int:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--part",
        name,
        "--rows",
        str(args.rows),
        "--repeats",
        str(args.repeats),
        "--workdir",
        args.workdir,
        *(["--profile"] if args.profile else []),
    ]
    return subprocess.run(command, cwd=REPO, env={**os.environ, **(env or {})}).returncode


def _read(workdir: str, name: str) -> dict | None:
    path = Path(workdir, f"{name}.json")
    return json.loads(path.read_text()) if path.exists() else None


def _peers(args, ours: dict) -> None:
    for name, label, quoted in (
        ("ks_loop", f"scipy_ks_2samp_per_feature_p<{KS_ALPHA}", QUOTED["scipy_ks_2samp_loop"]),
        ("naive_psi", "numpy_psi_recomputing_quantiles", QUOTED["numpy_psi_recomputing_quantiles"]),
    ):
        peer = _read(args.workdir, name) if run_part(name, args) == 0 else None
        if peer is not None:
            timing = {
                "speedup": round(peer["s"] / ours["data_drift_s"], 1),
                "peer_peak_mb": round(peer["peak_mb"]),
                "peer_data_mb": round(peer["data_mb"]),
                "quoted": quoted,
            }
            _peer_lines(args, ours, label, peer, timing, {"peer_flagged": peer["flagged"]})
        else:
            _peer_failed(args, ours, label)
    for name, module, label in (
        ("evidently", "evidently", "evidently_data_drift_preset"),
        ("nannyml", "nannyml", "nannyml_univariate_drift_ks"),
    ):
        if importlib.util.find_spec(module) is None:
            emit(
                f"data_drift_20f_{tag(args.rows)}",
                r(ours["data_drift_s"]),
                "s",
                peer=label,
                peer_value=None,
                peer_unavailable=f"{module} is not importable (an optional extra, not installed)",
                quoted=QUOTED[label],
            )
            continue
        peer = _read(args.workdir, name) if run_part(name, args) == 0 else None
        if peer is not None:
            timing = {
                "peer_version": peer["version"],
                "peer_peak_mb": round(peer["peak_mb"]),
                "quoted": QUOTED[label],
            }
            _peer_lines(args, ours, label, peer, timing, {})
        else:
            _peer_failed(args, ours, label)


def _peer_lines(args, ours: dict, label: str, peer: dict, timing: dict, flagged: dict) -> None:
    """A peer's data-drift time beside ours, then the features each flagged."""
    emit(
        f"data_drift_20f_{tag(args.rows)}",
        r(ours["data_drift_s"]),
        "s",
        peer=label,
        peer_value=r(peer["s"]),
        **timing,
    )
    emit(
        "data_drift_features_flagged",
        len(ours["flagged"]),
        "features",
        peer=label,
        peer_value=len(peer["flagged"]),
        expected=len(SHIFTED),
        **flagged,
    )


def _peer_failed(args, ours: dict, label: str) -> None:
    """Our data-drift time, with the peer's run marked failed."""
    emit(
        f"data_drift_20f_{tag(args.rows)}",
        r(ours["data_drift_s"]),
        "s",
        peer=label,
        peer_error=True,
    )


def _end_to_end(args, ours: dict, loads: dict) -> None:
    """Issue 17's goal: the window loaded from the store and every check on it, <= 0.5 s.

    Ours: the whole window loaded once (every column and the labels) and the six checks on it.
    The peer: what six separate runs load, each the columns its check needs (the data-drift
    columns once, the score alone, the fairness columns, the concept-drift columns for the
    three label checks), with the same checks.
    """
    checks_s = ours["checks_s"]
    per_run = (
        loads["data_drift"]
        + loads["prediction_drift"]
        + loads["fairness"]
        + 3 * loads["concept_drift"]
    )
    once = loads["all_columns"] + checks_s
    emit(
        f"window_and_checks_{tag(args.rows)}",
        r(once),
        "s",
        peer="six runs, each loading its own columns",
        peer_value=r(per_run + checks_s),
        ratio=r((per_run + checks_s) / once, 2),
        load_s=r(loads["all_columns"]),
        checks_s=r(checks_s),
        target=0.5,
        met=once <= 0.5,
        note="load_window of the whole window (median) + all six checks (median); series and "
        "alerts are stored by the run after this (not in this figure)",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--no-store", action="store_true", help="skip the load_window part")
    parser.add_argument(
        "--profile", action="store_true", help="write bench/profiles/load_window_*.txt"
    )
    parser.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        settings = "config.settings.dev" if args.part == "store" else "config.settings.test"
        setup_django(settings)
        PARTS[args.part](args)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as workdir:
        args.workdir = workdir
        if any(run_part(part, args) != 0 for part in ("profile", "ours", "new")):
            return 1
        ours = _read(workdir, "ours")
        _all_checks(args, ours, _read(workdir, "new"))
        if not args.no_peers:
            _peers(args, ours)
        if not args.no_store:
            var = Path(workdir, "var")
            var.mkdir()
            env = {
                "GOVERNANCE_VAR_DIR": str(var),
                "DJANGO_DEBUG": "false",
                "LOG_LEVEL": "WARNING",
                "CELERY_BROKER_URL": "memory://",
            }
            os.environ.pop("DATABASE_URL", None)
            if run_part("store", args, env=env) != 0:
                return 1
            _end_to_end(args, ours, _read(workdir, "store"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
