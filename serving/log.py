"""The prediction log: live and shadow predictions, spooled by the gateway, ingested by a worker.

A request appends one compact batch (its arrays; no per-record work) to an in-memory buffer. The
gateway's background flusher (``serving.background``) writes the buffer every
``SERVING_LOG_BATCH_SIZE`` predictions or ``SERVING_LOG_FLUSH_SECONDS``, and once more at exit,
as spool files in ``VAR_DIR/serving/spool/``: Arrow IPC (a memory copy; Parquet's encoding is
left to the worker), one per model, version and column set, in the documented upload layout
(``prediction_id, timestamp, score, prediction``, one column per feature,
``sensitive.<attribute>``), written under a temporary name, then renamed. Then it enqueues
``serving.ingest_prediction_log`` (at most once per ``SERVING_LOG_INGEST_SECONDS`` per process,
and always at exit). The gateway does no database work for the log.

Why a worker ingests: ``monitoring.ingest.predictions_ingest`` refuses prediction ids the
version already has stored that day (checked against per-file id indexes) and writes Parquet and
a manifest row; run by the gateway every few thousand predictions, ingesting took half the
gateway's CPU at 100-instance requests. Each spool file's name is its ``batch_keys`` entry, so a
file committed but not deleted (a crash in between) is recognised and not stored twice. The
worker (``ingest_spooled``) claims the spool files (a rename, so two workers never take the
same file), merges them per model, version and column set up to ``SERVING_LOG_INGEST_MAX_ROWS``
and makes one ``predictions_ingest(..., upload=<Parquet>, actor=Actor.system("serving
gateway"), source="gateway")`` call per merged table: one file and manifest row per day, audited.

Nothing is dropped. A spool file leaves the disk only once its predictions are committed to the
store. When the store fails, the claimed files go back to the spool and the task retries; when
it refuses a merged table (400, 404), the files are tried one by one and a file it refuses is
kept aside as ``refused-*.arrow`` (read it with ``pandas.read_feather``). A claim older than
``SERVING_LOG_CLAIM_SECONDS`` (its worker died) is put back.

On an object store (``GOVERNANCE_STORAGE_URL=s3://...``, ``platform_core.storage``) there is no
shared disk and no rename: each flush uploads its file whole under a unique key
``serving/spool/spool-<time>-<pid>-<thread>-<nonce>.arrow`` (an object appears complete or not at
all, so there is no ``.partial``), and a gateway host that dies loses at most the batch in
memory. Any worker lists the spool prefix (once per ingestion task, not per request), takes a
lease on each object it ingests (``cache.add``, expiring after ``SERVING_LOG_CLAIM_SECONDS``: a
dead worker's lease lapses, no put-back needed), and deletes the object after the commit. The
exactly-once guarantee is the database's: the object's name is its ``batch_keys`` entry (unique
per version), so two workers that ever take the same object, or a retry after a commit whose
delete failed, store it once. A refused object is copied to ``serving/refused/`` and deleted.

Shadow predictions carry the live prediction's ``prediction_id`` (under the staging version), so
labels posted for a live prediction also label its shadow twin.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from platform_core import storage
from platform_core.tasking import enqueue

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


def _arrow_file(batches: list[LoggedBatch]) -> bytes:
    """The batches as an Arrow IPC file: a memory copy (Parquet encoding is the worker's job)."""
    import pyarrow as pa

    data = table(batches)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, data.schema) as writer:
        writer.write_table(data)
    return sink.getvalue().to_pybytes()


def _read_arrow(path: Path):
    """A spool file's table (memory-mapped: reading the schema or the row count is cheap)."""
    import pyarrow as pa

    return pa.ipc.open_file(pa.memory_map(str(path))).read_all()


_SPOOL_GLOB = "spool-*.arrow"


class PredictionLog:
    """One gateway's buffer of served batches and its announcements to the workers."""

    def __init__(self) -> None:
        self.buffer: list[LoggedBatch] = []
        self.count = 0
        self.lock = threading.Lock()
        self.flush_lock = threading.Lock()
        self.announce_pending = True  # a new gateway announces what an earlier one left
        self.announced_at = float("-inf")


def _current():
    from .process import current

    return current()


