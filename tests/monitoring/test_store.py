"""Production data storage: Parquet partitions, windows, labels, reference profiles, retention."""

from __future__ import annotations

import os
import time
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from analytics import stats
from governance import audit
from governance.audit import Actor
from governance.models import AuditEvent
from monitoring import ingest, profiles, store
from monitoring.models import (
    BatchKind,
    DataBatch,
    IngestKey,
    MonitoringPolicy,
    ReferenceProfile,
)
from monitoring.store import ids as id_index
from monitoring.tasks import purge_expired_predictions
from platform_core import storage
from platform_core.errors import InvalidInput
from tests.factories import ModelVersionFactory
from tests.monitoring.helpers import MIXED, T0, mixed_version
from tests.storage_backends import BACKENDS, keys, use_backend

pytestmark = pytest.mark.django_db

ACTOR = Actor.system("tests")


@pytest.fixture(autouse=True, params=BACKENDS)
def backend(request, settings, tmp_path):
    """Every test here runs on this host's directory and on a real S3 API."""
    yield from use_backend(request.param, settings, tmp_path)


@pytest.fixture
def version():
    return mixed_version()


def records(n, *, start=T0, step=timedelta(minutes=1), prefix="p", seed=0, race=True):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        record = {
            "prediction_id": f"{prefix}{i}",
            "timestamp": (start + i * step).isoformat(),
            "features": {
                "f1": float(rng.normal()),
                "f2": int(rng.integers(0, 5)),
                "f3": "ab"[i % 2],
            },
            "score": float(rng.random()),
            "prediction": i % 2,
        }
        if race:
            record["sensitive"] = {"race": "xyz"[i % 3]}
        out.append(record)
    return out


def ingest_predictions(version, recs, **kwargs):
    return ingest.predictions_ingest(
        model_name=version.model.name, version=version.version, records=recs, actor=ACTOR, **kwargs
    )


def ingest_labels(version, recs):
    return ingest.labels_ingest(model_name=version.model.name, records=recs, actor=ACTOR)


def stored_files(settings) -> list[str]:
    return keys("monitoring")


def stored(key: str) -> bool:
    return storage.current().exists(key)


def aged(backend, *keys: str) -> datetime:
    """Make ``keys`` look written an hour ago; the cutoff that sweeps them and nothing newer.

    An object store's write time cannot be set: there the cutoff is a moment after now.
    """
    if backend.remote:
        return datetime.now(UTC) + timedelta(minutes=1)
    hour_ago = time.time() - 3600
    for key in keys:
        os.utime(backend.local_path(key), (hour_ago, hour_ago))
    return datetime.now(UTC) - timedelta(minutes=30)


# --- writing ------------------------------------------------------------------------------------


def test_a_batch_spanning_two_days_is_written_as_two_partitions(version, settings):
    recs = records(4, start=T0 - timedelta(minutes=2))  # 23:58, 23:59, 00:00, 00:01

    batches = ingest_predictions(version, recs)

    assert [(b.day, b.rows) for b in batches] == [(date(2026, 1, 4), 2), (date(2026, 1, 5), 2)]
    name = version.model.name
    for batch in batches:
        assert batch.path.startswith(f"monitoring/{name}/predictions/day={batch.day.isoformat()}/")
        assert batch.path.endswith(".parquet")
        assert batch.kind == BatchKind.PREDICTIONS and batch.version == version
        assert batch.digest.startswith("sha256:") and batch.source == "api"
        assert batch.id_index == batch.path.removesuffix(".parquet") + ".ids.npy"
    assert stored_files(settings) == sorted(p for b in batches for p in (b.path, b.id_index))
    event = AuditEvent.objects.get(action="predictions.ingested")
    assert event.after["rows"] == 4
    assert event.after["days"] == ["2026-01-04", "2026-01-05"]
    assert event.after["digest"].startswith("sha256:")


