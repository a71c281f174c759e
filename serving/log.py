"""The prediction log: every live and shadow prediction, buffered and written in batches.

A request appends one compact batch (its arrays; no per-record work) to an in-memory buffer. The
background flusher (``serving.background``) hands the buffer to the monitoring store every
``SERVING_LOG_BATCH_SIZE`` predictions or ``SERVING_LOG_FLUSH_SECONDS``, and once more at exit:
one call of ``monitoring.ingest.predictions_ingest(model_name=..., version=..., upload=...,
actor=Actor.system("serving gateway"), source="gateway")`` per (model, version), the records as
an in-memory Parquet file in the documented upload layout (``prediction_id, timestamp, score,
prediction``, one column per feature, ``sensitive.<attribute>``). That costs a fraction of
building one JSON-shaped dict per record, which matters on the request processes' CPUs.

Nothing is dropped. While the monitoring app has no ``ingest`` module, every flush writes its
batches as Parquet files to ``VAR_DIR/serving/unflushed/``; when ingestion fails they stay in
memory for the next flush (on disk at exit, or past ``SERVING_LOG_MAX_BUFFER``); records the
store refuses (400) are kept aside as ``refused-*.parquet`` for inspection. A flush that finds the
store working ingests the files left on disk (each claimed by a rename first).

Shadow predictions carry the live prediction's ``prediction_id`` (under the staging version), so
labels posted for a live prediction also label its shadow twin.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from django.conf import settings

from . import background
from .conf import setting

logger = logging.getLogger(__name__)
SOURCE = "gateway"
_MODEL_KEY, _VERSION_KEY = b"serving.model", b"serving.version"


@dataclass(frozen=True)
class LoggedBatch:
    model_name: str
    version: str
    features: tuple[str, ...]
    prediction_ids: list[str]
    timestamp: float  # epoch seconds
    X: np.ndarray
    scores: np.ndarray
    predictions: np.ndarray
    sensitive: list | None = None
    shadow: bool = False

    def __len__(self) -> int:
        return len(self.prediction_ids)

    @property
    def group(self) -> tuple:
        attributes = tuple(sorted(self.sensitive[0])) if self.sensitive else ()
        return (self.model_name, self.version, self.features, attributes)

    def records(self) -> list[dict]:
        """The batch as ``predictions_ingest`` JSON records (for inspection and tests)."""
        stamp = datetime.fromtimestamp(self.timestamp, tz=UTC).isoformat().replace("+00:00", "Z")
        rows, scores, predictions = self.X.tolist(), self.scores.tolist(), self.predictions
        out = []
        for i, prediction_id in enumerate(self.prediction_ids):
            record = {
                "prediction_id": prediction_id,
                "timestamp": stamp,
                "features": dict(zip(self.features, rows[i], strict=True)),
                "score": scores[i],
                "prediction": int(predictions[i]),
            }
            if self.sensitive is not None and self.sensitive[i]:
                record["sensitive"] = self.sensitive[i]
            out.append(record)
        return out


def table(batches: list[LoggedBatch]):
    """One Arrow table in the monitoring upload layout for batches of one group."""
    import pyarrow as pa

    first = batches[0]
    sizes = [len(b) for b in batches]
    stamps = np.repeat(np.array([int(b.timestamp * 1_000_000) for b in batches]), sizes)
    columns = {
        "prediction_id": pa.array([i for b in batches for i in b.prediction_ids], pa.string()),
        "timestamp": pa.array(stamps, type=pa.timestamp("us", tz="UTC")),
        "score": pa.array(np.concatenate([b.scores for b in batches]), pa.float64()),
        "prediction": pa.array(np.concatenate([b.predictions for b in batches]), pa.int8()),
    }
    X = np.vstack([b.X for b in batches])
    for j, name in enumerate(first.features):
        columns[name] = pa.array(X[:, j], pa.float64())
    for attribute in first.group[3]:
        values = [s[attribute] for b in batches for s in b.sensitive]
        columns[f"sensitive.{attribute}"] = pa.array(
            [None if v is None else str(v) for v in values], pa.string()
        )
    metadata = {_MODEL_KEY: first.model_name.encode(), _VERSION_KEY: first.version.encode()}
    return pa.table(columns).replace_schema_metadata(metadata)


def _parquet(batches: list[LoggedBatch]) -> bytes:
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table(batches), sink, compression="snappy")
    return sink.getvalue()


_buffer: list[LoggedBatch] = []
_count = 0
_lock = threading.Lock()
_flush_lock = threading.Lock()
_warned_at = 0.0
_ingest_fn = None


def record(batch: LoggedBatch) -> None:
    """Append a batch to the log (cheap: no I/O, no per-record work)."""
    global _count
    background.ensure_started()
    with _lock:
        _buffer.append(batch)
        _count += len(batch)
        full = _count >= int(setting("SERVING_LOG_BATCH_SIZE"))
    if full:
        background.wake()


def buffered() -> int:
    """Predictions waiting in memory."""
    return _count


def _ingest():
    """``monitoring.ingest.predictions_ingest`` when that module exists, else None."""
    global _ingest_fn
    if _ingest_fn is not None:
        return _ingest_fn
    try:
        if importlib.util.find_spec("monitoring.ingest") is None:
            return None
        module = importlib.import_module("monitoring.ingest")
    except ImportError:
        return None
    _ingest_fn = getattr(module, "predictions_ingest", None)
    return _ingest_fn


def _spill_dir() -> Path:
    return Path(settings.VAR_DIR) / "serving" / "unflushed"


def flush(*, final: bool = False) -> int:
    """Hand what is buffered to the monitoring store; returns the predictions ingested."""
    global _count
    with _flush_lock:
        with _lock:
            batches, _buffer[:] = list(_buffer), []
            _count = 0
        ingest = _ingest()
        if ingest is None:
            if batches:
                for group in _groups(batches):
                    _spill(group, tag="unflushed")
                _warn_no_store(sum(len(b) for b in batches))
            return 0
        ingested, kept = 0, []
        for group in _groups(batches):
            time.sleep(0)  # let a request thread take the GIL between groups
            count = sum(len(b) for b in group)
            try:
                _call(ingest, group[0].model_name, group[0].version, _parquet(group))
                ingested += count
            except Exception as exc:
                if _permanent(exc):
                    logger.error(
                        "the monitoring store refused %d predictions of %s %s (%s); kept in %s",
                        count,
                        group[0].model_name,
                        group[0].version,
                        exc,
                        _spill(group, tag="refused"),
                    )
                else:
                    logger.warning("prediction log flush failed, will retry: %s", exc)
                    kept.extend(group)
        if kept:
            held = sum(len(b) for b in kept)
            if final or held > int(setting("SERVING_LOG_MAX_BUFFER")):
                for group in _groups(kept):
                    _spill(group, tag="unflushed")
                logger.warning("kept %d predictions in %s", held, _spill_dir())
            else:
                with _lock:
                    _buffer[:0] = kept
                    _count += held
        else:
            ingested += _replay_spilled(ingest)
        return ingested


def _groups(batches: list[LoggedBatch]) -> list[list[LoggedBatch]]:
    groups: dict[tuple, list[LoggedBatch]] = {}
    for batch in batches:
        groups.setdefault(batch.group, []).append(batch)
    return list(groups.values())


def _call(ingest, model_name: str, version: str, data: bytes) -> None:
    from governance.audit import Actor

    ingest(
        model_name=model_name,
        version=version,
        upload=io.BytesIO(data),
        actor=Actor.system("serving gateway"),
        source=SOURCE,
    )


def _permanent(exc: Exception) -> bool:
    from registry.errors import InvalidInput, NotFound

    return isinstance(exc, InvalidInput | NotFound)


def _warn_no_store(count: int) -> None:
    global _warned_at
    if count and time.monotonic() - _warned_at > 60:
        _warned_at = time.monotonic()
        logger.warning(
            "monitoring.ingest is not installed: %d predictions written to %s until it is",
            count,
            _spill_dir(),
        )


def _spill(batches: list[LoggedBatch], *, tag: str) -> Path:
    directory = _spill_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{tag}-{os.getpid()}-{time.time_ns()}.parquet"
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(_parquet(batches))
    partial.rename(path)  # a reader never sees half a file
    return path


def spilled_predictions() -> int:
    """Predictions waiting on disk (written while the store was missing or failing)."""
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(p).num_rows for p in _spill_dir().glob("unflushed-*.parquet"))


def _replay_spilled(ingest) -> int:
    """Ingest files left by earlier flushes; each file is claimed by renaming it first."""
    import pyarrow.parquet as pq

    directory = _spill_dir()
    if not directory.is_dir():
        return 0
    done = 0
    for path in sorted(directory.glob("unflushed-*.parquet")):
        claimed = path.with_name(path.name + f".claimed-{os.getpid()}")
        try:
            path.rename(claimed)
        except OSError:
            continue  # another process claimed it
        meta = pq.read_schema(claimed).metadata or {}
        try:
            _call(
                ingest,
                meta[_MODEL_KEY].decode(),
                meta[_VERSION_KEY].decode(),
                claimed.read_bytes(),
            )
        except Exception as exc:
            if _permanent(exc):
                logger.error("the monitoring store refused %s: %s", path, exc)
                claimed.rename(path.with_name(path.name.replace("unflushed-", "refused-", 1)))
                continue
            logger.warning("could not replay %s yet: %s", path, exc)
            claimed.rename(path)
            return done
        done += pq.read_metadata(claimed).num_rows
        claimed.unlink()
    return done


def clear() -> None:
    """Drop everything buffered (tests)."""
    global _count, _ingest_fn
    with _lock:
        _buffer.clear()
        _count = 0
    _ingest_fn = None


background.register_flusher(flush)
