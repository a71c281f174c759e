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
from typing import NamedTuple

import numpy as np
from django.utils.module_loading import import_string

from . import background
from .conf import setting

logger = logging.getLogger(__name__)


class Entry(NamedTuple):  # a tuple: one is built per served prediction
    version: str
    prediction_id: str
    score: float
    prediction: int
    at: float  # epoch seconds


_lru: OrderedDict[tuple, Entry] = OrderedDict()  # (model, canonical names, row bytes) -> entry
_incoming: deque = deque()  # served batches not yet in the LRU (the newest ~cache-size rows)
_unstored: deque = deque()  # served batches not yet offered to the shared table (the newest)
_rows = {"incoming": 0, "unstored": 0}
_stored: OrderedDict[tuple, tuple[str, float]] = OrderedDict()  # what the shared copy holds
_lock = threading.Lock()
_store_lock = threading.Lock()


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


def remember(
    *,
    model_name: str,
    version: str,
    features: tuple[str, ...],
    prediction_ids: list[str],
    X: np.ndarray,
    scores: np.ndarray,
    predictions: np.ndarray,
) -> None:
    """Note served predictions (cheap: two appends; the per-row work waits for a reader)."""
    background.ensure_started()
    batch = (model_name, version, features, prediction_ids, X, scores, predictions, time.time())
    with _lock:
        _append(_incoming, "incoming", batch, int(setting("SERVING_STALE_CACHE_SIZE")))
        _append(_unstored, "unstored", batch, int(setting("SERVING_STALE_STORE_MAX_PER_FLUSH")))


def _append(queue: deque, name: str, batch: tuple, limit: int) -> None:
    """Append, then drop the oldest batches the newest ``limit`` rows make useless."""
    queue.append(batch)
    _rows[name] += len(batch[3])
    while len(queue) > 1 and _rows[name] - len(queue[0][3]) >= limit:
        _rows[name] -= len(queue.popleft()[3])


def _take(queue: deque, name: str) -> list[tuple]:
    with _lock:
        batches = list(queue)
        queue.clear()
        _rows[name] = 0
    return batches


def _absorb() -> None:
    """Move what requests noted into the LRU (when the cache is read: an outage, a test)."""
    limit = int(setting("SERVING_STALE_CACHE_SIZE"))
    for model_name, version, features, ids, X, scores, predictions, at in _take(
        _incoming, "incoming"
    ):
        keys = _row_keys(model_name, features, X)
        entries = map(
            Entry, repeat(version), ids, scores.tolist(), predictions.tolist(), repeat(at)
        )
        with _lock:
            for key, entry in zip(keys, entries, strict=True):
                _lru.pop(key, None)
                _lru[key] = entry  # (re)inserted last: the most recently used
            while len(_lru) > limit:
                _lru.popitem(last=False)
        time.sleep(0)  # let a request thread take the GIL between batches


def flush(*, final: bool = False) -> int:
    """Write the newest served predictions to the shared table (new or changed answers only).

    Best effort and bounded: at most ``SERVING_STALE_STORE_MAX_PER_FLUSH`` rows are considered
    per flush, the newest; the in-process cache is complete for its size.
    """
    from .models import StalePrediction

    with _store_lock:
        pending: dict[tuple, tuple] = {}
        for model_name, version, features, ids, X, scores, predictions, at in reversed(
            _take(_unstored, "unstored")
        ):
            keys = _row_keys(model_name, features, X)
            scores_, predictions_ = scores.tolist(), predictions.tolist()
            for i, key in enumerate(keys):
                if key in pending or _stored.get(key) == (version, scores_[i]):
                    continue  # a newer answer is taken, or the shared copy has this one
                entry = Entry(version, ids[i], scores_[i], predictions_[i], at)
                pending[key] = (features, X[i], entry)
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
            _stored.pop(key, None)
            _stored[key] = (e.version, e.score)
        while len(_stored) > limit:
            _stored.popitem(last=False)
        return len(rows)


def lookup(model_name: str, features: tuple[str, ...], X: np.ndarray) -> list[Entry | None]:
    """The cached entry of each row (this process first, then the shared table)."""
    from .models import StalePrediction

    _absorb()
    found: list[Entry | None] = []
    with _lock:
        for key in _row_keys(model_name, features, X):
            entry = _lru.get(key)
            if entry is not None:
                _lru.move_to_end(key)
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

_reported: dict[tuple[str, str], float] = {}


def log_outage(*, model: str, version: str | None, kind: str, detail: str) -> None:
    """A fallback hook (serving alone, without the incidents app): an error in the log."""
    logger.error("serving outage of %s %s (%s): %s", model, version or "-", kind, detail)


def report_outage(*, model: str, version: str | None, kind: str, detail: str) -> None:
    """Tell the outage hook, at most once per (model, kind) per interval, off the request path."""
    now = time.monotonic()
    key = (model, kind)
    interval = float(setting("SERVING_OUTAGE_REPORT_SECONDS"))
    with _lock:
        last = _reported.get(key)
        if last is not None and now - last < interval:
            return
        _reported[key] = now
    hook = import_string(setting("SERVING_OUTAGE_HOOK"))
    background.call_soon(hook, model=model, version=version, kind=kind, detail=detail)


def clear() -> None:
    with _lock:
        _lru.clear()
        _stored.clear()
        _reported.clear()
        _incoming.clear()
        _unstored.clear()
        _rows.update(incoming=0, unstored=0)


background.register_flusher(flush)
