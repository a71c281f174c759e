"""ValidationPolicy on the shared VersionedPolicy: thresholds -> values, comment -> reason."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0009_audit_checkpoint_schedule"),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="validationpolicy", name="uniq_policy_version"),
        migrations.RenameField(
            model_name="validationpolicy", old_name="thresholds", new_name="values"
        ),
        migrations.RenameField(
            model_name="validationpolicy", old_name="comment", new_name="reason"
        ),
        migrations.AlterField(
            model_name="validationpolicy",
            name="values",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AlterField(
            model_name="validationpolicy",
            name="reason",
            field=models.TextField(blank=True, help_text="Why this version"),
        ),
        migrations.AlterField(
            model_name="validationpolicy",
            name="version",
            field=models.PositiveIntegerField(help_text="0: no version yet, the schema's defaults"),
        ),
        migrations.AlterField(
            model_name="validationpolicy",
            name="model",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="registry.registeredmodel",
            ),
        ),
        migrations.AddConstraint(
            model_name="validationpolicy",
            constraint=models.UniqueConstraint(
                fields=("model", "version"), name="uniq_governance_validationpolicy_version"
            ),
        ),
    ]