def test_partitions_hold_typed_columns_sorted_by_time(version):
    recs = records(3)[::-1]  # given newest first

    (batch,) = ingest_predictions(version, recs)

    table = store.read_table(batch.path)
    schema = {f.name: f.type for f in table.schema}
    assert schema == {
        "prediction_id": pa.string(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "score": pa.float64(),
        "prediction": pa.int8(),
        "f.f1": pa.float64(),
        "f.f2": pa.float64(),
        "f.f3": pa.string(),
        "s.race": pa.string(),
        "version": pa.string(),
    }
    assert table.column("prediction_id").to_pylist() == ["p0", "p1", "p2"]
    assert table.column("version").to_pylist() == [version.version] * 3


def test_naive_timestamps_are_read_as_utc(version):
    recs = records(2)
    recs[0]["timestamp"] = "2026-01-05T23:30:00"
    recs[1]["timestamp"] = "2026-01-06T00:30:00+02:00"  # 2026-01-05 22:30 UTC

    (batch,) = ingest_predictions(version, recs)

    assert batch.day == date(2026, 1, 5)
    window = store.load_window(
        model=version.model, version=version, start=T0, end=T0 + timedelta(1)
    )
    assert window["timestamp"].tolist() == [
        datetime(2026, 1, 5, 22, 30, tzinfo=UTC),
        datetime(2026, 1, 5, 23, 30, tzinfo=UTC),
    ]


def test_bad_records_are_refused_naming_row_and_field_and_nothing_is_stored(version, settings):
    recs = records(5)
    recs[3]["score"] = 1.5
    recs[0]["features"] = {"f1": 1.0, "f2": 2.0, "y": 3.0}
    recs[2]["timestamp"] = "yesterday"
    recs[4]["prediction_id"] = "p1"

    with pytest.raises(InvalidInput) as caught:
        ingest_predictions(version, recs)

    assert caught.value.errors == {
        "records[0].features": ["missing features: f3; unknown features: y"],
        "records[2].timestamp": [
            "must be an ISO 8601 date-time, e.g. 2026-01-05T10:00:00Z (naive times are UTC)"
        ],
        "records[3].score": ["must be a number in [0, 1]"],
        "records[4].prediction_id": [
            "duplicates records[1].prediction_id; ids are unique within a batch"
        ],
    }
    assert not DataBatch.objects.exists()
    assert stored_files(settings) == []
    assert not AuditEvent.objects.filter(action="predictions.ingested").exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("prediction", 2, "must be 0, 1 or null"),
        ("score", True, "must be a number in [0, 1]"),
        ("prediction_id", "", "must be a non-empty string of at most 200 characters"),
        ("colour", "red", "Unknown field."),
    ],
)
def test_each_bad_field_is_named(version, field, value, message):
    recs = records(2)
    recs[1][field] = value

    with pytest.raises(InvalidInput) as caught:
        ingest_predictions(version, recs)

    assert caught.value.errors == {f"records[1].{field}": [message]}


def test_a_prediction_id_already_stored_for_the_version_is_refused(version):
    ingest_predictions(version, records(3))

    with pytest.raises(InvalidInput) as caught:
        ingest_predictions(version, records(2, prefix="q") + records(1))

    assert caught.value.errors == {
        "records[2].prediction_id": [
            f"already stored for version {version.version} (on 2026-01-05)"
        ]
    }
    assert DataBatch.objects.count() == 1


def test_a_prediction_id_stored_on_another_day_is_not_a_duplicate(version):
    ingest_predictions(version, records(2))

    (batch,) = ingest_predictions(version, records(2, start=T0 + timedelta(days=1)))

    assert batch.day == date(2026, 1, 6) and batch.rows == 2


def ingest_committed(version, recs, django_capture_on_commit_callbacks, **kwargs):
    """Ingest and run what follows the commit (the merge of the day's id indexes)."""
    with django_capture_on_commit_callbacks(execute=True):
        return ingest_predictions(version, recs, **kwargs)


def day_indexes(version, day=date(2026, 1, 5)) -> set[str]:
    batches = DataBatch.objects.filter(version=version, kind=BatchKind.PREDICTIONS, day=day)
    return set(batches.values_list("id_index", flat=True))


