"""The keyed audit chain: per-field salts and redaction digests, the last verification, and a
PostgreSQL guard that lets exactly two things through besides INSERT.

- ``governance.audit_redaction = on`` (set by ``audit.audit_redact`` for its own transaction): an
  UPDATE that changes only the redactable fields, their salts and redaction digests, never the
  sequence number, fixed fields, digest or links.
- ``governance.audit_maintenance = on`` (set by ``manage.py audit_rekey`` and the upgrade
  migration): an UPDATE of links, to re-link the chain under a new key.

Like the TRUNCATE switch, these guard against mistakes and against SQL the application did not
mean to run; a database owner can drop the trigger, which is what the HMAC key and the
checkpoints outside the database are for.
"""

from django.db import migrations, models

FORWARD = """
CREATE OR REPLACE FUNCTION governance_audit_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' AND current_setting('governance.allow_truncate', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND current_setting('governance.audit_maintenance', true) = 'on' THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND current_setting('governance.audit_redaction', true) = 'on'
        AND NEW.id = OLD.id AND NEW.seq = OLD.seq AND NEW.created_at = OLD.created_at
        AND NEW.actor_user_id IS NOT DISTINCT FROM OLD.actor_user_id
        AND NEW.action = OLD.action AND NEW.object_type = OLD.object_type
        AND NEW.object_id = OLD.object_id AND NEW.model_name = OLD.model_name
        AND NEW.request_id = OLD.request_id AND NEW.payload_digest = OLD.payload_digest
        AND NEW.prev_hash = OLD.prev_hash AND NEW.hash = OLD.hash THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'governance_auditevent is append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;
"""

BACKWARD = """
CREATE OR REPLACE FUNCTION governance_audit_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' AND current_setting('governance.allow_truncate', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'governance_auditevent is append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD, params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD, params=None)


class Migration(migrations.Migration):
    dependencies = [("governance", "0006_idempotency_claim")]

    operations = [
        migrations.CreateModel(
            name="AuditVerificationState",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("ran_at", models.DateTimeField()),
                ("valid", models.BooleanField()),
                ("events", models.BigIntegerField()),
                ("first_bad_seq", models.BigIntegerField(blank=True, null=True)),
                ("problem", models.TextField(blank=True)),
            ],
        ),
        migrations.AddField(
            model_name="auditevent",
            name="redactions",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="salts",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.RunPython(forward, backward),
    ]
