"""Evidence and monitoring ingestion read records through one parser and store files one way.

The two were separate parsers and stores before (issue 11, item 5): the same input must now get
the same answer from both, and orphans of either store go through the one sweeper.
"""

from __future__ import annotations

import io
import os
import time
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from governance import evidence, filestore, records
from monitoring import store
from monitoring.ingest.common import parse as ingest_parse
from monitoring.models import BatchKind
from platform_core.errors import InvalidInput
from tests.storage_backends import BACKENDS, use_backend

CSV_HEADER = "score,label,prediction,timestamp,sensitive.area\n"
GOOD_ROWS = "0.7,1,1,2026-01-05T10:00:00Z,north\n0.2,0,,2026-01-05T11:00:00+01:00,south\n"


def both(upload: bytes) -> tuple[object, object]:
    """What evidence and monitoring (a reference upload: the same columns) make of one file."""
    answers = []
    for parse in (
        lambda: evidence.parse_upload(io.BytesIO(upload)),
        lambda: ingest_parse(kind=BatchKind.REFERENCE, upload=io.BytesIO(upload)),
    ):
        try:
            answers.append(parse())
        except InvalidInput as exc:
            answers.append(exc.errors)
    return answers[0], answers[1]


def test_a_sensitive_column_is_read_the_same_by_both():
    batch, parsed = both((CSV_HEADER + GOOD_ROWS).encode())

    assert (
        batch.sensitive["area"].tolist()
        == parsed.sensitive["area"].tolist()
        == [
            "north",
            "south",
        ]
    )
    assert batch.scores.tolist() == parsed.score.tolist() == [0.7, 0.2]
    assert batch.labels.tolist() == parsed.label.tolist() == [1, 0]
    assert batch.timestamps.astype(np.int64).tolist() == parsed.timestamp.tolist()
    np.testing.assert_array_equal(batch.predictions, parsed.prediction)


def test_an_empty_sensitive_value_gets_the_same_error_from_both():
    evidence_errors, ingest_errors = both(
        (CSV_HEADER + "0.7,1,1,2026-01-05T10:00:00Z,north\n0.2,0,,,\n").encode()
    )

    assert evidence_errors == ingest_errors
    assert evidence_errors == {
        "records[1].sensitive.area": [
            "must be a non-empty string or number (at most 200 characters)"
        ]
    }


def test_an_over_limit_upload_gets_the_same_error_from_both(monkeypatch):
    monkeypatch.setattr(records, "MAX_RECORDS", 1)

    evidence_errors, ingest_errors = both((CSV_HEADER + GOOD_ROWS).encode())

    assert evidence_errors == ingest_errors == {"file": ["at most 1 records per request"]}


def test_a_bad_type_and_a_bad_time_get_the_same_errors_from_both():
    evidence_errors, ingest_errors = both(
        (CSV_HEADER + "high,1,1,yesterday,north\n0.2,0,,2026-01-05T11:00:00Z,south\n").encode()
    )

    assert evidence_errors == ingest_errors
    assert evidence_errors == {
        "records[0].score": ["must be a number in [0, 1]"],
        "records[0].timestamp": [records.TIMESTAMP],
    }


def test_json_records_get_the_same_error_from_both():
    bad = {"score": 1.5, "sensitive": {"area": 7.5}}
    with pytest.raises(InvalidInput) as evidence_refusal:
        evidence.parse_records([{**bad, "label": 1}])
    with pytest.raises(InvalidInput) as ingest_refusal:
        ingest_parse(kind=BatchKind.REFERENCE, records=[{**bad, "features": {}}])

    assert evidence_refusal.value.errors == ingest_refusal.value.errors
    assert evidence_refusal.value.errors == {"records[0].score": [records.SCORE]}


def test_an_unknown_column_is_refused_with_the_same_hint_shape():
    evidence_errors, ingest_errors = both(b"score,label,extra\n0.5,1,x\n")

    assert evidence_errors["file"] == [
        "unknown column(s) extra; use score, label, prediction, timestamp and sensitive.<attribute>"
    ]
    assert ingest_errors["file"][0].startswith("unknown column(s) extra; use label, prediction")


# --- files first, then the row; the sweep -------------------------------------------------------


def aged(path, seconds: float = 7200) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_the_sweep_removes_old_unreferenced_files_and_empty_directories(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    base = tmp_path / "data"
    day = base / "m" / "day=2026-01-05"
    day.mkdir(parents=True)
    kept, orphan, fresh = day / "kept.parquet", day / "orphan.parquet", day / "fresh.parquet"
    stale_temp = day / ".orphan.parquet.0123.tmp"
    for path in (kept, orphan, fresh, stale_temp):
        path.write_bytes(b"x")
    for path in (kept, orphan, stale_temp):
        aged(path)
    empty_day = base / "m" / "day=2026-01-04"
    empty_day.mkdir()
    aged(empty_day)
    asked: list[list[str]] = []

    def referenced(paths):
        asked.append(sorted(paths))
        return {"data/m/day=2026-01-05/kept.parquet"} & set(paths)

    removed = filestore.sweep_unreferenced(
        "data",
        cutoff=time.time() - 3600,
        referenced=referenced,
        prune=lambda name: name.startswith("day="),
    )

    assert sorted(removed) == [
        "data/m/day=2026-01-05/.orphan.parquet.0123.tmp",
        "data/m/day=2026-01-05/orphan.parquet",
    ]
    assert kept.exists() and fresh.exists() and not orphan.exists()
    assert not empty_day.exists() and day.exists()
    assert asked == [
        [
            "data/m/day=2026-01-05/.orphan.parquet.0123.tmp",
            "data/m/day=2026-01-05/kept.parquet",
            "data/m/day=2026-01-05/orphan.parquet",
        ]
    ]


@pytest.fixture(params=BACKENDS)
def backend(request, settings, tmp_path):
    yield from use_backend(request.param, settings, tmp_path)


@pytest.mark.django_db
def test_both_stores_sweep_their_orphans_through_the_shared_helper(backend):
    batch = evidence.parse_records([{"score": 0.5, "label": 1}])
    data_path, created = evidence.store(batch)
    table = pa.table({"prediction_id": ["p-1"], "score": [0.5]})
    written = store.write_file(
        table, model_name="m", kind=BatchKind.PREDICTIONS, day=date(2026, 1, 5)
    )
    assert created and evidence.load(data_path)["score"].tolist() == [0.5]
    assert evidence.store(batch) == (data_path, False)  # content-addressed: stored once
    if backend.remote:  # an object's write time cannot be set: sweep what is older than soon
        evidence_age, store_cutoff = -60, datetime.now(UTC) + timedelta(minutes=1)
    else:
        aged(evidence.resolve(data_path))
        aged(store.resolve(written.path))
        evidence_age, store_cutoff = 3600, datetime.now(UTC) - timedelta(hours=1)

    assert evidence.sweep_orphans(older_than_seconds=evidence_age) == [f"{batch.digest}.parquet"]
    assert store.sweep_orphans(older_than=store_cutoff) == [written.path]
    assert not backend.exists(data_path)
    assert not backend.exists(written.path)


@pytest.mark.django_db
def test_a_failed_commit_discards_what_it_wrote(backend):
    data_path, _ = evidence.store(evidence.parse_records([{"score": 0.5, "label": 0}]))
    assert backend.exists(data_path)

    def create_rows():
        raise RuntimeError("the row could not commit")

    with pytest.raises(RuntimeError):
        filestore.commit_after_files([data_path], create_rows, referenced=evidence.referenced)

    assert not backend.exists(data_path)
