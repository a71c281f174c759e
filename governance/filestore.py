"""Data outside the database: the file first, then the row that points at it (architecture §5).

Used by the evidence store (``governance.evidence``) and the monitoring store
(``monitoring.store``). A file is written under a temporary name beside its final one, fsynced and
renamed into place (``write_atomically``); only then does the row that refers to it commit
(``commit_after_files``). A request that fails after writing removes its files unless a committed
row refers to them (``discard_unreferenced``); a crash in between leaves an orphan that
``sweep_unreferenced`` removes once it is older than a grace period, so a file whose request is
still committing is left alone. Each store says which paths its rows refer to (``Referenced``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)

T = TypeVar("T")
Referenced = Callable[[Sequence[str]], set[str]]
"""Given paths relative to ``VAR_DIR``, those that some committed row refers to."""


def var_dir() -> Path:
    return Path(settings.VAR_DIR)


def relative(path: Path) -> str:
    """How rows store a file: its path relative to ``VAR_DIR``, with forward slashes."""
    return path.relative_to(var_dir()).as_posix()


def write_atomically(target: Path, write: Callable[[Path], None], *, digest: bool = False) -> str:
    """Write ``target`` whole or not at all; returns the SHA-256 hex of its bytes if ``digest``.

    ``write`` fills a temporary file beside ``target``, which is fsynced and renamed onto it; the
    temporary file never outlives the call. The directory is created (again, if a sweeper removed
    it as empty meanwhile).
    """
    directory = target.parent
    tmp = directory / f".{target.name}.{uuid.uuid4().hex}.tmp"
    hasher = hashlib.sha256() if digest else None
    try:
        for attempt in range(2):
            directory.mkdir(parents=True, exist_ok=True)
            try:
                write(tmp)
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


def discard_unreferenced(paths: Iterable[str], *, referenced: Referenced) -> None:
    """Remove files written for a request that then failed, unless a row refers to them.

    When the rows cannot be read (e.g. inside a broken transaction) the files are left to the
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
    for path in paths:
        if path not in kept:
            (var_dir() / path).unlink(missing_ok=True)


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
    base: Path,
    *,
    cutoff: float,
    referenced: Referenced,
    prune: Callable[[Path], bool] = lambda directory: False,
) -> list[str]:
    """Delete files under ``base`` modified before ``cutoff`` (epoch seconds) no row refers to.

    Stale temporary files go too. Then every directory below ``base`` that ``prune`` accepts is
    removed once it is empty and older than ``cutoff``. Returns the removed files (relative to
    ``VAR_DIR``).
    """
    if not base.is_dir():
        return []
    removed: list[str] = []
    for directory, subdirs, files in os.walk(base, topdown=False):
        here = Path(directory)
        candidates = {}
        for name in files:
            file = here / name
            try:
                if file.stat().st_mtime < cutoff:
                    candidates[relative(file)] = file
            except FileNotFoundError:
                continue
        if candidates:
            kept = referenced(list(candidates))
            for path, file in candidates.items():
                if path not in kept:
                    file.unlink(missing_ok=True)
                    removed.append(path)
        if here != base and not subdirs and prune(here):
            try:
                if not any(here.iterdir()) and here.stat().st_mtime < cutoff:
                    here.rmdir()
            except OSError:
                pass
    return removed
