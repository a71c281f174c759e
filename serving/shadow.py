"""Shadow mode: the staging version scores the same requests, after the live response is built.

``submit`` appends the request's matrix to a queue and returns at once (no thread hand-off per
request); one background thread per process takes what is queued every
``SERVING_SHADOW_INTERVAL`` seconds and scores it in one call per shadow version (a call costs
about the same for 1 row as for 1000), then logs the shadow predictions under the staging
version, with the live predictions' ids. More than ``SERVING_SHADOW_MAX_PENDING`` requests
waiting drops the shadow scoring of new requests (counted in ``stats()``) rather than slowing
anything down.

A staging version that needs features the live one does not (a MAJOR feature-set change) is
scored on its own feature list, from the live features plus the shadow features the request
carried (``validation.feature_matrices``), and logged with exactly those features. An instance
that does not carry all of them is not shadow-scored for that version, never an error for the
caller: counted (``not_carried``, beside ``scored`` and ``failed``) per version and stay in
staging by ``serving.shadow_counts``, so the shadow evaluation can tell "no request carried the
new features" from a failing shadow.

``serving.shadow_evaluation.shadow_evaluate(version)`` compares the logged shadow and live
predictions (agreement, KS on scores, performance and fairness on labelled records, the shadow
period) and records it as the version's ``shadow`` evidence.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from itertools import compress

import numpy as np

from . import log, shadow_counts
from .conf import setting

logger = logging.getLogger(__name__)

_queue: deque = deque()
_thread: threading.Thread | None = None
_pid: int | None = None
_wake = threading.Event()
_lock = threading.Lock()
_idle = threading.Condition(_lock)
_pending = 0  # requests queued or being scored
_stats = {"scored": 0, "dropped": 0, "skipped_features": 0, "failed": 0}
_MAX_ROWS_PER_CALL = 20_000


def _ensure_thread() -> None:
    global _thread, _pid
    if _pid == os.getpid() and _thread is not None:
        return
    with _lock:
        if _pid != os.getpid() or _thread is None:  # a fresh process, or a forked worker
            _thread = threading.Thread(target=_run, name="serving-shadow", daemon=True)
            _pid = os.getpid()
            _thread.start()


def submit(
    route,
    X: np.ndarray,
    prediction_ids: list[str],
    timestamp: float,
    sensitive,
    shadow_X: np.ndarray | None = None,
) -> None:
    """Queue the shadow scoring of one request (no-op without a staging version).

    ``shadow_X``: the values of ``route.shadow_features`` (NaN where not carried), or None.
    """
    global _pending
    if not route.shadows:
        return
    with _lock:
        if _pending >= int(setting("SERVING_SHADOW_MAX_PENDING")):
            _stats["dropped"] += 1
            return
        _pending += 1
    _queue.append((route, X, prediction_ids, timestamp, sensitive, shadow_X))
    _ensure_thread()


def _run() -> None:
    while True:
        _wake.wait(float(setting("SERVING_SHADOW_INTERVAL")))
        _wake.clear()
        while _queue:
            try:
                _score_queued()
            except Exception:  # never let the thread die
                logger.exception("shadow scoring failed")


def _score_queued() -> None:
    """Score what is queued (up to a bound), one model call per route and shadow version."""
    global _pending
    taken, rows = [], 0
    while _queue and rows < _MAX_ROWS_PER_CALL:
        item = _queue.popleft()
        taken.append(item)
        rows += len(item[1])
    try:
        by_route: dict[int, list] = {}
        for item in taken:
            by_route.setdefault(id(item[0]), []).append(item)
        for items in by_route.values():
            _score(items)
    finally:
        with _lock:
            _pending -= len(taken)
            if _pending == 0:
                _idle.notify_all()


def _score(items: list) -> None:
    """Shadow-score the requests of one route; log them per request under the staging version."""
    route = items[0][0]
    live = route.live.features
    X = items[0][1] if len(items) == 1 else np.vstack([item[1] for item in items])
    wide = None  # the live columns, then route.shadow_features (NaN where not carried)
    for ref, model in route.shadows:
        carried = None  # every row
        if ref.feature_set <= route.live.feature_set:
            columns = X if ref.features == live else X[:, [live.index(f) for f in ref.features]]
        else:
            names = (*live, *route.shadow_features)
            if not ref.feature_set <= set(names):  # not staged when the route was built
                _stats["skipped_features"] += len(X)
                shadow_counts.add(route.model_name, ref, not_carried=len(X))
                continue
            if wide is None:
                wide = _wide(items, X, len(route.shadow_features))
            columns = wide[:, [names.index(f) for f in ref.features]]
            carried = ~np.isnan(columns).any(axis=1)  # live columns are finite (validated)
            lacking = len(carried) - int(carried.sum())
            _stats["skipped_features"] += lacking
            if lacking:
                shadow_counts.add(route.model_name, ref, not_carried=lacking)
            if lacking == len(carried):
                continue
            columns = columns[carried] if lacking else columns
            carried = carried if lacking else None
        try:
            scores = model.score(columns, ref.features)
        except Exception as exc:
            _stats["failed"] += len(columns)
            shadow_counts.add(route.model_name, ref, failed=len(columns))
            logger.warning("shadow %s %s failed: %s", route.model_name, ref.version, exc)
            continue
        predictions = (scores >= ref.threshold).astype(np.int8)
        _log(route.model_name, ref, items, carried, columns, scores, predictions)
        _stats["scored"] += len(columns)
        shadow_counts.add(route.model_name, ref, scored=len(columns))


def _wide(items: list, X: np.ndarray, n_shadow: int) -> np.ndarray:
    blocks = [
        item[5] if item[5] is not None else np.full((len(item[1]), n_shadow), np.nan)
        for item in items
    ]
    return np.hstack([X, blocks[0] if len(blocks) == 1 else np.vstack(blocks)])


def _log(model_name: str, ref, items: list, carried, columns, scores, predictions) -> None:
    """One log batch per request, of its rows scored (``carried``: which rows; None: all)."""
    sizes = [len(item[1]) for item in items]
    if carried is None:
        masks, kept = [None] * len(items), sizes
    else:
        masks = np.split(carried, np.cumsum(sizes)[:-1])
        kept = [int(mask.sum()) for mask in masks]
    bounds = np.cumsum(kept)[:-1]
    parts = zip(
        np.split(columns, bounds),
        np.split(scores, bounds),
        np.split(predictions, bounds),
        strict=True,
    )
    for item, mask, (x, s, p) in zip(items, masks, parts, strict=True):
        _, _, prediction_ids, timestamp, sensitive, _ = item
        if not len(x):
            continue
        if mask is not None and len(x) < len(mask):  # some rows lacked the features
            keep = mask.tolist()
            prediction_ids = list(compress(prediction_ids, keep))
            sensitive = None if sensitive is None else list(compress(sensitive, keep))
        log.record(
            log.LoggedBatch(
                model_name=model_name,
                version=ref.version,
                features=ref.features,
                prediction_ids=prediction_ids,
                timestamp=timestamp,
                X=x,
                scores=s,
                predictions=p,
                sensitive=sensitive,
                shadow=True,
            )
        )


def drain(timeout: float = 10.0) -> bool:
    """Wait until every queued shadow scoring is done (tests, benchmarks)."""
    _wake.set()
    deadline = time.monotonic() + timeout
    with _lock:
        while _pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            _idle.wait(remaining)
    return True


def stats() -> dict[str, int]:
    """This process's instances shadow-scored, lacking a shadow version's features
    (``skipped_features``) or failed; requests ``dropped`` (queue full) and ``pending``."""
    return dict(_stats, pending=_pending)


def counts(model_name: str) -> dict[str, dict[str, int]]:
    """Per shadow version of ``model_name``: instances this process scored, did not score as
    they lacked the version's features (``not_carried``), or failed to score."""
    return shadow_counts.by_version(model_name)


def clear() -> None:
    """Forget the counts (tests)."""
    shadow_counts.clear()
    for key in _stats:
        _stats[key] = 0
