"""Daily compaction of a (version, day) partition: what a window reads, and every reference to
the batches, must be the same before and after; only the number of files changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow.parquet as pq
import pytest
from django.core.management import call_command

from governance.audit import Actor
from governance.models import AuditEvent
from monitoring import ingest, store, tasks
from monitoring.ingest import labels as label_ingest
from monitoring.models import BatchKind, DataBatch, IngestKey, ReferenceProfile, RetiredFiles
from monitoring.store import compact
from monitoring.store.ids import id_digests
from platform_core import storage
from platform_core.errors import InvalidInput
from tests.monitoring.helpers import T0, mixed_version
from tests.storage_backends import BACKENDS, keys, use_backend

pytestmark = pytest.mark.django_db

ACTOR = Actor.system("tests")
DAY = T0.date()
TODAY = DAY + timedelta(days=2)  # DAY and the next are closed (before today); DAY + 2 is not


@pytest.fixture(params=BACKENDS)
def backend(request, settings, tmp_path):
    yield from use_backend(request.param, settings, tmp_path)


@pytest.fixture
def local(settings, tmp_path):
    yield from use_backend("local", settings, tmp_path)


@pytest.fixture
def version():
    return mixed_version()


def records(ids, minutes, *, day=T0, race=True):
    """Predictions named ``ids`` at ``minutes`` past ``day`` (with a sensitive ``race``)."""
    return [
        {
            "prediction_id": pid,
            "timestamp": (day + timedelta(minutes=m)).isoformat(),
            "features": {"f1": m / 7, "f2": m % 5, "f3": "ab"[m % 2]},
            "score": (m % 10) / 10,
            "prediction": m % 2,
            **({"sensitive": {"race": "xyz"[m % 3]}} if race else {}),
        }
        for pid, m in zip(ids, minutes, strict=True)
    ]


def put(version, recs, **kwargs):
    return ingest.predictions_ingest(
        model_name=version.model.name, version=version.version, records=recs, actor=ACTOR, **kwargs
    )


def label(version, pairs, label_time):
    return ingest.labels_ingest(
        model_name=version.model.name,
        records=[
            {"prediction_id": pid, "label": value, "label_time": label_time.isoformat()}
            for pid, value in pairs
        ],
        actor=ACTOR,
    )


def busy_day(version):
    """Three interleaved prediction files on DAY (the gateway's minutes), one on the next day,
    and three label files: a re-label with a later time, and equal label times."""
    put(version, records([f"a{i}" for i in range(6)], [0, 3, 6, 9, 12, 15]), batch_keys=["s-1"])
    put(version, records([f"b{i}" for i in range(6)], [1, 4, 7, 10, 13, 16]), batch_keys=["s-2"])
    put(version, records([f"c{i}" for i in range(6)], [2, 5, 8, 11, 14, 17], race=False))
    put(version, records(["n0", "n1"], [5, 6], day=T0 + timedelta(days=1)))
    later = T0 + timedelta(days=2)
    label(version, [("a0", 1), ("b1", 0), ("c2", 1), ("a3", 0), ("n0", 1)], later)
    label(version, [("b1", 1), ("c2", 0)], later + timedelta(hours=1))  # re-labelled later
    label(version, [("a3", 1), ("c5", 0)], later)  # a3: same time as before, ingested last wins


def window(version, **kwargs) -> pd.DataFrame:
    frame = store.load_window(
        model=version.model,
        version=version,
        start=T0,
        end=T0 + timedelta(days=2),
        with_labels=True,
        with_sensitive=True,
        **kwargs,
    )
    return frame.sort_values("prediction_id", kind="stable").reset_index(drop=True)


def day_batches(version, kind, day=DAY):
    return list(DataBatch.objects.filter(version=version, kind=kind, day=day).order_by("id"))


# --- the partition --------------------------------------------------------------------------


def test_a_compacted_day_reads_the_same_rows_and_labels_from_one_file_of_each_kind(
    backend, version
):
    busy_day(version)
    before = window(version)
    recent_before = store.recent_records(model=version.model, version=version, limit=5)
    first = day_batches(version, BatchKind.PREDICTIONS)[0]
    old_paths = [p for b in DataBatch.objects.filter(day=DAY) for p in (b.path, b.id_index) if p]

    outcome = compact.compact_partition(version.pk, DAY)

    assert (outcome.status, outcome.prediction_files, outcome.label_files) == ("compacted", 3, 3)
    (merged,) = day_batches(version, BatchKind.PREDICTIONS)
    (labels,) = day_batches(version, BatchKind.LABELS)
    assert merged.pk == first.pk and merged.rows == 18 and labels.rows == 8
    assert merged.path not in old_paths and labels.path not in old_paths
    after = window(version)
    pd.testing.assert_frame_equal(after, before)
    labelled = after.dropna(subset=["label"]).set_index("prediction_id")["label"].to_dict()
    assert labelled == {"a0": 1, "b1": 1, "c2": 0, "a3": 1, "c5": 0, "n0": 1}
    recent_after = store.recent_records(model=version.model, version=version, limit=5)
    pd.testing.assert_frame_equal(recent_after, recent_before)
    # sorted by time, so a window edge still prunes; one id index covering every row
    stamps = store.read_table(merged.path, columns=["timestamp"]).column("timestamp")
    assert stamps.to_pylist() == sorted(stamps.to_pylist())
    ids = store.read_table(merged.path, columns=["prediction_id"]).column("prediction_id")
    assert store.load_id_index(merged.id_index).tolist() == sorted(
        id_digests(ids.to_pylist()).tolist()
    )
    # the other day had one file of each kind: untouched
    assert len(day_batches(version, BatchKind.PREDICTIONS, DAY + timedelta(days=1))) == 1
    (event,) = AuditEvent.objects.filter(action="predictions.compacted")
    assert event.actor == "system:monitoring.compact_partitions"
    assert event.after["prediction_files"] == 3 and event.after["rows"] == 18
    assert event.after["batches"] == {"predictions": merged.pk, "labels": labels.pk}


def test_an_edge_inside_a_compacted_day_still_cuts_at_the_same_rows(backend, version):
    busy_day(version)
    edge = {"start": T0 + timedelta(minutes=4), "end": T0 + timedelta(minutes=13)}

    def inside():
        frame = store.load_window(model=version.model, version=version, with_labels=True, **edge)
        return frame.sort_values("prediction_id").reset_index(drop=True)

    before = inside()
    compact.compact_partition(version.pk, DAY)

    pd.testing.assert_frame_equal(inside(), before)
    assert len(before) == 9 and before["label"].notna().sum() == 3


def test_old_files_outlive_the_commit_by_the_grace_then_are_swept(backend, version, settings):
    busy_day(version)
    old = [p for b in DataBatch.objects.filter(day=DAY) for p in (b.path, b.id_index) if p]

    outcome = compact.compact_partition(version.pk, DAY)

    retired = RetiredFiles.objects.values_list("paths", flat=True)
    assert RetiredFiles.objects.count() == 2  # the predictions' directory and the labels'
    assert sorted(p for listed in retired for p in listed) == sorted(old)
    assert store.sweep_orphans() == []  # within the grace: a reader of the old rows finds them
    assert all(storage.current().exists(p) for p in old)
    later = datetime.now(UTC) + settings.ORPHAN_GRACE + timedelta(minutes=1)

    removed = store.sweep_orphans(older_than=later)

    assert sorted(removed) == sorted(old) and not RetiredFiles.objects.exists()
    assert all(storage.current().exists(p) for p in outcome.paths)


def test_a_duplicate_id_is_still_refused_and_a_new_one_stored_after_compaction(backend, version):
    busy_day(version)
    compact.compact_partition(version.pk, DAY)

    with pytest.raises(InvalidInput) as refused:
        put(version, records(["z0", "b4"], [30, 31]))
    assert "records[1].prediction_id" in refused.value.errors
    put(version, records(["z0"], [30]))
    label(version, [("b4", 1), ("z0", 0)], T0 + timedelta(days=3))

    frame = window(version).set_index("prediction_id")
    assert frame.loc["b4", "label"] == 1 and frame.loc["z0", "label"] == 0
    assert frame.loc["c2", "label"] == 0  # the compacted labels still count


def test_a_gateway_retry_after_compaction_is_recognised(backend, version):
    busy_day(version)
    compact.compact_partition(version.pk, DAY)
    (merged,) = day_batches(version, BatchKind.PREDICTIONS)

    again = put(version, records(["a0"], [0]), batch_keys=["s-2"])

    assert [b.pk for b in again] == [merged.pk]
    assert set(IngestKey.objects.values_list("key", "batch_id")) == {
        ("s-1", merged.pk),
        ("s-2", merged.pk),
    }
    assert DataBatch.objects.filter(version=version, kind=BatchKind.PREDICTIONS).count() == 2


def test_a_prediction_batch_ingested_before_the_commit_is_merged_on_the_next_attempt(
    backend, version
):
    busy_day(version)
    late = []

    def ingest_once():
        if not late:
            late.extend(put(version, records(["late0", "late1"], [20, 21])))

    outcome = compact.compact_partition(version.pk, DAY, before_commit=ingest_once)

    assert outcome.status == "compacted" and outcome.prediction_files == 4
    (merged,) = day_batches(version, BatchKind.PREDICTIONS)
    assert merged.rows == 20
    assert {"late0", "late1"} <= set(window(version)["prediction_id"])
    # the first attempt's objects were discarded: every stored object is referenced or retired
    assert set(keys("monitoring")) == store.referenced(keys("monitoring"))


def test_a_partition_changing_under_every_attempt_is_skipped_and_left_as_it_was(backend, version):
    busy_day(version)
    before = window(version)
    n = iter(range(100))

    def ingest_every_time():
        i = next(n)
        put(version, records([f"late{i}"], [40 + i]))

    outcome = compact.compact_partition(version.pk, DAY, before_commit=ingest_every_time)

    assert outcome.status == "skipped" and "changed" in outcome.reason
    assert len(day_batches(version, BatchKind.PREDICTIONS)) == 3 + compact.ATTEMPTS
    after = window(version)
    kept = after[~after["prediction_id"].str.startswith("late")].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, before)
    assert not AuditEvent.objects.filter(action="predictions.compacted").exists()
    assert set(keys("monitoring")) == store.referenced(keys("monitoring"))


def test_labels_located_before_a_compaction_commit_are_located_again(backend, version):
    busy_day(version)
    locate = store.locate_predictions
    calls = []

    def locate_then_compact(**kwargs):
        found = locate(**kwargs)
        if not calls:  # the compaction commits between locating and storing the labels
            compact.compact_partition(version.pk, DAY)
        calls.append(found)
        return found

    label_ingest.store.locate_predictions = locate_then_compact
    try:
        label(version, [("c4", 1), ("n1", 0)], T0 + timedelta(days=3))
    finally:
        label_ingest.store.locate_predictions = locate

    assert len(calls) == 2
    frame = window(version).set_index("prediction_id")
    assert frame.loc["c4", "label"] == 1 and frame.loc["n1", "label"] == 0


def test_a_failure_before_the_commit_leaves_the_partition_as_it_was(backend, version, monkeypatch):
    busy_day(version)
    before = window(version)
    rows = list(DataBatch.objects.order_by("id").values_list("id", "path"))

    def broken(**kwargs):
        raise RuntimeError("audit down")

    monkeypatch.setattr(compact.audit, "record", broken)
    with pytest.raises(RuntimeError):
        compact.compact_partition(version.pk, DAY)

    assert list(DataBatch.objects.order_by("id").values_list("id", "path")) == rows
    assert IngestKey.objects.count() == 2 and not RetiredFiles.objects.exists()
    pd.testing.assert_frame_equal(window(version), before)
    assert set(keys("monitoring")) == store.referenced(keys("monitoring"))


def test_compaction_is_idempotent_and_only_closed_days_with_several_files_are_due(
    local, version, settings
):
    busy_day(version)
    put(version, records(["t0"], [0], day=T0 + timedelta(days=2)))
    put(version, records(["t1"], [1], day=T0 + timedelta(days=2)))  # today: not closed yet
    settings.MONITORING_COMPACT_AFTER_DAYS = 1  # yesterday kept open for late batches
    assert compact.due_partitions(today=DAY + timedelta(days=1)) == []
    settings.MONITORING_COMPACT_AFTER_DAYS = 0  # the default: yesterday is closed

    due = compact.due_partitions(today=TODAY)

    assert [(p.version_id, p.day, p.prediction_files, p.label_files) for p in due] == [
        (version.pk, DAY, 3, 3)
    ]
    assert compact.compact(due).compacted == 1
    assert compact.due_partitions(today=TODAY) == []
    assert compact.compact_partition(version.pk, DAY).status == "nothing"
    assert AuditEvent.objects.filter(action="predictions.compacted").count() == 1


def test_only_labels_are_merged_when_the_day_has_one_prediction_file(local, version):
    put(version, records(["a0", "a1"], [0, 1]))
    label(version, [("a0", 1)], T0 + timedelta(days=1))
    label(version, [("a0", 0), ("a1", 1)], T0 + timedelta(days=1))  # equal time, later wins
    (prediction,) = day_batches(version, BatchKind.PREDICTIONS)
    before = window(version)

    outcome = compact.compact_partition(version.pk, DAY)

    assert (outcome.status, outcome.prediction_files, outcome.label_files) == ("compacted", 1, 2)
    assert day_batches(version, BatchKind.PREDICTIONS) == [prediction]
    assert prediction.path == day_batches(version, BatchKind.PREDICTIONS)[0].path
    assert len(day_batches(version, BatchKind.LABELS)) == 1
    pd.testing.assert_frame_equal(window(version), before)
    assert window(version)["label"].tolist() == [0.0, 1.0]


def test_reference_batches_are_never_compacted(local, version):
    for _ in range(2):
        ingest.reference_ingest(
            model_name=version.model.name, version=version.version, records=records(["r"], [0]),
            actor=ACTOR,
        )  # fmt: skip
    references = list(DataBatch.objects.filter(kind=BatchKind.REFERENCE).values_list("id", "path"))
    day = DataBatch.objects.get(pk=references[0][0]).day

    assert compact.compact_partition(version.pk, day).status == "nothing"
    assert compact.due_partitions(today=day + timedelta(days=5)) == []
    assert list(DataBatch.objects.values_list("id", "path")) == references
    assert ReferenceProfile.objects.get(version=version).batch_id == references[-1][0]


# --- the task and the command ---------------------------------------------------------------


@pytest.fixture
def sent(monkeypatch):
    calls: list[tuple[str, tuple]] = []

    def record(name, args=(), kwargs=None, **options):
        calls.append((name, tuple(args)))
        return ""

    monkeypatch.setattr("platform_core.tasking.send", record)
    return calls


def test_the_task_compacts_the_first_chunk_and_fans_out_the_rest(local, settings, sent):
    settings.MONITORING_COMPACT_LOOKBACK_DAYS = 10_000  # the records are from January
    settings.MONITORING_COMPACT_CHUNK = 1
    versions = [mixed_version(), mixed_version()]
    for v in versions:
        put(v, records(["a"], [0]))
        put(v, records(["b"], [1]))

    assert tasks.compact_partitions() == 1

    ((name, (chunk,)),) = sent
    assert name == "monitoring.compact_chunk" and chunk == [[versions[1].pk, DAY.isoformat()]]
    assert len(day_batches(versions[0], BatchKind.PREDICTIONS)) == 1
    assert len(day_batches(versions[1], BatchKind.PREDICTIONS)) == 2
    assert tasks.compact_chunk(chunk) == 1
    assert len(day_batches(versions[1], BatchKind.PREDICTIONS)) == 1


def test_the_setting_turns_compaction_off(local, settings, sent, version):
    settings.MONITORING_COMPACT_LOOKBACK_DAYS = 10_000
    settings.MONITORING_COMPACT_ENABLED = False
    busy_day(version)

    assert tasks.compact_partitions() == 0
    assert tasks.compact_chunk([[version.pk, DAY.isoformat()]]) == 0
    assert len(day_batches(version, BatchKind.PREDICTIONS)) == 3 and not sent


def test_the_command_lists_with_dry_run_then_compacts_one_model(local, settings, version, capsys):
    settings.MONITORING_COMPACT_LOOKBACK_DAYS = 10_000
    busy_day(version)
    other = mixed_version()
    put(other, records(["o0"], [0]))
    put(other, records(["o1"], [1]))

    call_command("compact_partitions", "--model", version.model.name, "--dry-run")
    listed = capsys.readouterr().out
    assert "1 partition(s) due" in listed and "3 prediction, 3 label files" in listed
    assert f"{version.model.name} {version.version} on {DAY}" in listed  # names, not ids
    assert len(day_batches(version, BatchKind.PREDICTIONS)) == 3

    call_command("compact_partitions", "--model", version.model.name)
    done = capsys.readouterr().out
    assert f"[1/1] {version.model.name} {version.version} on {DAY}: compacted" in done
    assert "[1/1]" in done and "compacted 1 of 1 partition(s)" in done and "6 files -> 2" in done
    assert len(day_batches(version, BatchKind.PREDICTIONS)) == 1
    assert len(day_batches(other, BatchKind.PREDICTIONS)) == 2  # another model: not asked
    event = AuditEvent.objects.get(action="predictions.compacted")
    assert event.actor == "system:manage.py compact_partitions"


# --- requests -------------------------------------------------------------------------------


def test_the_merged_file_keeps_row_groups_a_window_edge_prunes(local, version, monkeypatch):
    monkeypatch.setattr("monitoring.store.files.ROW_GROUP_SIZE", 4)
    busy_day(version)
    compact.compact_partition(version.pk, DAY)
    (merged,) = day_batches(version, BatchKind.PREDICTIONS)
    meta = pq.ParquetFile(storage.current().local_path(merged.path)).metadata

    assert meta.num_row_groups == 5  # 18 rows, 4 a group
    groups, first = store.window._row_groups(
        pq.ParquetFile(storage.current().local_path(merged.path)),
        store.to_us(T0 + timedelta(minutes=4)),
        store.to_us(T0 + timedelta(minutes=7)),
    )
    assert groups == [1] and first == 4  # minutes 4..7 are rows 4..7: one group


# --- a real check ---------------------------------------------------------------------------


def test_the_checks_measure_the_same_before_and_after_compaction(local, sent, settings):
    from monitoring import runs
    from monitoring.models import Alert, MonitorRun, ReviewItem
    from tests.monitoring.test_checks import baseline, synthetic
    from tests.monitoring.test_runs import WINDOW_END, create, live, put_labels, records_of

    version = live()
    baseline(version, 0.8)
    frame = synthetic(3_000, seed=41, labelled=0.7, start="2026-02-10", days=26)
    for k in range(3):  # three interleaved prediction files a day, two label files
        ingest.predictions_ingest(
            model_name=version.model.name,
            version=version.version,
            records=records_of(frame.iloc[k::3]),
            actor=ACTOR,
        )
    put_labels(version, frame.iloc[::2])
    put_labels(version, frame.iloc[1::2])
    kinds = ("data_drift", "prediction_drift", "fairness", "calibration", "concept_drift")

    def measure() -> dict:
        done = {kind: runs.run_execute(create(version, kind).pk) for kind in kinds}
        assert all(run.status == "succeeded" for run in done.values()), done
        metrics = {kind: (run.rows, run.metrics) for kind, run in done.items()}
        alerts = set(Alert.objects.values_list("kind", "severity", "metric", "feature", "value"))
        ReviewItem.objects.all().delete()  # the same windows once more
        Alert.objects.all().delete()
        MonitorRun.objects.filter(version=version).delete()
        return {"metrics": metrics, "alerts": alerts}

    before = measure()
    settings.MONITORING_COMPACT_LOOKBACK_DAYS = 30
    due = compact.due_partitions(today=WINDOW_END.date() + timedelta(days=2))
    assert len(due) == 26 and compact.compact(due).compacted == 26
    assert DataBatch.objects.filter(version=version).count() == 2 * 26

    # the window comes in the compacted file's order either way (store.window): the same
    # numbers to the last bit, a seeded resampling's too
    assert measure() == before


def test_a_window_comes_in_time_order_within_a_day_before_and_after_compaction(local, version):
    put(version, records(["e1", "e0"], [30, 20], day=T0 - timedelta(days=1)))  # one file
    busy_day(version)

    def order() -> list[str]:
        frame = store.load_window(
            model=version.model,
            version=version,
            start=T0 - timedelta(days=1),
            end=T0 + timedelta(days=2),
        )
        return frame["prediction_id"].tolist()

    before = order()
    compact.compact_partition(version.pk, DAY)

    assert order() == before
    assert before[:8] == ["e0", "e1", "a0", "b0", "c0", "a1", "b1", "c1"]
    assert before[-2:] == ["n0", "n1"] and len(before) == 22


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_compaction_racing_label_and_prediction_ingestion_loses_nothing(local, version):
    """Whatever the order the version's lock gives them, every label and prediction is kept
    and every label still points at its prediction."""
    from tests.concurrency import race

    busy_day(version)
    before = window(version)

    def target(i: int):
        if i == 0:
            return compact.compact_partition(version.pk, DAY).status
        if i == 1:
            return len(label(version, [("a1", 1), ("c3", 0)], T0 + timedelta(days=4)))
        return len(put(version, records(["r0", "r1"], [50, 51])))

    outcomes = race(target, 3)

    assert not outcomes.errors, outcomes.errors
    assert sorted(map(str, outcomes.results)) == ["1", "1", "compacted"]
    after = window(version).set_index("prediction_id")
    assert set(after.index) == set(before["prediction_id"]) | {"r0", "r1"}
    assert after.loc["a1", "label"] == 1 and after.loc["c3", "label"] == 0
    kept = before.set_index("prediction_id")["label"].drop(["a1", "c3"])
    pd.testing.assert_series_equal(after["label"].reindex(kept.index), kept)
    assert len(day_batches(version, BatchKind.PREDICTIONS)) <= 2
    assert set(keys("monitoring")) == store.referenced(keys("monitoring"))


def test_a_documentation_pack_cut_before_compaction_counts_the_same_data_after_it(local, version):
    """The pack's data section comes from the ingestions' audit events, not the manifest rows a
    compaction rewrites: the same cut gives the same figures (and bytes) before and after."""
    from console.documentation import pack, render

    busy_day(version)
    cut = pack.cut_at(version, None)
    before = pack.build(version, cut, audit_visible=True)
    logged = before["s7_logging"]["data_batches_of_this_version"]
    day, next_day = DAY.isoformat(), (DAY + timedelta(days=1)).isoformat()
    assert logged == {
        "predictions": {"batches": 4, "rows": 20, "first_day": day, "last_day": next_day},
        # the first ingestion labels two days: a file each
        "labels": {"batches": 4, "rows": 9, "first_day": day, "last_day": next_day},
    }

    assert compact.compact_partition(version.pk, DAY).status == "compacted"
    assert len(day_batches(version, BatchKind.PREDICTIONS)) == 1

    after = pack.build(version, cut, audit_visible=True)
    assert after["s7_logging"] == before["s7_logging"]
    assert render.to_json(after) == render.to_json(before)
