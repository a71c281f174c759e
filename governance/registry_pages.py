"""Server-rendered pages for governance staff: models, versions and model cards (the registry's
facts, shown under governance's access rule, so they live here and not in ``registry``).

The same rule as the API (``governance.selectors.readable_models``): a user sees the models a
role grant lets them read, globally or per model; ``is_staff`` alone shows nothing, and a model
without a grant is a 404 (its existence is not confirmed). Superusers read everything, as in
the admin (the rule itself lives in ``readable_models``).
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, render

from registry.models import ModelCard, ModelVersion

from .selectors import readable_models


@login_required
def model_list(request):
    models = readable_models(request.user).prefetch_related("versions").order_by("name")
    return render(request, "registry/model_list.html", {"models": models})


@login_required
def model_detail(request, name: str):
    model = get_object_or_404(readable_models(request.user), name=name)
    versions = model.versions.select_related("responsible_engineer").newest_first()
    return render(request, "registry/model_detail.html", {"model": model, "versions": versions})


@login_required
def version_detail(request, name: str, version: str):
    obj = get_object_or_404(
        ModelVersion.objects.select_related("model", "responsible_engineer"),
        model__in=readable_models(request.user),
        model__name=name,
        version=version,
    )
    return render(request, "registry/version_detail.html", {"version": obj})


@login_required
def model_card(request, name: str, version: str):
    card = get_object_or_404(
        ModelCard.objects.select_related("version__model", "version__responsible_engineer"),
        version__model__in=readable_models(request.user),
        version__model__name=name,
        version__version=version,
    )
    sections = [(title, getattr(card, field)) for field, title in ModelCard.SECTIONS]
    return render(
        request,
        "registry/model_card.html",
        {"card": card, "version": card.version, "sections": sections},
    )
