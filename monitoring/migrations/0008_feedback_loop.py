"""The feedback_loop check (docs/feedback-loops.md): a new choice of the check on runs, metric
points and alerts; no data changes."""

from django.db import migrations, models

CHECKS = [
    ("data_drift", "Data Drift"),
    ("concept_drift", "Concept Drift"),
    ("label_drift", "Label Drift"),
    ("prediction_drift", "Prediction Drift"),
    ("fairness", "Fairness"),
    ("calibration", "Calibration"),
    ("feedback_loop", "Feedback Loop"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0007_fairness_watch"),
    ]

    operations = [
        migrations.AlterField(
            model_name=name,
            name="kind",
            field=models.CharField(choices=CHECKS, help_text="the check", max_length=20),
        )
        for name in ("alert", "metricpoint", "monitorrun")
    ]
