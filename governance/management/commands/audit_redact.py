"""``manage.py audit_redact SEQ --field F [--field F] --reason TEXT --user NAME``."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from platform_core.errors import DomainError

from ...audit import Actor, audit_redact
from ...audit_chain import REDACTABLE_FIELDS
from ...models import AuditEvent


class Command(BaseCommand):
    help = (
        "Remove the values of fields of one audit event (e.g. personal data under an erasure "
        "order). Their digests stay, so the chain still verifies; the redaction is audited."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("seq", type=int, help="Sequence number of the event")
        parser.add_argument(
            "--field", dest="fields", action="append", required=True, choices=REDACTABLE_FIELDS
        )
        parser.add_argument("--reason", required=True, help="Why (e.g. the order's reference)")
        parser.add_argument("--user", required=True, help="The person who ordered it")

    def handle(self, *, seq: int, fields: list[str], reason: str, user: str, **_) -> None:
        person = get_user_model().objects.filter(username=user).first()
        if person is None:
            raise CommandError(f"no user {user!r}")
        target = AuditEvent.objects.filter(seq=seq).first()
        if target is None:
            raise CommandError(f"no audit event with seq {seq}")
        try:
            audit_redact(
                event=target,
                fields=fields,
                actor=Actor(label=f"{person.get_username()} (manage.py audit_redact)", user=person),
                reason=reason,
            )
        except DomainError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Redacted {', '.join(sorted(set(fields)))} of seq {seq}.")
