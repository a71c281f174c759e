"""Read-only views of the audit log: the filtered list, chain verification, version history."""

from __future__ import annotations

from django.db.models import CharField, Q, QuerySet
from django.db.models.functions import Cast
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from platform_core.api.pagination import page_response
from platform_core.api.params import datetime_param
from platform_core.errors import InvalidInput
from registry import services as registry_services

from .. import audit
from ..models import Approval, AuditEvent, Escalation, Evaluation, Lifecycle, RoleGrant
from ..permissions import can, request_scopes
from ..roles import Action, actions_for


class AuditEventSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model_name", help_text="The model the event concerns")

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "seq",
            "created_at",
            "actor",
            "action",
            "object_type",
            "object_id",
            "object_repr",
            "model",
            "before",
            "after",
            "reason",
            "request_id",
            "redacted",
            "payload_digest",
            "prev_hash",
            "hash",
        ]
        extra_kwargs = {
            "payload_digest": {
                "help_text": "SHA-256 of the event's canonical content (per-field digests)"
            },
            "prev_hash": {"help_text": "The chain hash of the previous event"},
            "hash": {
                "help_text": "HMAC-SHA256 of 'prev_hash:seq:payload_digest' with the audit key"
            },
            "redacted": {"help_text": "Some fields were removed by a lawful redaction"},
        }


class _HeadSerializer(serializers.Serializer):
    seq = serializers.IntegerField()
    link = serializers.CharField(help_text="The link (hash) of the event at that seq")


class _CheckpointSerializer(serializers.Serializer):
    seq = serializers.IntegerField()
    link = serializers.CharField()
    created_at = serializers.CharField(help_text="When it was signed (ISO 8601)")
    name = serializers.CharField(help_text="Its name in the checkpoint store")


class _RefusedCheckpointSerializer(serializers.Serializer):
    name = serializers.CharField()
    reason = serializers.CharField()


class _PreviousVerificationSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    valid = serializers.BooleanField()
    events = serializers.IntegerField()
    first_bad_seq = serializers.IntegerField(allow_null=True)


class AuditVerificationSerializer(serializers.Serializer):
    valid = serializers.BooleanField()
    events = serializers.IntegerField(help_text="Events checked (up to the first broken one)")
    first_broken = serializers.IntegerField(
        allow_null=True, help_text="Id of the first bad event (null if it was deleted)"
    )
    first_bad_seq = serializers.IntegerField(
        allow_null=True, help_text="Sequence number of the first event that does not verify"
    )
    problem = serializers.CharField(
        required=False, help_text="Only when broken: what is wrong, and where"
    )
    head = _HeadSerializer(help_text="The chain head the walk went up to")
    checkpoint = _CheckpointSerializer(
        allow_null=True,
        help_text="The latest valid signed checkpoint (the one written after this verification "
        "when checkpoint_written)",
    )
    checkpoint_written = serializers.BooleanField(
        help_text="Whether this verification signed a new checkpoint of the head"
    )
    checkpoint_error = serializers.CharField(
        required=False, help_text="Only when the checkpoint store could not be written"
    )
    refused_checkpoints = _RefusedCheckpointSerializer(
        many=True, help_text="Checkpoints skipped because their signature does not verify"
    )
    verified_at = serializers.DateTimeField()
    previous_verification = _PreviousVerificationSerializer(
        allow_null=True, help_text="The verification before this one"
    )


_TEXT_FILTERS = {
    "action": "action",
    "model": "model_name",
    "object_type": "object_type",
    "object_id": "object_id",
}

LIST_PARAMETERS = [
    OpenApiParameter("action", str, description="Exact action, e.g. version.registered"),
    OpenApiParameter("model", str, description="Events about this model"),
    OpenApiParameter(
        "actor",
        str,
        description="A username (also matches that user's tokens), or a label such as "
        "'system:beat'",
    ),
    OpenApiParameter("object_type", str, description="e.g. registry.ModelVersion"),
    OpenApiParameter("object_id", str, description="Primary key of the object"),
    OpenApiParameter(
        "since",
        OpenApiTypes.DATETIME,
        description="Events at or after this ISO 8601 instant (a bare date is midnight UTC)",
    ),
    OpenApiParameter(
        "until",
        OpenApiTypes.DATETIME,
        description="Events before this instant (exclusive; a bare date is midnight UTC)",
    ),
]


