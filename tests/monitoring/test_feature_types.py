"""Feature types declared per version, and bounded timestamps (issue 10, finding 13).

Before: the first batch fixed a feature's type (one string made later numbers strings), and
timestamps in year 1 or 2262 were stored, the latter never purged.
"""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.utils import timezone

from governance.audit import Actor
from governance.models import AuditEvent
from monitoring import ingest, store
from monitoring.models import BatchKind, DataBatch
from platform_core.errors import InvalidInput
from tests.factories import ModelVersionFactory

pytestmark = pytest.mark.django_db

ACTOR = Actor.system("tests")
T0 = datetime(2026, 1, 5, tzinfo=UTC)
TYPES = {"n": "number", "i": "integer", "s": "string", "b": "boolean"}


@pytest.fixture(autouse=True)
def _var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path


@pytest.fixture
def version():
    return ModelVersionFactory(feature_list=list(TYPES), feature_types=TYPES)


def record(index: int, /, **features):
    values = {"n": 0.5, "i": 3, "s": "a", "b": True, **features}
    return {
        "prediction_id": f"p{index}",
        "timestamp": (T0 + timedelta(minutes=index)).isoformat(),
        "features": values,
        "score": 0.4,
    }


def ingest_predictions(version, recs):
    return ingest.predictions_ingest(
        model_name=version.model.name, version=version.version, records=recs, actor=ACTOR
    )


def errors_of(call) -> dict:
    with pytest.raises(InvalidInput) as refused:
        call()
    return refused.value.errors


def stored_schema(version) -> pa.Schema:
    batch = DataBatch.objects.filter(version=version).latest("id")
    return pq.read_schema(store.resolve(batch.path))


# --- types ---------------------------------------------------------------------------------------


def test_a_string_in_the_first_batch_does_not_make_a_number_feature_text(version):
    errors = errors_of(lambda: ingest_predictions(version, [record(0), record(1, n="high")]))
    assert list(errors) == ["records[1].features.n"]
    assert "declared number" in str(errors["records[1].features.n"])
    assert not DataBatch.objects.exists()

    ingest_predictions(version, [record(0), record(1, n=2)])

    assert stored_schema(version).field("f.n").type == pa.float64()


