"""Writing partition files and removing them: the store's half of ``governance.filestore``."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import posixpath
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from django.conf import settings
from django.utils import timezone

from governance import filestore
from platform_core import storage

from ..columns import (
    is_feature,
    is_sensitive,
)
from ..models import DataBatch, RetiredFiles

logger = logging.getLogger(__name__)
DATA_DIR = "monitoring"
COMPRESSION = "lz4"  # decompresses at memory speed; random floats do not compress anyway
ID_INDEX_SUFFIX = ".ids.npy"
# Rows per Parquet row group: a window's edge day reads only the groups its time range overlaps
# (rows are sorted by time), which matters most on an object store, where a read is a request.
ROW_GROUP_SIZE = 1 << 18
READ_CONCURRENCY = 8  # files read at once from an object store
T = TypeVar("T")
R = TypeVar("R")


def root() -> Path:
    """The store's directory on this host (local storage only; benches that write files)."""
    return storage.current().local_path(DATA_DIR)


def resolve(path: str) -> Path:
    """The local file behind ``DataBatch.path`` (local storage only: readers use the
    ``storage`` functions below, which work on either backend)."""
    return storage.current().local_path(path)


def parquet_file(path: str, size: int = 0) -> pq.ParquetFile | storage.RemoteParquet:
    """The Parquet file behind a manifest key: its footer only, columns read on demand.
    ``size``: its bytes (``DataBatch.size``; 0 when not recorded), which spares an object
    store a request."""
    return storage.current().parquet_file(path, size=size or None)


def read_table(path: str, *, columns: list[str] | None = None, size: int = 0) -> pa.Table:
    return storage.current().read_parquet(path, columns=columns, size=size or None)


def read_schema(path: str, size: int = 0) -> pa.Schema:
    return storage.current().read_schema(path, size=size or None)


