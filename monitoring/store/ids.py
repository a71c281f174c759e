"""The prediction id index: duplicate checks and label look-ups that cost the batch, not the day."""

from __future__ import annotations

import hashlib
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from django.db import transaction

from registry.models import ModelVersion, RegisteredModel

from ..models import BatchKind, DataBatch
from .files import (
    delete_files,
    discard,
    load_id_index,
    partition_of,
    read_table,
    write_id_index,
)

# Each prediction file has an id index: the sorted 64-bit digests of its ids (``.ids.npy``
# beside it, ``DataBatch.id_index``), written with it before its manifest row commits. After a
# commit, ``compact_id_index`` merges a day's smallest indexes while the next one is less than
# twice their sum (for equal batches, a binary counter), so a (version, day) has about
# log2(day rows / batch rows) of them at most, and each digest is rewritten about as often:
# checking a batch for duplicates costs O(batch x log(day)), however many predictions the day
# holds. (A table of 64-bit digests in the database would do the same at ~90 bytes a prediction
# and ~0.15 s per 20k inserted on PostgreSQL; these files take 8 bytes and a few milliseconds.)

MAX_INDEX_RUNS = 24  # a bound for days of very uneven batch sizes; the counter keeps ~log2


def _ids(path: str) -> pa.Array:
    column = read_table(path, columns=["prediction_id"]).column("prediction_id")
    return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)


def stored_duplicates(
    *, version: ModelVersion, ids: pa.Array, digests: np.ndarray, days: np.ndarray
) -> dict[int, date]:
    """Positions in ``ids`` of prediction ids the version already has stored on their day.

    ``digests`` are the ids' ``id_digests`` and ``days`` (datetime64[D]) each row's day. Each
    day's id index (a few sorted runs of digests) is searched for the batch's digests, so the
    cost follows the batch, not the day's volume; a digest found there is confirmed against the
    stored ids of that run's batches, so a digest collision never refuses a new id. Call it
    holding the version's lock (``lock_version``) when the answer decides a commit.
    """
    found: dict[int, date] = {}
    for day in np.unique(days):
        rows = np.flatnonzero(days == day)
        order = np.argsort(digests[rows], kind="stable")
        needles, positions = digests[rows][order], rows[order]
        for run in _runs(version.pk, day.item()):
            stored = _run_digests(run)
            if not stored.size:
                continue
            at = np.minimum(np.searchsorted(stored, needles), stored.size - 1)
            hit = positions[stored[at] == needles]
            if not hit.size:
                continue
            wanted = ids.take(pa.array(hit))
            for path in run.paths:
                stored_here = pc.is_in(wanted, value_set=_ids(path))
                for i in hit[stored_here.to_numpy(zero_copy_only=False)].tolist():
                    found.setdefault(int(i), day.item())
    return found


def lock_version(version_id: int) -> None:
    """Serialize the commits of one version's predictions (their duplicate check, the id index).

    ``FOR NO KEY UPDATE``: rows that merely reference the version (runs, alerts) are not held
    up. SQLite's transactions are ``IMMEDIATE``, so they are serialized already.
    """
    ModelVersion.objects.select_for_update(no_key=True).filter(pk=version_id).values_list(
        "pk"
    ).first()


def id_digests(ids: Iterable[str]) -> np.ndarray:
    """The id index's keys: the first 8 bytes of each id's BLAKE2b digest, as int64.

    A stable, standard hash (never Python's ``hash`` or a library's internal one): the digests
    are stored, so they must mean the same in every process and release.
    """
    blake2b = hashlib.blake2b
    packed = b"".join([blake2b(i, digest_size=8).digest() for i in map(str.encode, ids)])
    return np.frombuffer(packed, dtype="<i8").astype(np.int64)


@dataclass(frozen=True)
class _Run:
    """One sorted index of a day and the batches it covers."""

    index: str  # "" for a batch stored before indexes existed: its ids are read and digested
    batch_ids: tuple[int, ...]
    paths: tuple[str, ...]  # the batches' files
    rows: int


def _runs(version_id: int, day: date) -> list[_Run]:
    batches = DataBatch.objects.filter(
        version_id=version_id, kind=BatchKind.PREDICTIONS, day=day
    ).order_by("id")
    grouped: dict[str, list[tuple[int, str, int]]] = defaultdict(list)
    runs = []
    for pk, index, path, rows in batches.values_list("id", "id_index", "path", "rows"):
        if index:
            grouped[index].append((pk, path, rows))
        else:
            runs.append(_Run(index="", batch_ids=(pk,), paths=(path,), rows=rows))
    for index, members in grouped.items():
        pks, paths, rows = zip(*members, strict=True)
        runs.append(_Run(index=index, batch_ids=pks, paths=paths, rows=sum(rows)))
    return runs


def _run_digests(run: _Run) -> np.ndarray:
    if run.index:
        return load_id_index(run.index)
    return np.sort(id_digests(_ids(run.paths[0]).to_pylist()))


def _runs_to_merge(runs: list[_Run]) -> list[_Run]:
    """The smallest runs, merged while the next is less than twice their sum."""
    pending = sorted(runs, key=lambda r: r.rows, reverse=True)
    if not pending:
        return []
    chosen = [pending.pop()]
    size = chosen[0].rows
    while pending and (pending[-1].rows < 2 * size or len(pending) >= MAX_INDEX_RUNS):
        chosen.append(pending.pop())
        size += chosen[-1].rows
    if len(chosen) == 1 and chosen[0].index:
        return []
    return chosen


