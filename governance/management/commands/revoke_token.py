"""``manage.py revoke_token KEY_PREFIX``: the prefix is the first 15 characters of the token."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from ...audit import Actor
from ...services import token_revoke


class Command(BaseCommand):
    help = "Revoke an API token by its key prefix (its first 15 characters)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("key_prefix")

    def handle(self, key_prefix: str, **_) -> None:
        count = token_revoke(
            key_prefix=key_prefix[:15], actor=Actor.system("manage.py revoke_token")
        )
        if not count:
            raise CommandError(f"no token starts with {key_prefix[:15]!r}")
        self.stdout.write(f"Revoked {count} token(s).")
