"""The production data API: predictions, labels and reference data over REST."""

from __future__ import annotations

import io
from datetime import timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.urls import reverse

from governance.models import AuditEvent, Lifecycle
from monitoring.models import BatchKind, DataBatch, ReferenceProfile
from tests.monitoring.helpers import T0, mixed_version

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path


@pytest.fixture
def version():
    return mixed_version()


def url(version, what: str) -> str:
    if what == "reference":
        return reverse(
            "monitoring:reference", kwargs={"name": version.model.name, "version": version.version}
        )
    return reverse(f"monitoring:{what}", kwargs={"name": version.model.name})


def records(n, *, start=T0, step=timedelta(hours=10), prefix="p"):
    return [
        {
            "prediction_id": f"{prefix}{i}",
            "timestamp": (start + i * step).isoformat(),
            "features": {"f1": i / 10, "f2": i, "f3": "ab"[i % 2]},
            "score": (i % 10) / 10,
            "prediction": i % 2,
            "sensitive": {"race": "xyz"[i % 3]},
        }
        for i in range(n)
    ]


def post_predictions(client, version, recs, **extra):
    return client.post(
        url(version, "predictions"), {"version": version.version, "records": recs}, **extra
    )


def post_labels(client, version, labels: dict[str, int]):
    """The labels (prediction id -> label) as JSON records, in that order."""
    records = [{"prediction_id": pid, "label": label} for pid, label in labels.items()]
    return client.post(url(version, "labels"), {"records": records})


def upload_frame(n=3) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "prediction_id": [f"u{i}" for i in range(n)],
            "timestamp": [(T0 + timedelta(hours=i)).isoformat() for i in range(n)],
            "score": [0.1 * (i + 1) for i in range(n)],
            "prediction": [i % 2 for i in range(n)],
            "f1": [0.5 * i for i in range(n)],
            "f2": list(range(n)),
            "f3": ["a", "b", "c"][:n],
            "sensitive.race": ["x", "y", "z"][:n],
        }
    )


# --- predictions --------------------------------------------------------------------------------


def test_ci_logs_predictions_and_learns_batches_rows_and_days(api_client, version):
    response = post_predictions(api_client("ci"), version, records(4))  # 00:00 to 06:00 next day

    assert response.status_code == 201, response.json()
    assert response.json() == {"batches": 2, "rows": 4, "days": ["2026-01-05", "2026-01-06"]}
    assert DataBatch.objects.filter(kind=BatchKind.PREDICTIONS, version=version).count() == 2
    event = AuditEvent.objects.get(action="predictions.ingested")
    assert event.actor.startswith("ci-user") and event.after["rows"] == 4


def test_a_bad_record_is_refused_with_400_naming_its_index_and_field(api_client, version):
    recs = records(5)
    recs[3]["score"] = 1.7
    recs[0]["features"] = {"f1": 1, "f2": 2, "f3": "a", "y": 0}
    del recs[0]["features"]["f1"]

    response = post_predictions(api_client("ci"), version, recs)

    assert response.status_code == 400
    assert response.json() == {
        "detail": "Invalid input.",
        "errors": {
            "records[0].features": ["missing features: f1; unknown features: y"],
            "records[3].score": ["must be a number in [0, 1]"],
        },
    }
    assert not DataBatch.objects.exists()
    assert not AuditEvent.objects.filter(action="predictions.ingested").exists()


def test_re_posted_prediction_ids_are_refused_with_400_naming_each_record(api_client, version):
    client = api_client("ci")
    post_predictions(client, version, records(4))  # p0-p2 on 2026-01-05, p3 on 2026-01-06

    response = post_predictions(client, version, records(1, prefix="q") + records(4)[1:])

    assert response.status_code == 400
    stored = f"already stored for version {version.version}"
    assert response.json()["errors"] == {
        "records[1].prediction_id": [f"{stored} (on 2026-01-05)"],
        "records[2].prediction_id": [f"{stored} (on 2026-01-05)"],
        "records[3].prediction_id": [f"{stored} (on 2026-01-06)"],
    }
    assert DataBatch.objects.count() == 2  # the first post's two days; nothing of the second


