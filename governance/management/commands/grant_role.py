"""``manage.py grant_role USERNAME ROLE... [--model NAME]``: the same bootstrap on every install."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from platform_core.errors import DomainError

from ...audit import Actor
from ...roles import Role
from ...services import role_grant, role_revoke


class Command(BaseCommand):
    help = "Grant roles to a user, creating the user if missing. Roles: " + ", ".join(Role.values)

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("roles", nargs="+", metavar="ROLE", choices=Role.values)
        parser.add_argument("--model", help="Scope the grant to one model (default: global)")
        parser.add_argument("--revoke", action="store_true", help="Revoke instead of grant")

    def handle(self, username: str, roles: list[str], model: str | None, revoke: bool, **_) -> None:
        actor = Actor.system("manage.py grant_role")
        scope = f"model '{model}'" if model else "all models"
        try:
            if revoke:
                count = role_revoke(username=username, roles=roles, model_name=model, actor=actor)
                self.stdout.write(f"Revoked {count} grant(s) of {username} for {scope}.")
                return
            created = role_grant(username=username, roles=roles, model_name=model, actor=actor)
        except DomainError as exc:
            raise CommandError(str(exc)) from exc
        granted = ", ".join(g.role for g in created) or "nothing new (already held)"
        self.stdout.write(f"Granted {username}: {granted} for {scope}.")
