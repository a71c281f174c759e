"""The specification's three playbooks (section 7), step by step, as editable data."""

from datetime import timedelta

from django.db import migrations

H = timedelta(hours=1)
ML_TEAM = ["ml_engineer", "ml_lead"]
ROLLBACK_DECISIONS = ["rollback", "no_rollback"]

# (order, action, responsible, roles, automated task, deadline, condition, decisions, is_review)
PLAYBOOKS = {
    "1": (
        "Model performance degradation",
        "A high alert (concept drift: the performance metric dropped more than 5%).",
        [
            (
                1,
                "Alert triggered (metric drop > 5%)",
                "Automated",
                [],
                "raise",
                None,
                "",
                [],
                False,
            ),
            (
                2,
                "Verify alert is not a data quality issue",
                "Data Engineer (1h)",
                ["data_engineer"],
                "",
                H,
                "",
                [],
                False,
            ),
            (
                3,
                "Check for data drift (PSI analysis)",
                "ML Engineer (2h)",
                ["ml_engineer"],
                "",
                2 * H,
                "",
                [],
                False,
            ),
            (
                4,
                "If data drift: evaluate retraining on recent data",
                "ML Lead (4h)",
                ["ml_lead"],
                "",
                4 * H,
                "data drift",
                [],
                False,
            ),
            (
                5,
                "If concept drift: investigate root cause",
                "ML Lead + Domain SME (8h)",
                ["ml_lead", "domain_sme"],
                "",
                8 * H,
                "concept drift",
                [],
                False,
            ),
            (
                6,
                "If critical: rollback to previous version",
                "ML Lead (immediate)",
                ["ml_lead"],
                "rollback_when_critical",
                timedelta(0),
                "",
                ROLLBACK_DECISIONS,
                False,
            ),
            (
                7,
                "Document incident in model registry",
                "ML Engineer",
                ["ml_engineer"],
                "",
                None,
                "",
                [],
                False,
            ),
            (
                8,
                "Post-incident review within 48 hours",
                "Full ML team",
                ML_TEAM,
                "",
                48 * H,
                "",
                [],
                True,
            ),
        ],
    ),
    "2": (
        "Fairness alert",
        "A critical fairness alert, or an ethics hard-limit breach.",
        [
            (1, "Fairness metric exceeds threshold", "Automated", [], "raise", None, "", [], False),
            (
                2,
                "Immediately notify Ethics Officer",
                "Automated (page)",
                [],
                "notify_ethics_officer",
                None,
                "",
                [],
                False,
            ),
            (
                3,
                "Assess impact: how many predictions affected?",
                "ML Engineer (1h)",
                ["ml_engineer"],
                "",
                H,
                "",
                [],
                False,
            ),
            (
                4,
                "Consider rollback or emergency halt",
                "ML Lead + Ethics Officer (2h)",
                ["ml_lead", "ethics_officer"],
                "",
                2 * H,
                "",
                ["rollback", "halt", "no_rollback"],
                False,
            ),
            (
                5,
                "Root-cause analysis: data? model? threshold?",
                "ML team (24h)",
                ML_TEAM,
                "",
                24 * H,
                "",
                [],
                False,
            ),
            (
                6,
                "Remediation plan approved by Ethics Committee",
                "Ethics Officer (48h)",
                ["ethics_officer"],
                "",
                48 * H,
                "",
                [],
                False,
            ),
            (
                7,
                "Full documentation in audit log",
                "ML Engineer",
                ["ml_engineer"],
                "",
                None,
                "",
                [],
                False,
            ),
        ],
    ),
    "3": (
        "System outage (no predictions available)",
        "The gateway cannot serve the live version (artifact, predict or MLflow failure).",
        [
            (
                1,
                "Health check fails for prediction service",
                "Automated",
                [],
                "raise",
                None,
                "",
                [],
                False,
            ),
            (
                2,
                'Serve last cached predictions with "stale" flag',
                "Automated",
                [],
                "serve_stale",
                None,
                "",
                [],
                False,
            ),
            (3, "Page on-call ML Engineer", "Automated", [], "page_oncall", None, "", [], False),
            (
                4,
                "Diagnose: infra vs. model vs. data issue",
                "On-call (30 min)",
                ["oncall"],
                "",
                H / 2,
                "",
                [],
                False,
            ),
            (
                5,
                "Restore service or escalate",
                "On-call → ML Lead",
                ["oncall", "ml_lead"],
                "",
                None,
                "",
                ["restored", "escalate"],
                False,
            ),
            (
                6,
                "Post-incident review",
                "Full team (48h)",
                [*ML_TEAM, "oncall"],
                "",
                48 * H,
                "",
                [],
                True,
            ),
        ],
    ),
}


def seed(apps, schema_editor):
    Playbook = apps.get_model("incidents", "Playbook")
    PlaybookStep = apps.get_model("incidents", "PlaybookStep")
    for number, (name, description, steps) in PLAYBOOKS.items():
        playbook, _ = Playbook.objects.update_or_create(
            number=number, defaults={"name": name, "description": description}
        )
        for (
            order,
            action,
            responsible,
            roles,
            task,
            deadline,
            condition,
            decisions,
            review,
        ) in steps:
            PlaybookStep.objects.update_or_create(
                playbook=playbook,
                order=order,
                defaults={
                    "action": action,
                    "responsible": responsible,
                    "roles": roles,
                    "escalate_to": "ml_lead",
                    "automated": bool(task),
                    "task": task,
                    "deadline": deadline,
                    "condition": condition,
                    "decisions": decisions,
                    "is_review": review,
                },
            )


def unseed(apps, schema_editor):
    apps.get_model("incidents", "Playbook").objects.filter(number__in=PLAYBOOKS).delete()


class Migration(migrations.Migration):
    dependencies = [("incidents", "0002_playbooks_ethics")]
    operations = [migrations.RunPython(seed, unseed)]
