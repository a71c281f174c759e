"""Paths relative to ``api/v1/``: ``path("api/v1/", include("incidents.ethics_urls"))``."""

from django.urls import path

from . import ethics_api

app_name = "incidents-ethics"

urlpatterns = [
    path(
        "models/<str:name>/ethics-policy/",
        ethics_api.EthicsPolicyView.as_view(),
        name="ethics-policy",
    ),
]
