"""EthicsPolicy on the shared VersionedPolicy: fairness_limits and prohibited_features move into
``values`` (data kept, both ways)."""

import django.db.models.deletion
from django.db import migrations, models


def into_values(apps, schema_editor):
    EthicsPolicy = apps.get_model("incidents", "EthicsPolicy")
    for policy in EthicsPolicy.objects.all():
        policy.values = {
            "fairness_limits": policy.fairness_limits or {},
            "prohibited_features": policy.prohibited_features or [],
        }
        policy.save(update_fields=["values"])


def out_of_values(apps, schema_editor):
    EthicsPolicy = apps.get_model("incidents", "EthicsPolicy")
    for policy in EthicsPolicy.objects.all():
        values = policy.values or {}
        policy.fairness_limits = values.get("fairness_limits") or {}
        policy.prohibited_features = values.get("prohibited_features") or []
        policy.save(update_fields=["fairness_limits", "prohibited_features"])


class Migration(migrations.Migration):
    dependencies = [
        ("incidents", "0004_task_skipped_statuses"),
    ]

    operations = [
        migrations.AddField(
            model_name="ethicspolicy",
            name="values",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.RunPython(into_values, out_of_values),
        migrations.RemoveField(model_name="ethicspolicy", name="fairness_limits"),
        migrations.RemoveField(model_name="ethicspolicy", name="prohibited_features"),
        migrations.RemoveConstraint(model_name="ethicspolicy", name="uniq_ethics_policy_version"),
        migrations.AlterModelOptions(
            name="ethicspolicy",
            options={
                "ordering": ["model__name", "-version"],
                "verbose_name_plural": "ethics policies",
            },
        ),
        migrations.AlterField(
            model_name="ethicspolicy",
            name="reason",
            field=models.TextField(blank=True, help_text="Why this version"),
        ),
        migrations.AlterField(
            model_name="ethicspolicy",
            name="created_by",
            field=models.CharField(blank=True, max_length=200),
        ),
        migrations.AlterField(
            model_name="ethicspolicy",
            name="version",
            field=models.PositiveIntegerField(help_text="0: no version yet, the schema's defaults"),
        ),
        migrations.AlterField(
            model_name="ethicspolicy",
            name="model",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="registry.registeredmodel",
            ),
        ),
        migrations.AddConstraint(
            model_name="ethicspolicy",
            constraint=models.UniqueConstraint(
                fields=("model", "version"), name="uniq_incidents_ethicspolicy_version"
            ),
        ),
    ]
