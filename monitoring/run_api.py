"""REST views of monitor runs and alerts: start runs now, read runs and their metrics, list alerts.

Thin: validate, check the caller's role for the model, call a service or a query, shape the answer.
Lists show only the models the caller may read.
"""

from __future__ import annotations

from django.db.models import QuerySet
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
from governance.permissions import can, request_scopes
from governance.roles import Action
from governance.selectors import readable_models
from platform_core.api.pagination import page_response
from platform_core.api.params import choice_param, int_param, text_param
from platform_core.errors import Forbidden, InvalidInput, NotFound
from registry import services as registry_services

from .alerts import alert_acknowledge, alert_resolve
from .models import Alert, AlertStatus, Check, MonitorRun, RunStatus, Severity
from .runs import runs_start


class RunStartSerializer(StrictSerializer):
    model = serializers.CharField(max_length=100)
    version = serializers.CharField(
        max_length=50, required=False, help_text="Default: the model's live version"
    )
    checks = serializers.ListField(
        child=serializers.ChoiceField(choices=Check.values),
        required=False,
        allow_empty=False,
        help_text="Default: all six checks, and feedback_loop when the model's monitoring "
        "policy names a feedback_cell_field",
    )


RUN_STATUS_HELP = "pending, running, succeeded, failed or skipped"


class RunSummarySerializer(serializers.ModelSerializer):
    check = serializers.CharField(source="kind")
    status = serializers.CharField(help_text=RUN_STATUS_HELP)

    class Meta:
        model = MonitorRun
        fields = ["id", "check", "status"]


class RunStartedSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="The first run's id")
    runs = RunSummarySerializer(many=True)


class RunSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model.name")
    version = serializers.CharField(source="version.version")
    check = serializers.CharField(source="kind")
    status = serializers.CharField(help_text=RUN_STATUS_HELP)
    policy_version = serializers.IntegerField(source="policy.version")
    validation_policy_version = serializers.IntegerField(
        source="validation_policy.version", allow_null=True, default=None
    )
    alert = serializers.SerializerMethodField(help_text="The alert this run raised, if any")

    class Meta:
        model = MonitorRun
        fields = [
            "id",
            "model",
            "version",
            "check",
            "status",
            "reason",
            "window_start",
            "window_end",
            "rows",
            "trigger",
            "policy_version",
            "validation_policy_version",
            "alert",
            "created_at",
            "created_by",
            "started_at",
            "finished_at",
        ]

    def get_alert(self, obj) -> int | None:
        try:
            return obj.alert.pk
        except Alert.DoesNotExist:
            return None


class RunDetailSerializer(RunSerializer):
    class Meta(RunSerializer.Meta):
        fields = [*RunSerializer.Meta.fields, "metrics"]


class AlertSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model.name")
    version = serializers.CharField(source="version.version")
    check = serializers.CharField(source="kind")
    feature = serializers.SerializerMethodField()
    status = serializers.CharField(help_text="open, queued, acknowledged or resolved")
    run = serializers.IntegerField(source="run_id")

    class Meta:
        model = Alert
        fields = [
            "id",
            "model",
            "version",
            "check",
            "severity",
            "feature",
            "metric",
            "value",
            "threshold",
            "window_start",
            "window_end",
            "status",
            "created_at",
            "run",
            "details",
            "acknowledged_at",
            "acknowledged_by",
            "resolved_at",
            "resolved_by",
            "note",
        ]
        read_only_fields = fields

    def get_feature(self, obj) -> str | None:
        return obj.feature or None


def _readable(request: Request, qs: QuerySet) -> QuerySet:
    return qs.filter(model__in=readable_models(request.user, scopes=request_scopes(request)))


# A list's choice filters: query parameter -> (the field it filters, its values). With model and
# version they are all the list takes (anything else but paging is a 400) and all it documents.
Choices = dict[str, tuple[str, list[str]]]
_RUN_CHOICES: Choices = {"check": ("kind", Check.values), "status": ("status", RunStatus.values)}
_ALERT_CHOICES: Choices = {
    "check": ("kind", Check.values),
    "severity": ("severity", Severity.values),
    "status": ("status", AlertStatus.values),
}
_PAGING = frozenset({"limit", "offset", "format"})
# What RunSerializer reads beyond the run's own row.
_RUN_RELATED = ("model", "version", "policy", "validation_policy", "alert")


def _filter_parameters(rows: str, choices: Choices) -> list[OpenApiParameter]:
    return [
        OpenApiParameter("model", str, description=f"{rows} of this model"),
        OpenApiParameter("version", str, description=f"{rows} of this version (with model)"),
        *(OpenApiParameter(name, str, enum=values) for name, (_, values) in choices.items()),
    ]


def _filtered(request: Request, qs: QuerySet, choices: Choices) -> QuerySet:
    """The readable rows of ``qs`` the query asks for; a 400 naming each bad parameter."""
    params = request.query_params
    unknown = sorted(set(params) - {"model", "version", *choices} - _PAGING)
    if unknown:
        raise InvalidInput({name: "unknown query parameter" for name in unknown[:20]})
    int_param(params, "limit", minimum=1)
    int_param(params, "offset", minimum=0)
    model = text_param(params, "model")
    version = text_param(params, "version", max_length=32)
    qs = _readable(request, qs)
    if model:
        qs = qs.filter(model__name=model)
        if version:
            qs = qs.filter(version__version=version)
    elif version:
        raise InvalidInput({"version": "give model too"})
    for name, (field, values) in choices.items():
        if value := choice_param(params, name, values):
            qs = qs.filter(**{field: value})
    return qs