def compact_id_index(*, version_id: int, day: date) -> int:
    """Merge a day's smallest id indexes into one; returns the number of indexes merged.

    The merged index is written first, then, under the version's lock, the batches it covers
    point to it, provided none changed meanwhile (else the work is dropped); the old indexes are
    deleted after the commit (or by the orphan sweeper). Batches stored before indexes existed
    are folded in too. Readers keep reading the old files until they see the commit.
    """
    chosen = _runs_to_merge(_runs(version_id, day))
    if not chosen:
        return 0
    try:
        merged = np.sort(np.concatenate([_run_digests(r) for r in chosen]), kind="stable")
    except FileNotFoundError:  # a concurrent compaction replaced one: it did the work
        return 0
    directory = partition_of(chosen[0].paths[0])
    index = write_id_index(merged, directory=directory, stem=uuid.uuid4().hex)
    expected = {pk: r.index for r in chosen for pk in r.batch_ids}
    try:
        with transaction.atomic():
            lock_version(version_id)
            current = dict(
                DataBatch.objects.filter(pk__in=list(expected)).values_list("id", "id_index")
            )
            if current != expected:  # merged or purged meanwhile
                delete_files([index])
                return 0
            DataBatch.objects.filter(pk__in=list(expected)).update(id_index=index)
            old = [r.index for r in chosen if r.index]
            transaction.on_commit(lambda: delete_files(old))
    except BaseException:
        discard([index])
        raise
    return len(chosen)


@dataclass(frozen=True)
class Located:
    """Where the predictions named by a labels batch are stored (one entry per match)."""

    index: np.ndarray  # position in the labels batch
    batch_id: np.ndarray  # DataBatch id of the prediction file
    row: np.ndarray  # row in that file
    day: np.ndarray  # datetime64[D] partition day
    version_id: np.ndarray
    found: np.ndarray  # bool per label: some prediction matched
    paths: dict[int, str] = field(default_factory=dict)  # the matched batches' files, as read


def locate_predictions(*, model: RegisteredModel, ids: pa.Array) -> Located:
    """Find each id among the model's stored predictions, newest day first.

    A prediction id may be stored under several versions (shadow traffic shares the live
    request's id): each match is returned. Once every id is found, one more (older) day is
    looked at for such twins and the search stops. A file is opened only when its id index
    holds one of the ids' digests (``_IndexProbe``), so a labels batch costs the files that
    hold its predictions and a binary search of the other days' indexes, not a read of every
    day back to its oldest prediction; files stored before indexes existed are read.
    """
    found = np.zeros(len(ids), dtype=bool)
    out: dict[str, list[np.ndarray]] = defaultdict(list)
    paths: dict[int, str] = {}
    rows = DataBatch.objects.filter(model=model, kind=BatchKind.PREDICTIONS).order_by("-day", "id")
    probe = _IndexProbe(ids)
    stop_before: date | None = None
    for batch_id, path, day, version_id, index in rows.values_list(
        "id", "path", "day", "version_id", "id_index"
    ):
        if stop_before is not None and day < stop_before:
            break
        if probe.may_hold(index):
            position = pc.index_in(_ids(path), value_set=ids)
            hit = np.flatnonzero(position.is_valid().to_numpy(zero_copy_only=False))
            if hit.size:
                where = position.take(pa.array(hit)).to_numpy().astype(np.int64)
                out["index"].append(where)
                out["row"].append(hit.astype(np.int64))
                out["batch_id"].append(np.full(hit.size, batch_id, dtype=np.int64))
                out["day"].append(np.full(hit.size, np.datetime64(day, "D")))
                out["version_id"].append(np.full(hit.size, version_id or 0, dtype=np.int64))
                paths[batch_id] = path
                found[where] = True
        if stop_before is None and found.all():
            stop_before = day - timedelta(days=1)

    def cat(name: str, dtype: Any) -> np.ndarray:
        return np.concatenate(out[name]) if out[name] else np.empty(0, dtype=dtype)

    return Located(
        index=cat("index", np.int64),
        batch_id=cat("batch_id", np.int64),
        row=cat("row", np.int64),
        day=cat("day", "datetime64[D]"),
        version_id=cat("version_id", np.int64),
        found=found,
        paths=paths,
    )


class _IndexProbe:
    """Whether an id index may cover one of a batch's ids: a digest found there is a candidate.

    A hit only says the index's files are worth opening (their ids confirm it, so a collision
    is never a match); a miss rules them out. Each index is searched once per call, however
    many batches share it. An index that is gone (replaced by a merge that committed after the
    manifest was read) or absent (a batch stored before indexes existed) is no evidence: its
    file is read.
    """

    def __init__(self, ids: pa.Array) -> None:
        present = ids.drop_null() if ids.null_count else ids
        self.needles = np.unique(id_digests(present.to_pylist()))
        self.seen: dict[str, bool] = {}

    def may_hold(self, index: str) -> bool:
        if not index:
            return True
        if index not in self.seen:
            self.seen[index] = self._search(index)
        return self.seen[index]

    def _search(self, index: str) -> bool:
        try:
            stored = load_id_index(index)
        except FileNotFoundError:
            return True
        if not stored.size or not self.needles.size:
            return False
        at = np.minimum(np.searchsorted(stored, self.needles), stored.size - 1)
        return bool(np.any(stored[at] == self.needles))
