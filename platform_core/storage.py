"""Where the platform keeps data outside the database: a local directory or an object store.

Two backends behind one interface (docs/architecture.md, "Storage"):

``LocalStorage`` (the embedded default)
    ``settings.VAR_DIR`` on this host's disk, as before: a file is written under a temporary name
    beside its final one, fsynced and renamed into place; Parquet files are memory-mapped.
``ObjectStorage`` (``GOVERNANCE_STORAGE_URL=s3://bucket/prefix``)
    Any S3-compatible store (AWS S3, MinIO, Ceph RGW) through ``pyarrow.fs.S3FileSystem``; the
    endpoint and credentials come from the environment (``AWS_ENDPOINT_URL``,
    ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``). An object is written whole
    by one upload under its final, unique key (an object store has no rename: an object appears
    when its upload completes, never half-written), and reads fetch byte ranges: a Parquet
    file's footer, then only the column chunks asked for. Requests are the cost that counts
    (each waits a round trip, each is billed, and a store's request rate saturates first:
    docs/scaling.md): given the object's size (a manifest row records it) a Parquet read makes
    no request for it, a footer is fetched once per process, and the chunks a read needs come
    in as few ranged GETs as the gaps between them allow (``REQUEST_WORTH``).

Keys are relative POSIX paths (``monitoring/<model>/predictions/day=2026-01-05/<uuid>.parquet``):
the strings manifest rows store (``DataBatch.path``, ``Evaluation.data_path``), the same under
either backend. The rule both follow is ``governance.filestore``'s: write the object, then commit
the row that points at it; readers only open keys a committed row names, so no hot path lists a
directory (``scan`` is for the orphan sweepers and the prediction-log spool's worker).

``current()`` answers for the settings in force, so a test (or a process) that changes
``VAR_DIR`` or ``STORAGE_URL`` gets the matching backend; the S3 client is made once per process
and configuration (never inherited across a fork).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import os
import posixpath
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from django.conf import settings

logger = logging.getLogger(__name__)

Fill = Callable[[Any], None]
"""Writes an object's content to what it is given: a path (local) or a binary file object."""