class RunListCreateView(GenericAPIView):
    required_actions = {"GET": Action.READ, "POST": Action.START_RUNS}
    any_model_for = {"GET", "POST"}  # POST checks the body's model below
    serializer_class = RunSerializer
    queryset = MonitorRun.objects.none()  # for the schema only

    @extend_schema(
        summary="Monitor runs, newest window first",
        parameters=_filter_parameters("Runs", _RUN_CHOICES),
        responses=RunSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        qs = _filtered(request, MonitorRun.objects.select_related(*_RUN_RELATED), _RUN_CHOICES)
        return page_response(self, qs.order_by("-window_end", "-id"))

    @extend_schema(
        summary="Run checks now",
        description="One run per check over the policy's window ending now, executed by the "
        "monitoring workers. Answers 202 with the first run's id and every run; poll "
        "GET /api/v1/monitoring/runs/{id}/ for the outcome.",
        request=RunStartSerializer,
        responses={202: RunStartedSerializer},
    )
    @idempotent
    def post(self, request: Request) -> Response:
        data = validated(RunStartSerializer, request)
        if not can(
            request.user, Action.START_RUNS, model=data["model"], scopes=request_scopes(request)
        ):
            raise Forbidden(
                f"This needs the 'start_runs' permission for model '{data['model']}', which none "
                "of your roles grants."
            )
        model = registry_services.model_get(data["model"])
        version = (
            registry_services.version_get(model.name, data["version"])
            if data.get("version")
            else None
        )
        runs = runs_start(
            model=model,
            version=version,
            checks_to_run=data.get("checks"),
            actor=actor_of(request),
        )
        answer = {"id": runs[0].pk, "runs": RunSummarySerializer(runs, many=True).data}
        return Response(answer, status=status.HTTP_202_ACCEPTED)


class RunDetailView(CrossModelReadView):
    # the run's model is checked below
    serializer_class = RunDetailSerializer
    queryset = MonitorRun.objects.none()

    @extend_schema(
        summary="A monitor run: status, reason, window, policy versions and every metric",
        description="`metrics` holds every number of the check as a JSON number or null: per "
        "feature for data drift, per attribute and per group (selection rate, TPR, FPR, FNR, "
        "PPV) for fairness.",
    )
    def get(self, request: Request, pk: int) -> Response:
        runs = _readable(request, MonitorRun.objects.select_related(*_RUN_RELATED))
        run = one_or_404(runs, pk, "monitor run")
        return Response(RunDetailSerializer(run).data)


class AlertListView(CrossModelReadView):
    serializer_class = AlertSerializer
    queryset = Alert.objects.none()

    @extend_schema(
        summary="Alerts, newest first",
        parameters=_filter_parameters("Alerts", _ALERT_CHOICES),
        responses=AlertSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        qs = _filtered(request, Alert.objects.select_related("model", "version"), _ALERT_CHOICES)
        return page_response(self, qs.order_by("-created_at", "-id"))


class AlertDetailView(CrossModelReadView):
    serializer_class = AlertSerializer
    queryset = Alert.objects.none()

    @extend_schema(summary="One alert")
    def get(self, request: Request, pk: int) -> Response:
        alerts = _readable(request, Alert.objects.all()).select_related("model", "version")
        alert = one_or_404(alerts, pk, "alert")
        return Response(AlertSerializer(alert).data)


class AlertNoteSerializer(StrictSerializer):
    note = serializers.CharField(
        max_length=2000, required=False, allow_blank=True, default="", help_text="Why"
    )


class _AlertActionView(GenericAPIView):
    """POST with ``{"note": ...}``: needs ``handle_alerts`` on the alert's model; audited."""

    required_actions = {"POST": Action.READ}
    any_model_for = {"POST"}  # the alert's model is checked by the service
    serializer_class = AlertNoteSerializer
    queryset = Alert.objects.none()

    def act(self, request: Request, pk: int, service) -> Response:
        body = validated(AlertNoteSerializer, request)
        if not _readable(request, Alert.objects.filter(pk=pk)).exists():
            raise NotFound(f"no alert {pk}")
        alert = service(
            alert_id=pk,
            actor=actor_of(request),
            note=body["note"],
            scopes=request_scopes(request),
        )
        alert = Alert.objects.select_related("model", "version").get(pk=alert.pk)
        return Response(AlertSerializer(alert).data)


class AlertAcknowledgeView(_AlertActionView):
    @extend_schema(
        summary="Acknowledge an alert (someone is on it)",
        request=AlertNoteSerializer,
        responses=AlertSerializer,
    )
    def post(self, request: Request, pk: int) -> Response:
        return self.act(request, pk, alert_acknowledge)


class AlertResolveView(_AlertActionView):
    @extend_schema(
        summary="Resolve an alert, with the reason in note (required)",
        request=AlertNoteSerializer,
        responses=AlertSerializer,
    )
    def post(self, request: Request, pk: int) -> Response:
        return self.act(request, pk, alert_resolve)
