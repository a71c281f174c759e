"""Data outside the database: the object first, then the row that points at it (architecture §5).

Used by the evidence store (``governance.evidence``) and the monitoring store
(``monitoring.store``), over ``platform_core.storage`` (a local directory or an S3-compatible
object store). An object is written whole under its final, unique key (``write``: on a local
disk a temporary file, fsynced and renamed; on an object store one upload, which appears complete
or not at all); only then does the row that refers to it commit (``commit_after_files``). A
request that fails after writing removes its objects unless a committed row refers to them
(``discard_unreferenced``); a crash in between leaves an orphan that ``sweep_unreferenced``
removes once it is older than a grace period, so an object whose request is still committing is
left alone. Each store says which keys its rows refer to (``Referenced``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from django.db import transaction

from platform_core import storage

logger = logging.getLogger(__name__)

T = TypeVar("T")
Referenced = Callable[[Sequence[str]], set[str]]
"""Given storage keys (paths relative to ``VAR_DIR`` on a local disk), those that some committed
row refers to."""


def write(key: str, fill: storage.Fill | bytes, *, digest: bool = False) -> str:
    """Write the object ``key`` whole or not at all; returns the SHA-256 hex of its bytes if
    ``digest``. ``fill`` writes the content to what it is given (a path or a binary file)."""
    return storage.current().put(key, fill, digest=digest)


def discard_unreferenced(paths: Iterable[str], *, referenced: Referenced) -> None:
    """Remove objects written for a request that then failed, unless a row refers to them.

    When the rows cannot be read (e.g. inside a broken transaction) the objects are left to the
    sweeper.
    """
    paths = list(paths)
    if not paths:
        return
    try:
        kept = referenced(paths)
    except Exception:
        logger.warning("could not check files to discard; the orphan sweeper will", exc_info=True)
        return
    storage.current().delete(p for p in paths if p not in kept)


def commit_after_files(
    paths: Sequence[str], create_rows: Callable[[], T], *, referenced: Referenced
) -> T:
    """Run ``create_rows`` in one transaction; if it fails, discard ``paths`` (already written)."""
    try:
        with transaction.atomic():
            return create_rows()
    except BaseException:
        try:
            discard_unreferenced(paths, referenced=referenced)
        except Exception:  # the orphan sweeper removes them later
            logger.warning("could not discard written files", exc_info=True)
        raise


def sweep_unreferenced(
    prefix: str,
    *,
    cutoff: float,
    referenced: Referenced,
    prune: Callable[[str], bool] = lambda name: False,
    batch: int = 1000,
) -> list[str]:
    """Delete objects under ``prefix`` written before ``cutoff`` (epoch seconds) that no row
    refers to; returns their keys.

    Stale temporary files go too. On a local disk, empty directories under ``prefix`` whose name
    ``prune`` accepts are removed once older than ``cutoff``. This lists the prefix: it is the
    periodic sweeper, never a request's path.
    """
    store = storage.current()
    removed: list[str] = []
    candidates: list[str] = []

    def settle() -> None:
        kept = referenced(candidates)
        gone = [key for key in candidates if key not in kept]
        failed = set(store.delete(gone))
        removed.extend(key for key in gone if key not in failed)
        candidates.clear()

    for found in store.scan(prefix):
        if found.mtime < cutoff:
            candidates.append(found.key)
            if len(candidates) >= batch:
                settle()
    if candidates:
        settle()
    store.prune(prefix, keep=lambda name: not prune(name), cutoff=cutoff)
    return removed
