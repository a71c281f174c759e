"""The console's pages: thin views over ``console.selectors``; actions call the apps' services."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.utils import timezone

from . import selectors


@login_required
def overview(request):
    """The landing page: what is live, what is halted, what is on fire, what is overdue."""
    context = {"overview": selectors.overview(request.user), "now": timezone.now()}
    return render(request, "console/overview.html", context)


@login_required
def overview_rows(request):
    """The overview's table alone, which the page fetches every 30 s to stay current."""
    context = {"overview": selectors.overview(request.user), "now": timezone.now()}
    return render(request, "console/_overview_rows.html", context)
