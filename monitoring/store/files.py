"""Writing partition files and removing them: the store's half of ``governance.filestore``."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from django.conf import settings
from django.utils import timezone

from governance import filestore

from ..columns import (
    is_feature,
    is_sensitive,
)
from ..models import DataBatch

logger = logging.getLogger(__name__)
DATA_DIR = "monitoring"
COMPRESSION = "lz4"  # decompresses at memory speed; random floats do not compress anyway
ID_INDEX_SUFFIX = ".ids.npy"


def root() -> Path:
    return Path(settings.VAR_DIR) / DATA_DIR


def resolve(path: str) -> Path:
    """The file behind ``DataBatch.path`` (stored relative to ``VAR_DIR``)."""
    return Path(settings.VAR_DIR) / path


@dataclass(frozen=True)
class StoredFile:
    """A file written and renamed into place, waiting for its ``DataBatch`` row."""

    path: str  # relative to VAR_DIR
    day: date
    rows: int
    digest: str  # "sha256:<hex>" of the file's bytes
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


def _partition(model_name: str, kind: str, day: date) -> Path:
    return root() / model_name / kind / f"day={day.isoformat()}"


def write_file(
    table: pa.Table,
    *,
    model_name: str,
    kind: str,
    day: date,
    id_digests: np.ndarray | None = None,
) -> StoredFile:
    """Write ``table`` as one Parquet partition file (``filestore.write_atomically``).

    With ``id_digests`` (the rows' ``id_digests``), the file's id index is written beside it.
    """
    directory = _partition(model_name, kind, day)
    stem = uuid.uuid4().hex
    target = directory / f"{stem}.parquet"

    def write(tmp: Path) -> None:
        pq.write_table(
            table,
            tmp,
            compression=COMPRESSION,
            use_dictionary=_dictionary_columns(table.schema),
            row_group_size=1 << 20,
        )

    digest = filestore.write_atomically(target, write, digest=True)
    index = ""
    if id_digests is not None:
        try:
            index = write_id_index(np.sort(id_digests), directory=directory, stem=stem)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
    return StoredFile(
        path=filestore.relative(target),
        day=day,
        rows=table.num_rows,
        digest=f"sha256:{digest}",
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


def write_id_index(sorted_digests: np.ndarray, *, directory: Path, stem: str) -> str:
    target = directory / f"{stem}{ID_INDEX_SUFFIX}"

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(sorted_digests, dtype="<i8"))

    filestore.write_atomically(target, write)
    return filestore.relative(target)


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
    """Those of ``paths`` a manifest row points to, as its file or its id index."""
    batches = DataBatch.objects.filter(path__in=paths).values_list("path", flat=True)
    indexes = DataBatch.objects.filter(id_index__in=paths).values_list("id_index", flat=True)
    return {*batches, *indexes}


def delete_files(paths: Iterable[str]) -> None:
    """Delete files whose manifest rows are gone (after a purge commits), and empty day dirs."""
    directories = set()
    for path in paths:
        file = resolve(path)
        try:
            file.unlink(missing_ok=True)
        except OSError:  # the sweeper retries
            logger.warning("could not delete %s", file, exc_info=True)
        directories.add(file.parent)
    for directory in directories:
        with contextlib.suppress(OSError):  # not empty, or gone
            directory.rmdir()


def sweep_orphans(*, older_than: datetime | None = None) -> list[str]:
    """Delete partition files that no ``DataBatch`` points to, last modified before ``older_than``.

    ``older_than`` defaults to now minus ``settings.ORPHAN_GRACE``, so a file whose request is
    still committing is left alone. Stale temporary files go too, and so do empty day
    directories. Returns the removed paths (relative to ``VAR_DIR``).
    """
    if older_than is None:
        older_than = timezone.now() - settings.ORPHAN_GRACE
    return filestore.sweep_unreferenced(
        root(),
        cutoff=older_than.timestamp(),
        referenced=referenced,
        prune=lambda directory: directory.name.startswith("day="),
    )