@pytest.mark.parametrize(
    ("feature", "value"),
    [
        ("n", "1.5"),
        ("n", True),
        ("n", [1]),
        ("n", {"x": 1}),
        ("i", 1.5),
        ("i", "2"),
        ("i", 2.0**60),
        ("b", "yes"),
        ("b", 2),
        ("b", 0.5),
        ("s", {"x": 1}),
        ("s", "x" * 500),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_naming_record_and_feature(version, feature, value):
    errors = errors_of(
        lambda: ingest_predictions(version, [record(0), record(1, **{feature: value})])
    )
    assert list(errors) == [f"records[1].features.{feature}"]


def test_values_are_coerced_to_and_stored_as_the_declared_type(version):
    recs = [
        record(0, n=1, i=2.0, s=7, b=1),
        record(1, n=None, i=None, s=None, b=None),
        record(2, n=-0.25, i=-4, s="b", b="false"),
    ]
    ingest_predictions(version, recs)

    schema = stored_schema(version)
    assert schema.field("f.n").type == pa.float64()
    assert schema.field("f.i").type == pa.int64()
    assert pa.types.is_string(schema.field("f.s").type) or pa.types.is_dictionary(
        schema.field("f.s").type
    )
    assert schema.field("f.b").type == pa.bool_()
    batch = DataBatch.objects.get(version=version)
    table = pq.read_table(store.resolve(batch.path))
    assert table.column("f.i").to_pylist() == [2, None, -4]
    assert table.column("f.b").to_pylist() == [True, None, False]
    assert [str(v) if v is not None else None for v in table.column("f.s").to_pylist()] == [
        "7",
        None,
        "b",
    ]
    frame = store.recent_records(model=version.model, version=version, limit=10)
    assert frame["f.i"].dtype == "float64" and frame["f.b"].dtype == "float64"


def test_a_csv_upload_is_checked_against_the_declared_types(version):
    frame = pd.DataFrame(
        {
            "prediction_id": ["u0", "u1", "u2"],
            "timestamp": [(T0 + timedelta(hours=h)).isoformat() for h in range(3)],
            "score": [0.1, 0.2, 0.3],
            "n": [0.5, 1.5, 2.5],
            "i": ["1", "2.5", "3"],
            "s": ["1", "2", "x"],
            "b": ["true", "0", "maybe"],
        }
    )
    upload = io.BytesIO(frame.to_csv(index=False).encode())

    errors = errors_of(
        lambda: ingest.predictions_ingest(
            model_name=version.model.name, version=version.version, upload=upload, actor=ACTOR
        )
    )

    assert set(errors) == {"records[1].features.i", "records[2].features.b"}


def test_the_registered_types_win_over_what_is_stored(version):
    """A version that declares types is never steered by an older file's schema."""
    ingest_predictions(version, [record(0)])
    errors = errors_of(lambda: ingest_predictions(version, [record(1, i="3")]))
    assert list(errors) == ["records[0].features.i"]


def test_a_version_registered_before_declarations_keeps_its_stored_types():
    legacy = ModelVersionFactory(feature_list=["x", "c"], feature_types={})
    assert ingest.feature_types_of(legacy) == {"x": "number", "c": "number"}
    table = pa.table(
        {
            "prediction_id": ["old"],
            "timestamp": pa.array([T0], type=store.TIMESTAMP),
            "score": [0.5],
            "prediction": pa.array([None], type=pa.int8()),
            "f.x": [1.0],
            "f.c": ["a"],
            "version": [legacy.version],
        }
    )
    stored = store.write_file(
        table, model_name=legacy.model.name, kind="predictions", day=T0.date()
    )
    DataBatch.objects.create(
        model=legacy.model,
        version=legacy,
        kind=BatchKind.PREDICTIONS,
        day=T0.date(),
        path=stored.path,
        rows=1,
        digest=stored.digest,
    )
    assert ingest.feature_types_of(legacy) == {"x": "number", "c": "string"}


# --- timestamps ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stamp",
    [
        "0001-01-01T00:00:00Z",
        "2262-04-11T00:00:00Z",
        "1970-01-01T00:00:00Z",
        "2024-12-31T23:59:59Z",  # the version's training data start on 2025-01-01
        "+10 minutes",
    ],
)
def test_timestamps_outside_training_start_and_now_are_refused(version, stamp):
    if stamp == "+10 minutes":
        stamp = (timezone.now() + timedelta(minutes=10)).isoformat()
    recs = [record(0), {**record(1), "timestamp": stamp}]

    errors = errors_of(lambda: ingest_predictions(version, recs))

    assert list(errors) == ["records[1].timestamp"]
    assert "must be between 2025-01-01T00:00:00+00:00" in str(errors["records[1].timestamp"])


def test_timestamps_up_to_a_few_minutes_ahead_are_accepted_and_the_margin_is_a_setting(
    version, settings
):
    soon = (timezone.now() + timedelta(minutes=4)).isoformat()
    assert ingest_predictions(version, [{**record(0), "timestamp": soon}])
    settings.MONITORING_MAX_FUTURE_SECONDS = 60
    errors = errors_of(lambda: ingest_predictions(version, [{**record(1), "timestamp": soon}]))
    assert list(errors) == ["records[0].timestamp"]


def test_the_earliest_timestamp_is_the_versions_training_data_start():
    version = ModelVersionFactory(
        feature_list=list(TYPES),
        feature_types=TYPES,
        training_data_start=date(2026, 1, 5),
        training_data_end=date(2026, 1, 5),
    )
    early = {**record(0), "timestamp": "2026-01-04T23:59:59Z"}
    assert list(errors_of(lambda: ingest_predictions(version, [early]))) == ["records[0].timestamp"]
    assert ingest_predictions(version, [{**record(0), "timestamp": "2026-01-05T00:00:00Z"}])


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00Z", "2262-04-11T00:00:00Z"])
def test_label_times_are_bounded_too(version, stamp):
    ingest_predictions(version, [record(0)])
    errors = errors_of(
        lambda: ingest.labels_ingest(
            model_name=version.model.name,
            records=[{"prediction_id": "p0", "label": 1, "label_time": stamp}],
            actor=ACTOR,
        )
    )
    assert list(errors) == ["records[0].label_time"]


def test_reference_timestamps_are_bounded_too(version):
    recs = [{"features": record(0)["features"], "score": 0.5, "timestamp": "2262-01-01T00:00:00Z"}]
    errors = errors_of(
        lambda: ingest.reference_ingest(
            model_name=version.model.name, version=version.version, records=recs, actor=ACTOR
        )
    )
    assert list(errors) == ["records[0].timestamp"]


def test_retention_purges_batches_of_an_impossible_future_day(version, settings):
    """Data stored before the bound (a day in 2262) is purged, not kept for ever."""
    settings.MONITORING_MAX_FUTURE_SECONDS = 10**10
    far = datetime(2262, 1, 1, tzinfo=UTC)
    ingest_predictions(version, [{**record(0), "timestamp": far.isoformat()}])
    ingest_predictions(version, [record(1, n=1.0)])
    recent = (timezone.now() - timedelta(days=1)).isoformat()
    ingest_predictions(version, [{**record(2), "timestamp": recent}])

    removed = ingest.purge_expired()

    assert removed == 1
    assert sorted(b.day for b in DataBatch.objects.all()) == [
        T0.date(),
        (timezone.now() - timedelta(days=1)).date(),
    ]
    event = AuditEvent.objects.get(action="predictions.purged")
    assert event.after["future_days"] == ["2262-01-01"]


def test_ingestion_names_a_missing_or_misspelt_keyword(version):
    """The keywords predictions and reference ingestion share are declared once
    (``VersionBatchArgs``); a wrong one is still refused by name, before anything is read."""
    where = {"model_name": version.model.name, "version": version.version}
    with pytest.raises(TypeError, match="unexpected keyword arguments: upload_file"):
        ingest.predictions_ingest(**where, upload_file=b"", actor=ACTOR)
    with pytest.raises(TypeError, match="missing keyword arguments: actor"):
        ingest.reference_ingest(**where, records=[record(0)])
