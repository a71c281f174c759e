from django.urls import path

from . import registry_pages as views

app_name = "registry"  # the pages of registry facts: /registry/..., {% url 'registry:...' %}

urlpatterns = [
    path("", views.model_list, name="model-list"),
    path("<str:name>/", views.model_detail, name="model-detail"),
    path("<str:name>/<str:version>/", views.version_detail, name="version-detail"),
    path("<str:name>/<str:version>/card/", views.model_card, name="model-card"),
]