def test_a_day_keeps_about_log2_id_indexes_as_batches_arrive(
    version, settings, django_capture_on_commit_callbacks
):
    counts = []
    for n in range(1, 9):  # eight batches of 3 predictions
        recs = records(3, start=T0 + timedelta(minutes=10 * n), prefix=f"b{n}-")
        ingest_committed(version, recs, django_capture_on_commit_callbacks)
        counts.append(len(day_indexes(version)))

    assert counts == [1, 1, 2, 1, 2, 2, 3, 1]  # a binary counter of batches
    (index,) = day_indexes(version)
    assert store.load_id_index(index).tolist() == sorted(
        store.id_digests([f"b{n}-{i}" for n in range(1, 9) for i in range(3)]).tolist()
    )
    on_disk = {p for p in stored_files(settings) if p.endswith(store.ID_INDEX_SUFFIX)}
    assert on_disk == {index}  # merged indexes are deleted once the merge commits


def test_a_duplicate_is_found_in_merged_id_indexes_naming_record_and_day(
    version, django_capture_on_commit_callbacks
):
    for n in range(4):
        recs = records(3, start=T0 + timedelta(minutes=10 * n), prefix=f"b{n}-")
        ingest_committed(version, recs, django_capture_on_commit_callbacks)
    assert len(day_indexes(version)) == 1

    with pytest.raises(InvalidInput) as caught:
        ingest_predictions(version, records(2, prefix="new-") + records(1, prefix="b0-"))

    assert caught.value.errors == {
        "records[2].prediction_id": [
            f"already stored for version {version.version} (on 2026-01-05)"
        ]
    }
    assert DataBatch.objects.count() == 4


def test_a_digest_collision_never_refuses_a_new_prediction_id(version, monkeypatch):
    monkeypatch.setattr(id_index, "id_digests", lambda ids: np.zeros(len(ids), dtype=np.int64))
    ingest_predictions(version, records(3))

    batches = ingest_predictions(version, records(3, prefix="q"))  # every digest collides

    assert [b.rows for b in batches] == [3]
    with pytest.raises(InvalidInput) as caught:
        ingest_predictions(version, records(1, prefix="q"))
    assert list(caught.value.errors) == ["records[0].prediction_id"]


def test_batches_stored_before_id_indexes_are_still_checked_then_indexed(
    version, django_capture_on_commit_callbacks
):
    (old,) = ingest_predictions(version, records(3))
    storage.current().delete([old.id_index])
    DataBatch.objects.filter(pk=old.pk).update(id_index="")  # as stored before migration 0003

    with pytest.raises(InvalidInput) as caught:
        ingest_predictions(version, records(1))
    assert list(caught.value.errors) == ["records[0].prediction_id"]

    ingest_committed(version, records(3, prefix="q"), django_capture_on_commit_callbacks)
    (index,) = day_indexes(version)  # the old batch was folded into the merged index
    assert index and store.load_id_index(index).size == 6


def test_a_merge_that_lost_a_race_changes_nothing(version, settings, monkeypatch):
    for n in range(2):
        ingest_predictions(version, records(3, prefix=f"b{n}-"))
    before = {b.pk: b.id_index for b in DataBatch.objects.all()}
    real_runs = id_index._runs

    def purged_meanwhile(version_id, day):
        runs = real_runs(version_id, day)
        DataBatch.objects.filter(pk=min(before)).update(id_index="elsewhere.ids.npy")
        return runs

    monkeypatch.setattr(id_index, "_runs", purged_meanwhile)

    assert store.compact_id_index(version_id=version.pk, day=date(2026, 1, 5)) == 0
    assert DataBatch.objects.get(pk=max(before)).id_index == before[max(before)]
    indexes = {p for p in stored_files(settings) if p.endswith(store.ID_INDEX_SUFFIX)}
    assert indexes == set(before.values())  # the merged file it wrote is gone again


