"""What reading a window costs an object store, in requests: pinned, because requests are what
a store's capacity runs out of first (docs/scaling.md) and what moto's CPU goes to in the fleet
bench. A change that adds a HEAD or a listing per object, or splits a file's read, fails here."""

from __future__ import annotations

from datetime import timedelta

import pytest

from governance.audit import Actor
from monitoring import ingest, store
from monitoring.models import BatchKind, DataBatch
from monitoring.store import compact
from platform_core import storage
from tests.monitoring.helpers import T0, mixed_version
from tests.storage_backends import CountingProxy, use_backend

pytestmark = pytest.mark.django_db

ACTOR = Actor.system("tests")
DAYS = 3


@pytest.fixture
def s3(settings, tmp_path):
    yield from use_backend("s3", settings, tmp_path)


@pytest.fixture
def proxy():
    counting = CountingProxy()
    yield counting
    counting.close()


def stored_window():
    """A version's predictions over ``DAYS`` days (one file a day) and their labels."""
    version = mixed_version()
    records = [
        {
            "prediction_id": f"p{i}",
            "timestamp": (T0 + i * timedelta(hours=6)).isoformat(),
            "features": {"f1": i / 3, "f2": i % 5, "f3": "ab"[i % 2]},
            "score": (i % 10) / 10,
            "prediction": i % 2,
            "sensitive": {"race": "xyz"[i % 3]},
        }
        for i in range(4 * DAYS)
    ]
    ingest.predictions_ingest(
        model_name=version.model.name, version=version.version, records=records, actor=ACTOR
    )
    ingest.labels_ingest(
        model_name=version.model.name,
        records=[{"prediction_id": r["prediction_id"], "label": 1} for r in records],
        actor=ACTOR,
    )
    return version


def load(version):
    return store.load_window(
        model=version.model,
        version=version,
        start=T0,
        end=T0 + timedelta(days=DAYS),
        columns=["score", "f.f1", "s.race"],
        with_labels=True,
        with_sensitive=True,
    )


def test_a_window_costs_two_gets_per_file_cold_one_warm_and_no_head_or_listing(s3, proxy, settings):
    version = stored_window()
    batches = DataBatch.objects.filter(version=version)
    assert batches.filter(kind=BatchKind.PREDICTIONS).count() == DAYS
    files = batches.count()  # the predictions' day files and their labels'
    assert files > DAYS and not batches.filter(size=0).exists()
    settings.STORAGE_S3_ENDPOINT = proxy.endpoint  # the same server, each request counted
    storage.forget_cached()  # a worker that never read these files

    window = load(version)

    assert len(window) == 4 * DAYS and (window["label"] == 1).all()
    # each file: its footer, then its wanted column chunks in one ranged GET
    assert proxy.kinds() == {"GET": 2 * files}, proxy.requests
    assert all(r.startswith("bytes=") for _, _, r in proxy.requests)

    proxy.requests.clear()
    again = load(version)

    assert again.equals(window)
    assert proxy.kinds() == {"GET": files}, proxy.requests  # footers kept by the process


def test_a_file_whose_size_was_not_recorded_is_still_read(s3, proxy, settings):
    version = stored_window()
    DataBatch.objects.filter(version=version).update(size=0)  # stored before sizes were
    settings.STORAGE_S3_ENDPOINT = proxy.endpoint
    storage.forget_cached()

    window = load(version)

    assert len(window) == 4 * DAYS
    files = DataBatch.objects.filter(version=version).count()
    assert proxy.kinds() == {"HEAD": files, "GET": 2 * files}, proxy.requests


def test_a_compacted_three_file_day_costs_the_requests_of_one_file(s3, proxy, settings):
    version = mixed_version()
    for i in range(3):  # three gateway batches of one day
        ingest.predictions_ingest(
            model_name=version.model.name,
            version=version.version,
            records=[
                {
                    "prediction_id": f"p{i}",
                    "timestamp": (T0 + timedelta(minutes=i)).isoformat(),
                    "features": {"f1": i / 3, "f2": i, "f3": "a"},
                    "score": 0.5,
                }
            ],
            actor=ACTOR,
        )
    upstream = settings.STORAGE_S3_ENDPOINT

    def requests() -> dict[str, int]:
        settings.STORAGE_S3_ENDPOINT = proxy.endpoint  # the same server, each request counted
        storage.forget_cached()  # a worker that never read these files
        proxy.requests.clear()
        frame = store.load_window(
            model=version.model, version=version, start=T0, end=T0 + timedelta(days=1)
        )
        assert sorted(frame["prediction_id"]) == ["p0", "p1", "p2"]
        settings.STORAGE_S3_ENDPOINT = upstream
        storage.forget_cached()
        return proxy.kinds()

    assert requests() == {"GET": 6}, proxy.requests  # per file: its footer, then its columns
    compact.compact_partition(version.pk, T0.date())
    assert DataBatch.objects.filter(version=version).count() == 1

    assert requests() == {"GET": 2}, proxy.requests
