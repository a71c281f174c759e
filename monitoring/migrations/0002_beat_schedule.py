"""The monitoring beat schedule as django-celery-beat rows, so staff can edit it in the admin.

Daily checks at 02:00 UTC, weekly checks on Mondays at 03:00 UTC, the monthly human audit on the
1st at 04:00 UTC. Existing rows (edited in the admin) are left as they are.
"""

from django.db import migrations
from django.utils import timezone

SCHEDULE = [
    (
        "monitoring: daily checks",
        "monitoring.run_daily_checks",
        {"minute": "0", "hour": "2", "day_of_week": "*", "day_of_month": "*"},
        "PSI, KS and fairness of every live version over the daily window.",
    ),
    (
        "monitoring: weekly checks",
        "monitoring.run_weekly_checks",
        {"minute": "0", "hour": "3", "day_of_week": "1", "day_of_month": "*"},
        "Performance (concept drift), calibration and label drift over the weekly window.",
    ),
    (
        "monitoring: monthly audit",
        "monitoring.create_monthly_audits",
        {"minute": "0", "hour": "4", "day_of_week": "*", "day_of_month": "1"},
        "The monthly human audit task (model card update) for the ML Lead.",
    ),
]


def create_schedule(apps, schema_editor):
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    for name, task, cron, description in SCHEDULE:
        if PeriodicTask.objects.filter(name=name).exists():
            continue
        crontab = CrontabSchedule.objects.filter(
            month_of_year="*", timezone="UTC", **cron
        ).first() or CrontabSchedule.objects.create(month_of_year="*", timezone="UTC", **cron)
        PeriodicTask.objects.create(
            name=name, task=task, crontab=crontab, enabled=True, description=description
        )
    # Historical models send no signals: tell a running beat that its schedule changed.
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def remove_schedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    PeriodicTask.objects.filter(name__in=[name for name, *_ in SCHEDULE]).delete()
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
