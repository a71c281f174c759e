"""platform_core.storage: which backend the settings name, and what a key may be."""

import pytest

from platform_core import storage


def test_an_empty_storage_url_is_the_var_dir_and_an_s3_url_an_object_store(settings, tmp_path):
    settings.VAR_DIR, settings.STORAGE_URL = tmp_path, ""
    local = storage.current()
    assert isinstance(local, storage.LocalStorage) and not local.remote
    assert local.local_path("monitoring/m/x.parquet") == tmp_path / "monitoring/m/x.parquet"

    settings.STORAGE_URL = "s3://bucket/some/prefix/"
    settings.STORAGE_S3_ENDPOINT = "http://127.0.0.1:5999"
    remote = storage.current()
    assert remote.remote and remote.base == "bucket/some/prefix"
    assert remote.path("evidence/d.parquet") == "bucket/some/prefix/evidence/d.parquet"
    with pytest.raises(storage.StorageError, match="not a local directory"):
        remote.local_path("evidence/d.parquet")
    assert storage.s3_options()["endpoint_override"] == "127.0.0.1:5999"
    assert storage.s3_options()["scheme"] == "http"


def test_a_storage_url_of_another_scheme_is_refused_naming_the_setting(settings):
    settings.STORAGE_URL = "gs://bucket/prefix"
    with pytest.raises(storage.StorageError, match="GOVERNANCE_STORAGE_URL"):
        storage.current()


@pytest.mark.parametrize("key", ["", "/etc/passwd", "../x", "a/../../x", "a//b", "a\\b", "./a"])
def test_a_key_is_a_normalised_relative_path(key):
    with pytest.raises(storage.StorageError):
        storage.check_key(key)


def test_a_local_write_is_whole_or_absent_and_leaves_no_temporary_file(settings, tmp_path):
    settings.VAR_DIR, settings.STORAGE_URL = tmp_path, ""
    where = storage.current()

    def fails(path):
        with open(path, "wb") as fh:
            fh.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        where.put("a/b.bin", fails)
    assert not where.exists("a/b.bin") and list((tmp_path / "a").iterdir()) == []
    digest = where.put("a/b.bin", b"whole", digest=True)
    assert digest == "5d5766cf2d78701614200418ee1450690d9af12c84d52545e4802f001ad53099"
    assert where.read_bytes("a/b.bin") == b"whole"
    assert [o.key for o in where.scan("a")] == ["a/b.bin"]
