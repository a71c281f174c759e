"""The upgrade from the unkeyed chain and key rotation: ``audit_rekey`` and the data migration."""

from __future__ import annotations

import importlib
import os
import stat
from io import StringIO
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from governance import audit, audit_chain
from governance.models import AuditEvent
from tests.governance.audit_helpers import (
    event,
    set_columns,
    verify_command,
    write,
    write_legacy,
)

pytestmark = pytest.mark.django_db

NEW_KEY = "a-brand-new-audit-key-after-rotation-0123456789"


def _rekey(*args: str) -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command("audit_rekey", *args, stdout=out, stderr=err)
    except CommandError as exc:
        return exc.returncode, out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def _values() -> list[tuple]:
    return list(AuditEvent.objects.order_by("seq").values_list("seq", "actor", "after", "reason"))


def test_events_of_the_unkeyed_chain_do_not_verify_until_rekeyed():
    write_legacy(5)
    run = verify_command()
    assert run.code == 1 and "BROKEN at seq 1 (event id" in run.err and "audit_rekey" in run.err


def test_rekey_links_an_intact_legacy_chain_under_the_key_and_keeps_every_value():
    write_legacy(5)
    before = _values()
    code, out, _ = _rekey()
    assert code == 0 and "re-linked 5 of 5 events (5 from the unkeyed chain)" in out
    assert _values()[:5] == before
    rekeyed = AuditEvent.objects.order_by("-seq").first()
    assert rekeyed.action == "audit.rekeyed" and rekeyed.after["legacy"] == 5
    assert verify_command().code == 0
    write(2)  # the service goes on from the re-linked head
    assert audit.verify().valid


def test_rekey_refuses_a_broken_legacy_chain_unless_told_and_then_audits_the_break():
    write_legacy(5)
    set_columns(event(3).id, reason="edited before the upgrade")
    code, _, err = _rekey()
    assert code == 1 and "broken at seq 3" in err
    assert not AuditEvent.objects.exclude(salts={}).exists()  # nothing re-linked

    code, _, err = _rekey("--accept-broken")
    assert code == 0 and "ACCEPTED BREAK at seq 3" in err
    rekeyed = AuditEvent.objects.order_by("-seq").first()
    assert rekeyed.after["first_broken"]["seq"] == 3
    assert audit.verify().valid


def test_rekey_refuses_a_legacy_row_marked_redacted():
    write_legacy(3)
    set_columns(event(2).id, redacted=True)
    code, _, err = _rekey()
    assert code == 1 and "seq 2" in err and "redacted" in err


def test_the_upgrade_migration_relinks_an_intact_legacy_chain():
    write_legacy(4)
    migration = importlib.import_module("governance.migrations.0008_audit_relink_legacy")
    with transaction.atomic():
        migration.relink_legacy(apps, SimpleNamespace(connection=connection))
    assert AuditEvent.objects.order_by("-seq").first().action == "audit.rekeyed"
    assert audit.verify().valid


def test_the_upgrade_migration_leaves_a_broken_legacy_chain_alone(capsys):
    write_legacy(4)
    set_columns(event(2).id, reason="edited")
    migration = importlib.import_module("governance.migrations.0008_audit_relink_legacy")
    with transaction.atomic():
        migration.relink_legacy(apps, SimpleNamespace(connection=connection))
    assert "NOT re-linked" in capsys.readouterr().err
    assert AuditEvent.objects.count() == 4 and not AuditEvent.objects.exclude(salts={}).exists()


def test_rotating_the_key_needs_the_old_one(settings, tmp_path):
    write(4)
    audit.checkpoint()
    old = settings.AUDIT_HMAC_KEY
    settings.AUDIT_HMAC_KEY = NEW_KEY
    assert not audit.verify().valid  # links made with the old key

    assert _rekey()[0] == 1  # the old links cannot be checked without the old key
    wrong = tmp_path / "wrong"
    wrong.write_text("x" * 48)
    assert _rekey("--old-key-file", str(wrong))[0] == 1
    old_file = tmp_path / "old"
    old_file.write_text(old)
    code, out, _ = _rekey("--old-key-file", str(old_file))
    assert code == 0 and "checkpoint: " in out
    run = verify_command()
    assert run.code == 0, run.err
    settings.AUDIT_HMAC_KEY = old
    assert not audit.verify().valid  # the old key no longer verifies the chain


# --- the key ----------------------------------------------------------------------------------


def test_without_a_setting_the_key_is_made_once_in_a_private_file(settings, tmp_path):
    settings.AUDIT_HMAC_KEY = ""
    settings.AUDIT_HMAC_KEY_FILE = tmp_path / "audit_hmac_key"
    key = audit_chain.current_key()
    assert len(key) >= 43 and audit_chain.current_key() == key
    assert stat.S_IMODE(os.stat(tmp_path / "audit_hmac_key").st_mode) == 0o600
    write(2)
    assert audit.verify().valid


def test_a_short_key_is_refused(settings):
    settings.AUDIT_HMAC_KEY = "short"
    with pytest.raises(ImproperlyConfigured, match="AUDIT_HMAC_KEY"):
        audit_chain.current_key()


def test_production_settings_refuse_to_start_without_an_audit_key(monkeypatch):
    import secrets
    import sys

    monkeypatch.setenv("DJANGO_SECRET_KEY", secrets.token_urlsafe(64))
    monkeypatch.delenv("AUDIT_HMAC_KEY", raising=False)
    monkeypatch.delitem(sys.modules, "config.settings.prod", raising=False)
    with pytest.raises(ImproperlyConfigured, match="AUDIT_HMAC_KEY"):
        importlib.import_module("config.settings.prod")
    monkeypatch.setenv("AUDIT_HMAC_KEY", "k" * 48)
    monkeypatch.delitem(sys.modules, "config.settings.prod", raising=False)
    assert importlib.import_module("config.settings.prod").AUDIT_HMAC_KEY == "k" * 48
    monkeypatch.delitem(sys.modules, "config.settings.prod", raising=False)
