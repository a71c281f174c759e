"""The gateway's REST endpoints: predict, and the halt switch."""

from __future__ import annotations

from django.db.models import Q
from drf_spectacular.utils import (
    OpenApiExample,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.api.idempotency import idempotent
from governance.api.serializers import StrictSerializer
from governance.api.views import IDEMPOTENCY_HEADER, actor_of
from governance.permissions import request_scopes
from governance.roles import Action
from governance.selectors import readable_models

from . import gateway
from .access import GatewayTokenAuthentication, PredictPermission
from .conf import GLOBAL
from .halt import RELEASE_ROLES, halt_engage, halt_list, halt_release_approve, waiting_for
from .models import Halt
from .predicate import OPS
from .router import read_generations

# --- predict ------------------------------------------------------------------------------------

_PREDICTION_FIELDS = {
    "prediction_id": serializers.CharField(help_text="Quote it when posting the label"),
    "score": serializers.FloatField(help_text="Positive-class probability"),
    "prediction": serializers.IntegerField(help_text="score >= the version's threshold"),
}
_PREDICT_RESPONSE = inline_serializer(
    "PredictResponse",
    {
        "model": serializers.CharField(),
        "version": serializers.CharField(help_text="The version that scored (null if mixed)"),
        "predictions": inline_serializer("Prediction", _PREDICTION_FIELDS, many=True),
        "stale": serializers.BooleanField(
            help_text="true: the model could not serve; these are the last cached predictions"
        ),
    },
)
_PREDICT_REQUEST = inline_serializer(
    "PredictRequest",
    {
        "instances": serializers.ListField(
            child=serializers.DictField(), help_text="1 to 1000 objects of feature values"
        ),
        "sensitive": serializers.ListField(
            child=serializers.DictField(),
            required=False,
            help_text="Optional: per instance, sensitive attributes to log (never scored)",
        ),
    },
)


class PredictView(APIView):
    """One token query, one generation read; everything else is cached per routing generation."""

    authentication_classes = [GatewayTokenAuthentication]
    permission_classes = [PredictPermission]
    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer]
    throttle_classes: list = []
    generations = None

    def initial(self, request, *args, **kwargs):
        # One read serves authentication, the permission check and routing.
        self.generations = read_generations(kwargs.get("name", ""))
        super().initial(request, *args, **kwargs)

    @extend_schema(
        summary="Score instances with the live version of a model",
        description=(
            "Validates each instance against the live version's feature list (400 naming "
            "missing, unexpected or non-numeric features), scores it and applies the version's "
            "decision threshold. While a staging version needing other features is shadowed (a "
            "MAJOR), an instance may also carry those: the live version ignores them and the "
            "shadow scores the instances that carry all of its features (`/readyz` lists them "
            "as `shadow_features`). 503 with `halted: true` while a halt is engaged (no prediction "
            "at all). A scoped halt (`where`) refuses, with 503 and `halted: true`, a request any "
            "of whose instances matches its predicate or cannot be evaluated (field missing or "
            "of the wrong type): the whole request, its body listing the instance indexes in "
            "`matched` and `unevaluable`; the other requests are served. 503 with `stale: true` "
            "when the model cannot serve and some instance has "
            "no cached prediction. Needs the `predict` permission (the ci role, or a grant for "
            "the model)."
        ),
        request=_PREDICT_REQUEST,
        responses={200: _PREDICT_RESPONSE},
        examples=[
            OpenApiExample(
                "two instances", value={"instances": [{"f1": 0.2, "f2": 1.5, "f3": -0.3}]}
            )
        ],
    )
    def post(self, request: Request, name: str) -> Response:
        code, body = gateway.serve(name, request.data, generations=self.generations)
        return Response(body, status=code)


# --- halt ---------------------------------------------------------------------------------------


class HaltWhereSerializer(serializers.Serializer):
    """The documented shape of a scoped halt's predicate (validated by the service)."""

    field = serializers.CharField(
        help_text="A feature of the serving version, or sensitive.<attribute> (a sensitive "
        "attribute the request carries beside the instances)"
    )
    op = serializers.ChoiceField(choices=list(OPS), help_text="between includes both ends")
    value = serializers.JSONField(
        help_text="A number (eq also a string); a non-empty list for in / not_in; [low, high] "
        "for between. Features compare with numbers only."
    )


@extend_schema_field(HaltWhereSerializer)
class WhereField(serializers.JSONField):
    """A predicate as JSON; the service validates it and names each bad key (where.field...)."""


