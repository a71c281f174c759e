"""Monitor runs and alerts, relative to /api/v1/ (included by config.urls)."""

from django.urls import path

from . import run_api

app_name = "monitoring-runs"

urlpatterns = [
    path("monitoring/runs/", run_api.RunListCreateView.as_view(), name="run-list"),
    path("monitoring/runs/<int:pk>/", run_api.RunDetailView.as_view(), name="run-detail"),
    path("alerts/", run_api.AlertListView.as_view(), name="alert-list"),
    path("alerts/<int:pk>/", run_api.AlertDetailView.as_view(), name="alert-detail"),
    path(
        "alerts/<int:pk>/acknowledge/",
        run_api.AlertAcknowledgeView.as_view(),
        name="alert-acknowledge",
    ),
    path("alerts/<int:pk>/resolve/", run_api.AlertResolveView.as_view(), name="alert-resolve"),
]