def test_a_batch_whose_keys_were_all_ingested_is_not_stored_again(version, settings):
    first = ingest_predictions(version, records(3), batch_keys=["spool-1.arrow", "spool-2.arrow"])
    files = stored_files(settings)

    again = ingest_predictions(version, records(3), batch_keys=["spool-2.arrow", "spool-1.arrow"])

    assert [b.pk for b in again] == [b.pk for b in first]
    assert DataBatch.objects.count() == 1 and stored_files(settings) == files
    assert AuditEvent.objects.filter(action="predictions.ingested").count() == 1
    assert IngestKey.objects.filter(batch=first[0]).count() == 2


def test_a_batch_mixing_ingested_and_new_keys_is_refused_naming_the_old_ones(version):
    (first,) = ingest_predictions(version, records(3), batch_keys=["spool-1.arrow"])

    with pytest.raises(InvalidInput) as caught:
        ingest_predictions(
            version, records(2, prefix="q"), batch_keys=["spool-1.arrow", "spool-2.arrow"]
        )

    assert caught.value.errors == {
        "batch_keys": [
            f"spool-1.arrow was ingested before (batch {first.pk}); send the others without it"
        ]
    }
    assert DataBatch.objects.count() == 1


def test_keys_are_per_version_and_purged_with_their_batches(version):
    other = mixed_version(model=version.model)
    ingest_predictions(version, records(2), batch_keys=["spool-1.arrow"])

    batches = ingest.predictions_ingest(
        model_name=other.model.name,
        version=other.version,
        records=records(2),
        actor=ACTOR,
        batch_keys=["spool-1.arrow"],
    )

    assert batches[0].version == other
    assert ingest.purge_expired(now=T0 + timedelta(days=400)) == 2
    assert not IngestKey.objects.exists()


@pytest.mark.parametrize(
    "keys, field",
    [([""], "batch_keys[0]"), (["a", "x" * 201], "batch_keys[1]"), (["a", "a"], "batch_keys")],
)
def test_batch_keys_must_be_distinct_non_empty_and_short(version, keys, field):
    with pytest.raises(InvalidInput) as caught:
        ingest_predictions(version, records(1), batch_keys=keys)

    assert list(caught.value.errors) == [field]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_batches_sharing_an_id_store_it_once(version, monkeypatch):
    """Both pass validation and write their files before either commits: the lock decides."""
    import threading

    from django.db import connection

    written = threading.Barrier(2, timeout=30)
    write_by_day = store.write_by_day

    def write_then_wait(*args, **kwargs):
        files = write_by_day(*args, **kwargs)
        written.wait()
        return files

    monkeypatch.setattr(store, "write_by_day", write_then_wait)
    outcomes = []

    def post(prefix):
        try:
            recs = records(2, prefix=prefix) + records(1, prefix="shared-")
            outcomes.append(len(ingest_predictions(version, recs)))
        except InvalidInput as exc:
            outcomes.append(list(exc.errors))
        finally:
            connection.close()

    threads = [threading.Thread(target=post, args=(p,)) for p in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes, key=str) == [1, ["records[2].prediction_id"]]
    assert DataBatch.objects.count() == 1


# --- the gateway's prediction spool (serving.log) -------------------------------------------------


def test_a_feature_keeps_its_type_across_batches(version):
    ingest_predictions(version, records(2))
    recs = records(1, prefix="q")
    recs[0]["features"]["f1"] = "high"

    with pytest.raises(InvalidInput) as caught:
        ingest_predictions(version, recs)

    assert caught.value.errors == {
        "records[0].features.f1": ["must be a number or null (f1 is declared number)"]
    }


