"""Beat signs a checkpoint of the audit chain head every 10 minutes (a django-celery-beat row,
editable in the admin; an existing row of that name is left as it is)."""

from django.db import migrations
from django.utils import timezone

NAME = "governance: audit checkpoint"
TASK = "governance.audit_checkpoint"


def create_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    if PeriodicTask.objects.filter(name=NAME).exists():
        return
    every = IntervalSchedule.objects.filter(
        every=10, period="minutes"
    ).first() or IntervalSchedule.objects.create(every=10, period="minutes")
    PeriodicTask.objects.create(
        name=NAME,
        task=TASK,
        interval=every,
        enabled=True,
        description="Sign the audit chain head into the checkpoint store outside the database.",
    )
    # Historical models send no signals: tell a running beat that its schedule changed.
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def remove_schedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    PeriodicTask.objects.filter(name=NAME).delete()
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0008_audit_relink_legacy"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
