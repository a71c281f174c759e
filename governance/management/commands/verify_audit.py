"""``manage.py verify_audit [--quiet] [--no-checkpoint]``: check the chain; exit 1 if broken."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from ...audit import verify, verify_and_checkpoint


class Command(BaseCommand):
    help = (
        "Verify the audit log: every event's digest, its keyed link to the previous event, the "
        "chain head and the latest signed checkpoint outside the database. Prints the first bad "
        "sequence number and exits 1 when broken; when intact, checkpoints the verified head."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--quiet",
            action="store_true",
            help="Print nothing when the chain is intact (the exit status says it)",
        )
        parser.add_argument(
            "--no-checkpoint",
            action="store_true",
            help="Only verify: record nothing and write no checkpoint",
        )

    def handle(self, *, quiet: bool, no_checkpoint: bool, **_) -> None:
        if no_checkpoint:
            result, body = verify(), None
        else:
            run = verify_and_checkpoint()
            result, body = run.result, run.to_dict()
        for name, reason in result.refused_checkpoints:
            self.stderr.write(f"WARNING: checkpoint {name} refused: {reason}")
        if result.valid:
            if not quiet:
                self._report_ok(result, body)
            return
        self.stderr.write(f"BROKEN at {result.problem}")  # the problem starts with its seq
        self.stderr.write(f"{result.events} events checked up to and including it.")
        if body and body["previous_verification"]:
            self.stderr.write(self._previous(body["previous_verification"]))
        raise CommandError(f"audit chain broken at seq {result.first_bad_seq}", returncode=1)

    def _report_ok(self, result, body) -> None:
        self.stdout.write(f"OK: {result.events} events, chain intact")
        self.stdout.write(f"head: seq {result.head_seq} link {result.head_link}")
        newest = result.checkpoint
        if body and body["checkpoint_written"]:
            self.stdout.write(f"checkpoint written: {body['checkpoint']['name']}")
        elif body and body.get("checkpoint_error"):
            self.stderr.write(f"WARNING: {body['checkpoint_error']}")
        if newest is not None:
            self.stdout.write(
                f"matches checkpoint {newest.name}: seq {newest.seq}, signed {newest.created_at}"
            )
        else:
            self.stdout.write("no earlier checkpoint to hold the chain against")
        if body and body["previous_verification"]:
            self.stdout.write(self._previous(body["previous_verification"]))

    @staticmethod
    def _previous(previous: dict) -> str:
        outcome = "intact" if previous["valid"] else f"broken at seq {previous['first_bad_seq']}"
        return f"previous verification: {previous['at'].isoformat()}, {outcome}"
