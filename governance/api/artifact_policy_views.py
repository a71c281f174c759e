"""A model's artifact policy over the API: read it, and (ML lead of the model) replace it."""

from __future__ import annotations

from drf_spectacular.utils import (
    OpenApiExample,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import serializers

from registry import services as registry_services
from registry.artifact_policy import EffectivePolicy, policy_for
from registry.models import RegisteredModel

from ..artifact_policy import artifact_policy_update
from ..audit import Actor
from ..roles import Action
from .policy_views import ModelPolicyView
from .serializers import StrictSerializer


@extend_schema_field(
    {
        "type": "array",
        "items": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"},
        "description": "MLflow flavours a new version's artifact may have; empty: any",
        "example": ["onnx", "sklearn"],
    }
)
class FlavorsField(serializers.JSONField):
    """Any JSON: the service validates it and names each bad entry."""


@extend_schema_field({"type": "boolean", "description": "false: only onnx and skops artifacts"})
class StrictBooleanField(serializers.JSONField):
    """Any JSON: the service accepts only true or false (no "yes", no 1)."""


@extend_schema_field(
    {
        "type": "string",
        "maxLength": 256,
        "description": "The MLflow registered model backing this model; empty: the same name",
    }
)
class MlflowNameField(serializers.JSONField):
    """Any JSON: the service validates it."""


class ArtifactPolicySerializer(serializers.Serializer):
    model = serializers.CharField()
    allowed_flavors = serializers.ListField(child=serializers.CharField())
    allow_executable = serializers.BooleanField()
    mlflow_name = serializers.CharField(
        help_text="The MLflow registered model whose versions may back this model"
    )
    non_executable_formats = serializers.ListField(
        child=serializers.CharField(),
        help_text="The formats allowed when allow_executable is false",
    )
    reason = serializers.CharField(allow_blank=True)
    updated_by = serializers.CharField(allow_blank=True)
    updated_at = serializers.DateTimeField(allow_null=True, help_text="null: the defaults apply")


class ArtifactPolicyWriteSerializer(StrictSerializer):
    allowed_flavors = FlavorsField(required=False, default=list)
    allow_executable = StrictBooleanField(required=False, default=True)
    mlflow_name = MlflowNameField(required=False, default="")
    reason = serializers.CharField(
        required=False, default="", allow_blank=True, help_text="Why the policy changes"
    )


def _shown(policy: EffectivePolicy) -> dict:
    stored = policy.stored
    return ArtifactPolicySerializer(
        {
            "model": policy.model,
            "allowed_flavors": policy.allowed_flavors,
            "allow_executable": policy.allow_executable,
            "mlflow_name": policy.mlflow_name,
            "non_executable_formats": policy.non_executable_formats,
            "reason": stored.reason if stored else "",
            "updated_by": stored.updated_by if stored else "",
            "updated_at": stored.updated_at if stored else None,
        }
    ).data


@extend_schema_view(
    get=extend_schema(
        summary="The model's artifact policy: allowed flavours, executable formats, MLflow name",
        responses={200: ArtifactPolicySerializer},
    ),
    put=extend_schema(
        summary="Replace the artifact policy (ML lead of the model)",
        description="Binds versions registered from now on: an artifact whose flavour is not "
        "listed, or (with `allow_executable: false`) whose loading runs code - pickle, "
        "cloudpickle, a custom python_function loader - is refused with 400 before anything of "
        "it is loaded. `mlflow_name` maps another MLflow registered model to this model (one "
        "MLflow model backs one platform model). Audited; `reason` is required. Errors name the "
        "field, e.g. `allowed_flavors.0`.",
        request=ArtifactPolicyWriteSerializer,
        responses={200: ArtifactPolicySerializer},
        examples=[
            OpenApiExample(
                "Only non-executable formats",
                value={
                    "allowed_flavors": ["onnx", "sklearn"],
                    "allow_executable": False,
                    "mlflow_name": "",
                    "reason": "Security review 2026-12: no pickles in production",
                },
                request_only=True,
            )
        ],
    ),
)
class ArtifactPolicyView(ModelPolicyView):
    required_actions = {"GET": Action.READ, "PUT": Action.APPROVE_AS_ML_LEAD}
    serializer_class = ArtifactPolicyWriteSerializer

    def policy_shown(self, model: RegisteredModel) -> dict:
        return _shown(policy_for(model))

    def before_body(self, name: str) -> None:
        registry_services.model_get(name)  # 404 before validating the body

    def policy_replace(self, name: str, values: dict, *, actor: Actor, scopes) -> dict:
        return _shown(artifact_policy_update(model_name=name, **values, actor=actor, scopes=scopes))
