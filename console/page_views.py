"""The version page and the audit page with its CSV export (issue 12): thin views over
``console.version_selectors`` and ``console.audit_selectors``."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone

from governance import csv_safe

from . import audit_selectors, version_selectors


@login_required
def version(request, name: str, version: str):
    """A version's facts, gates, sign-offs and history; ``?with=`` compares it with another."""
    context = version_selectors.version_page(
        request.user, name, version, request.GET.get("with", "").strip()
    )
    return render(request, "console/version.html", context)


@login_required
def audit(request):
    """The audit log, newest first, filtered and paginated, with the chain's last verification."""
    context = audit_selectors.audit_page(request)
    status = 400 if context["errors"] else 200
    return render(request, "console/audit.html", context, status=status)


class _Echo:
    """A file-like that hands each written line back, for streaming a CSV."""

    def write(self, value: str) -> str:
        return value


@login_required
def audit_export(request):
    """The same filtered events as CSV, streamed; formula-like cells escaped (csv_safe)."""
    qs, _, errors = audit_selectors.events(request)
    writer = csv_safe.writer(_Echo())

    def lines():
        yield writer.writerow(audit_selectors.CSV_HEADER)
        if errors:
            return
        for row in audit_selectors.csv_rows(qs):
            yield writer.writerow(row)

    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.csv"'
    return response
