"""The project's URLs plus the gateway's, for running before ``config/urls.py`` includes it."""

from django.urls import include, path

from config.urls import urlpatterns as project_urlpatterns

_included = any(getattr(p, "namespace", None) == "serving" for p in project_urlpatterns)

urlpatterns = [
    *([] if _included else [path("api/v1/", include("serving.urls"))]),
    *project_urlpatterns,
]
