"""Evidence for the validation gates: CI posts it, the platform answers with the gate report."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from platform_core.api.pagination import page_response
from platform_core.api.uploads import RecordsUploadView
from platform_core.errors import InvalidInput
from registry import services as registry_services

from .. import gates
from ..models import Evaluation, EvidenceKind, Lifecycle
from ..roles import Action
from .idempotency import idempotent
from .views import actor_of

# --- request shapes (documentation; the service validates every record itself) -----------------


class EvidenceRecordSerializer(serializers.Serializer):
    score = serializers.FloatField(min_value=0, max_value=1, help_text="Positive-class probability")
    label = serializers.ChoiceField(choices=[0, 1], help_text="The true outcome")
    prediction = serializers.ChoiceField(
        choices=[0, 1],
        required=False,
        allow_null=True,
        help_text="The predicted class; default: score >= the version's decision threshold",
    )
    timestamp = serializers.DateTimeField(
        required=False, help_text="ISO 8601; required for shadow_replay (naive times are UTC)"
    )
    sensitive = serializers.DictField(
        child=serializers.CharField(),
        required=False,
        help_text='Sensitive attributes, the same on every record, e.g. {"area": "north"}',
    )


class EvidenceSubmitSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=[str(k) for k in gates.SUBMITTABLE_KINDS])
    passed = serializers.BooleanField(required=False, help_text="unit_tests: did they pass")
    summary = serializers.CharField(required=False, help_text="unit_tests: e.g. '412 passed'")
    records = EvidenceRecordSerializer(
        many=True, required=False, help_text="validation and shadow_replay: the records"
    )


class EvidenceUploadSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=[str(k) for k in gates.RECORD_KINDS])
    file = serializers.FileField(
        help_text="CSV or Parquet with columns score, label, optional prediction and timestamp, "
        "and sensitive.<attribute> per sensitive attribute (e.g. sensitive.area)"
    )


# --- response shapes ----------------------------------------------------------------------------


class GateSerializer(serializers.Serializer):
    gate = serializers.ChoiceField(choices=["metrics", "fairness", "calibration", "shadow_period"])
    passed = serializers.BooleanField()
    values = serializers.DictField(help_text="What the platform computed")
    thresholds = serializers.DictField(help_text="The policy's limits for this gate")
    reasons = serializers.ListField(child=serializers.CharField(), help_text="Why it failed")


class EvaluationReportSerializer(serializers.Serializer):
    passed = serializers.BooleanField()
    policy_version = serializers.IntegerField(
        required=False, help_text="The validation policy version the gates used"
    )
    gates = GateSerializer(many=True, required=False, help_text="In the pipeline's order")
    summary = serializers.CharField(required=False, help_text="unit_tests only")
    id = serializers.IntegerField()
    kind = serializers.CharField()
    evidence_digest = serializers.CharField(help_text="sha256 of the canonical records")
    records = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    created_by = serializers.CharField()
    stage = serializers.CharField(
        help_text="The version's stage afterwards (a failed validation sends it back)"
    )


class EvaluationSerializer(serializers.ModelSerializer):
    version = serializers.CharField(source="version.version")
    policy_version = serializers.IntegerField(source="policy.version", allow_null=True)

    class Meta:
        model = Evaluation
        fields = [
            "id",
            "version",
            "kind",
            "passed",
            "policy_version",
            "records",
            "evidence_digest",
            "created_at",
            "created_by",
            "report",
        ]


def report_response(evaluation: Evaluation) -> dict:
    """The gate report as stored, plus what identifies the evaluation."""
    stage = Lifecycle.objects.filter(version_id=evaluation.version_id).values_list(
        "stage", flat=True
    )
    return {
        **evaluation.report,
        "id": evaluation.pk,
        "kind": evaluation.kind,
        "evidence_digest": evaluation.evidence_digest,
        "records": evaluation.records,
        "created_at": serializers.DateTimeField().to_representation(evaluation.created_at),
        "created_by": evaluation.created_by,
        "stage": stage.first(),
    }


_RECORDS_EXAMPLE = {
    "kind": "validation",
    "records": [
        {"score": 0.71, "label": 1, "sensitive": {"area": "north"}},
        {"score": 0.12, "label": 0, "sensitive": {"area": "south"}, "prediction": 0},
    ],
}


class EvaluationListCreateView(RecordsUploadView):
    required_actions = {"GET": Action.READ, "POST": Action.SUBMIT_EVIDENCE}
    serializer_class = EvaluationSerializer
    queryset = Evaluation.objects.none()  # for the schema only; get() builds the real one

    @extend_schema(
        summary="A version's evaluations (gate reports), newest first",
        parameters=[
            OpenApiParameter(
                "kind", str, enum=[k.value for k in EvidenceKind], description="Only this kind"
            )
        ],
        responses=EvaluationSerializer(many=True),
    )
    def get(self, request: Request, name: str, version: str) -> Response:
        target = registry_services.version_get(name, version)
        kind = request.query_params.get("kind") or None
        if kind is not None and kind not in EvidenceKind.values:
            raise InvalidInput({"kind": f"one of {', '.join(EvidenceKind.values)}"})
        return page_response(self, gates.evaluation_list(target, kind=kind))

    @extend_schema(
        summary="Submit evidence; the platform computes the gates and answers with the report",
        description=(
            "JSON: `unit_tests` (`passed`, `summary`), `validation` or `shadow_replay` "
            "(`records`). Or multipart/form-data with `kind` and a CSV or Parquet `file`. "
            "Reported metrics are never used: every number comes from the records. A batch is "
            "accepted whole or refused whole (400 naming `records[i].field`). A failing "
            "validation sends a version in stage validation back to development. shadow_replay "
            "is only for a model with no live version (409 otherwise). New evidence voids the "
            "version's earlier approvals."
        ),
        request={
            "application/json": EvidenceSubmitSerializer,
            "multipart/form-data": EvidenceUploadSerializer,
        },
        responses={201: EvaluationReportSerializer},
        examples=[
            OpenApiExample("validation records", value=_RECORDS_EXAMPLE, request_only=True),
            OpenApiExample(
                "unit tests",
                value={"kind": "unit_tests", "passed": True, "summary": "412 passed"},
                request_only=True,
            ),
        ],
    )
    @idempotent
    def post(self, request: Request, name: str, version: str) -> Response:
        registry_services.version_get(name, version)  # 404 before reading the body
        payload, upload = self.records_body(request)
        evaluation = gates.evaluation_submit(
            model_name=name,
            version=version,
            kind=payload.get("kind"),
            payload=payload,
            upload=upload,
            actor=actor_of(request),
        )
        return Response(report_response(evaluation), status=status.HTTP_201_CREATED)