class HaltRequestSerializer(StrictSerializer):
    scope = serializers.CharField(help_text="A model name, or 'global' for every model")
    reason = serializers.CharField(help_text="Why inference must stop")
    where = WhereField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Optional: a scoped halt of the model refusing only the requests matching "
        'this predicate, e.g. {"field": "population_density", "op": "gt", "value": 5000}',
    )


class HaltReleaseRequestSerializer(StrictSerializer):
    scope = serializers.CharField()
    where = WhereField(
        required=False,
        allow_null=True,
        default=None,
        help_text="The predicate of the scoped halt to release (as engaged); omit for the "
        "whole halt of the scope",
    )
    reason = serializers.CharField(required=False, allow_blank=True, default="")
    role = serializers.ChoiceField(
        choices=[str(r) for r in RELEASE_ROLES],
        required=False,
        help_text="The role you approve in (default: the one still missing that you hold)",
    )


class HaltReleaseApprovalSerializer(serializers.Serializer):
    user = serializers.CharField(source="user.username")
    role = serializers.CharField()
    comment = serializers.CharField()
    created_at = serializers.DateTimeField()


class HaltSerializer(serializers.ModelSerializer):
    active = serializers.BooleanField()
    where = WhereField(allow_null=True, help_text="A scoped halt's predicate; null: every request")
    where_text = serializers.CharField(help_text="The predicate as text ('' for a whole halt)")
    engaged_by = serializers.CharField(source="engaged_by_label")
    release_approvals = HaltReleaseApprovalSerializer(many=True)
    waiting_for = serializers.SerializerMethodField()

    class Meta:
        model = Halt
        fields = [
            "id",
            "scope",
            "where",
            "where_text",
            "reason",
            "active",
            "engaged_by",
            "engaged_at",
            "released_at",
            "release_approvals",
            "waiting_for",
        ]

    def get_waiting_for(self, obj) -> list[str]:
        return waiting_for(obj)


class HaltView(APIView):
    required_actions = {"GET": Action.READ, "POST": Action.HALT}
    any_model_for = {"GET", "POST"}  # the service checks the scope itself

    @extend_schema(
        summary="Halts in force",
        description=(
            "Global halts, and the halts of the models you may read (a global read grant shows "
            "every halt; a per-model grant, that model's)."
        ),
        responses=HaltSerializer(many=True),
        operation_id="halt_list",
    )
    def get(self, request: Request) -> Response:
        readable = readable_models(request.user, scopes=request_scopes(request))
        halts = halt_list().filter(
            Q(scope=GLOBAL) | Q(scope__in=readable.values_list("name", flat=True))
        )
        return Response(HaltSerializer(halts, many=True).data)

    @extend_schema(
        summary="Engage the emergency halt of one model or of all ('global')",
        description=(
            "Takes effect on the next predict request of every gateway process: predict answers "
            "503 with `halted: true`. 201 when engaged now, 200 with the halt already in force. "
            "With `where` (one model only), a scoped halt: only the requests matching the "
            "predicate (or on which it cannot be evaluated) are refused; 400 names the bad key "
            "(`where.field` when the field is not a feature of the serving version). "
            "Roles: ml_lead, ethics_officer, oncall (global scope: a global grant)."
        ),
        request=HaltRequestSerializer,
        responses={201: HaltSerializer, 200: HaltSerializer},
        parameters=[IDEMPOTENCY_HEADER],
    )
    @idempotent
    def post(self, request: Request) -> Response:
        body = HaltRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        halt, created = halt_engage(
            **body.validated_data, actor=actor_of(request), scopes=request_scopes(request)
        )
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(HaltSerializer(halt).data, status=code)


class HaltReleaseView(APIView):
    required_actions = {"POST": Action.RELEASE_HALT}
    any_model_for = {"POST"}

    @extend_schema(
        summary="Approve the release of a halt",
        description=(
            "Records one approval. The halt is released once an ML Lead and an Ethics Officer "
            "(two different people; the one who engaged it may be either) have approved. A "
            "scoped halt is named by its `where` as engaged. 409 when no such halt is engaged."
        ),
        request=HaltReleaseRequestSerializer,
        responses={200: HaltSerializer},
        parameters=[IDEMPOTENCY_HEADER],
    )
    @idempotent
    def post(self, request: Request) -> Response:
        body = HaltReleaseRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        outcome = halt_release_approve(
            scope=data["scope"],
            role=data.get("role"),
            comment=data["reason"],
            where=data.get("where"),
            actor=actor_of(request),
            scopes=request_scopes(request),
        )
        return Response({**HaltSerializer(outcome.halt).data, "released": outcome.released})
