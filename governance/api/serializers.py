"""Request validation and response shapes for the registry endpoints."""

from __future__ import annotations

import re
from typing import Any

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request

from registry.feature_types import FEATURE_TYPES, declared_errors
from registry.models import ModelCard, ModelVersion, RegisteredModel

_HASH = re.compile(r"^[a-z0-9]+:[0-9a-fA-F]{16,128}$")


class StrictSerializer(serializers.Serializer):
    """Refuses unknown fields by name instead of silently dropping them."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


def validated(serializer_class: type[serializers.Serializer], request: Request) -> dict[str, Any]:
    """The request body as ``serializer_class`` validates it; else the 400 naming each field."""
    body = serializer_class(data=request.data)
    body.is_valid(raise_exception=True)
    return body.validated_data


class ModelCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True, default="")


class ModelSerializer(serializers.ModelSerializer):
    live_version = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    class Meta:
        model = RegisteredModel
        fields = ["name", "description", "created_at", "live_version", "url"]

    def get_live_version(self, obj) -> str | None:
        live = getattr(obj, "live_versions", None)
        return live[0].version if live else None

    def get_url(self, obj) -> str:
        return _absolute(self, reverse("api:model-detail", args=[obj.name]))


class ModelCardSerializer(StrictSerializer):
    intended_use = serializers.CharField()
    out_of_scope_uses = serializers.CharField(required=False, allow_blank=True, default="")
    training_data = serializers.CharField(required=False, allow_blank=True, default="")
    evaluation_data = serializers.CharField(required=False, allow_blank=True, default="")
    metrics = serializers.CharField(required=False, allow_blank=True, default="")
    fairness_analysis = serializers.CharField(required=False, allow_blank=True, default="")
    ethical_considerations = serializers.CharField(required=False, allow_blank=True, default="")
    caveats_and_limitations = serializers.CharField(required=False, allow_blank=True, default="")
    owners = serializers.ListField(child=serializers.CharField(), required=False, default=list)


class VersionCreateSerializer(StrictSerializer):
    version = serializers.CharField(max_length=32, help_text="MAJOR.MINOR.PATCH, e.g. 1.2.0")
    mlflow_uri = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        trim_whitespace=False,  # "models:/x/1 " is refused, not silently repaired
        help_text="models:/NAME/N of the MLflow registered model backing this model (its own "
        "name unless its artifact policy maps another); N a plain positive integer",
    )
    artifact_uri = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        trim_whitespace=False,
        help_text="An MLflow model directory the bridge logs and registers (instead of "
        "mlflow_uri): models:/ or runs:/ of the configured MLflow registry, or a file:// path "
        "under the configured artifact roots; at most ARTIFACT_MAX_BYTES",
    )
    training_data_hash = serializers.CharField(max_length=200, help_text="e.g. sha256:<hex>")
    training_data_start = serializers.DateField()
    training_data_end = serializers.DateField()
    hyperparameters = serializers.DictField(required=False, default=dict)
    metrics = serializers.DictField(required=False, default=dict)
    feature_list = serializers.ListField(
        child=serializers.CharField(max_length=200), allow_empty=False
    )
    feature_types = serializers.DictField(
        child=serializers.ChoiceField(choices=list(FEATURE_TYPES)),
        required=False,
        allow_null=True,
        default=None,
        help_text='Optional: every feature of feature_list mapped to "number", "integer", '
        '"string" or "boolean". Default: the types of the MLflow signature, else "number". '
        "Ingestion refuses a value of another type.",
    )
    thresholds = serializers.DictField(help_text='At least {"decision": 0.5}')
    responsible_engineer = serializers.CharField(
        max_length=150,
        help_text="Username of a user holding ml_engineer on this model (global or per-model); "
        "they, the registrant and evidence submitters never sign the version off",
    )
    model_card = ModelCardSerializer()
    ethics_audit_date = serializers.DateField(required=False, allow_null=True, default=None)
    created_at = serializers.DateTimeField(
        required=False, allow_null=True, default=None, help_text="Training time; default: MLflow's"
    )

    def validate_training_data_hash(self, value: str) -> str:
        if not _HASH.match(value):
            raise serializers.ValidationError("must look like 'sha256:<hex digest>'")
        return value

    def validate(self, attrs):
        if attrs["training_data_start"] > attrs["training_data_end"]:
            raise serializers.ValidationError(
                {"training_data_end": ["must not be before training_data_start"]}
            )
        if attrs.get("feature_types") is not None:
            problems = declared_errors(attrs["feature_types"], attrs["feature_list"])
            if problems:
                raise serializers.ValidationError({"feature_types": problems})
        return attrs


class ModelCardReadSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelCard
        exclude = ["id", "version"]


@extend_schema_field(
    {
        "type": "object",
        "nullable": True,
        "description": "The artifact's MLflow signature; null: it has none",
        "properties": {
            "inputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "nullable": True},
                        "type": {"type": "string"},
                    },
                },
            },
            "outputs": {"type": "array", "items": {"type": "object"}},
        },
    }
)
class SignatureField(serializers.JSONField):
    """The signature as the artifact probe read it (names and types)."""


class VersionSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model.name")
    stage = serializers.CharField(source="lifecycle.stage")
    promoted_at = serializers.DateTimeField(source="lifecycle.promoted_at")
    responsible_engineer = serializers.CharField(source="responsible_engineer.username")
    mlflow_uri = serializers.CharField()
    model_card = serializers.SerializerMethodField()
    model_card_content = ModelCardReadSerializer(source="card")
    links = serializers.SerializerMethodField()
    registered_by = serializers.CharField(
        source="registered_by.username", default=None, allow_null=True, read_only=True
    )
    signature = SignatureField(read_only=True)
    serialization_format = serializers.CharField(
        read_only=True,
        help_text="pickle, cloudpickle, skops, onnx or other; empty for versions registered "
        "before it was recorded",
    )

    class Meta:
        model = ModelVersion
        fields = [
            "model",
            "version",
            "stage",
            "mlflow_uri",
            *ModelVersion.TRAINING_FACTS,
            "responsible_engineer",
            "ethics_audit_date",
            "model_card",
            "model_card_content",
            "created_at",
            "registered_at",
            "registered_by",
            "mlflow_run_id",
            "source_commit",
            "serialization_format",
            "executable",
            "signature",
            "promoted_at",
            "links",
        ]
        read_only_fields = fields

    def get_model_card(self, obj) -> str:
        return _absolute(self, obj.card.get_absolute_url())

    def get_links(self, obj) -> dict[str, str]:
        return {
            "self": _absolute(
                self, reverse("api:version-detail", args=[obj.model.name, obj.version])
            ),
            "model": _absolute(self, reverse("api:model-detail", args=[obj.model.name])),
            "model_card": _absolute(self, obj.card.get_absolute_url()),
            "mlflow": obj.mlflow_uri,
        }


def _absolute(serializer: serializers.Serializer, path: str) -> str:
    request = serializer.context.get("request")
    return request.build_absolute_uri(path) if request is not None else path
