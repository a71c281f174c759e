"""Reads behind the version page: one version's facts, gates, sign-offs and history, and its
comparison with another version of the same model, at a query count fixed by the page, not by
how many versions, evaluations or events there are."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import QuerySet
from django.http import Http404

from governance import wording
from governance.api.audit_views import version_events
from governance.models import Approval, AuditEvent, Evaluation
from governance.roles import Action
from governance.selectors import models_allowing
from governance.wording import MISSING, Diff
from registry.models import ModelCard, ModelVersion


@dataclass
class GateRow:
    """One gate of one evaluation: its verdict, why, and its values as rows."""

    name: str
    passed: bool
    reasons: list[str]
    values: list[tuple[str, str]]
    thresholds: list[tuple[str, str]]


@dataclass
class GateReport:
    evaluation: Evaluation
    gates: list[GateRow] = field(default_factory=list)


@dataclass
class HistoryLine:
    event: AuditEvent
    sentence: str


@dataclass
class Comparison:
    other: ModelVersion
    added: list[str]
    removed: list[str]
    hyperparameters: list[Diff]
    metrics: list[Diff]
    thresholds: list[Diff]
    data: list[Diff]
    gates: list[Diff]

    @property
    def changed(self) -> int:
        rows = [*self.hyperparameters, *self.metrics, *self.thresholds, *self.data, *self.gates]
        return len(self.added) + len(self.removed) + sum(1 for r in rows if r.change)


def _version(user, name: str, version: str) -> ModelVersion:
    """The version if its model is one ``user`` may read; 404 otherwise (existence not told)."""
    found = (
        ModelVersion.objects.select_related(
            "model", "lifecycle", "responsible_engineer", "registered_by"
        )
        .filter(model__in=models_allowing(user, Action.READ), model__name=name, version=version)
        .first()
    )
    if found is None:
        raise Http404(f"no version {version} of {name}")
    return found


def _evaluations(versions: list[ModelVersion]) -> dict[int, list[Evaluation]]:
    by_version: dict[int, list[Evaluation]] = {v.pk: [] for v in versions}
    for evaluation in Evaluation.objects.filter(version__in=versions).select_related(
        "policy", "submitted_by"
    ):
        by_version[evaluation.version_id].append(evaluation)  # newest first (Meta.ordering)
    return by_version


def gate_report(evaluation: Evaluation) -> GateReport:
    report = evaluation.report if isinstance(evaluation.report, dict) else {}
    gates = [
        GateRow(
            name=str(g.get("gate", "?")),
            passed=bool(g.get("passed")),
            reasons=[str(r) for r in g.get("reasons", [])],
            values=wording.flatten(g.get("values") or {}),
            thresholds=wording.flatten(g.get("thresholds") or {}),
        )
        for g in report.get("gates", [])
        if isinstance(g, dict)
    ]
    return GateReport(evaluation, gates)


def _gate_verdicts(evaluations: list[Evaluation]) -> dict[str, str]:
    """``kind / gate`` -> verdict of the newest evaluation of each kind."""
    verdicts: dict[str, str] = {}
    seen: set[str] = set()
    for evaluation in evaluations:
        if evaluation.kind in seen:
            continue
        seen.add(evaluation.kind)
        policy = f", policy v{evaluation.policy.version}" if evaluation.policy else ""
        verdicts[evaluation.kind] = ("passed" if evaluation.passed else "failed") + policy
        for gate in gate_report(evaluation).gates:
            verdicts[f"{evaluation.kind} / {gate.name}"] = "passed" if gate.passed else "failed"
    return verdicts


def _data(v: ModelVersion) -> dict[str, str]:
    return {
        "training data from": str(v.training_data_start),
        "training data to": str(v.training_data_end),
        "training data hash": v.training_data_hash,
    }


def compare(
    this: ModelVersion, other: ModelVersion, evaluations: dict[int, list[Evaluation]]
) -> Comparison:
    mine, theirs = list(this.feature_list or []), list(other.feature_list or [])
    left, right = _gate_verdicts(evaluations[this.pk]), _gate_verdicts(evaluations[other.pk])
    return Comparison(
        other=other,
        added=[f for f in mine if f not in theirs],
        removed=[f for f in theirs if f not in mine],
        hyperparameters=wording.compare(this.hyperparameters, other.hyperparameters),
        metrics=wording.compare(this.metrics, other.metrics),
        thresholds=wording.compare(this.thresholds, other.thresholds),
        data=wording.compare(_data(this), _data(other)),
        gates=[
            Diff(k, left.get(k, MISSING), right.get(k, MISSING))
            for k in dict.fromkeys([*left, *right])
        ],
    )


def history(version: ModelVersion) -> QuerySet[AuditEvent]:
    return version_events(version)


def version_page(user, name: str, version: str, other: str = "") -> dict:
    """Everything the version page shows; ``other`` names the version to compare with."""
    this = _version(user, name, version)
    siblings = list(
        ModelVersion.objects.filter(model_id=this.model_id)
        .exclude(pk=this.pk)
        .newest_first()
        .values_list("version", flat=True)
    )
    other_version = None
    if other and other in siblings:
        other_version = ModelVersion.objects.select_related("lifecycle").get(
            model_id=this.model_id, version=other
        )
    evaluations = _evaluations([v for v in (this, other_version) if v is not None])
    card = ModelCard.objects.filter(version=this).first()
    return {
        "version": this,
        "model": this.model,
        "stage": getattr(getattr(this, "lifecycle", None), "stage", ""),
        "hyperparameters": wording.flatten(this.hyperparameters),
        "metrics": wording.flatten(this.metrics),
        "thresholds": wording.flatten(this.thresholds),
        "feature_types": this.feature_types or {},
        "card": card,
        "card_sections": [
            (title, getattr(card, name)) for name, title in ModelCard.SECTIONS if card
        ],
        "gate_reports": [gate_report(e) for e in evaluations[this.pk]],
        "approvals": list(
            Approval.objects.filter(version=this).select_related("user").order_by("created_at")
        ),
        "history": [HistoryLine(e, wording.describe(e)) for e in history(this)],
        "siblings": siblings,
        "other_requested": other,
        "comparison": compare(this, other_version, evaluations) if other_version else None,
    }
