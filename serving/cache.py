"""Stale fallback (playbook 3): the last prediction per instance, served when the model cannot.

Every live prediction is remembered per (model, instance key), the key being the sha256 of the
canonical instance JSON (features sorted by name, values as floats). Remembering is deferred: a
request only appends its arrays; the keys are computed when the cache is next read or flushed.
Entries live in a bounded LRU per process and, flushed in batches by the background thread, in
the ``StalePrediction`` table so that every gateway process can serve them (new or changed
answers only, at most ``SERVING_STALE_STORE_MAX_PER_FLUSH`` per flush: the shared copy is
best effort, the in-process one complete).

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
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

import numpy as np
from django.utils.module_loading import import_string

from . import background
from .conf import setting

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    version: str
    prediction_id: str
    score: float
    prediction: int
    at: float  # epoch seconds


_lru: OrderedDict[tuple, Entry] = OrderedDict()  # (model, canonical names, row bytes) -> entry
_incoming: deque = deque()
_to_store: dict[tuple, tuple[tuple[str, ...], np.ndarray, Entry]] = {}
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
    """Note served predictions (cheap: the work is done later, off the request path)."""
    background.ensure_started()
    _incoming.append((model_name, version, features, prediction_ids, X, scores, predictions))


def _absorb() -> None:
    """Move what requests noted into the LRU and the write-behind set."""
    limit = int(setting("SERVING_STALE_CACHE_SIZE"))
    store_limit = int(setting("SERVING_STALE_STORE_MAX_PER_FLUSH"))
    while True:
        try:
            model_name, version, features, ids, X, scores, predictions = _incoming.popleft()
        except IndexError:
            return
        now = time.time()
        keys = _row_keys(model_name, features, X)
        scores_, predictions_ = scores.tolist(), predictions.tolist()
        with _lock:
            for i, key in enumerate(keys):
                known = _lru.get(key)
                entry = Entry(version, ids[i], scores_[i], int(predictions_[i]), now)
                _lru[key] = entry
                _lru.move_to_end(key)
                # The shared copy only needs what changed (same instance, same answer: skip).
                changed = known is None or (known.version, known.score) != (version, entry.score)
                if changed and (key in _to_store or len(_to_store) < store_limit):
                    _to_store[key] = (features, X[i], entry)
            while len(_lru) > limit:
                _lru.popitem(last=False)
        time.sleep(0)  # let a request thread take the GIL between batches


def flush(*, final: bool = False) -> int:
    """Write the entries remembered since the last flush to the shared table."""
    from .models import StalePrediction

    _absorb()
    with _store_lock:
        with _lock:
            pending = dict(_to_store)
            _to_store.clear()
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
        except Exception as exc:
            logger.warning("could not store %d stale-cache entries: %s", len(rows), exc)
            with _lock:
                for key, value in pending.items():
                    _to_store.setdefault(key, value)
            return 0
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
    """The default hook: an error in the log (the incidents app replaces it with an incident)."""
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
        _to_store.clear()
        _reported.clear()
    _incoming.clear()


background.register_flusher(flush)
