"""A model's artifact policy: the effective values and their validation (writing: governance)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from platform_core.errors import InvalidInput

from .artifact_probe import NON_EXECUTABLE
from .models import ArtifactPolicy, RegisteredModel

_FLAVOR = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_MLFLOW_NAME = re.compile(r"^[^/@\s]{1,256}$")


@dataclass(frozen=True)
class EffectivePolicy:
    """What registration enforces; ``stored`` is None when the model has only the defaults."""

    model: str
    allowed_flavors: list[str] = field(default_factory=list)
    allow_executable: bool = True
    mlflow_name: str = ""
    stored: ArtifactPolicy | None = None

    @property
    def non_executable_formats(self) -> list[str]:
        return sorted(NON_EXECUTABLE)


def policy_for(model: RegisteredModel) -> EffectivePolicy:
    stored = ArtifactPolicy.objects.filter(model=model).first()
    if stored is None:
        return EffectivePolicy(model=model.name, mlflow_name=model.name)
    return EffectivePolicy(
        model=model.name,
        allowed_flavors=list(stored.allowed_flavors or []),
        allow_executable=stored.allow_executable,
        mlflow_name=stored.mlflow_name or model.name,
        stored=stored,
    )


def validate_policy(
    *, model: RegisteredModel, allowed_flavors: Any, allow_executable: Any, mlflow_name: Any
) -> dict[str, Any]:
    """The clean values; InvalidInput names every bad field at once."""
    errors: dict[str, str] = {}
    flavors: list[str] = []
    if not isinstance(allowed_flavors, list):
        errors["allowed_flavors"] = 'must be a list of MLflow flavour names, e.g. ["onnx"]'
    else:
        for i, name in enumerate(allowed_flavors):
            if not isinstance(name, str) or not _FLAVOR.match(name):
                errors[f"allowed_flavors.{i}"] = (
                    "must be an MLflow flavour name: lowercase letters, digits and '_', e.g. "
                    "sklearn, onnx"
                )
            elif name not in flavors:
                flavors.append(name)
    if not isinstance(allow_executable, bool):
        errors["allow_executable"] = "must be true or false"
    name = model.name if mlflow_name in (None, "") else mlflow_name
    if not isinstance(name, str) or not _MLFLOW_NAME.match(name):
        errors["mlflow_name"] = (
            "must be an MLflow registered model name (no '/', '@' or whitespace, at most 256 "
            "characters), or empty for the model's own name"
        )
    elif name != model.name:
        taken = _backing_model(name, other_than=model)
        if taken is not None:
            errors["mlflow_name"] = (
                f"MLflow registered model '{name}' already backs model '{taken}': one MLflow "
                "registered model backs one platform model (its aliases mirror one stage)"
            )
    if errors:
        raise InvalidInput(errors)
    return {
        "allowed_flavors": flavors,
        "allow_executable": allow_executable,
        "mlflow_name": "" if name == model.name else name,
    }


def _backing_model(mlflow_name: str, *, other_than: RegisteredModel) -> str | None:
    """The other platform model that ``mlflow_name`` already backs, if any."""
    mapped = (
        ArtifactPolicy.objects.filter(mlflow_name=mlflow_name)
        .exclude(model=other_than)
        .select_related("model")
        .first()
    )
    if mapped is not None:
        return mapped.model.name
    same = RegisteredModel.objects.filter(name=mlflow_name).exclude(pk=other_than.pk).first()
    if same is not None and policy_for(same).mlflow_name == mlflow_name:
        return same.name
    return None
