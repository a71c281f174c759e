from django.urls import path

from . import views

app_name = "api"

urlpatterns = [
    path("models/", views.ModelListCreateView.as_view(), name="model-list"),
    path("models/<str:name>/", views.ModelDetailView.as_view(), name="model-detail"),
    path(
        "models/<str:name>/versions/",
        views.VersionListCreateView.as_view(),
        name="version-list",
    ),
    path(
        "models/<str:name>/versions/<str:version>/",
        views.VersionDetailView.as_view(),
        name="version-detail",
    ),
]
