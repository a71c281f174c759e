"""``manage.py halt SCOPE --reason TEXT --user NAME`` (``--release`` to approve): web UI down.

The user's roles apply exactly as in the API (HALT to engage; RELEASE_HALT, as an ML Lead or an
Ethics Officer, to approve a release); everything is audited under that user's name.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from governance.audit import Actor
from platform_core.errors import DomainError

from ...halt import RELEASE_ROLES, halt_engage, halt_list, halt_release_approve, waiting_for


class Command(BaseCommand):
    help = "Engage the emergency halt of a model (or 'global'), or approve its release."

    def add_arguments(self, parser) -> None:
        parser.add_argument("scope", nargs="?", help="A model name, or 'global'")
        parser.add_argument("--reason", default="", help="Why (required to engage)")
        parser.add_argument("--user", help="Who is acting (their roles are checked)")
        parser.add_argument("--release", action="store_true", help="Approve the release")
        parser.add_argument("--role", choices=[str(r) for r in RELEASE_ROLES])
        parser.add_argument(
            "--list", dest="show_list", action="store_true", help="List the halts in force"
        )

    def handle(self, scope, reason, user, release, role, show_list, **_) -> None:
        if show_list:
            for halt in halt_list():
                self.stdout.write(
                    f"{halt.scope}: engaged {halt.engaged_at:%Y-%m-%d %H:%M:%S} by "
                    f"{halt.engaged_by_label}: {halt.reason} (waiting for "
                    f"{', '.join(waiting_for(halt))})"
                )
            return
        if not scope or not user:
            raise CommandError("give SCOPE and --user (or --list)")
        try:
            account = get_user_model().objects.get(username=user, is_active=True)
        except get_user_model().DoesNotExist:
            raise CommandError(f"no active user '{user}'") from None
        actor = Actor.for_user(account, request_id="manage.py halt")
        try:
            if release:
                outcome = halt_release_approve(scope=scope, actor=actor, role=role, comment=reason)
                if outcome.released:
                    self.stdout.write(f"Halt of {scope} released.")
                else:
                    self.stdout.write(
                        f"Release of {scope} approved as {outcome.approval.role}; waiting for "
                        f"{', '.join(waiting_for(outcome.halt))}."
                    )
                return
            halt, created = halt_engage(scope=scope, reason=reason, actor=actor)
        except DomainError as exc:
            raise CommandError(str(exc)) from exc
        if created:
            self.stdout.write(f"Halt of {scope} engaged: predict answers 503 from now on.")
        else:
            self.stdout.write(f"A halt of {scope} was already engaged ({halt.reason}).")
