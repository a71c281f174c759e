"""Upgrade: re-link the events of the unkeyed SHA-256 chain under ``AUDIT_HMAC_KEY``.

Each event is first checked as it was written (re-linking a rewritten log would launder the
rewrite). If the old chain verifies, every event gets its per-field salts, a new digest and a
keyed link, and an ``audit.rekeyed`` event records how many; field values are never changed. If
it does not verify, nothing is changed and the migration says so: ``manage.py verify_audit`` then
reports the events as predating the keyed chain, and ``manage.py audit_rekey`` shows where the
old chain breaks (``--accept-broken`` re-links anyway, and audits the break it accepted).
A fresh install has no events and does nothing here.
"""

import sys

from django.db import migrations
from django.utils import timezone


def relink_legacy(apps, schema_editor):
    from governance import audit_chain

    Event = apps.get_model("governance", "AuditEvent")
    Head = apps.get_model("governance", "AuditChainHead")
    if not Event.objects.exists():
        return
    key = audit_chain.current_key()
    audit_chain.allow_maintenance(schema_editor.connection)
    try:
        report = audit_chain.relink(Event, Head, new_key=key)
    except audit_chain.RelinkRefused as refused:
        sys.stderr.write(
            f"\nThe audit log was NOT re-linked: the old chain is broken at {refused}.\n"
            "Run manage.py audit_rekey to see it, and --accept-broken to re-link anyway.\n"
        )
        return
    audit_chain.append(
        Event,
        Head,
        lkey=audit_chain.link_key(key),
        now=timezone.now(),
        actor="system:migrate",
        action="audit.rekeyed",
        object_type="governance.AuditEvent",
        object_id="",
        object_repr="audit chain",
        model_name="",
        after={
            "events": report["events"],
            "from": "unkeyed SHA-256 chain",
            "key_id": audit_chain.key_id(key),
        },
        reason="upgrade to the keyed audit chain",
        request_id="",
    )


class Migration(migrations.Migration):
    dependencies = [("governance", "0007_audit_hmac_chain")]
    operations = [migrations.RunPython(relink_legacy, migrations.RunPython.noop)]
