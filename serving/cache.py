"""Stale fallback (playbook 3): the last prediction per instance, served when the model cannot.

Every live prediction is remembered per (model, instance key), the key being the sha256 of the
canonical instance JSON (features sorted by name, values as floats). Remembering is deferred: a
request only appends its arrays (the newest ``SERVING_STALE_CACHE_SIZE`` rows are kept). The
per-row work waits for a reader: the rows go into a bounded LRU per process only when the cache
is read (an outage), and each flush of the background thread writes the newest rows, at most
``SERVING_STALE_STORE_MAX_PER_FLUSH``, to the ``StalePrediction`` table that every gateway
process can read (new or changed answers only: the shared copy is best effort). Keying every
served row as it came cost more CPU than the rest of a 100-instance request's logging.

When the live model cannot serve, the gateway answers with these entries and ``"stale": true``,
or 503 when some instance has none. Only predictions of versions that governance still considers
deployable (the live one and warm standby) are served: never those of a rolled-back version.
The failure goes to the hook named by ``SERVING_OUTAGE_HOOK``. A halt is checked before any of
this, so the cache never bypasses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict, deque
from datetime import UTC, datetime
from functools import lru_cache
from itertools import repeat
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from django.utils.module_loading import import_string

from .conf import setting

if TYPE_CHECKING:  # the log does not import the cache; neither needs the other at run time
    from .log import LoggedBatch

logger = logging.getLogger(__name__)


class Entry(NamedTuple):  # a tuple: one is built per served prediction
    version: str
    prediction_id: str
    score: float
    prediction: int
    at: float  # epoch seconds


class ServedBatch(NamedTuple):
    """One request's live predictions, noted for the cache (the per-row work waits)."""

    model_name: str
    version: str
    features: tuple[str, ...]
    prediction_ids: list[str]
    X: np.ndarray
    scores: np.ndarray
    predictions: np.ndarray
    at: float  # epoch seconds


class AnswerCache:
    """One gateway's stale-answer cache: noted batches, the LRU and what the shared copy holds."""

    def __init__(self) -> None:
        self.lru: OrderedDict[tuple, Entry] = OrderedDict()  # (model, names, row bytes) -> entry
        self.incoming: deque[ServedBatch] = deque()  # not yet in the LRU (the newest rows)
        self.unstored: deque[ServedBatch] = deque()  # not yet offered to the shared table
        self.rows = {"incoming": 0, "unstored": 0}
        self.stored: OrderedDict[tuple, tuple[str, float]] = OrderedDict()  # the shared copy
        self.reported: dict[tuple[str, str], float] = {}  # outage reports: (model, kind) -> when
        self.lock = threading.Lock()
        self.store_lock = threading.Lock()


def _current():
    from .process import current

    return current()


def instance_key(features: tuple[str, ...], row: list[float]) -> str:
    """sha256 of ``json.dumps(instance, sort_keys=True, separators=(",", ":"))``, as floats."""
    return hashlib.sha256(_template(features) % _sorted(features, row)).hexdigest()


@lru_cache(maxsize=256)
def _order(features: tuple[str, ...]) -> tuple[int, ...]:
    return tuple(sorted(range(len(features)), key=features.__getitem__))


