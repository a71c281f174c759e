"""Production data endpoints, relative to /api/v1/ (included by config.urls)."""

from django.urls import path

from . import api

app_name = "monitoring"

urlpatterns = [
    path(
        "models/<str:name>/predictions/",
        api.PredictionListCreateView.as_view(),
        name="predictions",
    ),
    path("models/<str:name>/labels/", api.LabelCreateView.as_view(), name="labels"),
    path(
        "models/<str:name>/versions/<str:version>/reference/",
        api.ReferenceCreateView.as_view(),
        name="reference",
    ),
]
