"""What the shadow scoring did per staging version and stay in staging, kept on disk.

The shadow thread counts, per staging version, the instances it scored (``scored``), those that
did not carry all the version's features (``not_carried``: a MAJOR that needs features the live
version does not use) and those whose scoring raised (``failed``). The background flusher writes
each process's running totals, when they changed, to
``VAR_DIR/serving/shadow-counts/<version id>-<stay>/<process>.json`` beside the prediction spool
(which the workers read too), under a temporary name, then renamed. ``stay_totals`` sums them for
the shadow evaluation, which so tells "no request carried the new features" from "the shadow
failed". A stay is the time the version entered staging (epoch microseconds): a version staged
again starts from zero. ``sweep`` removes the counts of stays that are over.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)
KINDS = ("scored", "not_carried", "failed")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Counts:
    """One gateway's totals per (model, version, id, stay); written to one file per gateway."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int, int], dict[str, int]] = {}
        self.dirty: set[tuple[str, str, int, int]] = set()
        self.lock = threading.Lock()
        self.file_name = f"{os.getpid()}-{time.time_ns()}.json"  # (pid, start nonce)


def _current():
    from .process import current

    return current()


def stay_key(entered: datetime) -> int:
    """A stay in staging as an exact integer (epoch microseconds of ``stage_entered_at``)."""
    return (entered - _EPOCH) // timedelta(microseconds=1)


def add(model_name: str, ref, **counts: int) -> None:
    """Add ``scored``, ``not_carried`` or ``failed`` instances of a shadow ``router.VersionRef``."""
    gateway = _current()
    state = gateway.counts
    key = (model_name, ref.version, ref.id, ref.staged_at)
    with state.lock:
        totals = state.counts.setdefault(key, dict.fromkeys(KINDS, 0))
        for kind, n in counts.items():
            totals[kind] += n
        state.dirty.add(key)
    gateway.background.ensure_started()


def by_version(model_name: str) -> dict[str, dict[str, int]]:
    """This process's totals per shadow version of ``model_name`` (its current stays)."""
    state = _current().counts
    with state.lock:
        return {key[1]: dict(c) for key, c in state.counts.items() if key[0] == model_name}


def directory() -> Path:
    return Path(settings.VAR_DIR) / "serving" / "shadow-counts"


def flush(*, final: bool = False) -> int:
    """Write the totals that changed since the last flush; returns how many files."""
    state = _current().counts
    with state.lock:
        changed = {key: dict(state.counts[key]) for key in state.dirty}
        state.dirty.clear()
        name = state.file_name
    for key, totals in changed.items():
        folder = directory() / f"{key[2]}-{key[3]}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            partial = folder / f"{name}.partial"
            partial.write_text(json.dumps({"version": key[1], **totals}))
            partial.rename(folder / name)
        except OSError as exc:  # written again at the next flush
            with state.lock:
                state.dirty.add(key)
            logger.warning("could not write the shadow counts of %s %s: %s", *key[:2], exc)
    return len(changed)


def stay_totals(*, version_id: int, staged_at: datetime) -> dict[str, int] | None:
    """Every gateway process's totals for one stay, summed; None when none were written."""
    folder = directory() / f"{version_id}-{stay_key(staged_at)}"
    totals, found = dict.fromkeys(KINDS, 0), False
    for path in folder.glob("*.json") if folder.is_dir() else ():
        try:
            written = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            logger.warning("unreadable shadow counts %s: %s", path, exc)
            continue
        found = True
        for kind in KINDS:
            totals[kind] += int(written.get(kind, 0))
    return totals if found else None


def sweep() -> int:
    """Remove the counts of stays that are over (the version left staging, or was staged again).

    Run by the hourly ``serving.record_shadow_evaluations``; returns the folders removed.
    """
    from governance.models import Lifecycle, Stage

    root = directory()
    if not root.is_dir():
        return 0
    staged = Lifecycle.objects.filter(stage=Stage.STAGING)
    current = {
        f"{v}-{stay_key(at)}" for v, at in staged.values_list("version_id", "stage_entered_at")
    }
    removed = 0
    for folder in root.iterdir():
        if folder.is_dir() and folder.name not in current:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def clear() -> None:
    """Forget this process's totals (tests; ``gateway.reset`` gives fresh counts)."""
    _current().counts = Counts()
