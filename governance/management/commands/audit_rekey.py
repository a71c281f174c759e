"""``manage.py audit_rekey [--old-key-file PATH] [--accept-broken]``: re-link the audit chain."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from ... import audit, audit_chain
from ...models import AuditChainHead, AuditEvent


class Command(BaseCommand):
    help = (
        "Re-link every audit event under the current AUDIT_HMAC_KEY: after an upgrade from the "
        "unkeyed chain (the migration does this by itself when the old chain verifies), or to "
        "rotate the key (--old-key-file). Each event is checked as it was written first; field "
        "values never change. Audited, and followed by a checkpoint. Stop writers first."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--old-key-file",
            type=Path,
            help="A file holding the previous AUDIT_HMAC_KEY (when rotating the key)",
        )
        parser.add_argument(
            "--accept-broken",
            action="store_true",
            help="Re-link even if the old chain is broken; the break is named in the audit event",
        )

    def handle(self, *, old_key_file: Path | None, accept_broken: bool, **_) -> None:
        new_key = audit_chain.current_key()
        old_key = old_key_file.read_text().strip().encode() if old_key_file else None
        try:
            with transaction.atomic():
                audit_chain.allow_maintenance(connection)
                report = audit_chain.relink(
                    AuditEvent,
                    AuditChainHead,
                    new_key=new_key,
                    old_key=old_key,
                    accept_broken=accept_broken,
                )
                if report["changed"] or report["first_broken"]:
                    audit.record(
                        actor=audit.Actor.system("audit_rekey"),
                        action="audit.rekeyed",
                        object_type="governance.AuditEvent",
                        after={
                            **report,
                            "old_key_id": audit_chain.key_id(old_key) if old_key else None,
                            "key_id": audit_chain.key_id(new_key),
                        },
                        reason="manage.py audit_rekey",
                    )
        except audit_chain.RelinkRefused as exc:
            self.stderr.write(f"REFUSED: the chain as written is broken at {exc}")
            raise CommandError(
                "nothing re-linked; --accept-broken re-links anyway and audits the break",
                returncode=1,
            ) from None
        self.stdout.write(
            f"re-linked {report['changed']} of {report['events']} events "
            f"({report['legacy']} from the unkeyed chain)"
        )
        if report["first_broken"]:
            broken = report["first_broken"]
            self.stderr.write(f"ACCEPTED BREAK at seq {broken['seq']}: {broken['problem']}")
        try:
            result = audit.checkpoint()
        except audit.CheckpointRefused as exc:
            # Checkpoints signed with this key before the re-link vouch for the old links: an
            # accepted break under the same key stays visible until the key is rotated.
            self.stderr.write(f"WARNING: no checkpoint written: {exc}")
            return
        self.stdout.write(f"checkpoint: {result.checkpoint.name}")
