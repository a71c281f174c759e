"""``manage.py audit_checkpoint``: sign the audit chain head into the checkpoint store now."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from ...audit import CheckpointRefused, checkpoint
from ...audit_checkpoints import get_store


class Command(BaseCommand):
    help = (
        "Write a signed checkpoint of the audit chain head (sequence number and link) to the "
        "append-only checkpoint store, after checking the events since the last one. Beat does "
        "this every 10 minutes; run it before and after maintenance."
    )

    def handle(self, **_) -> None:
        try:
            result = checkpoint()
        except CheckpointRefused as exc:
            self.stderr.write(f"REFUSED: {exc}")
            raise CommandError(
                "no checkpoint written: the chain does not extend the last one", returncode=1
            ) from None
        done = result.checkpoint
        verb = "written" if result.written else "already current"
        self.stdout.write(
            f"checkpoint {verb}: {done.name} (seq {done.seq}, link {done.link}) "
            f"in {get_store().describe()}"
        )
