from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from console.documentation.api import DocumentationView

from . import health

admin.site.site_header = "Model governance"
admin.site.site_title = "Model governance"
admin.site.index_title = "Registry, lifecycle and audit"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="console:overview", permanent=False)),
    path("console/", include("console.urls")),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("registry/", include("governance.registry_urls")),
    path("api/v1/", include("governance.api.urls")),
    path("api/v1/", include("monitoring.urls")),
    path("api/v1/", include("monitoring.run_urls")),
    path("api/v1/", include("incidents.urls")),
    path("api/v1/", include("incidents.ethics_urls")),
    path("api/v1/", include("serving.urls")),
    path(
        "api/v1/models/<str:name>/versions/<str:version>/documentation/",
        DocumentationView.as_view(),
        name="version-documentation",
    ),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
]

# A 500 never shows the exception (its text may name server paths); it is logged instead.
handler404 = "platform_core.api.errors.not_found"
handler500 = "platform_core.api.errors.server_error"