def read_each(items: Sequence[T], read: Callable[[T], R]) -> list[R]:
    """``read`` of each item, in order; on an object store several at once (a read is a few
    requests, each mostly waiting), on a local disk one after the other."""
    if len(items) < 2 or not storage.current().remote:
        return [read(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(READ_CONCURRENCY, len(items))) as pool:
        return list(pool.map(read, items))


def load_id_index(path: str) -> np.ndarray:
    """A sorted id index (memory-mapped on a local disk, one GET from an object store)."""
    return storage.current().load_npy(path)


@dataclass(frozen=True)
class StoredFile:
    """An object written under its final key, waiting for its ``DataBatch`` row."""

    path: str  # the storage key (relative to VAR_DIR on a local disk)
    day: date
    rows: int
    digest: str  # "sha256:<hex>" of the file's bytes
    size: int  # its bytes (``DataBatch.size``)
    id_index: str = ""  # predictions: its sorted id digests (``DataBatch.id_index``)

    @property
    def paths(self) -> list[str]:
        return [self.path, self.id_index] if self.id_index else [self.path]


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """Low-cardinality columns worth dictionary encoding (never floats or ids)."""
    return [
        f.name
        for f in schema
        if f.name in ("prediction", "version", "label")
        or is_sensitive(f.name)
        or (is_feature(f.name) and pa.types.is_string(f.type))
    ]


def _partition(model_name: str, kind: str, day: date) -> str:
    return f"{DATA_DIR}/{model_name}/{kind}/day={day.isoformat()}"


def write_file(
    table: pa.Table,
    *,
    model_name: str,
    kind: str,
    day: date,
    id_digests: np.ndarray | None = None,
) -> StoredFile:
    """Write ``table`` as one Parquet partition file under a new unique key (``filestore``).

    With ``id_digests`` (the rows' ``id_digests``), the file's id index is written beside it.
    """
    directory = _partition(model_name, kind, day)
    stem = uuid.uuid4().hex
    target = f"{directory}/{stem}.parquet"
    written = [0]

    def write(sink) -> None:
        pq.write_table(
            table,
            sink,
            compression=COMPRESSION,
            use_dictionary=_dictionary_columns(table.schema),
            row_group_size=ROW_GROUP_SIZE,
        )
        # the size the manifest row records: a temporary file's (local) or the upload's
        written[0] = os.path.getsize(sink) if isinstance(sink, str) else sink.tell()

    digest = filestore.write(target, write, digest=True)
    index = ""
    if id_digests is not None:
        try:
            index = write_id_index(np.sort(id_digests), directory=directory, stem=stem)
        except BaseException:
            storage.current().delete([target])
            raise
    return StoredFile(
        path=target,
        day=day,
        rows=table.num_rows,
        digest=f"sha256:{digest}",
        size=written[0],
        id_index=index,
    )


def write_by_day(
    table: pa.Table,
    *,
    model_name: str,
    kind: str,
    days: np.ndarray,
    id_digests: np.ndarray | None = None,
) -> list[StoredFile]:
    """One file per distinct UTC day; ``days`` (datetime64[D]) gives each row's day."""
    files: list[StoredFile] = []
    try:
        for day in np.unique(days):
            rows = np.flatnonzero(days == day)
            if rows[-1] - rows[0] + 1 == rows.size:  # contiguous, as in a table sorted by time
                part = table.slice(int(rows[0]), int(rows.size))
                digests = None if id_digests is None else id_digests[rows[0] : rows[-1] + 1]
            else:
                part = table.take(pa.array(rows))
                digests = None if id_digests is None else id_digests[rows]
            files.append(
                write_file(
                    part, model_name=model_name, kind=kind, day=day.item(), id_digests=digests
                )
            )
    except BaseException:
        discard(p for f in files for p in f.paths)
        raise
    return files


def write_id_index(sorted_digests: np.ndarray, *, directory: str, stem: str) -> str:
    """Write an id index (``.npy`` of sorted int64 digests) beside its files; returns its key."""
    target = f"{directory}/{stem}{ID_INDEX_SUFFIX}"
    sink = io.BytesIO()
    np.save(sink, np.ascontiguousarray(sorted_digests, dtype="<i8"))
    filestore.write(target, sink.getbuffer())
    return target


def partition_of(path: str) -> str:
    """The partition (``.../day=YYYY-MM-DD``) a key is filed under."""
    return posixpath.dirname(path)


def combined_digest(files: Sequence[StoredFile]) -> str:
    """One digest for a request's files (their digests in day order)."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: (f.day, f.path)):
        h.update(f"{f.day.isoformat()}:{f.digest}\n".encode())
    return f"sha256:{h.hexdigest()}"


def discard(paths: Iterable[str]) -> None:
    """Remove files written for a request that then failed (unless a manifest row has them)."""
    filestore.discard_unreferenced(paths, referenced=referenced)


def referenced(paths: Sequence[str]) -> set[str]:
    """Those of ``paths`` a manifest row points to, as its file or its id index, or that were
    retired less than ``ORPHAN_GRACE`` ago (``retire``)."""
    batches = DataBatch.objects.filter(path__in=paths).values_list("path", flat=True)
    indexes = DataBatch.objects.filter(id_index__in=paths).values_list("id_index", flat=True)
    retired: set[str] = set()
    directories = {partition_of(p) for p in paths}
    for listed in RetiredFiles.objects.filter(partition__in=directories).values_list(
        "paths", flat=True
    ):
        retired.update(listed)
    return {*batches, *indexes, *(p for p in paths if p in retired)}


def retire(paths: Iterable[str]) -> None:
    """Keep objects whose manifest rows this transaction removes for ``ORPHAN_GRACE``: a reader
    that loaded those rows before the commit can still open them; the sweeper deletes them
    afterwards. One ``RetiredFiles`` row per directory."""
    by_directory: dict[str, list[str]] = {}
    for path in dict.fromkeys(paths):
        if path:
            by_directory.setdefault(partition_of(path), []).append(path)
    RetiredFiles.objects.bulk_create(
        RetiredFiles(partition=directory, paths=listed)
        for directory, listed in by_directory.items()
    )


def delete_files(paths: Iterable[str]) -> None:
    """Delete objects whose manifest rows are gone (after a purge commits); on a local disk
    the emptied day directories go too. A failure is logged: the sweeper retries."""
    paths = list(paths)
    store = storage.current()
    store.delete(paths)
    if isinstance(store, storage.LocalStorage):
        store.remove_empty_parents(paths)


def sweep_orphans(*, older_than: datetime | None = None) -> list[str]:
    """Delete partition objects that no ``DataBatch`` points to, written before ``older_than``
    (and retired before it, for a compacted partition's old files).

    ``older_than`` defaults to now minus ``settings.ORPHAN_GRACE``, so an object whose request
    is still committing is left alone. Stale temporary files go too, and so do empty day
    directories on a local disk. Returns the removed keys (paths relative to ``VAR_DIR``).
    """
    if older_than is None:
        older_than = timezone.now() - settings.ORPHAN_GRACE
    RetiredFiles.objects.filter(retired_at__lt=older_than).delete()  # their grace is over
    return filestore.sweep_unreferenced(
        DATA_DIR,
        cutoff=older_than.timestamp(),
        referenced=referenced,
        prune=lambda name: name.startswith("day="),
    )