@lru_cache(maxsize=256)
def _names(features: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(features[i] for i in _order(features))


@lru_cache(maxsize=256)
def _template(features: tuple[str, ...]) -> bytes:
    """The canonical JSON with a %r per value: repr of a finite float is what json writes."""
    return ("{" + ",".join(f"{json.dumps(n)}:%r" for n in _names(features)) + "}").encode()


def _sorted(features: tuple[str, ...], row) -> tuple[float, ...]:
    return tuple(float(row[i]) for i in _order(features))


def _row_keys(model_name: str, features: tuple[str, ...], X: np.ndarray) -> list[tuple]:
    """In-process keys: the float64 bytes of each row in canonical (sorted) feature order.

    Equal exactly when the canonical JSON is equal (finite floats), at a fraction of its cost;
    the sha256 of the JSON is only computed for what goes to the shared table.
    """
    canonical = np.ascontiguousarray(X[:, list(_order(features))], dtype=np.float64)
    raw, width = canonical.tobytes(), canonical.shape[1] * 8
    names = _names(features)
    return [(model_name, names, raw[i * width : (i + 1) * width]) for i in range(len(X))]


def remember(served: LoggedBatch) -> None:
    """Note the served batch the log records (two appends; the per-row work waits for a reader)."""
    gateway = _current()
    gateway.background.ensure_started()
    state = gateway.answers
    batch = ServedBatch(
        served.model_name,
        served.version,
        served.features,
        served.prediction_ids,
        served.X,
        served.scores,
        served.predictions,
        gateway.clock(),
    )
    with state.lock:
        _append(state, "incoming", batch, int(setting("SERVING_STALE_CACHE_SIZE")))
        _append(state, "unstored", batch, int(setting("SERVING_STALE_STORE_MAX_PER_FLUSH")))


def _append(state: AnswerCache, name: str, batch: ServedBatch, limit: int) -> None:
    """Append, then drop the oldest batches the newest ``limit`` rows make useless."""
    queue: deque[ServedBatch] = getattr(state, name)
    queue.append(batch)
    state.rows[name] += len(batch.prediction_ids)
    while len(queue) > 1 and state.rows[name] - len(queue[0].prediction_ids) >= limit:
        state.rows[name] -= len(queue.popleft().prediction_ids)


def _take(state: AnswerCache, name: str) -> list[ServedBatch]:
    with state.lock:
        queue: deque[ServedBatch] = getattr(state, name)
        batches = list(queue)
        queue.clear()
        state.rows[name] = 0
    return batches


def _absorb(state: AnswerCache | None = None) -> None:
    """Move what requests noted into the LRU (when the cache is read: an outage, a test)."""
    state = state or _current().answers
    limit = int(setting("SERVING_STALE_CACHE_SIZE"))
    lru = state.lru
    for b in _take(state, "incoming"):
        keys = _row_keys(b.model_name, b.features, b.X)
        entries = map(
            Entry,
            repeat(b.version),
            b.prediction_ids,
            b.scores.tolist(),
            b.predictions.tolist(),
            repeat(b.at),
        )
        with state.lock:
            for key, entry in zip(keys, entries, strict=True):
                lru.pop(key, None)
                lru[key] = entry  # (re)inserted last: the most recently used
            while len(lru) > limit:
                lru.popitem(last=False)
        time.sleep(0)  # let a request thread take the GIL between batches


def flush(*, final: bool = False) -> int:
    """Write the newest served predictions to the shared table (new or changed answers only).

    Best effort and bounded: at most ``SERVING_STALE_STORE_MAX_PER_FLUSH`` rows are considered
    per flush, the newest; the in-process cache is complete for its size.
    """
    from .models import StalePrediction

    state = _current().answers
    stored = state.stored
    with state.store_lock:
        pending: dict[tuple, tuple] = {}
        for b in reversed(_take(state, "unstored")):
            keys = _row_keys(b.model_name, b.features, b.X)
            scores_, predictions_ = b.scores.tolist(), b.predictions.tolist()
            for i, key in enumerate(keys):
                if key in pending or stored.get(key) == (b.version, scores_[i]):
                    continue  # a newer answer is taken, or the shared copy has this one
                entry = Entry(b.version, b.prediction_ids[i], scores_[i], predictions_[i], b.at)
                pending[key] = (b.features, b.X[i], entry)
        if not pending:
            return 0
        rows = [
            StalePrediction(
                model_name=key[0],
                instance_key=instance_key(features, row),
                version=e.version,
                prediction_id=e.prediction_id,
                score=e.score,
                prediction=e.prediction,
                updated_at=datetime.fromtimestamp(e.at, tz=UTC),
            )
            for key, (features, row, e) in pending.items()
        ]
        try:
            StalePrediction.objects.bulk_create(
                rows,
                batch_size=500,
                update_conflicts=True,
                unique_fields=["model_name", "instance_key"],
                update_fields=["version", "prediction_id", "score", "prediction", "updated_at"],
            )
        except Exception as exc:  # the next flush offers the newest answers again
            logger.warning("could not store %d stale-cache entries: %s", len(rows), exc)
            return 0
        limit = int(setting("SERVING_STALE_CACHE_SIZE"))
        for key, (_, _, e) in pending.items():
            stored.pop(key, None)
            stored[key] = (e.version, e.score)
        while len(stored) > limit:
            stored.popitem(last=False)
        return len(rows)


def lookup(model_name: str, features: tuple[str, ...], X: np.ndarray) -> list[Entry | None]:
    """The cached entry of each row (this process first, then the shared table)."""
    from .models import StalePrediction

    state = _current().answers
    _absorb(state)
    found: list[Entry | None] = []
    with state.lock:
        for key in _row_keys(model_name, features, X):
            entry = state.lru.get(key)
            if entry is not None:
                state.lru.move_to_end(key)
            found.append(entry)
    missing = {i: instance_key(features, X[i]) for i, e in enumerate(found) if e is None}
    if missing:
        try:
            stored = {
                row.instance_key: Entry(
                    row.version,
                    row.prediction_id,
                    row.score,
                    row.prediction,
                    row.updated_at.timestamp(),
                )
                for row in StalePrediction.objects.filter(
                    model_name=model_name, instance_key__in=set(missing.values())
                )
            }
        except Exception as exc:  # the database may be part of the outage
            logger.warning("shared stale cache unreadable: %s", exc)
            stored = {}
        for i, key in missing.items():
            found[i] = stored.get(key)
    return found


def stale_answer(route, X: np.ndarray, failure: str) -> tuple[int, dict]:
    """200 with the cached predictions and ``stale: true``, or 503 if any instance has none."""
    entries = lookup(route.model_name, route.live.features, X)
    allowed = route.stale_versions
    usable = [e if e is not None and e.version in allowed else None for e in entries]
    missing = [i for i, e in enumerate(usable) if e is None]
    if missing:
        shown = ", ".join(str(i) for i in missing[:20]) + (", ..." if len(missing) > 20 else "")
        return 503, {
            "detail": f"{route.model_name} cannot serve now ({failure}) and no cached prediction "
            f"exists for instance(s) {shown}; retry later.",
            "stale": True,
        }
    versions = sorted({e.version for e in usable})
    return 200, {
        "model": route.model_name,
        "version": versions[0] if len(versions) == 1 else None,
        "predictions": [
            {
                "prediction_id": e.prediction_id,
                "score": e.score,
                "prediction": e.prediction,
                "version": e.version,
                "cached_at": datetime.fromtimestamp(e.at, tz=UTC).isoformat(),
            }
            for e in usable
        ],
        "stale": True,
        "detail": f"served from the cache: {failure}",
    }


# --- outage reports ---------------------------------------------------------------------------


def log_outage(*, model: str, version: str | None, kind: str, detail: str) -> None:
    """A fallback hook (serving alone, without the incidents app): an error in the log."""
    logger.error("serving outage of %s %s (%s): %s", model, version or "-", kind, detail)


def report_outage(*, model: str, version: str | None, kind: str, detail: str) -> None:
    """Tell the outage hook, at most once per (model, kind) per interval, off the request path."""
    gateway = _current()
    state = gateway.answers
    now = time.monotonic()
    key = (model, kind)
    interval = float(setting("SERVING_OUTAGE_REPORT_SECONDS"))
    with state.lock:
        last = state.reported.get(key)
        if last is not None and now - last < interval:
            return
        state.reported[key] = now
    hook = import_string(setting("SERVING_OUTAGE_HOOK"))
    gateway.background.call_soon(hook, model=model, version=version, kind=kind, detail=detail)


def clear() -> None:
    """Forget every cached answer and outage report (``gateway.reset`` gives a fresh cache)."""
    _current().answers = AnswerCache()
