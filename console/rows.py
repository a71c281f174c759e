"""The console's longest tables, rendered in Python: the overview's model rows and the alerts.

Django's template engine spends ~0.15 ms of CPU on each overview row (about thirty variable
lookups, filters and tags): 100 rows were more than half of the overview's time, 50 alerts
two thirds of the alerts page's (bench/console.py). These functions write the same bytes the
template loops wrote, escaped the way autoescaping escapes (``conditional_escape``), with the
same filters (``truncatechars``, ``slugify``, ``date`` in the current time zone);
tests/console/test_rows.py renders the old loops beside them on rows of every shape and
compares. An alert's value and threshold read with three significant digits (``rounded``, as on
the model page): ``floatformat:"-4"`` showed a KS p-value of 1e-20 as 0.0000.
"""

from __future__ import annotations

from django.template.defaultfilters import date as date_filter
from django.template.defaultfilters import slugify, truncatechars
from django.utils.html import conditional_escape, format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.timezone import template_localtime

from .model_page import rounded
from .paths import path_template

NONE = '<span class="muted">none</span>'  # an empty list's cell
EN_DASH = "\u2013"


def _e(value: object) -> str:
    return conditional_escape(value)


def _date(value, fmt: str) -> str:
    return _e(date_filter(template_localtime(value), fmt))


def _live_cell(row) -> str:
    live = row.live
    if not live:
        return '<span class="muted">none serving</span>'
    return (
        f'<a href="{_e(row.live_url)}">{_e(live.version.version)}</a>\n'
        f'          <span class="stage stage-{_e(live.stage)}">{_e(live.get_stage_display())}'
        "</span>\n          "
    )


def _health_cell(row) -> str:
    health = row.health
    out = [f'<span class="health health-{_e(slugify(health))}">{_e(health)}</span>\n          ']
    if row.open_alerts:
        plural = "" if row.open_alerts == 1 else "s"
        out.append(f'<span class="muted">({_e(row.open_alerts)} unresolved alert{plural})</span>')
    out.append("\n          ")
    if row.other_alerts:
        out.append(
            f'<div class="muted">{_e(row.other_alerts)} unresolved on versions no longer live</div>'
        )
    out.append("\n          ")
    if row.halt:
        what = "global halt" if row.halt.scope == "global" else "halted"
        out.append(f'<div class="muted">{what}: {_e(truncatechars(row.halt.reason, 60))}</div>')
    out.append("\n          ")
    for halt in row.scoped_halts:
        out.append(
            f'<div class="muted">halted where <code>{_e(halt.where_text)}</code>: '
            f"{_e(truncatechars(halt.reason, 60))}</div>"
        )
    return "".join(out)


def _incident(item) -> str:
    incident, step = item.incident, item.step
    out = [
        '\n          <div class="incident">\n'
        f'            <a href="{_e(item.url)}">#{_e(incident.pk)} '
        f"{_e(truncatechars(incident.title, 70))}</a>\n"
        f'            <span class="badge">{_e(incident.severity)}</span> '
        f'<span class="badge">{_e(incident.status)}</span>\n            '
    ]
    if step:
        due = f", due {_date(step.due_at, 'Y-m-d H:i')} UTC" if step.due_at else ""
        overdue = '<strong class="overdue">overdue</strong>' if item.overdue else ""
        out.append(
            f"<div>Next: step {_e(step.order)}, {_e(truncatechars(step.action, 70))}\n"
            f'              <span class="muted">({_e(step.responsible)}{due})</span>\n'
            f"              {overdue}</div>"
        )
    out.append("\n          </div>\n          ")
    return "".join(out)


def _over_limit_cell(row) -> str:
    if not row.over_limit:
        return NONE
    version_url = path_template("registry:version-detail", 2)
    out = []
    for stay, deadline in row.over_limit:
        version = stay.version.version
        out.append(
            f'\n          <div><a href="{_e(version_url(row.model.name, version))}">'
            f"{_e(version)}</a>\n"
            f"            in {_e(stay.get_stage_display())} since "
            f"{_date(stay.stage_entered_at, 'Y-m-d')}\n"
            f'            <strong class="overdue">over since {_date(deadline, "Y-m-d H:i")} UTC'
            "</strong></div>\n          "
        )
    return "".join(out)


