"""What the shadow scoring did per staging version and stay in staging, kept on disk.

The shadow thread counts, per staging version, the instances it scored (``scored``), those that
did not carry all the version's features (``not_carried``: a MAJOR that needs features the live
version does not use) and those whose scoring raised (``failed``). The background flusher writes
each process's running totals, when they changed, to
``serving/shadow-counts/<version id>-<stay>/<process>.json`` in the platform's storage beside the
prediction spool (``platform_core.storage``: this host's ``VAR_DIR``, or the object store every
host shares), each process's object replaced whole. ``stay_totals`` sums them for
the shadow evaluation, which so tells "no request carried the new features" from "the shadow
failed". A stay is the time the version entered staging (epoch microseconds): a version staged
again starts from zero. ``sweep`` removes the counts of stays that are over.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from platform_core import storage

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


PREFIX = "serving/shadow-counts"


def directory() -> Path:
    """The counts' directory on this host (local storage only)."""
    return storage.current().local_path(PREFIX)


def flush(*, final: bool = False) -> int:
    """Write the totals that changed since the last flush; returns how many files."""
    state = _current().counts
    with state.lock:
        changed = {key: dict(state.counts[key]) for key in state.dirty}
        state.dirty.clear()
        name = state.file_name
    where = storage.current()
    for key, totals in changed.items():
        try:  # this process's own object, replaced whole (no reader sees half of it)
            where.put(
                f"{PREFIX}/{key[2]}-{key[3]}/{name}",
                json.dumps({"version": key[1], **totals}).encode(),
            )
        except OSError as exc:  # written again at the next flush
            with state.lock:
                state.dirty.add(key)
            logger.warning("could not write the shadow counts of %s %s: %s", *key[:2], exc)
    return len(changed)


def stay_totals(*, version_id: int, staged_at: datetime) -> dict[str, int] | None:
    """Every gateway process's totals for one stay, summed; None when none were written."""
    where = storage.current()
    totals, found = dict.fromkeys(KINDS, 0), False
    for item in where.scan(f"{PREFIX}/{version_id}-{stay_key(staged_at)}"):
        name = item.key.rpartition("/")[2]
        if not name.endswith(".json") or name.startswith("."):
            continue
        try:
            written = json.loads(where.read_bytes(item.key))
        except (OSError, ValueError) as exc:
            logger.warning("unreadable shadow counts %s: %s", item.key, exc)
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

    where = storage.current()
    by_stay: dict[str, list[str]] = {}
    for item in where.scan(PREFIX):
        stay = item.key[len(PREFIX) + 1 :].partition("/")[0]
        by_stay.setdefault(stay, []).append(item.key)
    staged = Lifecycle.objects.filter(stage=Stage.STAGING)
    current = {
        f"{v}-{stay_key(at)}" for v, at in staged.values_list("version_id", "stage_entered_at")
    }
    removed = 0
    for stay, keys in by_stay.items():
        if stay not in current:
            where.delete(keys)
            removed += 1
    where.prune(PREFIX, keep=lambda name: False, cutoff=float("inf"))
    return removed


def clear() -> None:
    """Forget this process's totals (tests; ``gateway.reset`` gives fresh counts)."""
    _current().counts = Counts()
