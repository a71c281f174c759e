from django.urls import path

from . import incident_views, model_views, page_views, views
from .documentation import views as documentation_views

app_name = "console"

VERSION = "models/<str:name>/versions/<str:version>/"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("overview/rows/", views.overview_rows, name="overview-rows"),
    path("alerts/", views.alerts, name="alerts"),
    path(
        "alerts/<int:pk>/<str:verb>/",
        views.alert_act,
        name="alert-act",
    ),
    path("halts/", views.halts, name="halts"),
    path("halts/engage/", views.halt_engage, name="halt-engage"),
    path("halts/release/", views.halt_release, name="halt-release"),
    path("models/<str:name>/", model_views.model, name="model"),
    path("models/<str:name>/series.json", model_views.model_series, name="model-series"),
    path("incidents/", incident_views.incident_list, name="incidents"),
    path("incidents/<int:pk>/", incident_views.incident_detail, name="incident"),
    path(
        "incidents/<int:pk>/steps/<int:order>/complete/",
        incident_views.incident_step_complete,
        name="incident-step-complete",
    ),
    path("work/", incident_views.work, name="work"),
    path(VERSION, page_views.version, name="version"),
    path(
        VERSION + "documentation/",
        documentation_views.documentation,
        name="version-documentation",
    ),
    path(
        VERSION + "documentation/download/",
        documentation_views.documentation_download,
        name="version-documentation-download",
    ),
    path("audit/", page_views.audit, name="audit"),
    path("audit/export.csv", page_views.audit_export, name="audit-export"),
]
