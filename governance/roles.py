"""Roles (docs/architecture.md §4) and the actions each may take.

A grant is global or scoped to one model. A token may be narrowed to a subset of its user's roles
(its scopes); what a request may do is the union of the actions of the roles it holds for the model.
"""

from __future__ import annotations

from django.db import models


class Role(models.TextChoices):
    CI = "ci", "CI pipeline"
    ML_ENGINEER = "ml_engineer", "ML engineer"
    ML_LEAD = "ml_lead", "ML lead"
    ETHICS_OFFICER = "ethics_officer", "Ethics officer"
    PRODUCT_MANAGER = "product_manager", "Product manager"
    DATA_ENGINEER = "data_engineer", "Data engineer"
    DOMAIN_SME = "domain_sme", "Domain SME"
    ONCALL = "oncall", "On-call engineer"
    AUDITOR = "auditor", "Auditor"


class Action(models.TextChoices):
    READ = "read"
    REGISTER = "register", "register models and versions"
    SUBMIT_EVIDENCE = "submit_evidence"
    REQUEST_TRANSITION = "request_transition"
    INGEST = "ingest", "ingest predictions, labels and reference data"
    PREDICT = "predict"
    APPROVE_CODE_REVIEW = "approve_code_review"
    APPROVE_AS_ML_LEAD = "approve_as_ml_lead"
    APPROVE_AS_ETHICS_OFFICER = "approve_as_ethics_officer"
    APPROVE_AS_PRODUCT_MANAGER = "approve_as_product_manager"
    RESOLVE_DEGRADED = "resolve_degraded"
    APPROVE_RETRAINING = "approve_retraining"
    ROLLBACK = "rollback"
    HALT = "halt"
    RELEASE_HALT = "release_halt"
    START_RUNS = "start_runs"
    READ_AUDIT = "read_audit"
    READ_SENSITIVE = "read_sensitive"
    COMPLETE_STEP = "complete_step"
    HANDLE_ALERTS = "handle_alerts", "acknowledge and resolve alerts"


_ENGINEER = {Action.READ, Action.REGISTER, Action.APPROVE_CODE_REVIEW}
# What the two people who release a halt together (an ML Lead and an Ethics Officer) both may do:
# halt and release, start runs, read the audit log, work incidents and alerts.
_HALT_RELEASERS = {
    Action.HALT,
    Action.RELEASE_HALT,
    Action.START_RUNS,
    Action.READ_AUDIT,
    Action.COMPLETE_STEP,
    Action.HANDLE_ALERTS,
}

ROLE_ACTIONS: dict[str, frozenset[str]] = {
    Role.CI: frozenset(
        {
            Action.READ,
            Action.REGISTER,
            Action.SUBMIT_EVIDENCE,
            Action.REQUEST_TRANSITION,
            Action.INGEST,
            Action.PREDICT,
        }
    ),
    Role.ML_ENGINEER: frozenset(_ENGINEER | {Action.COMPLETE_STEP, Action.HANDLE_ALERTS}),
    Role.ML_LEAD: frozenset(
        _ENGINEER
        | {
            Action.APPROVE_AS_ML_LEAD,
            Action.RESOLVE_DEGRADED,
            Action.APPROVE_RETRAINING,
            Action.ROLLBACK,
        }
        | _HALT_RELEASERS
    ),
    Role.ETHICS_OFFICER: frozenset(
        {
            Action.READ,
            Action.READ_SENSITIVE,
            Action.APPROVE_AS_ETHICS_OFFICER,
        }
        | _HALT_RELEASERS
    ),
    Role.PRODUCT_MANAGER: frozenset({Action.READ, Action.APPROVE_AS_PRODUCT_MANAGER}),
    Role.DATA_ENGINEER: frozenset({Action.READ, Action.INGEST, Action.COMPLETE_STEP}),
    Role.DOMAIN_SME: frozenset({Action.READ, Action.COMPLETE_STEP}),
    Role.ONCALL: frozenset({Action.READ, Action.HALT, Action.COMPLETE_STEP, Action.HANDLE_ALERTS}),
    Role.AUDITOR: frozenset({Action.READ, Action.READ_AUDIT, Action.READ_SENSITIVE}),
}

# Roles whose members are people who may log in to the admin (CI is a machine account).
STAFF_ROLES = frozenset(r for r in Role.values if r != Role.CI)


def actions_for(roles: set[str] | frozenset[str]) -> frozenset[str]:
    return frozenset().union(*(ROLE_ACTIONS.get(role, frozenset()) for role in roles))
