"""Incidents API: list and detail with steps and timeline, step completion, manual rollback,
and the playbooks."""

from __future__ import annotations

from django.db.models import Count, Q
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from governance.api.idempotency import idempotent
from governance.api.serializers import StrictSerializer, validated
from governance.api.views import (
    CrossModelReadView,
    actor_of,
    one_or_404,
)
from governance.permissions import can, request_scopes, roles_of
from governance.roles import Action, actions_for
from platform_core.api.pagination import page_response
from platform_core.api.params import choices_param
from platform_core.errors import NotFound

from .manual_rollback import rollback_manual
from .models import (
    OPEN_STEP_STATUSES,
    Incident,
    IncidentEvent,
    IncidentStatus,
    Playbook,
    PlaybookStep,
    Rollback,
    StepRun,
    StepStatus,
)
from .playbook_editing import EDITABLE_STEP_FIELDS
from .steps.human import step_complete


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


class StepRunSerializer(serializers.ModelSerializer):
    overdue = serializers.SerializerMethodField(help_text="Waiting past its due time")

    class Meta:
        model = StepRun
        fields = [
            "order",
            "action",
            "responsible",
            "roles",
            "automated",
            "task",
            "condition",
            "decisions",
            "is_review",
            "status",
            "due_at",
            "overdue",
            "escalated_at",
            "completed_at",
            "completed_by",
            "note",
            "decision",
            "justification",
            "outcome",
            "last_error",
        ]

    def get_overdue(self, obj: StepRun) -> bool:
        return (
            obj.status == StepStatus.WAITING
            and obj.due_at is not None
            and obj.due_at < timezone.now()
        )


class IncidentHaltSerializer(serializers.Serializer):
    """The emergency halt an incident engaged (serving's halt, as the incident shows it)."""

    id = serializers.IntegerField()
    scope = serializers.CharField()
    where = serializers.JSONField(
        allow_null=True,
        help_text='A scoped halt\'s predicate ({"field", "op", "value"}); null: every request',
    )
    where_text = serializers.CharField(help_text="The predicate as text ('' for a whole halt)")
    reason = serializers.CharField()
    engaged_by = serializers.CharField(source="engaged_by_label")
    engaged_at = serializers.DateTimeField()
    released_at = serializers.DateTimeField(allow_null=True)


class IncidentSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model.name")
    version = serializers.CharField(source="version.version", allow_null=True)
    alerts = serializers.PrimaryKeyRelatedField(many=True, read_only=True)
    open_steps = serializers.IntegerField(
        read_only=True, help_text="Steps pending, running or waiting for a person"
    )

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
            "open_steps",
        ]


class IncidentDetailSerializer(IncidentSerializer):
    steps = StepRunSerializer(many=True, read_only=True)
    halt = IncidentHaltSerializer(read_only=True, allow_null=True)
    timeline = EventSerializer(source="events", many=True, read_only=True)
    rollbacks = RollbackSerializer(many=True, read_only=True)

    class Meta(IncidentSerializer.Meta):
        fields = [*IncidentSerializer.Meta.fields, "halt", "steps", "rollbacks", "timeline"]


class RollbackRequestSerializer(StrictSerializer):
    reason = serializers.CharField()


class StepCompleteSerializer(StrictSerializer):
    note = serializers.CharField(
        allow_blank=True, help_text="What was done or found (required; kept on the step)"
    )
    decision = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        help_text="One of the step's decisions (e.g. rollback, no_rollback, halt, restored, "
        "escalate); not_applicable for a conditional step that does not apply",
    )
    justification = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        help_text="Required for a decision not to roll back",
    )


class PlaybookStepSerializer(serializers.ModelSerializer):
    deadline_seconds = serializers.SerializerMethodField(
        help_text="Offset from the incident's opening; null when the specification gives none"
    )

    class Meta:
        model = PlaybookStep
        # every field the playbook editor sets, and the deadline in seconds beside it
        fields = [*EDITABLE_STEP_FIELDS, "deadline_seconds"]

    def get_deadline_seconds(self, obj: PlaybookStep) -> int | None:
        return None if obj.deadline is None else int(obj.deadline.total_seconds())


class PlaybookSerializer(serializers.ModelSerializer):
    steps = PlaybookStepSerializer(many=True, read_only=True)

    class Meta:
        model = Playbook
        fields = ["number", "name", "description", "updated_at", "steps"]


