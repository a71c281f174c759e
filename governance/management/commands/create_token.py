"""``manage.py create_token USERNAME [--expires DAYS]``: the token alone on the last line."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from platform_core.errors import DomainError

from ...audit import Actor
from ...roles import Role
from ...services import token_create


class Command(BaseCommand):
    help = "Create an API token for a user. The token is shown once; store it in your CI secrets."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--expires", type=int, default=90, metavar="DAYS", help="Lifetime in days (90)"
        )
        parser.add_argument("--name", default="", help="A label for the audit log, e.g. ci-main")
        parser.add_argument(
            "--scope",
            nargs="+",
            choices=Role.values,
            default=[],
            metavar="ROLE",
            help="Narrow the token to these of the user's roles (default: all of them)",
        )

    def handle(self, username: str, expires: int, name: str, scope: list[str], **_) -> None:
        try:
            instance, secret = token_create(
                username=username,
                expires_days=expires,
                name=name,
                roles=scope,
                actor=Actor.system("manage.py create_token"),
            )
        except DomainError as exc:
            raise CommandError(f"{exc} (create the user with manage.py grant_role)") from exc
        self.stderr.write(
            f"Token {instance.scope.name} for {username}, expires {instance.expiry:%Y-%m-%d}. "
            "Send it as 'Authorization: Token <token>':"
        )
        self.stdout.write(secret)
