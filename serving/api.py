"""The gateway's REST endpoints: predict, and the halt switch."""

from __future__ import annotations

import io
import re

import orjson
from django.conf import settings
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
from governance.api.serializers import StrictSerializer, validated
from governance.api.views import actor_of
from governance.permissions import request_scopes
from governance.roles import Action
from governance.selectors import readable_models
from platform_core.errors import InvalidInput

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


_INT64 = 2.0**63  # orjson reads an integer literal beyond 64 bits as a float
_LONG_INTEGER = re.compile(rb"[0-9]{19}")  # the digits such a literal needs


class PredictJSONParser(JSONParser):
    """DRF's JSON parser, through orjson when that reads the body exactly as DRF's would.

    The stdlib decoder was a quarter of a 100-instance request (1.5 ms of 54 kB of numbers);
    orjson reads it in a fifth of that. Any body orjson refuses (NaN, lone surrogates, a big
    exponent, another charset) goes to DRF's own parser, so what is accepted and every parse
    error stay DRF's. The one value orjson reads differently, an integer literal beyond 64
    bits (a float instead of the int), can only fail validation as a feature (its magnitude);
    ``PredictView.post`` then re-reads the body with DRF's parser for the exact message, and a
    ``sensitive`` attribute that large is re-read the same way before it is logged.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        if stream is None or encoding.lower().replace("-", "").replace("_", "") != "utf8":
            return super().parse(stream, media_type, parser_context)
        raw = stream.read()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self.exact(raw, media_type, parser_context)
        if not _sensitive_exact(data):
            return self.exact(raw, media_type, parser_context)
        request = getattr(parser_context.get("request"), "_request", None)
        if request is not None:
            request.predict_body = (raw, media_type, parser_context)  # for ``exact`` on a 400
        return data

    def exact(self, raw: bytes, media_type, parser_context):
        """The body read by DRF's own parser (the stdlib decoder)."""
        return super().parse(io.BytesIO(raw), media_type, parser_context)


def _sensitive_exact(data) -> bool:
    """False when a ``sensitive`` value may be an integer orjson read as a float."""
    sensitive = data.get("sensitive") if type(data) is dict else None
    if type(sensitive) is not list:
        return True
    for attrs in sensitive:
        if type(attrs) is dict:
            for value in attrs.values():
                if type(value) is float and abs(value) >= _INT64:
                    return False
    return True


class PredictRenderer(JSONRenderer):
    """DRF's JSON renderer, through orjson for the answer of a prediction.

    A body of plain lists, dicts, strings, ints and finite floats only (a prediction's answer)
    is written by orjson: the same JSON as DRF's compact output (floats may print their
    exponent as ``1e-5`` rather than ``1e-05``: the same number). Anything else (a datetime, a
    lazy string, a line separator DRF escapes) goes to DRF's renderer.
    """

    def render(self, data, accepted_media_type=None, renderer_context=None):
        indent = "indent" in (accepted_media_type or "") or (renderer_context or {}).get("indent")
        if type(data) is dict and data.get("stale") is False and not indent:
            try:
                out = orjson.dumps(data, option=_PASSTHROUGH, default=_refuse)
            except TypeError:
                pass
            else:
                if b"\xe2\x80\xa8" not in out and b"\xe2\x80\xa9" not in out:
                    return out
        return super().render(data, accepted_media_type, renderer_context)


_PASSTHROUGH = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATACLASS
)


def _refuse(value):
    raise TypeError(type(value).__name__)


class PredictView(APIView):
    """One token query, one generation read; everything else is cached per routing generation."""

    authentication_classes = [GatewayTokenAuthentication]
    permission_classes = [PredictPermission]
    parser_classes = [PredictJSONParser]
    renderer_classes = [PredictRenderer]
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
        try:
            code, body = gateway.serve(name, request.data, generations=self.generations)
        except InvalidInput:
            read = getattr(request._request, "predict_body", None)
            if read is None or _LONG_INTEGER.search(read[0]) is None:
                raise
            # Refused as read by orjson: the stdlib's reading names values exactly as before.
            exact = PredictJSONParser().exact(*read)
            code, body = gateway.serve(name, exact, generations=self.generations)
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
    )
    @idempotent
    def post(self, request: Request) -> Response:
        halt, created = halt_engage(
            **validated(HaltRequestSerializer, request),
            actor=actor_of(request),
            scopes=request_scopes(request),
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
    )
    @idempotent
    def post(self, request: Request) -> Response:
        data = validated(HaltReleaseRequestSerializer, request)
        outcome = halt_release_approve(
            scope=data["scope"],
            role=data.get("role"),
            comment=data["reason"],
            where=data.get("where"),
            actor=actor_of(request),
            scopes=request_scopes(request),
        )
        return Response({**HaltSerializer(outcome.halt).data, "released": outcome.released})
