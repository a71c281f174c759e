"""Shadow mode: the staging version scores the same requests, after the live response is built.

``submit`` hands the request's matrix to a small thread pool (``SERVING_SHADOW_WORKERS``) and
returns at once; the shadow predictions go to the prediction log under the staging version,
with the live prediction's id. A queue longer than ``SERVING_SHADOW_MAX_PENDING`` requests drops
the shadow scoring of new requests (counted in ``stats()``) rather than slowing anything down.
A staging version whose feature list is not covered by the live one's cannot be shadowed (a
MAJOR feature-set change); it is skipped and counted.

``shadow_evaluate(version)`` compares the logged shadow and live predictions (agreement, KS on
scores, performance and fairness on labelled records, the shadow period): see
``serving.shadow_evaluation``, which also records it as the version's ``shadow`` evidence.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import log
from .conf import setting

logger = logging.getLogger(__name__)

_executor: ThreadPoolExecutor | None = None
_pid: int | None = None
_lock = threading.Lock()
_idle = threading.Condition(_lock)
_pending = 0
_stats = {"scored": 0, "dropped": 0, "skipped_features": 0, "failed": 0}


def _pool() -> ThreadPoolExecutor:
    global _executor, _pid
    if _pid != os.getpid() or _executor is None:
        with _lock:
            if _pid != os.getpid() or _executor is None:
                workers = max(1, int(setting("SERVING_SHADOW_WORKERS")))
                _executor = ThreadPoolExecutor(workers, thread_name_prefix="serving-shadow")
                _pid = os.getpid()
    return _executor


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
    _pool().submit(_score, route, X, prediction_ids, timestamp, sensitive)


def _score(route, X, prediction_ids, timestamp, sensitive) -> None:
    global _pending
    try:
        live = route.live.features
        for ref, model in route.shadows:
            if not ref.feature_set <= route.live.feature_set:
                _stats["skipped_features"] += 1
                continue
            columns = X if ref.features == live else X[:, [live.index(f) for f in ref.features]]
            try:
                scores = model.score(columns, ref.features)
            except Exception as exc:
                _stats["failed"] += 1
                logger.warning("shadow %s %s failed: %s", route.model_name, ref.version, exc)
                continue
            log.record(
                log.LoggedBatch(
                    model_name=route.model_name,
                    version=ref.version,
                    features=ref.features,
                    prediction_ids=prediction_ids,
                    timestamp=timestamp,
                    X=columns,
                    scores=scores,
                    predictions=(scores >= ref.threshold).astype(np.int8),
                    sensitive=sensitive,
                    shadow=True,
                )
            )
            _stats["scored"] += len(prediction_ids)
    finally:
        with _lock:
            _pending -= 1
            if _pending == 0:
                _idle.notify_all()


def drain(timeout: float = 10.0) -> bool:
    """Wait until every queued shadow scoring is done (tests, benchmarks)."""
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
