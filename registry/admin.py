"""Admin for governance staff: every registry object searchable and filterable, nothing editable.

Facts are immutable once registered; registration goes through the audited API and services.
"""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html

from .models import ArtifactPolicy, ModelCard, ModelVersion, PendingArtifact, RegisteredModel


def _holds_a_role(request) -> bool:
    """Whether the request's user is in a role group, asked once per request: every admin page
    asks it of each registered admin to draw its sidebar (about 40 queries a page otherwise)."""
    held = getattr(request, "_governance_holds_a_role", None)
    if held is None:
        held = request._governance_holds_a_role = request.user.groups.exists()
    return held


class ReadOnlyAdmin(admin.ModelAdmin):
    """Visible to staff who hold a role (role groups), editable by nobody."""

    def has_view_permission(self, request, obj=None) -> bool:
        user = request.user
        if not (user.is_active and user.is_staff):
            return False
        return user.is_superuser or _holds_a_role(request)

    def has_module_permission(self, request) -> bool:
        return self.has_view_permission(request)

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyInline:
    """Mixin for an inline whose rows are shown and never added, changed or deleted there."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class ModelCardInline(ReadOnlyInline, admin.StackedInline):
    model = ModelCard


@admin.register(RegisteredModel)
class RegisteredModelAdmin(ReadOnlyAdmin):
    list_display = ["name", "description", "version_count", "created_at", "created_by"]
    search_fields = ["name", "description"]
    date_hierarchy = "created_at"

    @admin.display(description="versions")
    def version_count(self, obj) -> int:
        return obj.versions.count()


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = [
        "model",
        "version",
        "stage",
        "flavor",
        "responsible_engineer",
        "training_data",
        "created_at",
        "card_link",
    ]
    list_filter = [
        "model",
        "lifecycle__stage",
        "flavor",
        "serialization_format",
        "executable",
        "responsible_engineer",
    ]
    search_fields = [
        "model__name",
        "version",
        "training_data_hash",
        "artifact_digest",
        "mlflow_run_id",
        "source_commit",
    ]
    list_select_related = ["model", "responsible_engineer", "lifecycle"]
    ordering = ["model__name", "-major", "-minor", "-patch"]
    inlines = [ModelCardInline]

    @admin.display(description="stage", ordering="lifecycle__stage")
    def stage(self, obj) -> str:
        lifecycle = getattr(obj, "lifecycle", None)
        return lifecycle.stage if lifecycle else "—"

    @admin.display(description="training data", ordering="training_data_start")
    def training_data(self, obj) -> str:
        """One column for the range: the list fits beside the filters at 1400 px."""
        return f"{obj.training_data_start:%Y-%m-%d} to {obj.training_data_end:%Y-%m-%d}"

    @admin.display(description="model card")
    def card_link(self, obj) -> str:
        return format_html('<a href="{}">card</a>', obj.card.get_absolute_url())


@admin.register(ModelCard)
class ModelCardAdmin(ReadOnlyAdmin):
    list_display = ["version", "updated_at"]
    search_fields = ["version__model__name", "intended_use", "fairness_analysis"]


@admin.register(PendingArtifact)
class PendingArtifactAdmin(ReadOnlyAdmin):
    list_display = ["mlflow_name", "mlflow_version", "run_id", "created_at"]


@admin.register(ArtifactPolicy)
class ArtifactPolicyAdmin(ReadOnlyAdmin):
    """Read-only: an ML lead changes it through PUT /api/v1/models/{name}/artifact-policy/."""

    list_display = [
        "model",
        "allowed_flavors",
        "allow_executable",
        "mlflow_name",
        "updated_by",
        "updated_at",
    ]
    search_fields = ["model__name", "mlflow_name", "reason"]
