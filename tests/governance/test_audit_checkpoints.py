"""Signed checkpoints of the audit chain head: append-only, refused when forged, written by beat."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from governance import audit, audit_chain, audit_checkpoints
from governance.audit_checkpoints import CheckpointExists, DirectoryStore, Refused
from governance.models import AuditChainHead
from tests.governance.audit_helpers import event, move_head, set_columns, tamper, write

pytestmark = pytest.mark.django_db

WHEN = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def _key() -> bytes:
    return audit_chain.current_key()


# --- the directory store ----------------------------------------------------------------------


def test_a_checkpoint_file_is_never_rewritten(tmp_path):
    store = DirectoryStore(tmp_path)
    store.write("000000000001-20260102T030405678901Z.json", b"first")
    with pytest.raises(CheckpointExists):
        store.write("000000000001-20260102T030405678901Z.json", b"second")
    assert store.read("000000000001-20260102T030405678901Z.json") == b"first"
    mode = os.stat(tmp_path / "000000000001-20260102T030405678901Z.json").st_mode
    assert not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)  # read-only once written
    assert [p.name for p in tmp_path.iterdir()] == ["000000000001-20260102T030405678901Z.json"]


def test_writing_the_same_checkpoint_twice_fails(tmp_path):
    store = DirectoryStore(tmp_path)
    written = audit_checkpoints.write(3, "b" * 64, when=WHEN, key=_key(), store=store)
    assert written.name == "000000000003-20260102T030405678901Z.json"
    with pytest.raises(CheckpointExists):
        audit_checkpoints.write(3, "c" * 64, when=WHEN, key=_key(), store=store)
    assert audit_checkpoints.latest(key=_key(), store=store).latest.link == "b" * 64


def test_a_checkpoint_reads_back_with_its_signature_checked(tmp_path):
    store = DirectoryStore(tmp_path)
    written = audit_checkpoints.write(7, "d" * 64, when=WHEN, key=_key(), store=store)
    parsed = audit_checkpoints.parse(written.name, store.read(written.name), key=_key())
    assert parsed == written
    document = json.loads(store.read(written.name))
    assert set(document) == {"format", "seq", "link", "created_at", "key_id", "signature"}


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"seq": 8}, "signature does not verify"),
        ({"link": "e" * 64}, "signature does not verify"),
        ({"signature": "0" * 64}, "signature does not verify"),
        ({"key_id": "0" * 16}, "signed with another key"),
        ({"format": "other/1"}, "unknown format"),
    ],
)
def test_an_altered_or_forged_checkpoint_is_refused(tmp_path, change, reason):
    store = DirectoryStore(tmp_path)
    written = audit_checkpoints.write(7, "d" * 64, when=WHEN, key=_key(), store=store)
    document = {**json.loads(store.read(written.name)), **change}
    with pytest.raises(Refused, match=reason):
        audit_checkpoints.parse(written.name, json.dumps(document).encode(), key=_key())


def test_a_valid_checkpoint_copied_under_another_seq_is_refused(tmp_path):
    store = DirectoryStore(tmp_path)
    written = audit_checkpoints.write(7, "d" * 64, when=WHEN, key=_key(), store=store)
    with pytest.raises(Refused, match="name and its sequence number differ"):
        audit_checkpoints.parse(
            "000000000009-20260102T030405678901Z.json", store.read(written.name), key=_key()
        )


def test_the_latest_valid_checkpoint_skips_forged_ones_and_lists_them(tmp_path):
    store = DirectoryStore(tmp_path)
    good = audit_checkpoints.write(5, "a" * 64, when=WHEN, key=_key(), store=store)
    forged = audit_checkpoints.write(9, "f" * 64, when=WHEN, key=b"k" * 48, store=store)
    (tmp_path / "000000000010-20260102T030405678901Z.json").write_text("{not json")
    scan = audit_checkpoints.latest(key=_key(), store=store)
    assert scan.latest == good
    assert [name for name, _ in scan.refused] == [
        "000000000010-20260102T030405678901Z.json",
        forged.name,
    ]


# --- checkpointing the chain ------------------------------------------------------------------


def test_the_beat_task_writes_a_checkpoint_of_the_head():
    from governance.tasks import audit_checkpoint

    write(4)
    assert audit_checkpoint() == 4
    newest = audit_checkpoints.latest(key=_key()).latest
    assert (newest.seq, newest.link) == (4, event(4).hash)


def test_beat_runs_the_checkpoint_task_every_ten_minutes():
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.get(task="governance.audit_checkpoint")
    assert task.enabled and (task.interval.every, task.interval.period) == (10, "minutes")


def test_the_command_writes_once_per_head():
    write(3)
    out = StringIO()
    call_command("audit_checkpoint", stdout=out)
    call_command("audit_checkpoint", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("checkpoint written: 000000000003-")
    assert lines[1].startswith("checkpoint already current: 000000000003-")
    write(1)
    call_command("audit_checkpoint", stdout=out)
    assert out.getvalue().splitlines()[2].startswith("checkpoint written: 000000000004-")


def test_a_checkpoint_is_refused_for_a_head_behind_the_last_one():
    write(6)
    audit.checkpoint()
    tamper("DELETE FROM governance_auditevent WHERE seq > 4")
    move_head(4)
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("audit_checkpoint", stdout=StringIO(), stderr=err)
    assert "behind checkpoint" in err.getvalue() and "seq 6" in err.getvalue()
    assert audit_checkpoints.latest(key=_key()).latest.seq == 6


def test_a_checkpoint_is_refused_when_a_new_event_does_not_verify():
    write(3)
    audit.checkpoint()
    write(3)
    set_columns(event(5).id, reason="rewritten")
    with pytest.raises(audit.CheckpointRefused, match="seq 5"):
        audit.checkpoint()


def test_a_checkpoint_is_refused_when_the_checkpointed_event_was_replaced():
    write(3)
    audit.checkpoint()
    AuditChainHead.objects.filter(pk=1).update(seq=2, hash=event(2).hash)
    tamper("DELETE FROM governance_auditevent WHERE seq = 3")
    write(2)  # the service appends a new seq 3 and 4 with valid links
    with pytest.raises(audit.CheckpointRefused, match="seq 3 is not the one"):
        audit.checkpoint()


# --- the S3 Object Lock store (its client is the only thing crossing the network) -------------


class _ClientError(Exception):
    def __init__(self, status: int) -> None:
        self.response = {"ResponseMetadata": {"HTTPStatusCode": status}}


class _FakeS3:
    """Answers like S3 with Object Lock: conditional puts, no overwrite."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.puts: list[dict] = []

    def put_object(self, **kwargs):
        self.puts.append(kwargs)
        if kwargs.get("IfNoneMatch") == "*" and kwargs["Key"] in self.objects:
            raise _ClientError(412)
        self.objects[kwargs["Key"]] = kwargs["Body"]

    def get_paginator(self, operation):
        assert operation == "list_objects_v2"
        fake = self

        class Paginator:
            def paginate(self, Bucket, Prefix):
                keys = [k for k in fake.objects if k.startswith(Prefix)]
                yield {"Contents": [{"Key": k} for k in keys]}

        return Paginator()

    def get_object(self, Bucket, Key):
        body = self.objects[Key]

        class Body:
            def read(self):
                return body

        return {"Body": Body()}


def test_the_s3_store_writes_under_compliance_mode_retention_and_never_overwrites(settings):
    settings.AUDIT_CHECKPOINT_S3_BUCKET = "audit"
    settings.AUDIT_CHECKPOINT_S3_PREFIX = "governance/"
    settings.AUDIT_CHECKPOINT_RETENTION_DAYS = 30
    client = _FakeS3()
    store = audit_checkpoints.S3ObjectLockStore(client=client)
    written = audit_checkpoints.write(2, "a" * 64, when=WHEN, key=_key(), store=store)
    put = client.puts[0]
    assert put["Key"] == "governance/" + written.name and put["IfNoneMatch"] == "*"
    assert put["ObjectLockMode"] == "COMPLIANCE"
    assert (put["ObjectLockRetainUntilDate"] - timezone.now()).days in (29, 30)
    with pytest.raises(CheckpointExists):
        audit_checkpoints.write(2, "b" * 64, when=WHEN, key=_key(), store=store)
    assert audit_checkpoints.latest(key=_key(), store=store).latest == written
