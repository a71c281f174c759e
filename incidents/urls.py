"""Paths relative to ``api/v1/``: ``path("api/v1/", include("incidents.urls"))``."""

from django.urls import path

from . import api

app_name = "incidents"

urlpatterns = [
    path("incidents/", api.IncidentListView.as_view(), name="incident-list"),
    path("incidents/<int:pk>/", api.IncidentDetailView.as_view(), name="incident-detail"),
    path(
        "incidents/<int:pk>/steps/<int:order>/complete/",
        api.StepCompleteView.as_view(),
        name="incident-step-complete",
    ),
    path("playbooks/", api.PlaybookListView.as_view(), name="playbook-list"),
    path("models/<str:name>/rollback/", api.ModelRollbackView.as_view(), name="model-rollback"),
]
