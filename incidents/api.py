"""Incidents API: list and detail with the timeline, manual rollback."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from governance.api.idempotency import idempotent
from governance.api.serializers import StrictSerializer
from governance.api.views import IDEMPOTENCY_HEADER, actor_of
from governance.permissions import can, request_scopes, roles_of
from governance.roles import Action, actions_for
from registry.errors import NotFound

from .models import Incident, IncidentEvent, IncidentStatus, Rollback
from .rollback import rollback_manual


class EventSerializer(serializers.ModelSerializer):
    class Meta:
        model = IncidentEvent
        fields = ["at", "actor", "kind", "message", "data"]


class RollbackSerializer(serializers.ModelSerializer):
    from_version = serializers.CharField(source="from_version.version")
    to_version = serializers.CharField(source="to_version.version", allow_null=True)

    class Meta:
        model = Rollback
        fields = [
            "id",
            "status",
            "automatic",
            "from_version",
            "to_version",
            "reason",
            "requested_by",
            "requested_at",
            "started_at",
            "switched_at",
            "verified_at",
            "completed_at",
            "verification",
            "task_id",
            "last_error",
        ]


class IncidentSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model.name")
    version = serializers.CharField(source="version.version", allow_null=True)
    alerts = serializers.PrimaryKeyRelatedField(many=True, read_only=True)

    class Meta:
        model = Incident
        fields = [
            "id",
            "kind",
            "severity",
            "playbook",
            "title",
            "model",
            "version",
            "alerts",
            "status",
            "opened_by",
            "created_at",
            "resolved_at",
            "review_due_at",
            "review_notes",
        ]


class IncidentDetailSerializer(IncidentSerializer):
    timeline = EventSerializer(source="events", many=True, read_only=True)
    rollbacks = RollbackSerializer(many=True, read_only=True)

    class Meta(IncidentSerializer.Meta):
        fields = [*IncidentSerializer.Meta.fields, "rollbacks", "timeline"]


class RollbackRequestSerializer(StrictSerializer):
    reason = serializers.CharField()


def _incidents():
    return Incident.objects.select_related("model", "version").prefetch_related(
        "alerts", "events", "rollbacks__from_version", "rollbacks__to_version"
    )


def _readable(request: Request, qs):
    """Global readers see everything; others only the models they hold a grant for."""
    scopes = request_scopes(request)
    if can(request.user, Action.READ, scopes=scopes):
        return qs
    names = [
        name
        for name in qs.values_list("model__name", flat=True).distinct()
        if Action.READ in _actions(request, name, scopes)
    ]
    return qs.filter(model__name__in=names)


def _actions(request, name, scopes):
    return actions_for(roles_of(request.user, model=name, scopes=scopes))


class IncidentListView(GenericAPIView):
    required_actions = {"GET": Action.READ}
    any_model_for = {"GET"}
    serializer_class = IncidentSerializer
    queryset = Incident.objects.none()

    @extend_schema(
        summary="Incidents, newest first",
        parameters=[
            OpenApiParameter("model", str, description="a model name"),
            OpenApiParameter("status", str, enum=IncidentStatus.values),
        ],
    )
    def get(self, request: Request) -> Response:
        qs = _incidents()
        if model := request.query_params.get("model"):
            qs = qs.filter(model__name=model)
        if wanted := request.query_params.get("status"):
            qs = qs.filter(status__in=wanted.split(","))
        page = self.paginate_queryset(_readable(request, qs))
        return self.get_paginated_response(IncidentSerializer(page, many=True).data)


class IncidentDetailView(GenericAPIView):
    required_actions = {"GET": Action.READ}
    any_model_for = {"GET"}
    serializer_class = IncidentDetailSerializer
    queryset = Incident.objects.none()

    @extend_schema(summary="One incident with its rollbacks and timeline")
    def get(self, request: Request, pk: int) -> Response:
        incident = _readable(request, _incidents()).filter(pk=pk).first()
        if incident is None:
            raise NotFound(f"no incident {pk}")
        return Response(IncidentDetailSerializer(incident).data)


class ModelRollbackView(GenericAPIView):
    """Manual rollback of the live version (ML Lead); 202: the rollback runs as a task."""

    required_actions = {"POST": Action.ROLLBACK}
    serializer_class = RollbackRequestSerializer

    @extend_schema(
        summary="Roll back the live version to the version it superseded",
        request=RollbackRequestSerializer,
        responses={202: IncidentDetailSerializer},
        parameters=[IDEMPOTENCY_HEADER],
    )
    @idempotent
    def post(self, request: Request, name: str) -> Response:
        body = RollbackRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        incident, _ = rollback_manual(
            model_name=name,
            reason=body.validated_data["reason"],
            actor=actor_of(request),
            scopes=request_scopes(request),
        )
        fresh = _incidents().get(pk=incident.pk)
        return Response(IncidentDetailSerializer(fresh).data, status=status.HTTP_202_ACCEPTED)