def filter_events(qs: QuerySet[AuditEvent], params) -> QuerySet[AuditEvent]:
    """Apply the list filters; a bad value is a 400 naming the parameter."""
    for param, field in _TEXT_FILTERS.items():
        value = params.get(param)
        if value:
            qs = qs.filter(**{field: value})
    actor = params.get("actor")
    if actor:
        qs = qs.filter(Q(actor=actor) | Q(actor__startswith=f"{actor} (token "))
    bounds = {name: datetime_param(params, name) for name in ("since", "until") if params.get(name)}
    if "since" in bounds and "until" in bounds and bounds["until"] <= bounds["since"]:
        raise InvalidInput({"until": "must be later than since"})
    if "since" in bounds:
        qs = qs.filter(created_at__gte=bounds["since"])
    if "until" in bounds:
        qs = qs.filter(created_at__lt=bounds["until"])
    return qs


def readable_events(request: Request) -> QuerySet[AuditEvent]:
    """All events for a global READ_AUDIT grant; else only those of models granted per model."""
    scopes = request_scopes(request)
    if can(request.user, Action.READ_AUDIT, scopes=scopes):
        return AuditEvent.objects.all()
    grants = RoleGrant.objects.filter(user=request.user, model__isnull=False)
    if scopes:
        grants = grants.filter(role__in=scopes)
    names = {
        name
        for name, role in grants.values_list("model__name", "role")
        if Action.READ_AUDIT in actions_for({role})
    }
    return AuditEvent.objects.filter(model_name__in=names)


class AuditListView(GenericAPIView):
    required_actions = {"GET": Action.READ_AUDIT}
    any_model_for = {"GET"}  # a per-model grant reads that model's events
    serializer_class = AuditEventSerializer
    queryset = AuditEvent.objects.none()  # for the schema only; get() builds the real one

    @extend_schema(
        summary="The audit log, oldest first",
        description="Every change of state, hash-chained. Holders of a per-model grant see the "
        "events of that model only. Paginated with limit and offset.",
        parameters=LIST_PARAMETERS,
        responses=AuditEventSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        qs = filter_events(readable_events(request), request.query_params).order_by("seq")
        return page_response(self, qs)


class AuditVerifyView(GenericAPIView):
    required_actions = {"GET": Action.READ_AUDIT}
    serializer_class = AuditVerificationSerializer

    @extend_schema(
        summary="Verify the whole audit chain",
        description="Walks every event in order, checks each digest and keyed link, the chain "
        "head and the latest signed checkpoint kept outside the database, and reports the first "
        "bad sequence number (an edited, deleted, inserted, reordered or re-hashed row, a "
        "truncated tail, a redaction made outside the redaction service). When intact, signs a "
        "checkpoint of the verified head. Same function as `manage.py verify_audit`.",
        responses=AuditVerificationSerializer,
    )
    def get(self, request: Request) -> Response:
        return Response(AuditVerificationSerializer(audit.verify_and_checkpoint().to_dict()).data)


def version_events(version) -> QuerySet[AuditEvent]:
    """Events about one version: the version, its lifecycle, approvals, evaluations, escalations."""

    def ids(qs) -> QuerySet:
        return qs.annotate(sid=Cast("pk", CharField())).values("sid")

    lifecycle = Lifecycle.objects.filter(version=version)
    return AuditEvent.objects.filter(
        Q(object_type="registry.ModelVersion", object_id=str(version.pk))
        | Q(object_type="governance.Lifecycle", object_id__in=ids(lifecycle))
        | Q(
            object_type="governance.Approval",
            object_id__in=ids(Approval.objects.filter(version=version)),
        )
        | Q(
            object_type="governance.Evaluation",
            object_id__in=ids(Evaluation.objects.filter(version=version)),
        )
        | Q(
            object_type="governance.Escalation",
            object_id__in=ids(Escalation.objects.filter(lifecycle__in=lifecycle)),
        )
    ).order_by("seq")


class VersionHistoryView(GenericAPIView):
    required_actions = {"GET": Action.READ}
    serializer_class = AuditEventSerializer
    queryset = AuditEvent.objects.none()  # for the schema only

    @extend_schema(
        summary="A version's history, oldest first",
        description="The audit events of the version, its lifecycle (transitions), approvals, "
        "evaluations and escalations. Paginated with limit and offset.",
        responses=AuditEventSerializer(many=True),
    )
    def get(self, request: Request, name: str, version: str) -> Response:
        return page_response(self, version_events(registry_services.version_get(name, version)))