def record(batch: LoggedBatch) -> None:
    """Append a batch to the log (cheap: no I/O, no per-record work)."""
    gateway = _current()
    state = gateway.log
    gateway.background.ensure_started()
    with state.lock:
        state.buffer.append(batch)
        state.count += len(batch)
        full = state.count >= int(setting("SERVING_LOG_BATCH_SIZE"))
    if full:
        gateway.background.wake_event.set()


def buffered() -> int:
    """Predictions waiting in memory."""
    return _current().log.count


SPOOL_PREFIX, REFUSED_PREFIX = "serving/spool", "serving/refused"


def spool_dir() -> Path:
    """The spool directory on this host (local storage; see ``_remote`` for an object store)."""
    return storage.current().local_path(SPOOL_PREFIX)


def _remote() -> storage.Storage | None:
    """The object store the spool goes to, or ``None`` for this host's directory."""
    where = storage.current()
    return where if where.remote else None


def flush(*, final: bool = False) -> int:
    """Write what is buffered to the spool and announce it to the workers; returns the count.

    No database work: the ingestion runs in a Celery worker (``ingest_spooled``).
    """
    gateway = _current()
    state = gateway.log
    with state.flush_lock:
        with state.lock:
            batches, state.buffer = state.buffer, []
            state.count = 0
        spooled = 0
        groups = _groups(batches)
        for index, group in enumerate(groups):
            time.sleep(0)  # let a request thread take the GIL between groups
            try:
                _spool(group, tag="spool")
            except OSError as exc:  # a full disk: keep them for the next flush
                kept = [batch for rest in groups[index:] for batch in rest]
                held = sum(len(b) for b in kept)
                with state.lock:
                    state.buffer[:0] = kept
                    state.count += held
                logger.error("could not write the prediction spool, %d kept: %s", held, exc)
                break
            spooled += sum(len(b) for b in group)
        if spooled or (state.announce_pending and _pending()):
            _announce(gateway, final=final)
        return spooled


def _announce(gateway, *, final: bool) -> None:
    """Enqueue the ingestion, at most once per interval (a worker takes every file present)."""
    state = gateway.log
    now = time.monotonic()
    if not final and now - state.announced_at < float(setting("SERVING_LOG_INGEST_SECONDS")):
        state.announce_pending = True  # the flusher's next round announces it
        return
    try:
        gateway.enqueue_ingest()
    except Exception as exc:  # the broker may be down: the files wait on disk
        state.announce_pending = True
        logger.warning("could not enqueue the prediction log ingestion: %s", exc)
        return
    state.announced_at, state.announce_pending = now, False


def enqueue_ingest() -> None:
    """The gateway's default ``enqueue_ingest`` collaborator: the Celery task, by name."""
    enqueue("serving.ingest_prediction_log")


def _groups(batches: list[LoggedBatch]) -> list[list[LoggedBatch]]:
    groups: dict[tuple, list[LoggedBatch]] = {}
    for batch in batches:
        groups.setdefault(batch.group, []).append(batch)
    return list(groups.values())


def _spool(batches: list[LoggedBatch], *, tag: str) -> str:
    """Write one spool file (its name is unique: it becomes the batch's ingestion key)."""
    name = f"{tag}-{time.time_ns()}-{os.getpid()}-{threading.get_ident()}"
    if (remote := _remote()) is not None:
        key = f"{SPOOL_PREFIX}/{name}-{uuid.uuid4().hex[:8]}.arrow"
        remote.put(key, _arrow_file(batches))  # one upload: the object appears whole
        return key
    directory = spool_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.arrow"
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(_arrow_file(batches))
    partial.rename(path)  # a reader never sees half a file
    return str(path)


def _pending() -> bool:
    """Whether any spool file waits (a new gateway announces what an earlier one left)."""
    if (remote := _remote()) is not None:
        return next(_spool_keys(remote), None) is not None
    return next(spool_dir().glob(_SPOOL_GLOB), None) is not None


def _spool_keys(remote: storage.Storage):
    for found in remote.scan(SPOOL_PREFIX):
        name = found.key.rpartition("/")[2]
        if name.startswith("spool-") and name.endswith(".arrow"):
            yield found.key