def overview_row(row) -> str:
    """One ``ModelRow`` (console.selectors) as the overview's ``<tr>``, with the whitespace
    around it that the template loop had."""
    incidents = "".join(_incident(item) for item in row.incidents)
    return (
        "\n    <tr>\n"
        f'      <th scope="row"><a href="{_e(row.url)}">{_e(row.model.name)}</a></th>\n'
        f"      <td>{_live_cell(row)}</td>\n"
        f"      <td>{_health_cell(row)}</td>\n"
        f"      <td>{incidents or NONE}</td>\n"
        f"      <td>{_over_limit_cell(row)}</td>\n"
        "    </tr>\n  "
    )


def overview_rows(rows) -> SafeString:
    # every value above went through conditional_escape, as autoescaping does
    return mark_safe("".join(overview_row(row) for row in rows))


def _csrf_input(token) -> str:
    """``{% csrf_token %}`` with the page's token."""
    if not token:
        return ""
    if token == "NOTPROVIDED":
        return ""
    return format_html('<input type="hidden" name="csrfmiddlewaretoken" value="{}">', token)


def _alert_forms(alert, csrf: str, next_path: str) -> str:
    acknowledge = (
        '<button type="submit">Acknowledge</button>' if alert.status != "acknowledged" else ""
    )
    pk = _e(alert.pk)
    return (
        "\n"
        f'      <form method="post" action="{_e(alert.acknowledge_url)}" class="inline">{csrf}\n'
        f'        <input type="hidden" name="next" value="{next_path}">\n'
        f"        {acknowledge}\n"
        "      </form>\n"
        f'      <form method="post" action="{_e(alert.resolve_url)}" class="inline">{csrf}\n'
        f'        <input type="hidden" name="next" value="{next_path}">\n'
        f'        <label class="visually-hidden" for="note-{pk}">'
        f"Why alert {pk} is resolved</label>\n"
        f'        <input id="note-{pk}" name="note" required maxlength="2000" '
        'placeholder="why it is resolved">\n'
        '        <button type="submit">Resolve</button>\n'
        "      </form>\n    "
    )


def alert_row(alert, may_handle, csrf: str, next_path: str) -> str:
    """One alert (``selectors.alert_page``'s rows) as the alerts page's ``<tr>``."""
    pk = _e(alert.pk)
    feature = f' <span class="muted">({_e(alert.feature)})</span>' if alert.feature else ""
    acknowledged = (
        f'<div class="muted">acknowledged by {_e(alert.acknowledged_by)}</div>'
        if alert.acknowledged_by
        else ""
    )
    resolved = (
        f'<div class="muted">resolved by {_e(alert.resolved_by)}: {_e(alert.note)}</div>'
        if alert.resolved_by
        else ""
    )
    handles = alert.status != "resolved" and alert.model.name in may_handle
    return (
        f'\n  <tr id="alert-{pk}">\n'
        f"    <td>{pk}</td>\n"
        f'    <td><a href="{_e(alert.version_url)}">{_e(alert.model.name)} '
        f"{_e(alert.version.version)}</a></td>\n"
        f'    <td>{_e(alert.kind)}{feature}<div class="muted">{_e(alert.metric)}</div></td>\n'
        f'    <td><span class="health health-{_e(alert.severity)}">{_e(alert.severity)}</span>'
        "</td>\n"
        f"    <td>{_e(rounded(alert.value))} / {_e(rounded(alert.threshold))}"
        "</td>\n"
        f"    <td>{_date(alert.window_start, 'Y-m-d')} {EN_DASH} "
        f"{_date(alert.window_end, 'Y-m-d')}</td>\n"
        f"    <td>{_e(alert.get_status_display())}\n"
        f"      {acknowledged}\n"
        f"      {resolved}</td>\n"
        f"    <td>{_alert_forms(alert, csrf, next_path) if handles else ''}</td>\n"
        "  </tr>\n  "
    )


def alert_rows(alerts, may_handle, *, csrf_token, full_path: str) -> SafeString:
    csrf, next_path = _csrf_input(csrf_token), _e(full_path)
    # every value went through conditional_escape, as autoescaping does
    return mark_safe("".join(alert_row(a, may_handle, csrf, next_path) for a in alerts))
