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
import threading
import time
from collections import deque
from itertools import compress
from typing import Any, NamedTuple

import numpy as np

from . import log, shadow_counts
from .conf import setting

logger = logging.getLogger(__name__)

_MAX_ROWS_PER_CALL = 20_000


class ShadowRequest(NamedTuple):
    """One live request queued for shadow scoring."""

    route: Any  # router.Route: its shadow versions and models, as the request saw them
    X: np.ndarray  # the live features
    prediction_ids: list[str]
    timestamp: float
    sensitive: list | None
    shadow_X: np.ndarray | None  # route.shadow_features (NaN where not carried), or None


class ShadowQueue:
    """One gateway's shadow queue, its scoring thread and its counters."""

    def __init__(self) -> None:
        self.queue: deque[ShadowRequest] = deque()
        self.thread: threading.Thread | None = None
        self.wake = threading.Event()
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)
        self.pending = 0  # requests queued or being scored
        self.stats = {"scored": 0, "dropped": 0, "skipped_features": 0, "failed": 0}
        self.stopped = False

    def ensure_thread(self) -> None:
        if self.thread is not None:
            return
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="serving-shadow", daemon=True)
                self.thread.start()

    def _run(self) -> None:
        while not self.stopped:
            self.wake.wait(float(setting("SERVING_SHADOW_INTERVAL")))
            self.wake.clear()
            while self.queue and not self.stopped:
                try:
                    self._score_queued()
                except Exception:  # never let the thread die
                    logger.exception("shadow scoring failed")

    def _score_queued(self) -> None:
        """Score what is queued (up to a bound), one model call per route and shadow version."""
        taken: list[ShadowRequest] = []
        rows = 0
        while self.queue and rows < _MAX_ROWS_PER_CALL:
            item = self.queue.popleft()
            taken.append(item)
            rows += len(item.X)
        try:
            by_route: dict[int, list[ShadowRequest]] = {}
            for item in taken:
                by_route.setdefault(id(item.route), []).append(item)
            for items in by_route.values():
                _score(self.stats, items)
        finally:
            with self.lock:
                self.pending -= len(taken)
                if self.pending == 0:
                    self.idle.notify_all()

    def drain(self, timeout: float = 10.0) -> bool:
        self.wake.set()
        deadline = time.monotonic() + timeout
        with self.lock:
            while self.pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.idle.wait(remaining)
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Score what is queued, then end the thread (``Gateway.reset``)."""
        self.drain(timeout)
        self.stopped = True
        self.wake.set()


def _state() -> ShadowQueue:
    from .process import current

    return current().shadow


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
    if not route.shadows:
        return
    state = _state()
    with state.lock:
        if state.pending >= int(setting("SERVING_SHADOW_MAX_PENDING")):
            state.stats["dropped"] += 1
            return
        state.pending += 1
    state.queue.append(ShadowRequest(route, X, prediction_ids, timestamp, sensitive, shadow_X))
    state.ensure_thread()


def _score(stats: dict[str, int], items: list[ShadowRequest]) -> None:
    """Shadow-score the requests of one route; log them per request under the staging version."""
    route = items[0].route
    live = route.live.features
    X = items[0].X if len(items) == 1 else np.vstack([item.X for item in items])
    wide = None  # the live columns, then route.shadow_features (NaN where not carried)
    for ref, model in route.shadows:
        carried = None  # every row
        if ref.feature_set <= route.live.feature_set:
            columns = X if ref.features == live else X[:, [live.index(f) for f in ref.features]]
        else:
            names = (*live, *route.shadow_features)
            if not ref.feature_set <= set(names):  # not staged when the route was built
                stats["skipped_features"] += len(X)
                shadow_counts.add(route.model_name, ref, not_carried=len(X))
                continue
            if wide is None:
                wide = _with_shadow_features(items, X, len(route.shadow_features))
            columns = wide[:, [names.index(f) for f in ref.features]]
            carried = ~np.isnan(columns).any(axis=1)  # live columns are finite (validated)
            lacking = len(carried) - int(carried.sum())
            stats["skipped_features"] += lacking
            if lacking:
                shadow_counts.add(route.model_name, ref, not_carried=lacking)
            if lacking == len(carried):
                continue
            columns = columns[carried] if lacking else columns
            carried = carried if lacking else None
        try:
            scores = model.score(columns, ref.features)
        except Exception as exc:
            stats["failed"] += len(columns)
            shadow_counts.add(route.model_name, ref, failed=len(columns))
            logger.warning("shadow %s %s failed: %s", route.model_name, ref.version, exc)
            continue
        predictions = (scores >= ref.threshold).astype(np.int8)
        _log(route.model_name, ref, items, carried, columns, scores, predictions)
        stats["scored"] += len(columns)
        shadow_counts.add(route.model_name, ref, scored=len(columns))


def _with_shadow_features(items: list[ShadowRequest], X: np.ndarray, n_shadow: int) -> np.ndarray:
    """The live features with the shadow-only ones beside them (NaN where a request lacks them)."""
    blocks = [
        item.shadow_X if item.shadow_X is not None else np.full((len(item.X), n_shadow), np.nan)
        for item in items
    ]
    return np.hstack([X, blocks[0] if len(blocks) == 1 else np.vstack(blocks)])


def _log(
    model_name: str, ref, items: list[ShadowRequest], carried, columns, scores, predictions
) -> None:
    """One log batch per request, of its rows scored (``carried``: which rows; None: all)."""
    sizes = [len(item.X) for item in items]
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
        prediction_ids, timestamp, sensitive = item.prediction_ids, item.timestamp, item.sensitive
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
    return _state().drain(timeout)


def stats() -> dict[str, int]:
    """This process's instances shadow-scored, lacking a shadow version's features
    (``skipped_features``) or failed; requests ``dropped`` (queue full) and ``pending``."""
    state = _state()
    return dict(state.stats, pending=state.pending)


def counts(model_name: str) -> dict[str, dict[str, int]]:
    """Per shadow version of ``model_name``: instances this process scored, did not score as
    they lacked the version's features (``not_carried``), or failed to score."""
    return shadow_counts.by_version(model_name)


def clear() -> None:
    """Forget the counts (tests; ``gateway.reset`` gives fresh ones)."""
    shadow_counts.clear()
    state = _state()
    for key in state.stats:
        state.stats[key] = 0
