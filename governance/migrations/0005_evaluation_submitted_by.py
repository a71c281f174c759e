import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def submitters_from_audit(apps, schema_editor):
    """Evidence recorded before this field: its submitter is the user on its audit event.

    Without this, a version in flight when the rule arrived could be signed off by whoever
    submitted its evidence. Shadow evaluations are computed by the platform, so they stay empty.
    """
    Evaluation = apps.get_model("governance", "Evaluation")
    AuditEvent = apps.get_model("governance", "AuditEvent")
    events = AuditEvent.objects.filter(
        action="evaluation.recorded",
        object_type="governance.Evaluation",
        actor_user__isnull=False,
    ).values_list("object_id", "actor_user_id")
    submitters = {object_id: user_id for object_id, user_id in events}
    User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    existing = set(
        User.objects.filter(pk__in=set(submitters.values())).values_list("pk", flat=True)
    )
    for evaluation in Evaluation.objects.exclude(kind="shadow").filter(submitted_by__isnull=True):
        user_id = submitters.get(str(evaluation.pk))
        if user_id in existing:
            Evaluation.objects.filter(pk=evaluation.pk).update(submitted_by_id=user_id)


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0004_shadow_baseline"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="evaluation",
            name="submitted_by",
            field=models.ForeignKey(
                blank=True,
                help_text="Who submitted the evidence (a token's owner); never signs this version "
                "off. Empty for evidence the platform computed itself",
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.RunPython(submitters_from_audit, migrations.RunPython.noop, elidable=True),
    ]
