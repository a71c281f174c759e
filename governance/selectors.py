"""Reads that show a version's facts and its decided state together."""

from __future__ import annotations

from django.db.models import Prefetch, Q, QuerySet

from registry.models import ModelVersion, RegisteredModel

from .models import SERVING_STAGES, Evaluation, RoleGrant
from .roles import Action, actions_for


def readable_models(user, *, scopes=None) -> QuerySet[RegisteredModel]:
    """Models the user may read: all with a global read grant, else those granted per model.

    An active superuser reads every model, as in the admin, unless a token narrows it to roles
    (``scopes``): one rule for the API, the console and the registry pages."""
    if user.is_active and user.is_superuser and not scopes:
        return RegisteredModel.objects.all()
    grants = RoleGrant.objects.filter(user=user)
    if scopes:
        grants = grants.filter(role__in=scopes)
    global_roles = set(grants.filter(model__isnull=True).values_list("role", flat=True))
    if Action.READ in actions_for(global_roles):
        return RegisteredModel.objects.all()
    scoped = [
        model_id
        for model_id, role in grants.filter(model__isnull=False).values_list("model_id", "role")
        if Action.READ in actions_for({role})
    ]
    return RegisteredModel.objects.filter(pk__in=scoped)


def models_allowing(user, action: str) -> QuerySet[RegisteredModel]:
    """The models on which ``user`` may do ``action`` (every model with a global grant)."""
    if user.is_superuser:
        return RegisteredModel.objects.all()
    grants = list(RoleGrant.objects.filter(user=user).values_list("role", "model_id"))
    if action in actions_for({role for role, model in grants if model is None}):
        return RegisteredModel.objects.all()
    ids = {m for role, m in grants if m is not None and action in actions_for({role})}
    return RegisteredModel.objects.filter(pk__in=ids)


def model_list(user, *, scopes=None) -> QuerySet[RegisteredModel]:
    live = ModelVersion.objects.filter(lifecycle__stage__in=SERVING_STAGES).select_related(
        "lifecycle"
    )
    return (
        readable_models(user, scopes=scopes)
        .prefetch_related(Prefetch("versions", queryset=live, to_attr="live_versions"))
        .order_by("name")
    )


def version_list(model: RegisteredModel, *, stage: str | None = None) -> QuerySet[ModelVersion]:
    qs = model.versions.select_related(
        "model", "lifecycle", "responsible_engineer", "card"
    ).newest_first()
    return qs.filter(lifecycle__stage=stage) if stage else qs


def live_version(model: RegisteredModel) -> ModelVersion | None:
    return (
        model.versions.select_related("lifecycle")
        .filter(Q(lifecycle__stage__in=SERVING_STAGES))
        .first()
    )


def latest_evaluation(version: ModelVersion, kind: str) -> Evaluation | None:
    """The newest evidence of one kind: later evidence supersedes earlier."""
    return (
        Evaluation.objects.filter(version=version, kind=kind).order_by("-created_at", "-id").first()
    )
