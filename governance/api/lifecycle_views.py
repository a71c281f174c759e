"""Transitions and approvals of one version."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from platform_core.api.pagination import page_response
from registry import services as registry_services

from .. import lifecycle
from ..approvals import REQUIRED_APPROVALS, approval_record
from ..models import Approval, Decision
from ..permissions import request_scopes
from ..roles import Action
from .idempotency import idempotent
from .serializers import StrictSerializer, VersionSerializer, validated
from .views import actor_of, version_response


class TransitionRequestSerializer(StrictSerializer):
    transition = serializers.ChoiceField(choices=sorted(lifecycle.RULES))
    comment = serializers.CharField(required=False, allow_blank=True, default="")


class ApprovalRequestSerializer(StrictSerializer):
    transition = serializers.ChoiceField(choices=sorted(REQUIRED_APPROVALS))
    role = serializers.CharField()
    decision = serializers.ChoiceField(choices=Decision.values)
    comment = serializers.CharField(required=False, allow_blank=True, default="")


class ApprovalSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.username")
    voided = serializers.SerializerMethodField()

    class Meta:
        model = Approval
        fields = [
            "id",
            "transition",
            "role",
            "user",
            "decision",
            "comment",
            "created_at",
            "artifact_digest",
            "evidence_digest",
            "voided",
            "voided_at",
            "voided_reason",
        ]

    def get_voided(self, obj) -> bool:
        return obj.voided_at is not None


class TransitionView(GenericAPIView):
    """409 lists every unmet condition; 403 (checked first) names the missing role."""

    required_actions = {"POST": Action.READ}
    serializer_class = TransitionRequestSerializer

    @extend_schema(
        summary="Request a lifecycle transition",
        request=TransitionRequestSerializer,
        responses={200: VersionSerializer},
    )
    @idempotent
    def post(self, request: Request, name: str, version: str) -> Response:
        target = registry_services.version_get(name, version)
        body = validated(TransitionRequestSerializer, request)
        lifecycle.transition(
            version=target,
            name=body["transition"],
            comment=body["comment"],
            actor=actor_of(request),
            scopes=request_scopes(request),
        )
        return version_response(request, target.model, version)


class ApprovalListCreateView(GenericAPIView):
    required_actions = {"GET": Action.READ, "POST": Action.READ}
    serializer_class = ApprovalSerializer
    queryset = Approval.objects.none()

    @extend_schema(
        summary="A version's approvals, oldest first (voided ones included)",
        responses=ApprovalSerializer(many=True),  # paginated list, not one approval
    )
    def get(self, request: Request, name: str, version: str) -> Response:
        target = registry_services.version_get(name, version)
        return page_response(
            self, Approval.objects.filter(version=target).select_related("user").order_by("id")
        )

    @extend_schema(
        summary="Approve or reject a transition in one of your roles",
        description=(
            "403 (checked before the stage) when you lack the role, hold a CI grant, or have a "
            "conflict of interest (separation of duties): you registered the version (with any "
            "of your tokens), are its responsible engineer, or submitted evidence for it."
        ),
        request=ApprovalRequestSerializer,
        responses={201: ApprovalSerializer},
    )
    @idempotent
    def post(self, request: Request, name: str, version: str) -> Response:
        target = registry_services.version_get(name, version)
        approval = approval_record(
            version=target,
            actor=actor_of(request),
            scopes=request_scopes(request),
            **validated(ApprovalRequestSerializer, request),
        )
        return Response(ApprovalSerializer(approval).data, status=status.HTTP_201_CREATED)
