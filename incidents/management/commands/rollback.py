"""``manage.py rollback MODEL --reason ... --user USERNAME``: for when the web UI is down.

Takes the same path as the API (the user needs the rollback permission), then runs the rollback
in this process instead of waiting for a worker (a worker that picks up the enqueued task finds it
done: the rollback is idempotent). ``--no-wait`` leaves it to the workers.
"""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from governance.audit import Actor
from platform_core.errors import DomainError


class Command(BaseCommand):
    help = "Roll back a model's live version to the version it superseded (ML Lead)."

    def add_arguments(self, parser):
        parser.add_argument("model")
        parser.add_argument("--reason", required=True)
        parser.add_argument("--user", required=True, help="the ML Lead requesting it")
        parser.add_argument("--no-wait", action="store_true", help="leave it to the workers")

    def handle(self, *args, model, reason, user, no_wait=False, **options):
        from incidents.manual_rollback import rollback_manual
        from incidents.rollback import rollback_run

        try:
            person = get_user_model().objects.get(username=user, is_active=True)
        except get_user_model().DoesNotExist:
            raise CommandError(f"no active user '{user}'") from None
        try:
            incident, rollback = rollback_manual(
                model_name=model, reason=reason, actor=Actor.for_user(person)
            )
            self.stdout.write(f"incident {incident.pk}: rollback {rollback.pk} requested")
            if no_wait:
                return
            status = rollback_run(rollback.pk)
        except DomainError as exc:
            raise CommandError(str(exc)) from None
        rollback.refresh_from_db()
        self.stdout.write(
            f"rollback {rollback.pk}: {status}"
            + (f" ({rollback.last_error})" if rollback.last_error else "")
        )
        if status != "completed":
            raise CommandError(f"the rollback ended {status}")