def test_a_failed_commit_removes_its_files(version, settings, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(audit, "record", broken)

    with pytest.raises(RuntimeError):
        ingest_predictions(version, records(3, start=T0 - timedelta(minutes=1)))

    assert not DataBatch.objects.exists()
    assert stored_files(settings) == []


# --- loading ------------------------------------------------------------------------------------


def test_load_window_respects_the_half_open_interval(version):
    ingest_predictions(version, records(6, start=T0, step=timedelta(hours=12)))  # 3 days

    window = store.load_window(
        model=version.model,
        version=version,
        start=T0 + timedelta(hours=12),
        end=T0 + timedelta(days=2),
    )

    assert window["prediction_id"].tolist() == ["p1", "p2", "p3"]
    assert str(window["timestamp"].dtype) == "datetime64[us, UTC]"
    assert window["timestamp"].min() == T0 + timedelta(hours=12)
    assert window["timestamp"].max() < T0 + timedelta(days=2)


def test_load_window_reads_only_the_partitions_of_its_days(version):
    batches = ingest_predictions(version, records(3, step=timedelta(days=1)))
    storage.current().put(batches[0].path, b"not parquet")  # day 1, outside the window

    window = store.load_window(
        model=version.model,
        version=version,
        start=T0 + timedelta(days=1),
        end=T0 + timedelta(days=3),
    )

    assert window["prediction_id"].tolist() == ["p1", "p2"]


def test_load_window_projects_columns_and_hides_sensitive_ones(version):
    ingest_predictions(version, records(4))
    end = T0 + timedelta(days=1)

    default = store.load_window(model=version.model, version=version, start=T0, end=end)
    projected = store.load_window(
        model=version.model, version=version, start=T0, end=end, columns=["score", "f.f3"]
    )
    sensitive = store.load_window(
        model=version.model, version=version, start=T0, end=end, with_sensitive=True
    )

    assert "s.race" not in default.columns
    assert list(projected.columns) == ["score", "f.f3"]
    absent = store.load_window(
        model=version.model, version=version, start=T0, end=end, columns=["score", "f.none"]
    )
    assert absent["f.none"].isna().all()
    assert projected["f.f3"].tolist() == ["a", "b", "a", "b"]
    assert sensitive["s.race"].tolist() == ["x", "y", "z", "x"]
    assert default["prediction"].dtype == np.float64
    with pytest.raises(ValueError, match="with_sensitive"):
        store.load_window(
            model=version.model, version=version, start=T0, end=end, columns=["s.race"]
        )


def test_load_window_keeps_versions_apart(version):
    other = mixed_version(model=version.model)
    ingest_predictions(version, records(2))
    ingest_predictions(other, records(3))  # the same ids: shadow traffic shares them

    mine = store.load_window(model=version.model, version=version, start=T0, end=T0 + timedelta(1))
    both = store.load_window(model=version.model, version=None, start=T0, end=T0 + timedelta(1))

    assert len(mine) == 2 and set(mine["version"]) == {version.version}
    assert len(both) == 5


def test_load_window_joins_the_latest_label_of_each_prediction(version):
    ingest_predictions(version, records(4, start=T0 - timedelta(minutes=2)))  # two days
    first, later = "2026-01-10T00:00:00Z", "2026-02-01T00:00:00Z"
    ingest_labels(
        version,
        [
            {"prediction_id": "p0", "label": 1, "label_time": first},
            {"prediction_id": "p3", "label": 0, "label_time": first},
        ],
    )
    ingest_labels(version, [{"prediction_id": "p0", "label": 0, "label_time": later}])
    ingest_labels(  # an older correction arriving last does not win
        version, [{"prediction_id": "p3", "label": 1, "label_time": "2026-01-06T00:00:00Z"}]
    )

    window = store.load_window(
        model=version.model,
        version=version,
        start=T0 - timedelta(days=1),
        end=T0 + timedelta(days=1),
        columns=["prediction_id", "score"],
        with_labels=True,
    )

    labels = dict(zip(window["prediction_id"], window["label"], strict=True))
    assert labels["p0"] == 0 and labels["p3"] == 0
    assert np.isnan(labels["p1"]) and np.isnan(labels["p2"])
    assert window.loc[window["prediction_id"] == "p0", "label_time"].item() == datetime(
        2026, 2, 1, tzinfo=UTC
    )


def test_labels_join_on_a_window_edge_inside_a_day(version):
    ingest_predictions(version, records(6, step=timedelta(hours=1)))
    ingest_labels(version, [{"prediction_id": f"p{i}", "label": i % 2} for i in range(6)])

    window = store.load_window(
        model=version.model,
        version=version,
        start=T0 + timedelta(hours=2),
        end=T0 + timedelta(hours=5),
        columns=["prediction_id"],
        with_labels=True,
    )

    assert window["prediction_id"].tolist() == ["p2", "p3", "p4"]
    assert window["label"].tolist() == [0.0, 1.0, 0.0]


def test_labels_for_unknown_prediction_ids_are_refused_naming_the_row(version, settings):
    ingest_predictions(version, records(2))
    before = stored_files(settings)

    with pytest.raises(InvalidInput) as caught:
        ingest_labels(
            version, [{"prediction_id": "p1", "label": 1}, {"prediction_id": "nope", "label": 0}]
        )

    message = f"no stored prediction of model '{version.model.name}' has this id"
    assert caught.value.errors == {"records[1].prediction_id": [message]}
    assert not DataBatch.objects.filter(kind=BatchKind.LABELS).exists()
    assert stored_files(settings) == before


def test_a_label_must_be_0_or_1(version):
    ingest_predictions(version, records(1))

    with pytest.raises(InvalidInput) as caught:
        ingest_labels(version, [{"prediction_id": "p0", "label": 2}])

    assert caught.value.errors == {"records[0].label": ["must be 0 or 1"]}


def test_labels_are_filed_with_their_predictions_day_and_audited(version):
    ingest_predictions(version, records(2, start=T0 - timedelta(minutes=1)))

    batches = ingest_labels(
        version, [{"prediction_id": "p0", "label": 1}, {"prediction_id": "p1", "label": 0}]
    )

    assert sorted(b.day for b in batches) == [date(2026, 1, 4), date(2026, 1, 5)]
    assert {b.version_id for b in batches} == {version.pk}
    event = AuditEvent.objects.get(action="labels.ingested")
    assert event.after["rows"] == 2 and event.after["days"] == ["2026-01-04", "2026-01-05"]


# --- reference data and profiles ----------------------------------------------------------------


def test_reference_upload_computes_the_profile_stats_would(version):
    recs = records(300, race=False)
    for i, record in enumerate(recs):
        record["label"] = int(i % 3 == 0)
        del record["prediction_id"], record["timestamp"]

    result = ingest.reference_ingest(
        model_name=version.model.name, version=version.version, records=recs, actor=ACTOR
    )

    expected = stats.build_reference_profile(
        {
            "f1": np.array([r["features"]["f1"] for r in recs]),
            "f2": np.array([float(r["features"]["f2"]) for r in recs]),
            "f3": np.array([r["features"]["f3"] for r in recs], dtype=object),
        },
        np.array([r["score"] for r in recs]),
        np.array([r["label"] for r in recs]),
        categorical_features=["f3"],
    )
    stored = ReferenceProfile.objects.get(version=version)
    assert stored.profile == expected
    assert stored.rows == 300 and stored.batch == result.batches[0]
    assert profiles.stored_profile(version) == expected
    event = AuditEvent.objects.get(action="reference.ingested")
    assert event.after["rows"] == 300 and event.after["reference_rows"] == 300


def test_new_reference_data_is_added_and_the_profile_recomputed(version):
    first, second = records(100, race=False), records(50, prefix="q", seed=1, race=False)
    for recs in (first, second):
        ingest.reference_ingest(
            model_name=version.model.name, version=version.version, records=recs, actor=ACTOR
        )

    reference = store.load_reference(version)

    assert len(reference) == 150
    assert ReferenceProfile.objects.get(version=version).rows == 150
    assert profiles.stored_profile(version) == profiles.profile_for(version)
    assert DataBatch.objects.filter(kind=BatchKind.REFERENCE).count() == 2


# --- retention ----------------------------------------------------------------------------------


def test_purge_removes_only_expired_predictions_and_labels_and_audits_it(version, settings):
    MonitoringPolicy.objects.create(model=version.model, version=1, values={"retention_days": 30})
    now = T0 + timedelta(days=40)
    old = ingest_predictions(version, records(2, start=T0))  # day 0: expired
    kept = ingest_predictions(version, records(2, start=T0 + timedelta(days=11), prefix="k"))
    ingest_labels(
        version, [{"prediction_id": "p0", "label": 1}, {"prediction_id": "k0", "label": 1}]
    )
    reference = ingest.reference_ingest(
        model_name=version.model.name, version=version.version, records=records(5), actor=ACTOR
    )

    removed = ingest.purge_expired(now=now)

    assert removed == 2  # the old predictions and their labels
    remaining = DataBatch.objects.order_by("id")
    assert {b.kind for b in remaining} == {"predictions", "labels", "reference"}
    assert all(b.day > date(2026, 1, 5) for b in remaining if b.kind != BatchKind.REFERENCE)
    assert not stored(old[0].path)
    assert not stored(old[0].id_index)
    assert stored(kept[0].path) and stored(kept[0].id_index)
    assert stored(reference.batches[0].path)
    event = AuditEvent.objects.get(action="predictions.purged")
    assert event.actor == "system:monitoring.purge_expired_predictions"
    assert event.model_name == version.model.name
    assert event.after["rows"] == 2 and event.after["label_rows"] == 1
    assert event.after["days"] == ["2026-01-05"] and event.after["retention_days"] == 30
    assert ingest.purge_expired(now=now) == 0  # nothing left to purge, nothing audited
    assert AuditEvent.objects.filter(action="predictions.purged").count() == 1


def test_retention_defaults_to_a_year(version):
    ingest_predictions(version, records(1))

    assert ingest.purge_expired(now=T0 + timedelta(days=365)) == 0
    assert ingest.purge_expired(now=T0 + timedelta(days=366)) == 1


def test_the_purge_task_runs_the_purge(version, monkeypatch):
    calls = []
    monkeypatch.setattr(ingest, "purge_expired", lambda: calls.append(1) or 7)

    assert purge_expired_predictions.name == "monitoring.purge_expired_predictions"
    assert purge_expired_predictions.run() == 7
    assert calls == [1]


# --- orphans ------------------------------------------------------------------------------------


def test_the_orphan_sweeper_removes_old_files_no_batch_points_to(version, backend):
    (batch,) = ingest_predictions(version, records(2))
    directory = store.partition_of(batch.path)
    orphan, stale_temp = f"{directory}/0123.parquet", f"{directory}/.89ab.parquet.tmp"
    for key in (orphan, stale_temp):
        backend.put(key, b"x")
    cutoff = aged(backend, orphan, stale_temp, batch.path)
    fresh_orphan = f"{directory}/4567.parquet"
    if not backend.remote:  # written after the cutoff (an object's time cannot be set)
        backend.put(fresh_orphan, b"x")

    removed = store.sweep_orphans(older_than=cutoff)

    assert sorted(removed) == sorted([orphan, stale_temp])
    assert stored(batch.path) and stored(batch.id_index)
    assert backend.remote or stored(fresh_orphan)


def test_the_orphan_sweeper_keeps_id_indexes_a_batch_points_to(version, backend):
    (batch,) = ingest_predictions(version, records(2))
    orphan_index = f"{store.partition_of(batch.id_index)}/0123.ids.npy"
    backend.put(orphan_index, b"x")
    cutoff = aged(backend, batch.id_index, orphan_index, batch.path)

    removed = store.sweep_orphans(older_than=cutoff)

    assert removed == [orphan_index]
    assert stored(batch.id_index)


# --- locating labelled predictions ----------------------------------------------------------------


def located(version, ids) -> dict[str, list]:
    result = store.locate_predictions(model=version.model, ids=pa.array(ids, type=pa.string()))
    fields = ("index", "batch_id", "row", "day", "version_id", "found")
    return {f: getattr(result, f).tolist() for f in fields}


def opened_files(monkeypatch) -> list[str]:
    """The prediction files whose ids are read from now on."""
    opened: list[str] = []
    real_ids = id_index._ids

    def spy(path):
        opened.append(path)
        return real_ids(path)

    monkeypatch.setattr(id_index, "_ids", spy)
    return opened


def test_locating_through_id_indexes_finds_what_reading_every_file_finds(
    version, django_capture_on_commit_callbacks
):
    shadow = ModelVersionFactory(model=version.model, feature_types=MIXED)
    for n, days_back in enumerate([0, 0, 0, 1, 3, 3, 7]):
        start = T0 - timedelta(days=days_back) + timedelta(hours=n)
        recs = records(4, start=start, prefix=f"b{n}-")
        ingest_committed(version, recs, django_capture_on_commit_callbacks)
        if n % 3 == 0:  # the shadow saw some of the same requests
            ingest_committed(shadow, recs, django_capture_on_commit_callbacks)
    ingest_predictions(version, records(2, start=T0 - timedelta(days=8), prefix="b4-"))  # again
    assert len(day_indexes(version)) < 3  # merged
    wanted = ["b0-1", "b4-0", "b6-3", "b3-2", "nope", "b2-0", "b4-1"]

    with_indexes = located(version, wanted)
    DataBatch.objects.update(id_index="")  # every file read, as before indexes existed
    without = located(version, wanted)

    assert with_indexes == without
    assert with_indexes["found"] == [True, True, True, True, False, True, True]
    assert sorted(with_indexes["version_id"]).count(shadow.pk) == 3  # b0-1, b3-2, b6-3


def test_a_digest_collision_is_not_a_located_prediction(version, monkeypatch):
    (batch,) = ingest_predictions(version, records(3))
    real_digests = id_index.id_digests
    monkeypatch.setattr(  # "nope" hashes as "p1" does
        id_index, "id_digests", lambda ids: real_digests(["p1" if i == "nope" else i for i in ids])
    )
    opened = opened_files(monkeypatch)

    found = located(version, ["nope", "p2"])

    assert opened == [batch.path]  # the index said maybe; the ids said no
    assert found["found"] == [False, True]
    assert found["index"] == [1] and found["row"] == [2]


def test_predictions_stored_before_id_indexes_are_still_labelled(version):
    (old,) = ingest_predictions(version, records(3, start=T0 - timedelta(days=2)))
    storage.current().delete([old.id_index])
    DataBatch.objects.filter(pk=old.pk).update(id_index="")  # as stored before migration 0003
    ingest_predictions(version, records(3, prefix="q"))

    (labels,) = ingest_labels(version, [{"prediction_id": "p1", "label": 1}])

    assert labels.day == date(2026, 1, 3)
    table = store.read_table(labels.path)
    assert table.column("batch").to_pylist() == [old.pk]
    assert table.column("row").to_pylist() == [1]


def test_shadow_twins_under_two_versions_are_both_located_and_labelled(version):
    shadow = ModelVersionFactory(model=version.model, feature_types=MIXED)
    (live_batch,) = ingest_predictions(version, records(3))
    (shadow_batch,) = ingest_predictions(shadow, records(3))

    found = located(version, ["p1"])

    assert sorted(zip(found["version_id"], found["batch_id"], found["row"], strict=True)) == [
        (version.pk, live_batch.pk, 1),
        (shadow.pk, shadow_batch.pk, 1),
    ]
    labels = ingest_labels(version, [{"prediction_id": "p1", "label": 1}])
    assert sorted(b.version_id for b in labels) == sorted([version.pk, shadow.pk])


def test_labelling_reads_only_the_prediction_files_whose_index_holds_an_id(version, monkeypatch):
    batches = [
        ingest_predictions(version, records(3, start=T0 - timedelta(days=d), prefix=f"d{d}-"))[0]
        for d in range(6)
    ]
    opened = opened_files(monkeypatch)

    ingest_labels(version, [{"prediction_id": "d5-0", "label": 1}])  # the oldest day
    ingest_labels(version, [{"prediction_id": "d0-2", "label": 0}])  # the newest

    assert opened == [batches[5].path, batches[0].path]