class StorageError(RuntimeError):
    """The storage is misconfigured, or an operation only one backend offers was asked of the
    other."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    mtime: float  # epoch seconds of the last write
    size: int


def check_key(key: str) -> str:
    """A key is a normalised relative POSIX path: no ``..``, no leading slash, no backslash."""
    if (
        not key
        or key.startswith("/")
        or "\\" in key
        or posixpath.normpath(key) != key
        or key.split("/", 1)[0] == ".."
    ):
        raise StorageError(f"not a storage key: {key!r}")
    return key


def _sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


class Storage:
    """The interface both backends implement (see the module docstring)."""

    remote: bool = False
    url: str = ""

    def put(self, key: str, fill: Fill | bytes, *, digest: bool = False) -> str:
        """Write the object ``key`` whole or not at all; the SHA-256 hex of its bytes if
        ``digest`` (else ``""``)."""
        raise NotImplementedError

    def open_input(self, key: str):
        """A random-access ``pyarrow.NativeFile`` of the object; ``FileNotFoundError`` if none."""
        raise NotImplementedError

    def read_bytes(self, key: str) -> bytes:
        raise NotImplementedError

    def info(self, key: str) -> ObjectInfo | None:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        return self.info(key) is not None

    def touch(self, key: str) -> None:
        """Make an existing object look freshly written (the orphan sweepers' grace)."""
        raise NotImplementedError

    def delete(self, keys: Iterable[str]) -> list[str]:
        """Delete the objects (a missing one is not an error); returns those that could not be
        deleted (logged; the orphan sweeper retries)."""
        raise NotImplementedError

    def scan(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object under ``prefix`` (a listing: for sweepers, never a request's hot path)."""
        raise NotImplementedError

    def prune(self, prefix: str, *, keep: Callable[[str], bool], cutoff: float) -> None:
        """Remove empty directories under ``prefix`` older than ``cutoff`` that ``keep`` does
        not protect (a local disk's housekeeping; object stores have no directories)."""

    def local_path(self, key: str) -> Path:
        """The file behind ``key`` on this host: local storage only."""
        raise StorageError(f"{self.url} is not a local directory")

    # --- formats ------------------------------------------------------------------------------

    def parquet_file(self, key: str, *, size: int | None = None):
        """The Parquet object: ``schema_arrow``, ``metadata`` (its footer, read at once),
        ``read(columns)`` and ``read_row_groups(groups, columns)`` read column chunks on demand,
        as ``pyarrow.parquet.ParquetFile`` does. ``size``: its bytes, when a manifest row says
        (an object store then asks for nothing but the bytes read)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement parquet_file")

    def read_parquet(self, key: str, *, columns: list[str] | None = None, size: int | None = None):
        return self.parquet_file(key, size=size).read(columns=columns, use_threads=True)

    def read_schema(self, key: str, *, size: int | None = None):
        return self.parquet_file(key, size=size).schema_arrow

    def load_npy(self, key: str):
        """A ``.npy`` array (memory-mapped on a local disk)."""
        import numpy as np

        return np.load(io.BytesIO(self.read_bytes(key)), allow_pickle=False)


class LocalStorage(Storage):
    """``settings.VAR_DIR`` (or the directory given): temporary file, fsync, rename."""

    remote = False

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.url = self.root.as_uri() if self.root.is_absolute() else str(self.root)

    def local_path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, fill: Fill | bytes, *, digest: bool = False) -> str:
        target = self.local_path(key)
        directory = target.parent
        tmp = directory / f".{target.name}.{uuid.uuid4().hex}.tmp"
        hasher = hashlib.sha256() if digest else None
        try:
            for attempt in range(2):  # again if a sweeper removed the directory as empty
                directory.mkdir(parents=True, exist_ok=True)
                try:
                    if isinstance(fill, bytes | bytearray | memoryview):
                        tmp.write_bytes(fill)
                    else:
                        fill(str(tmp))
                    break
                except FileNotFoundError:
                    if attempt:
                        raise
            with open(tmp, "rb") as fh:
                if hasher is not None:
                    while chunk := fh.read(1 << 22):
                        hasher.update(chunk)
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return hasher.hexdigest() if hasher is not None else ""

    def open_input(self, key: str):
        import pyarrow as pa

        return pa.memory_map(str(self.local_path(key)))

    def parquet_file(self, key: str, *, size: int | None = None):
        import pyarrow.parquet as pq

        return pq.ParquetFile(str(self.local_path(key)), memory_map=True)

    def read_bytes(self, key: str) -> bytes:
        return self.local_path(key).read_bytes()

    def load_npy(self, key: str):
        import numpy as np

        return np.load(self.local_path(key), mmap_mode="r")

    def info(self, key: str) -> ObjectInfo | None:
        try:
            stat = self.local_path(key).stat()
        except FileNotFoundError:
            return None
        return ObjectInfo(key=key, mtime=stat.st_mtime, size=stat.st_size)

    def touch(self, key: str) -> None:
        self.local_path(key).touch()

    def delete(self, keys: Iterable[str]) -> list[str]:
        failed = []
        for key in keys:
            try:
                self.local_path(key).unlink(missing_ok=True)
            except OSError:
                logger.warning("could not delete %s", key, exc_info=True)
                failed.append(key)
        return failed

    def scan(self, prefix: str) -> Iterator[ObjectInfo]:
        base = self.local_path(prefix)
        if not base.is_dir():
            return
        for directory, _, files in os.walk(base):
            here = Path(directory)
            for name in files:
                file = here / name
                try:
                    stat = file.stat()
                except FileNotFoundError:
                    continue
                key = file.relative_to(self.root).as_posix()
                yield ObjectInfo(key=key, mtime=stat.st_mtime, size=stat.st_size)

    def prune(self, prefix: str, *, keep: Callable[[str], bool], cutoff: float) -> None:
        base = self.local_path(prefix)
        if not base.is_dir():
            return
        for directory, subdirs, _ in os.walk(base, topdown=False):
            here = Path(directory)
            if here == base or subdirs or keep(here.name):
                continue
            with contextlib.suppress(OSError):  # not empty, or gone
                if not any(here.iterdir()) and here.stat().st_mtime < cutoff:
                    here.rmdir()

    def remove_empty_parents(self, keys: Iterable[str]) -> None:
        """Remove the directories of ``keys`` once empty (after their files were deleted)."""
        for directory in {self.local_path(k).parent for k in keys}:
            with contextlib.suppress(OSError):  # not empty, or gone
                directory.rmdir()


class ObjectStorage(Storage):
    """``s3://bucket/prefix`` through ``pyarrow.fs.S3FileSystem``."""

    remote = True

    def __init__(self, url: str, fs) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise StorageError(f"GOVERNANCE_STORAGE_URL must look like s3://bucket/prefix: {url!r}")
        self.url = url
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.base = "/".join(p for p in (self.bucket, self.prefix) if p)
        self.fs = fs

    def path(self, key: str) -> str:
        return f"{self.base}/{check_key(key)}"

    def put(self, key: str, fill: Fill | bytes, *, digest: bool = False) -> str:
        if isinstance(fill, bytes | bytearray | memoryview):
            data = memoryview(fill)
        else:
            sink = io.BytesIO()
            fill(sink)
            data = sink.getbuffer()
        # One upload under the final key: the object appears complete or not at all.
        with self.fs.open_output_stream(self.path(key), metadata={}) as out:
            out.write(data)
        return _sha256(data) if digest else ""

    def open_input(self, key: str):
        return self.fs.open_input_file(self.path(key))

    def parquet_file(self, key: str, *, size: int | None = None) -> RemoteParquet:
        # An object under a key is never rewritten with other content (keys are unique, or
        # content-addressed), so what was read of it (its size and footer) is kept for the
        # process: a worker's next read of it fetches only column chunks.
        name = (self.base, key)
        found = _opened.get(name)
        if found is None:
            found = RemoteParquet(self.fs, self.path(key), size or None)
            _opened.put(name, found)
        return found

    def read_bytes(self, key: str) -> bytes:
        with self.fs.open_input_stream(self.path(key)) as stream:
            return stream.read()

    def info(self, key: str) -> ObjectInfo | None:
        from pyarrow import fs as pafs

        found = self.fs.get_file_info(self.path(key))
        if found.type != pafs.FileType.File:
            return None
        return ObjectInfo(key=key, mtime=_epoch(found.mtime), size=found.size or 0)

    def touch(self, key: str) -> None:
        """Refresh an object's time: objects are immutable, so it is written again."""
        self.put(key, self.read_bytes(key))

    def delete(self, keys: Iterable[str]) -> list[str]:
        failed = []
        for key in keys:
            try:
                self.fs.delete_file(self.path(key))
            except FileNotFoundError:
                continue
            except OSError:
                logger.warning("could not delete %s from %s", key, self.url, exc_info=True)
                failed.append(key)
        return failed

    def scan(self, prefix: str) -> Iterator[ObjectInfo]:
        from pyarrow import fs as pafs

        selector = pafs.FileSelector(self.path(prefix), recursive=True, allow_not_found=True)
        cut = len(self.base) + 1
        for found in self.fs.get_file_info(selector):
            if found.type == pafs.FileType.File:
                yield ObjectInfo(
                    key=found.path[cut:], mtime=_epoch(found.mtime), size=found.size or 0
                )


def _epoch(mtime) -> float:
    return mtime.timestamp() if mtime is not None else 0.0


# What one request is worth in bytes: Arrow's model of a network link (time to first byte x
# bandwidth), here S3 from a host in its region (tens of ms to the first byte, ~100 MiB/s a
# connection). Column chunks less than ``hole_size_limit`` apart (2 MiB) come in one ranged GET,
# the bytes between them being cheaper than another request; one GET fetches at most
# ``range_size_limit`` (18 MiB), so a large read still goes in parallel.
REQUEST_WORTH = {"time_to_first_byte_millis": 20, "transfer_bandwidth_mib_per_sec": 100}
SCAN_BATCH_ROWS = 1 << 20  # rows per record batch of a read: few, large chunks


@functools.cache
def _parquet_format():
    import pyarrow as pa
    import pyarrow.dataset as ds

    cache = pa.CacheOptions.from_network_metrics(**REQUEST_WORTH)
    options = ds.ParquetFragmentScanOptions(pre_buffer=True, cache_options=cache)
    return ds.ParquetFileFormat(default_fragment_scan_options=options)


class RemoteParquet:
    """A Parquet object of an object store, read through a dataset fragment rather than a
    ``ParquetFile``: a fragment takes the object's size (``pyarrow.fs.FileInfo``), so opening
    it sends no HEAD, and keeps its footer once read; a read pre-buffers the chunks it needs,
    coalesced (``REQUEST_WORTH``). Thread-safe: the window's files are read several at once."""

    def __init__(self, fs, path: str, size: int | None) -> None:
        if size is None:  # not recorded: one HEAD, once (a fragment without it asks per read)
            from pyarrow import fs as pafs

            found = fs.get_file_info(path)
            if found.type != pafs.FileType.File:
                raise FileNotFoundError(path)
            size = found.size
        self.fragment = _parquet_format().make_fragment(path, filesystem=fs, file_size=size)
        self.lock = threading.Lock()
        self.ready = False

    def _complete(self):
        """The fragment with its footer: one ranged GET the first time (none after)."""
        if not self.ready:
            with self.lock:
                if not self.ready:
                    self.fragment.ensure_complete_metadata()
                    self.ready = True
        return self.fragment

    @property
    def metadata(self):
        return self._complete().metadata

    @property
    def schema_arrow(self):
        return self._complete().physical_schema

    def read(self, columns: list[str] | None = None, use_threads: bool = True):
        return self._scan(self._complete(), columns, use_threads)

    def read_row_groups(
        self, row_groups: list[int], columns: list[str] | None = None, use_threads: bool = True
    ):
        return self._scan(self._complete().subset(row_group_ids=row_groups), columns, use_threads)

    @staticmethod
    def _scan(fragment, columns, use_threads: bool):
        return fragment.to_table(
            columns=columns, use_threads=use_threads, batch_size=SCAN_BATCH_ROWS
        )


class _Opened:
    """A small, thread-safe LRU of the Parquet objects read, by (store, key); a forked child
    starts empty (a fragment holds its parent's S3 client)."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self.items: OrderedDict[tuple[str, str], RemoteParquet] = OrderedDict()
        self.lock = threading.Lock()
        self.pid = os.getpid()

    def get(self, name: tuple[str, str]) -> RemoteParquet | None:
        with self.lock:
            if self.pid != os.getpid():
                self.items.clear()
                self.pid = os.getpid()
            found = self.items.get(name)
            if found is not None:
                self.items.move_to_end(name)
            return found

    def put(self, name: tuple[str, str], opened: RemoteParquet) -> None:
        with self.lock:
            self.items[name] = opened
            while len(self.items) > self.size:
                self.items.popitem(last=False)

    def clear(self) -> None:
        with self.lock:
            self.items.clear()


_opened = _Opened()


# --- configuration --------------------------------------------------------------------------

_clients: dict[tuple, Any] = {}
_clients_lock = threading.Lock()


def s3_options() -> dict[str, Any]:
    """``pyarrow.fs.S3FileSystem`` arguments from settings (which read the AWS_* environment)."""
    options: dict[str, Any] = {
        "region": getattr(settings, "STORAGE_S3_REGION", "") or "us-east-1",
        "connect_timeout": 5,
        "request_timeout": 30,
    }
    endpoint = getattr(settings, "STORAGE_S3_ENDPOINT", "")
    if endpoint:
        parsed = urlparse(endpoint)
        options["endpoint_override"] = parsed.netloc or parsed.path
        options["scheme"] = parsed.scheme or "https"
    key = getattr(settings, "STORAGE_S3_ACCESS_KEY", "")
    secret = getattr(settings, "STORAGE_S3_SECRET_KEY", "")
    if key and secret:
        options["access_key"], options["secret_key"] = key, secret
    return options


def _client(options: dict[str, Any]):
    """One ``S3FileSystem`` per process and configuration (thread-safe; never used after a
    fork, whose child makes its own)."""
    from pyarrow import fs as pafs

    signature = (os.getpid(), tuple(sorted(options.items())))
    with _clients_lock:
        client = _clients.get(signature)
        if client is None:
            client = _clients[signature] = pafs.S3FileSystem(**options)
        return client


def current() -> Storage:
    """The storage the settings in force name: ``STORAGE_URL`` if set, else ``VAR_DIR``."""
    url = getattr(settings, "STORAGE_URL", "") or ""
    if not url:
        return LocalStorage(Path(settings.VAR_DIR))
    if url.startswith("file://"):
        return LocalStorage(Path(urlparse(url).path))
    if url.startswith("s3://"):
        return ObjectStorage(url, _client(s3_options()))
    raise StorageError(
        f"GOVERNANCE_STORAGE_URL must be s3://bucket/prefix or file:///path, not {url!r}"
    )


def forget_cached() -> None:
    """Drop what this process keeps of the objects it read (tests, and benches: a cold
    worker)."""
    _opened.clear()
