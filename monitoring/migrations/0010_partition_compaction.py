"""Partition compaction: the retired-file grace list, the manifest index its nightly count
reads, and the daily beat entry (01:00 UTC, before the 02:00 checks; editable in the admin like
the other monitoring entries)."""

import django.utils.timezone
from django.db import migrations, models
from django.utils import timezone

NAME = "monitoring: compact partitions"
TASK = "monitoring.compact_partitions"
CRON = {"minute": "0", "hour": "1", "day_of_week": "*", "day_of_month": "*"}
DESCRIPTION = (
    "Merge each closed (version, day) partition's prediction files into one, and its label "
    "files into one, before the daily checks read them."
)


def create_schedule(apps, schema_editor):
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    if PeriodicTask.objects.filter(name=NAME).exists():
        return
    crontab = CrontabSchedule.objects.filter(
        month_of_year="*", timezone="UTC", **CRON
    ).first() or CrontabSchedule.objects.create(month_of_year="*", timezone="UTC", **CRON)
    PeriodicTask.objects.create(
        name=NAME, task=TASK, crontab=crontab, enabled=True, description=DESCRIPTION
    )
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def remove_schedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    PeriodicTask.objects.filter(name=NAME).delete()
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0009_data_batch_size"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.CreateModel(
            name="RetiredFiles",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "partition",
                    models.CharField(
                        db_index=True,
                        help_text="The keys' directory (.../day=YYYY-MM-DD)",
                        max_length=500,
                    ),
                ),
                ("paths", models.JSONField(help_text="The retired keys (relative to VAR_DIR)")),
                (
                    "retired_at",
                    models.DateTimeField(db_index=True, default=django.utils.timezone.now),
                ),
            ],
            options={"verbose_name_plural": "retired files"},
        ),
        migrations.AddIndex(
            model_name="databatch",
            index=models.Index(
                fields=["day", "version", "kind"], name="databatch_day_version_kind"
            ),
        ),
        migrations.RunPython(create_schedule, remove_schedule),
    ]
