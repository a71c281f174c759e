"""The ethics policy of a model over the API: read it, and (Ethics Officer) replace it.

``PUT`` writes a new policy version through ``ethics_policy_update`` (audited); the model is
checked against the new limits as soon as it commits, so a breach halts it before the response.
"""

from __future__ import annotations

from drf_spectacular.utils import (
    OpenApiExample,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import serializers

from governance.api.policy_views import ModelPolicyView
from governance.api.serializers import StrictSerializer
from governance.audit import Actor
from governance.roles import Action
from platform_core.errors import InvalidInput
from registry.models import RegisteredModel

from .ethics import ethics_policy_current, ethics_policy_update
from .ethics_schema import (
    FAIRNESS_AGGREGATES,
    validate_limits,
    validate_prohibited,
    validate_scoped,
)
from .models import EthicsPolicy

LIMITS_SCHEMA = {
    "type": "object",
    "description": "Hard bounds per fairness aggregate, checked on every sensitive attribute of "
    f"the serving version: keys among {', '.join(FAIRNESS_AGGREGATES)}; each value "
    '{"max": number} or {"min": number} (or both), between 0 and 1.',
    "additionalProperties": {
        "type": "object",
        "properties": {"max": {"type": "number"}, "min": {"type": "number"}},
        "minProperties": 1,
        "additionalProperties": False,
    },
    "example": {"equalized_odds_difference": {"max": 0.25}, "fpr_ratio": {"min": 0.5}},
}


@extend_schema_field(LIMITS_SCHEMA)
class LimitsField(serializers.JSONField):
    """Any JSON: the service validates it and names each bad entry."""


@extend_schema_field(
    {
        "type": "array",
        "items": {"type": "string", "minLength": 1},
        "description": "Features no serving version may use",
        "example": ["ethnicity"],
    }
)
class FeatureNamesField(serializers.JSONField):
    """Any JSON: the service validates it and names each bad entry."""


@extend_schema_field(
    {
        "type": "array",
        "items": {"type": "string", "minLength": 1},
        "description": "Sensitive attributes whose hard-limit breach, when confined to one group "
        "(without it the other groups are within the bound), halts only that group's requests "
        "(a scoped halt: sensitive.<attribute> in {group}) instead of the whole model",
        "example": ["neighbourhood"],
    }
)
class AttributeNamesField(serializers.JSONField):
    """Any JSON: the service validates it and names each bad entry."""


class EthicsPolicySerializer(serializers.Serializer):
    model = serializers.CharField()
    version = serializers.IntegerField(
        allow_null=True, help_text="null: the model has no ethics policy, so no hard limits"
    )
    fairness_limits = LimitsField()
    prohibited_features = FeatureNamesField()
    scoped_attributes = AttributeNamesField()
    reason = serializers.CharField(allow_blank=True)
    created_by = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField(allow_null=True)


class EthicsPolicyWriteSerializer(StrictSerializer):
    fairness_limits = LimitsField(required=False, default=dict)
    prohibited_features = FeatureNamesField(required=False, default=list)
    scoped_attributes = AttributeNamesField(required=False, default=list)
    reason = serializers.CharField(
        required=False, default="", allow_blank=True, help_text="Why the hard limits change"
    )

    def validate(self, attrs: dict) -> dict:
        """Every problem of the body at once, each under the name of what is wrong."""
        errors: dict[str, list[str]] = {}
        for check, name in (
            (validate_limits, "fairness_limits"),
            (validate_prohibited, "prohibited_features"),
            (validate_scoped, "scoped_attributes"),
        ):
            try:
                check(attrs[name])
            except InvalidInput as exc:
                errors.update(exc.errors)
        if not str(attrs.get("reason") or "").strip():
            errors["reason"] = ["required: why the hard limits change"]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


def _shown(name: str, policy: EthicsPolicy | None) -> dict:
    if policy is None:
        return {
            "model": name,
            "version": None,
            "fairness_limits": {},
            "prohibited_features": [],
            "scoped_attributes": [],
            "reason": "",
            "created_by": "",
            "created_at": None,
        }
    return EthicsPolicySerializer(
        {
            "model": name,
            "version": policy.version,
            "fairness_limits": policy.fairness_limits,
            "prohibited_features": policy.prohibited_features,
            "scoped_attributes": policy.scoped_attributes,
            "reason": policy.reason,
            "created_by": policy.created_by,
            "created_at": policy.created_at,
        }
    ).data


@extend_schema_view(
    get=extend_schema(
        summary="The model's current ethics policy (hard limits whose breach halts it)",
        responses={200: EthicsPolicySerializer},
    ),
    put=extend_schema(
        summary="Replace the ethics policy (Ethics Officer): a new version, checked at once",
        description="Writes a new policy version (audited). Right after it commits the model's "
        "serving version is checked against it: a prohibited feature in its feature list or a "
        "fairness aggregate of its latest fairness run beyond a hard bound engages the emergency "
        "halt and opens an ethics incident. For an attribute listed in `scoped_attributes`, a "
        "breach confined to one group halts only that group's requests (a scoped halt). "
        "Errors name the field, e.g. "
        "`fairness_limits.fpr_ratio`.",
        request=EthicsPolicyWriteSerializer,
        responses={200: EthicsPolicySerializer},
        examples=[
            OpenApiExample(
                "Hard limits",
                value={
                    "fairness_limits": {
                        "equalized_odds_difference": {"max": 0.25},
                        "demographic_parity_ratio": {"min": 0.6},
                    },
                    "prohibited_features": ["ethnicity", "religion"],
                    "reason": "Board decision 2026-03: hard floor under the soft limits",
                },
                request_only=True,
            )
        ],
    ),
)
class EthicsPolicyView(ModelPolicyView):
    required_actions = {"GET": Action.READ, "PUT": Action.APPROVE_AS_ETHICS_OFFICER}
    serializer_class = EthicsPolicyWriteSerializer

    def policy_shown(self, model: RegisteredModel) -> dict:
        return _shown(model.name, ethics_policy_current(model))

    def policy_replace(self, name: str, values: dict, *, actor: Actor, scopes) -> dict:
        policy = ethics_policy_update(
            model_name=name,
            fairness_limits=values["fairness_limits"],
            prohibited_features=values["prohibited_features"],
            scoped_attributes=values["scoped_attributes"],
            reason=values["reason"],
            actor=actor,
            scopes=scopes,
        )
        return _shown(policy.model.name, policy)
