"""Mounted under /api/v1/ (``path("api/v1/", include("serving.urls"))``)."""

from django.urls import path

from . import api

app_name = "serving"

urlpatterns = [
    path("predict/<str:name>/", api.PredictView.as_view(), name="predict"),
    path("halt/", api.HaltView.as_view(), name="halt"),
    path("halt/release/", api.HaltReleaseView.as_view(), name="halt-release"),
]
