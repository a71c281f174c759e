"""``manage.py verify_audit [--quiet]``: check the whole audit chain; exit 1 when broken."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from ...audit import verify
from ...models import AuditChainHead, AuditEvent


class Command(BaseCommand):
    help = (
        "Verify the hash chain of the audit log: every event's payload digest, its link to the "
        "previous event and the chain head. Prints the first broken link and exits 1 when broken."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--quiet",
            action="store_true",
            help="Print nothing when the chain is intact (the exit status says it)",
        )

    def handle(self, *, quiet: bool, **_) -> None:
        result = verify()
        if result.valid:
            if not quiet:
                self.stdout.write(f"OK: {result.events} events, chain intact")
                head = AuditChainHead.objects.filter(pk=1).first()
                if head is not None:
                    # Keep this line outside the database: a later run must end in or past it.
                    self.stdout.write(f"head: seq {head.seq} hash {head.hash}")
            return
        broken = AuditEvent.objects.filter(pk=result.first_broken).values("seq", "action").first()
        where = f"event id {result.first_broken}"
        if broken is not None:
            where += f" (seq {broken['seq']}, {broken['action']})"
        problem = result.problem.removeprefix(f"event id {result.first_broken}: ")
        self.stderr.write(f"BROKEN: first broken link at {where}: {problem}")
        self.stderr.write(f"{result.events} events checked up to and including it.")
        raise CommandError(f"audit chain broken at event id {result.first_broken}", returncode=1)