def test_the_version_is_required_and_must_exist(api_client, version):
    client = api_client("ci")

    missing = client.post(url(version, "predictions"), {"records": records(1)})
    unknown = client.post(url(version, "predictions"), {"version": "9.9.9", "records": records(1)})

    assert missing.status_code == 400 and "version" in missing.json()["errors"]
    assert unknown.status_code == 404


def test_a_product_manager_may_not_ingest(api_client, version):
    client = api_client("product_manager")

    responses = [
        post_predictions(client, version, records(1)),
        post_labels(client, version, {"p0": 1}),
        client.post(url(version, "reference"), {"records": records(1)}),
    ]

    assert [r.status_code for r in responses] == [403, 403, 403]
    assert not DataBatch.objects.exists()


def test_a_data_engineer_may_ingest_for_a_version_in_any_stage(api_client, version):
    Lifecycle.objects.filter(version=version).update(stage="retired")

    response = post_predictions(api_client("data_engineer"), version, records(2))

    assert response.status_code == 201


def test_a_retry_with_the_same_idempotency_key_stores_once(api_client, version):
    client = api_client("ci")

    first = post_predictions(client, version, records(2), HTTP_IDEMPOTENCY_KEY="batch-1")
    again = post_predictions(client, version, records(2), HTTP_IDEMPOTENCY_KEY="batch-1")

    assert first.status_code == again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert DataBatch.objects.count() == 1


def test_a_csv_upload_is_stored_like_json_records(api_client, version):
    data = upload_frame().to_csv(index=False).encode()

    response = api_client("ci").post(
        url(version, "predictions"),
        {"version": version.version, "file": io.BytesIO(data)},
        format="multipart",
    )

    assert response.status_code == 201, response.json()
    assert response.json() == {"batches": 1, "rows": 3, "days": ["2026-01-05"]}
    assert DataBatch.objects.get().source == "upload"


def test_a_parquet_upload_is_stored_like_json_records(api_client, version):
    columns = upload_frame().to_dict("list")
    columns["timestamp"] = pa.array(
        [T0 + timedelta(hours=i) for i in range(3)], type=pa.timestamp("us", tz="UTC")
    )
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)

    response = api_client("ci").post(
        url(version, "predictions"),
        {"version": version.version, "file": io.BytesIO(buffer.getvalue())},
        format="multipart",
    )

    assert response.status_code == 201, response.json()
    assert response.json()["rows"] == 3


def test_a_bad_cell_of_an_upload_is_named_by_its_row(api_client, version):
    frame = upload_frame().astype({"score": object})
    frame.loc[2, "score"] = "high"

    response = api_client("ci").post(
        url(version, "predictions"),
        {"version": version.version, "file": io.BytesIO(frame.to_csv(index=False).encode())},
        format="multipart",
    )

    assert response.status_code == 400
    errors = response.json()["errors"]
    assert errors["records[2].score"] == ["must be a number in [0, 1]"]
    assert not DataBatch.objects.exists()


def test_an_upload_must_have_the_feature_columns(api_client, version):
    data = upload_frame().drop(columns=["f2"]).assign(extra=1).to_csv(index=False).encode()

    response = api_client("ci").post(
        url(version, "predictions"),
        {"version": version.version, "file": io.BytesIO(data)},
        format="multipart",
    )

    assert response.status_code == 400
    (unknown, missing) = response.json()["errors"]["file"]
    assert unknown.startswith("unknown column(s) extra")
    assert missing == "missing column(s) f2"


# --- labels -------------------------------------------------------------------------------------


def test_labels_of_logged_predictions_are_stored(api_client, version):
    client = api_client("ci")
    post_predictions(client, version, records(4))

    response = post_labels(client, version, {"p0": 1, "p3": 0})

    assert response.status_code == 201, response.json()
    assert response.json() == {"batches": 2, "rows": 2, "days": ["2026-01-05", "2026-01-06"]}


