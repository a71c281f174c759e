"""The gateway service's URLs: predict, /healthz and /readyz, nothing else.

No admin, no console, no governance API: a served model runs in this process (see
``config.gateway``). The paths are the platform's, so a client only changes the host it calls.
"""

from django.urls import include, path

from serving import api

from . import health

predict_patterns = (
    [path("predict/<str:name>/", api.PredictView.as_view(), name="predict")],
    "serving",  # the same namespace as on the web service: reverse("serving:predict") works
)

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("api/v1/", include(predict_patterns)),
]
