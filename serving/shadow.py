"""Shadow mode: the staging version scores the same requests, after the live response is built.

``submit`` appends the request's matrix to a queue and returns at once (no thread hand-off per
request); one background thread per process takes what is queued every
``SERVING_SHADOW_INTERVAL`` seconds and scores it in one call per shadow version (a call costs
about the same for 1 row as for 1000), then logs the shadow predictions under the staging
version, with the live predictions' ids. More than ``SERVING_SHADOW_MAX_PENDING`` requests
waiting drops the shadow scoring of new requests (counted in ``stats()``) rather than slowing
anything down. A staging version whose feature list is not covered by the live one's cannot be
shadowed (a MAJOR feature-set change); it is skipped and counted.

``shadow_evaluate(version)`` compares the logged shadow and live predictions (agreement, KS on
scores, performance and fairness on labelled records, the shadow period): see
``serving.shadow_evaluation``, which also records it as the version's ``shadow`` evidence.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque

import numpy as np

from . import log
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


def submit(route, X: np.ndarray, prediction_ids: list[str], timestamp: float, sensitive) -> None:
    """Queue the shadow scoring of one request (no-op without a staging version)."""
    global _pending
    if not route.shadows:
        return
    with _lock:
        if _pending >= int(setting("SERVING_SHADOW_MAX_PENDING")):
            _stats["dropped"] += 1
            return
        _pending += 1
    _queue.append((route, X, prediction_ids, timestamp, sensitive))
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
    bounds = np.cumsum([len(item[1]) for item in items])[:-1]
    for ref, model in route.shadows:
        if not ref.feature_set <= route.live.feature_set:
            _stats["skipped_features"] += len(items)
            continue
        columns = X if ref.features == live else X[:, [live.index(f) for f in ref.features]]
        try:
            scores = model.score(columns, ref.features)
        except Exception as exc:
            _stats["failed"] += len(items)
            logger.warning("shadow %s %s failed: %s", route.model_name, ref.version, exc)
            continue
        predictions = (scores >= ref.threshold).astype(np.int8)
        parts = zip(
            np.split(columns, bounds),
            np.split(scores, bounds),
            np.split(predictions, bounds),
            strict=True,
        )
        for (_, _, prediction_ids, timestamp, sensitive), (x, s, p) in zip(
            items, parts, strict=True
        ):
            log.record(
                log.LoggedBatch(
                    model_name=route.model_name,
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
        _stats["scored"] += len(X)


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
    return dict(_stats, pending=_pending)


def shadow_evaluate(version) -> dict:
    """Shadow vs live over the staging period; see ``serving.shadow_evaluation``."""
    from .shadow_evaluation import shadow_evaluate as evaluate

    return evaluate(version)
