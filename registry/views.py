"""Server-rendered pages for governance staff: models, versions and model cards."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, render

from .models import ModelCard, ModelVersion, RegisteredModel


@login_required
def model_list(request):
    models = RegisteredModel.objects.prefetch_related("versions").order_by("name")
    return render(request, "registry/model_list.html", {"models": models})


@login_required
def model_detail(request, name: str):
    model = get_object_or_404(RegisteredModel, name=name)
    versions = model.versions.select_related("responsible_engineer").newest_first()
    return render(request, "registry/model_detail.html", {"model": model, "versions": versions})


@login_required
def version_detail(request, name: str, version: str):
    obj = get_object_or_404(
        ModelVersion.objects.select_related("model", "responsible_engineer"),
        model__name=name,
        version=version,
    )
    return render(request, "registry/version_detail.html", {"version": obj})


@login_required
def model_card(request, name: str, version: str):
    card = get_object_or_404(
        ModelCard.objects.select_related("version__model", "version__responsible_engineer"),
        version__model__name=name,
        version__version=version,
    )
    sections = [(title, getattr(card, field)) for field, title in ModelCard.SECTIONS]
    return render(
        request,
        "registry/model_card.html",
        {"card": card, "version": card.version, "sections": sections},
    )
