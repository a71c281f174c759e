"""``{% alert_rows %}``: the alerts page's rows (``console.rows``) with the page's CSRF token
and path, the values ``{% csrf_token %}`` and ``request.get_full_path`` gave each row."""

from __future__ import annotations

from django import template

from console.model_page import rounded
from console.rows import alert_rows as render_alert_rows

register = template.Library()
register.filter("rounded", rounded)  # three significant digits (console.model_page)


@register.simple_tag(takes_context=True)
def alert_rows(context, alerts, may_handle):
    return render_alert_rows(
        alerts,
        may_handle,
        csrf_token=context.get("csrf_token"),
        full_path=context["request"].get_full_path(),
    )
