from django.urls import path

from . import artifact_policy_views, audit_views, gate_views, lifecycle_views, views

app_name = "api"

VERSION = "models/<str:name>/versions/<str:version>/"

urlpatterns = [
    path("models/", views.ModelListCreateView.as_view(), name="model-list"),
    path("models/<str:name>/", views.ModelDetailView.as_view(), name="model-detail"),
    path(
        "models/<str:name>/versions/",
        views.VersionListCreateView.as_view(),
        name="version-list",
    ),
    path(
        "models/<str:name>/artifact-policy/",
        artifact_policy_views.ArtifactPolicyView.as_view(),
        name="artifact-policy",
    ),
    path(VERSION, views.VersionDetailView.as_view(), name="version-detail"),
    path(
        VERSION + "evaluations/",
        gate_views.EvaluationListCreateView.as_view(),
        name="version-evaluations",
    ),
    path(
        VERSION + "transitions/",
        lifecycle_views.TransitionView.as_view(),
        name="version-transitions",
    ),
    path(
        VERSION + "approvals/",
        lifecycle_views.ApprovalListCreateView.as_view(),
        name="version-approvals",
    ),
    path(VERSION + "history/", audit_views.VersionHistoryView.as_view(), name="version-history"),
    path("audit/", audit_views.AuditListView.as_view(), name="audit-list"),
    path("audit/verify/", audit_views.AuditVerifyView.as_view(), name="audit-verify"),
]