def spilled_predictions() -> int:
    """Predictions waiting in the spool (written by gateways, not yet ingested)."""
    if (remote := _remote()) is not None:
        total = 0
        for key in _spool_keys(remote):
            with contextlib.suppress(FileNotFoundError):  # ingested meanwhile
                total += _arrow_of(remote.read_bytes(key)).num_rows
        return total
    directory = spool_dir()
    names = [*directory.glob(_SPOOL_GLOB), *directory.glob("spool-*.arrow.claimed-*")]
    return sum(_read_arrow(p).num_rows for p in names)


def _arrow_of(data: bytes):
    import pyarrow as pa

    return pa.ipc.open_file(pa.py_buffer(data)).read_all()


# --- the worker's side ------------------------------------------------------------------------


@dataclass
class _Claimed:
    spool_name: str  # where it goes back to (a local path), or its key on an object store
    path: str  # where it is while claimed
    rows: int
    key: tuple  # (model, version, column names)
    model_name: str
    version: str
    table: Any = field(default=None, repr=False)  # read once when claimed from an object store
    lease: str = ""  # the cache key of an object's lease

    @property
    def name(self) -> str:
        """The spool file's name: its ``batch_keys`` entry."""
        return self.spool_name.rpartition("/")[2]

    def read(self):
        return self.table if self.table is not None else _read_arrow(Path(self.path))


def ingest_spooled() -> int:
    """Ingest the spool into the monitoring store; returns the predictions ingested.

    Raises on a failure of the store (the claimed files are back in the spool): retry later.
    """
    ingest = _current().ingest  # monitoring.ingest.predictions_ingest unless one is given

    _reclaim_stale()
    done = 0
    while True:
        claimed = _claim(int(setting("SERVING_LOG_INGEST_MAX_ROWS")))
        if not claimed:
            return done
        done += _ingest_claimed(ingest, claimed)


def _claim(max_rows: int) -> list[_Claimed]:
    """Claim spool files, oldest first, until about ``max_rows`` predictions."""
    if (remote := _remote()) is not None:
        return _claim_objects(remote, max_rows)
    directory = spool_dir()
    if not directory.is_dir():
        return []
    claimed: list[_Claimed] = []
    rows = 0
    for path in sorted(directory.glob(_SPOOL_GLOB)):
        target = path.with_name(f"{path.name}.claimed-{int(time.time())}")
        try:
            path.rename(target)
        except OSError:
            continue  # another worker claimed it
        try:
            data = _read_arrow(target)
            schema = data.schema
            info = schema.metadata or {}
            model_name, version = info[_MODEL_KEY].decode(), info[_VERSION_KEY].decode()
        except Exception as exc:  # not a spool file we can read: keep it aside
            logger.error("unreadable prediction spool file %s: %s", path, exc)
            target.rename(path.with_name(path.name.replace("spool-", "refused-", 1)))
            continue
        key = (model_name, version, tuple(schema.names))
        claimed.append(_Claimed(str(path), str(target), data.num_rows, key, model_name, version))
        rows += data.num_rows
        if rows >= max_rows:
            break
    return claimed


def _claim_objects(remote: storage.Storage, max_rows: int) -> list[_Claimed]:
    """Lease spool objects, oldest first (their names sort by time), until ``max_rows``."""
    from django.core.cache import cache

    claimed: list[_Claimed] = []
    rows = 0
    lease_seconds = float(setting("SERVING_LOG_CLAIM_SECONDS"))
    for object_key in sorted(_spool_keys(remote), key=lambda k: k.rpartition("/")[2]):
        lease = f"serving.spool.lease:{remote.url}/{object_key}"
        if not cache.add(lease, os.getpid(), timeout=lease_seconds):
            continue  # another worker holds it
        try:
            data = _arrow_of(remote.read_bytes(object_key))
            info = data.schema.metadata or {}
            model_name, version = info[_MODEL_KEY].decode(), info[_VERSION_KEY].decode()
        except FileNotFoundError:  # ingested and deleted since the listing
            cache.delete(lease)
            continue
        except Exception as exc:  # not a spool file we can read: keep it aside
            logger.error("unreadable prediction spool object %s: %s", object_key, exc)
            _set_aside(remote, object_key)
            cache.delete(lease)
            continue
        key = (model_name, version, tuple(data.schema.names))
        claimed.append(
            _Claimed(object_key, object_key, data.num_rows, key, model_name, version, data, lease)
        )
        rows += data.num_rows
        if rows >= max_rows:
            break
    return claimed