def test_labels_for_unknown_predictions_are_refused_naming_the_row(api_client, version):
    client = api_client("ci")
    post_predictions(client, version, records(1))

    response = post_labels(client, version, {"p0": 1, "zz": 1})

    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["records[1].prediction_id"]
    assert not DataBatch.objects.filter(kind=BatchKind.LABELS).exists()


def test_labels_can_be_uploaded_as_csv(api_client, version):
    client = api_client("ci")
    post_predictions(client, version, records(2))
    data = b"prediction_id,label,label_time\np0,1,2026-01-09T00:00:00Z\np1,0,\n"

    response = client.post(url(version, "labels"), {"file": io.BytesIO(data)}, format="multipart")

    assert response.status_code == 201, response.json()
    assert response.json()["rows"] == 2


# --- reference data -----------------------------------------------------------------------------


def test_reference_data_answers_with_the_profile_summary(api_client, version):
    recs = [{**r, "label": i % 2} for i, r in enumerate(records(40))]

    response = api_client("ci").post(url(version, "reference"), {"records": recs})

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["version"] == version.version and body["rows"] == 40 and body["batches"] == 1
    profile = body["profile"]
    assert profile["rows"] == 40
    assert [(f["name"], f["kind"]) for f in profile["features"]] == [
        ("f1", "numeric"),
        ("f2", "numeric"),
        ("f3", "categorical"),
    ]
    assert profile["labels"] == {"rows": 40, "positive_rate": 0.5}
    assert ReferenceProfile.objects.get(version=version).rows == 40


def test_a_bad_reference_record_is_refused(api_client, version):
    recs = records(3)
    recs[1]["label"] = "yes"

    response = api_client("ci").post(url(version, "reference"), {"records": recs})

    assert response.status_code == 400
    assert response.json()["errors"] == {"records[1].label": ["must be 0 or 1"]}
    assert not ReferenceProfile.objects.exists()


# --- reading ------------------------------------------------------------------------------------


def test_sensitive_attributes_are_shown_only_to_roles_that_may_read_them(api_client, version):
    post_predictions(api_client("ci"), version, records(3))

    as_ci = api_client("ci").get(url(version, "predictions"), {"until": "2026-02-01"})
    as_ethics = api_client("ethics_officer").get(
        url(version, "predictions"), {"until": "2026-02-01"}
    )

    assert as_ci.status_code == as_ethics.status_code == 200
    ci_records, ethics_records = as_ci.json()["results"], as_ethics.json()["results"]
    assert as_ci.json()["sensitive_included"] is False
    assert all("sensitive" not in r for r in ci_records)
    assert [r["sensitive"] for r in ethics_records] == [{"race": "z"}, {"race": "y"}, {"race": "x"}]
    assert ethics_records[-1] == {
        "prediction_id": "p0",
        "version": version.version,
        "timestamp": "2026-01-05T00:00:00Z",
        "score": 0.0,
        "prediction": 0,
        "features": {"f1": 0.0, "f2": 0.0, "f3": "a"},
        "label": None,
        "label_time": None,
        "sensitive": {"race": "x"},
    }


def test_recent_predictions_are_filtered_by_version_time_and_limit(api_client, version):
    other = mixed_version(model=version.model)
    client = api_client("ci")
    post_predictions(client, version, records(4))
    post_predictions(client, other, records(2, prefix="o"))
    post_labels(client, version, {"p2": 1})

    newest = client.get(url(version, "predictions"), {"until": "2026-02-01", "limit": 2})
    window = client.get(
        url(version, "predictions"),
        {"version": version.version, "since": "2026-01-05T10:00:00Z", "until": "2026-01-06T06:00Z"},
    )
    bad = client.get(url(version, "predictions"), {"limit": 0})

    assert [r["prediction_id"] for r in newest.json()["results"]] == ["p3", "p2"]
    assert [(r["prediction_id"], r["label"]) for r in window.json()["results"]] == [
        ("p2", 1),
        ("p1", None),
    ]
    assert bad.status_code == 400
