"""The prediction log through either storage backend: on an object store there is no shared disk
and no rename, so gateways upload whole objects and workers lease them; each is stored once."""

import pytest
from django.core.cache import cache

from monitoring.models import DataBatch, IngestKey
from platform_core.errors import InvalidInput
from serving import gateway, log
from tests.serving.helpers import instances, live, predict
from tests.storage_backends import BACKENDS, use_backend

pytestmark = pytest.mark.django_db


@pytest.fixture(params=BACKENDS)
def backend(request, settings, tmp_path, cold_gateway):
    yield from use_backend(request.param, settings, tmp_path)


def spooled(backend) -> list[str]:
    """The names of the spool files waiting."""
    if backend.remote:
        return sorted(k.rpartition("/")[2] for k in log._spool_keys(backend))
    return sorted(p.name for p in log.spool_dir().glob("spool-*.arrow"))


def test_each_flush_is_one_whole_spool_object_and_the_worker_stores_it_once(
    backend, mlflow_models, ci, settings
):
    version = live(mlflow_models, seed=41)
    for _ in range(2):
        predict(ci, version.model.name, instances(3))
        assert log.flush() == 3
    names = spooled(backend)
    assert len(names) == 2 and log.spilled_predictions() == 6
    if backend.remote:  # nothing on this host's disk: the objects are the spool
        assert not (settings.VAR_DIR / "serving").exists()

    assert log.ingest_spooled() == 6

    (batch,) = DataBatch.objects.filter(version=version, source="gateway")
    assert batch.rows == 6 and backend.exists(batch.path)
    assert sorted(IngestKey.objects.values_list("key", flat=True)) == names
    assert spooled(backend) == [] and log.spilled_predictions() == 0


def test_an_object_committed_but_not_deleted_is_not_stored_again(
    backend, mlflow_models, ci, monkeypatch
):
    version = live(mlflow_models, seed=41)
    predict(ci, version.model.name, instances(2))
    log.flush()
    done = log._done

    def deletion_fails(item):
        raise PermissionError(item.path)

    monkeypatch.setattr(log, "_done", deletion_fails)
    with pytest.raises(PermissionError):
        log.ingest_spooled()  # committed, then the object could not be deleted
    monkeypatch.setattr(log, "_done", done)
    assert DataBatch.objects.filter(version=version).count() == 1
    assert log.spilled_predictions() == 2

    assert log.ingest_spooled() == 2  # the retry: recognised by its key, deleted

    assert DataBatch.objects.filter(version=version).count() == 1
    assert spooled(backend) == []


def test_a_failing_store_leaves_the_spool_for_the_retry(backend, mlflow_models, ci, ingested):
    version = live(mlflow_models, seed=41)
    predict(ci, version.model.name, instances(2))
    log.flush()
    working = gateway.current().ingest

    def down(**kwargs):
        raise ConnectionError("database restarting")

    gateway.current().ingest = down
    with pytest.raises(ConnectionError):
        log.ingest_spooled()
    assert log.spilled_predictions() == 2

    gateway.current().ingest = working
    assert log.ingest_spooled() == 2
    assert len(ingested) == 1


def test_a_refused_object_is_set_aside(backend, mlflow_models, ci, ingested):
    version = live(mlflow_models, seed=41)
    predict(ci, version.model.name, instances(2))
    log.flush()

    def refuse(**kwargs):
        raise InvalidInput({"records[0].f1": "out of range"})

    gateway.current().ingest = refuse
    assert log.ingest_spooled() == 0

    assert spooled(backend) == []
    if backend.remote:
        [refused] = [o.key for o in backend.scan(log.REFUSED_PREFIX)]
    else:
        [refused] = [str(p) for p in log.spool_dir().glob("refused-*.arrow")]
    assert refused.rpartition("/")[2].startswith("refused-")


def test_an_object_another_worker_leased_is_left_to_it_until_the_lease_lapses(
    backend, mlflow_models, ci, ingested
):
    if not backend.remote:
        pytest.skip("a local spool claims by renaming (test_log.py)")
    version = live(mlflow_models, seed=41)
    predict(ci, version.model.name, instances(2))
    log.flush()
    [key] = list(log._spool_keys(backend))
    lease = f"serving.spool.lease:{backend.url}/{key}"
    cache.add(lease, "another worker", timeout=60)

    assert log.ingest_spooled() == 0  # leased: another worker is on it

    cache.delete(lease)  # its lease lapsed (it died)
    assert log.ingest_spooled() == 2