def _set_aside(remote: storage.Storage, object_key: str) -> str:
    """Copy an object to the refused prefix, then delete it (no rename on an object store)."""
    name = object_key.rpartition("/")[2].replace("spool-", "refused-", 1)
    target = f"{REFUSED_PREFIX}/{name}"
    remote.put(target, remote.read_bytes(object_key))
    remote.delete([object_key])
    return target


def _release(item: _Claimed) -> None:
    """Give a claimed file back to the spool (the ingestion failed: a retry takes it again)."""
    if item.lease:
        from django.core.cache import cache

        cache.delete(item.lease)
        return
    with contextlib.suppress(FileNotFoundError):
        Path(item.path).rename(item.spool_name)


def _done(item: _Claimed) -> None:
    """Remove a spool file whose predictions are committed."""
    if item.lease:
        from django.core.cache import cache

        remote = storage.current()
        if remote.delete([item.path]):
            raise OSError(f"could not delete the ingested spool object {item.path}")
        cache.delete(item.lease)
        return
    Path(item.path).unlink()


def _ingest_claimed(ingest, claimed: list[_Claimed]) -> int:
    groups: dict[tuple, list[_Claimed]] = {}
    for item in claimed:
        groups.setdefault(item.key, []).append(item)
    try:
        return sum(_ingest_group(ingest, group) for group in groups.values())
    except Exception:
        for item in claimed:  # what is still claimed goes back to the spool for the retry
            _release(item)
        raise


def _ingest_group(ingest, group: list[_Claimed]) -> int:
    """One ``predictions_ingest`` call for files of one model, version and column set."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    first = group[0]
    merged = pa.concat_tables(item.read() for item in group)
    sink = io.BytesIO()
    pq.write_table(merged, sink, compression="none")  # the store writes its own files
    data = sink.getvalue()
    try:
        _call(ingest, first.model_name, first.version, data, [i.name for i in group])
    except Exception as exc:
        if not _permanent(exc):
            raise
        if len(group) == 1:
            _refuse(first, exc)
            return 0
        return sum(_ingest_group(ingest, [item]) for item in group)  # find the refused file
    for item in group:
        _done(item)
    return sum(item.rows for item in group)


def _refuse(item: _Claimed, exc: Exception) -> None:
    if item.lease:
        refused = _set_aside(storage.current(), item.path)
        _release(item)
    else:
        spool_name = Path(item.spool_name)
        refused = spool_name.with_name(spool_name.name.replace("spool-", "refused-", 1))
        Path(item.path).rename(refused)
    logger.error(
        "the monitoring store refused %d predictions of %s %s (%s); kept in %s",
        item.rows,
        item.model_name,
        item.version,
        exc,
        refused,
    )


def _reclaim_stale() -> None:
    """Put back files claimed by a worker that died before it finished.

    Also removes old ``.partial`` files: halves of spool files whose gateway was killed while
    writing them (a clean exit always finishes its file). On an object store there is nothing
    to do: leases expire, and an object is never half-written.
    """
    if _remote() is not None:
        return
    directory = spool_dir()
    if not directory.is_dir():
        return
    limit = time.time() - float(setting("SERVING_LOG_CLAIM_SECONDS"))
    for path in directory.glob("spool-*.arrow.claimed-*"):
        name, _, stamp = path.name.rpartition(".claimed-")
        if stamp.isdigit() and int(stamp) < limit:
            with contextlib.suppress(OSError):
                path.rename(path.with_name(name))
    for path in directory.glob("spool-*.arrow.partial"):
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < limit:
                path.unlink()


def _call(ingest, model_name: str, version: str, data: bytes, spool_names: list[str]) -> None:
    from governance.audit import Actor

    ingest(
        model_name=model_name,
        version=version,
        upload=io.BytesIO(data),
        actor=Actor.system("serving gateway"),
        source=SOURCE,
        batch_keys=spool_names,  # a file committed but not deleted is recognised, not re-stored
    )


def _permanent(exc: Exception) -> bool:
    from platform_core.errors import InvalidInput, NotFound

    return isinstance(exc, InvalidInput | NotFound)


def clear() -> None:
    """Drop everything buffered (tests; ``gateway.reset`` gives a fresh log)."""
    state = _current().log
    with state.lock:
        state.buffer, state.count = [], 0
    state.announce_pending, state.announced_at = True, float("-inf")
