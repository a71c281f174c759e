"""``manage.py halt SCOPE --reason TEXT --user NAME`` (``--release`` to approve): web UI down.

``--where 'population_density > 5000'`` (or ``'sensitive.area in north-east,south'``,
``'x between 1 and 5'``) makes it a scoped halt of the model: only matching requests are
refused; with ``--release`` it names which scoped halt to approve the release of.

The user's roles apply exactly as in the API (HALT to engage; RELEASE_HALT, as an ML Lead or an
Ethics Officer, to approve a release); everything is audited under that user's name.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from governance.audit import Actor
from platform_core.errors import DomainError

from ...halt import RELEASE_ROLES, halt_engage, halt_list, halt_release_approve, waiting_for
from ...predicate import parse_where


class Command(BaseCommand):
    help = "Engage the emergency halt of a model (or 'global'), or approve its release."

    def add_arguments(self, parser) -> None:
        parser.add_argument("scope", nargs="?", help="A model name, or 'global'")
        parser.add_argument("--reason", default="", help="Why (required to engage)")
        parser.add_argument("--user", help="Who is acting (their roles are checked)")
        parser.add_argument("--release", action="store_true", help="Approve the release")
        parser.add_argument("--role", choices=[str(r) for r in RELEASE_ROLES])
        parser.add_argument(
            "--where",
            help="Scoped halt: refuse only matching requests, e.g. 'population_density > 5000', "
            "'sensitive.area in north-east,south', 'x between 1 and 5', 'x not in 1,2'",
        )
        parser.add_argument(
            "--list", dest="show_list", action="store_true", help="List the halts in force"
        )

    def handle(self, scope, reason, user, release, role, show_list, where, **_) -> None:
        if show_list:
            for halt in halt_list():
                scoped = f" where {halt.where_text}" if halt.where else ""
                self.stdout.write(
                    f"{halt.scope}{scoped}: engaged {halt.engaged_at:%Y-%m-%d %H:%M:%S} by "
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
            predicate = parse_where(where) if where is not None else None
            if release:
                outcome = halt_release_approve(
                    scope=scope, actor=actor, role=role, comment=reason, where=predicate
                )
                what = f"{scope} where {outcome.halt.where_text}" if predicate else scope
                if outcome.released:
                    self.stdout.write(f"Halt of {what} released.")
                else:
                    self.stdout.write(
                        f"Release of {what} approved as {outcome.approval.role}; waiting for "
                        f"{', '.join(waiting_for(outcome.halt))}."
                    )
                return
            halt, created = halt_engage(scope=scope, reason=reason, actor=actor, where=predicate)
        except DomainError as exc:
            raise CommandError(str(exc)) from exc
        if predicate is not None:
            if created:
                self.stdout.write(
                    f"Scoped halt of {scope} engaged: predict answers 503 to requests where "
                    f"{halt.where_text}; the others are served."
                )
            else:
                self.stdout.write(
                    f"A halt of {scope} where {halt.where_text} was already engaged "
                    f"({halt.reason})."
                )
        elif created:
            self.stdout.write(f"Halt of {scope} engaged: predict answers 503 from now on.")
        else:
            self.stdout.write(f"A halt of {scope} was already engaged ({halt.reason}).")
