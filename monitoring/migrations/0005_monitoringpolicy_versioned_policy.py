"""MonitoringPolicy on the shared VersionedPolicy: settings -> values, comment -> reason."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0004_alert_lifecycle"),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="monitoringpolicy", name="uniq_monitoring_policy"),
        migrations.RenameField(
            model_name="monitoringpolicy", old_name="settings", new_name="values"
        ),
        migrations.RenameField(
            model_name="monitoringpolicy", old_name="comment", new_name="reason"
        ),
        migrations.AlterField(
            model_name="monitoringpolicy",
            name="values",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AlterField(
            model_name="monitoringpolicy",
            name="reason",
            field=models.TextField(blank=True, help_text="Why this version"),
        ),
        migrations.AlterField(
            model_name="monitoringpolicy",
            name="version",
            field=models.PositiveIntegerField(help_text="0: no version yet, the schema's defaults"),
        ),
        migrations.AlterField(
            model_name="monitoringpolicy",
            name="model",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="registry.registeredmodel",
            ),
        ),
        migrations.AddConstraint(
            model_name="monitoringpolicy",
            constraint=models.UniqueConstraint(
                fields=("model", "version"), name="uniq_monitoring_monitoringpolicy_version"
            ),
        ),
    ]