def _incidents():
    return (
        Incident.objects.select_related("model", "version", "halt")
        .prefetch_related(
            "alerts", "events", "steps", "rollbacks__from_version", "rollbacks__to_version"
        )
        .annotate(open_steps=Count("steps", filter=Q(steps__status__in=OPEN_STEP_STATUSES)))
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


class IncidentListView(CrossModelReadView):
    serializer_class = IncidentSerializer
    queryset = Incident.objects.none()

    @extend_schema(
        summary="Incidents, newest first",
        responses=IncidentSerializer(many=True),
        parameters=[
            OpenApiParameter("model", str, description="a model name"),
            OpenApiParameter("status", str, enum=IncidentStatus.values),
        ],
    )
    def get(self, request: Request) -> Response:
        qs = _incidents()
        if model := request.query_params.get("model"):
            qs = qs.filter(model__name=model)
        if wanted := choices_param(request.query_params, "status", IncidentStatus.values):
            qs = qs.filter(status__in=wanted)
        return page_response(self, _readable(request, qs))


class IncidentDetailView(CrossModelReadView):
    serializer_class = IncidentDetailSerializer
    queryset = Incident.objects.none()

    @extend_schema(
        summary="One incident with its playbook steps, halt, rollbacks and timeline",
        description="`steps` is the incident's copy of its playbook: automated steps (`task`) "
        "and steps waiting for a person in one of `roles` until `due_at` (`overdue` once past "
        "it; escalated to the ML Lead at `escalated_at`).",
    )
    def get(self, request: Request, pk: int) -> Response:
        incident = one_or_404(_readable(request, _incidents()), pk, "incident")
        return Response(IncidentDetailSerializer(incident).data)


class ModelRollbackView(GenericAPIView):
    """Manual rollback of the live version (ML Lead); 202: the rollback runs as a task."""

    required_actions = {"POST": Action.ROLLBACK}
    serializer_class = RollbackRequestSerializer

    @extend_schema(
        summary="Roll back the live version to the version it superseded",
        request=RollbackRequestSerializer,
        responses={202: IncidentDetailSerializer},
    )
    @idempotent
    def post(self, request: Request, name: str) -> Response:
        incident, _ = rollback_manual(
            model_name=name,
            reason=validated(RollbackRequestSerializer, request)["reason"],
            actor=actor_of(request),
            scopes=request_scopes(request),
        )
        fresh = _incidents().get(pk=incident.pk)
        return Response(IncidentDetailSerializer(fresh).data, status=status.HTTP_202_ACCEPTED)


class StepCompleteView(GenericAPIView):
    """A person in one of the step's roles completes a waiting playbook step."""

    required_actions = {"POST": Action.COMPLETE_STEP}
    any_model_for = {"POST"}  # step_complete checks the step's roles for the incident's model
    serializer_class = StepCompleteSerializer

    @extend_schema(
        summary="Complete a playbook step of an incident",
        description="`step` is the step's `order`. Needs one of the step's roles for the "
        "incident's model (403 names them). A step offering decisions needs `decision`; "
        "`rollback` (needs the rollback permission) rolls the live version back, `halt` "
        "engages the model's emergency halt, `escalate` pages the ML Lead; a decision not to "
        "roll back needs `justification`. Only waiting steps can be completed (409); the "
        "post-incident review comes last, its note is kept as the incident's review notes and "
        "the incident becomes `reviewed`.",
        request=StepCompleteSerializer,
        responses={200: StepRunSerializer},
    )
    @idempotent
    def post(self, request: Request, pk: int, order: int) -> Response:
        body = validated(StepCompleteSerializer, request)
        if not _readable(request, Incident.objects.filter(pk=pk)).exists():
            raise NotFound(f"no incident {pk}")  # as GET answers: the model is not named
        run = step_complete(
            incident_id=pk,
            order=order,
            note=body["note"],
            decision=body["decision"],
            justification=body["justification"],
            actor=actor_of(request),
            scopes=request_scopes(request),
        )
        return Response(StepRunSerializer(run).data)


class PlaybookListView(CrossModelReadView):
    serializer_class = PlaybookSerializer
    queryset = Playbook.objects.none()

    @extend_schema(
        summary="The incident-response playbooks with their steps",
        description="Incidents copy their playbook's steps when they open; later edits (in the "
        "admin, audited) apply to new incidents only.",
        responses=PlaybookSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        return page_response(self, Playbook.objects.prefetch_related("steps").order_by("number"))
