"""``console.rows`` writes the bytes the overview's and the alerts page's template loops wrote
(the loops are kept here as the reference), for rows of every shape: no live version, alerts on
and off the live version, a global, a whole and scoped halts, incidents with and without a next
step, due and overdue, stays over their limit, alerts open, acknowledged and resolved, with and
without the right to handle them, and text that needs escaping or truncating."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.template import engines
from django.utils import timezone

from console.rows import alert_rows, overview_rows
from console.selectors import ModelRow, NextStep
from governance.models import Lifecycle
from incidents.models import Incident, StepRun
from monitoring.models import Alert
from registry.models import ModelVersion, RegisteredModel
from serving.models import Halt
from serving.predicate import parse_where

# templates/console/_overview_rows.html's loop before console.rows (commit 75a306b)
REFERENCE = """{% for row in rows %}
    <tr>
      <th scope="row"><a href="{{ row.url }}">{{ row.model.name }}</a></th>
      <td>{% if row.live %}<a href="{{ row.live_url }}">{{ row.live.version.version }}</a>
          <span class="stage stage-{{ row.live.stage }}">{{ row.live.get_stage_display }}</span>
          {% else %}<span class="muted">none serving</span>{% endif %}</td>
      <td><span class="health health-{{ row.health|slugify }}">{{ row.health }}</span>
          {% if row.open_alerts %}<span class="muted">({{ row.open_alerts }} unresolved alert{{ row.open_alerts|pluralize }})</span>{% endif %}
          {% if row.other_alerts %}<div class="muted">{{ row.other_alerts }} unresolved on versions no longer live</div>{% endif %}
          {% if row.halt %}<div class="muted">{% if row.halt.scope == "global" %}global halt{% else %}halted{% endif %}: {{ row.halt.reason|truncatechars:60 }}</div>{% endif %}
          {% for halt in row.scoped_halts %}<div class="muted">halted where <code>{{ halt.where_text }}</code>: {{ halt.reason|truncatechars:60 }}</div>{% endfor %}</td>
      <td>{% for item in row.incidents %}
          <div class="incident">
            <a href="{{ item.url }}">#{{ item.incident.pk }} {{ item.incident.title|truncatechars:70 }}</a>
            <span class="badge">{{ item.incident.severity }}</span> <span class="badge">{{ item.incident.status }}</span>
            {% if item.step %}<div>Next: step {{ item.step.order }}, {{ item.step.action|truncatechars:70 }}
              <span class="muted">({{ item.step.responsible }}{% if item.step.due_at %}, due {{ item.step.due_at|date:"Y-m-d H:i" }} UTC{% endif %})</span>
              {% if item.overdue %}<strong class="overdue">overdue</strong>{% endif %}</div>{% endif %}
          </div>
          {% empty %}<span class="muted">none</span>{% endfor %}</td>
      <td>{% for stay, deadline in row.over_limit %}
          <div><a href="{% url 'registry:version-detail' row.model.name stay.version.version %}">{{ stay.version.version }}</a>
            in {{ stay.get_stage_display }} since {{ stay.stage_entered_at|date:"Y-m-d" }}
            <strong class="overdue">over since {{ deadline|date:"Y-m-d H:i" }} UTC</strong></div>
          {% empty %}<span class="muted">none</span>{% endfor %}</td>
    </tr>
  {% endfor %}"""  # noqa: E501

LONG = "A reason with <b>markup</b> & 'quotes' that goes on " + "and on " * 12


def _stay(model, version: str, stage: str, entered: datetime) -> Lifecycle:
    return Lifecycle(
        version=ModelVersion(model=model, version=version), stage=stage, stage_entered_at=entered
    )


def _rows() -> list[ModelRow]:
    now = timezone.now()
    plain = RegisteredModel(pk=1, name="plain")
    odd = RegisteredModel(pk=2, name="odd&name's<model>")
    halted = RegisteredModel(pk=3, name="halted")
    incident = Incident(pk=41, title=LONG, severity="critical", status="mitigating", model=odd)
    quiet = Incident(pk=42, title="Short", severity="high", status="open", model=odd)
    late = StepRun(order=3, action=LONG, responsible="ML <Lead>", due_at=now - timedelta(hours=2))
    undated = StepRun(order=1, action="Look", responsible="Ethics Officer", due_at=None)
    scoped = Halt(scope="odd", where=parse_where("area in north,south"), reason=LONG)
    scoped2 = Halt(scope="odd", where=parse_where("density > 5000"), reason="dense")
    return [
        ModelRow(model=plain),
        ModelRow(
            model=odd,
            live=_stay(odd, "1.2.0", "production", now),
            worst_alert="critical",
            open_alerts=1,
            other_alerts=3,
            scoped_halts=[scoped, scoped2],
            incidents=[NextStep(incident, late), NextStep(quiet, undated), NextStep(quiet, None)],
            over_limit=[
                (_stay(odd, "1.3.0", "staging", now - timedelta(days=9)), now - timedelta(days=2)),
                (_stay(odd, "1.4.0", "validation", datetime(2026, 1, 2, 23, 59, tzinfo=UTC)), now),
            ],
        ),
        ModelRow(
            model=halted,
            live=_stay(halted, "2.0.0", "monitoring", now),
            open_alerts=7,
            halt=Halt(scope="global", reason=LONG),
        ),
        ModelRow(
            model=plain,
            live=_stay(plain, "0.1.0", "degraded", now),
            halt=Halt(scope="plain", reason="<script>"),
            incidents=[NextStep(quiet, StepRun(order=9, action="x", responsible="y", due_at=now))],
        ),
    ]


def test_the_rows_are_the_template_loops_bytes():
    rows = _rows()
    expected = engines["django"].from_string(REFERENCE).render({"rows": rows})
    assert str(overview_rows(rows)) == expected
    assert "&lt;script&gt;" in expected and "odd&amp;name&#x27;s&lt;model&gt;" in expected


def test_no_rows_is_nothing():
    assert str(overview_rows([])) == ""


# templates/console/alerts.html's loop before console.rows (commit 75a306b), the value and the
# threshold rounded to three significant digits instead of floatformat:"-4"
ALERTS_REFERENCE = """{% load console_rows %}{% for alert in alerts %}
  <tr id="alert-{{ alert.pk }}">
    <td>{{ alert.pk }}</td>
    <td><a href="{{ alert.version_url }}">{{ alert.model.name }} {{ alert.version.version }}</a></td>
    <td>{{ alert.kind }}{% if alert.feature %} <span class="muted">({{ alert.feature }})</span>{% endif %}<div class="muted">{{ alert.metric }}</div></td>
    <td><span class="health health-{{ alert.severity }}">{{ alert.severity }}</span></td>
    <td>{{ alert.value|rounded }} / {{ alert.threshold|rounded }}</td>
    <td>{{ alert.window_start|date:"Y-m-d" }} \u2013 {{ alert.window_end|date:"Y-m-d" }}</td>
    <td>{{ alert.get_status_display }}
      {% if alert.acknowledged_by %}<div class="muted">acknowledged by {{ alert.acknowledged_by }}</div>{% endif %}
      {% if alert.resolved_by %}<div class="muted">resolved by {{ alert.resolved_by }}: {{ alert.note }}</div>{% endif %}</td>
    <td>{% if alert.status != "resolved" and alert.model.name in may_handle %}
      <form method="post" action="{{ alert.acknowledge_url }}" class="inline">{% csrf_token %}
        <input type="hidden" name="next" value="{{ request.get_full_path }}">
        {% if alert.status != "acknowledged" %}<button type="submit">Acknowledge</button>{% endif %}
      </form>
      <form method="post" action="{{ alert.resolve_url }}" class="inline">{% csrf_token %}
        <input type="hidden" name="next" value="{{ request.get_full_path }}">
        <label class="visually-hidden" for="note-{{ alert.pk }}">Why alert {{ alert.pk }} is resolved</label>
        <input id="note-{{ alert.pk }}" name="note" required maxlength="2000" placeholder="why it is resolved">
        <button type="submit">Resolve</button>
      </form>
    {% endif %}</td>
  </tr>
  {% endfor %}"""  # noqa: E501


def _alert(pk: int, model, status: str, **fields) -> Alert:
    alert = Alert(
        pk=pk,
        model=model,
        version=ModelVersion(model=model, version="1.0.0"),
        kind=fields.pop("kind", "data_drift"),
        severity=fields.pop("severity", "medium"),
        metric=fields.pop("metric", "max_psi"),
        value=fields.pop("value", 0.312345678),
        threshold=fields.pop("threshold", 0.2),
        window_start=datetime(2026, 3, 1, 23, 30, tzinfo=UTC),
        window_end=datetime(2026, 3, 8, 0, 0, tzinfo=UTC),
        status=status,
        **fields,
    )
    alert.version_url = f"/registry/{model.name}/1.0.0/?a=1&b=2"
    alert.acknowledge_url = f"/console/alerts/{pk}/acknowledge/"
    alert.resolve_url = f"/console/alerts/{pk}/resolve/"
    return alert


class _Request:
    def get_full_path(self) -> str:
        return "/console/alerts/?status=all&model=odd<&>"


def test_the_alert_rows_are_the_template_loops_bytes():
    mine, theirs = RegisteredModel(pk=1, name="mine"), RegisteredModel(pk=2, name="o'dd&<x>")
    alerts = [
        _alert(1, mine, "open", feature="feature_07"),
        _alert(2, mine, "acknowledged", acknowledged_by="lee <lead>", value=1e-12),
        _alert(3, mine, "resolved", resolved_by="olu", note="fixed <it> & 'done'", value=12),
        _alert(4, theirs, "open", kind="fairness", severity="critical", value=-0.5),
        _alert(5, mine, "queued", value=float("nan"), threshold=1234567.891),
    ]
    may_handle = {"mine"}
    for token in ("tok3n-value", "NOTPROVIDED", None):
        context = {"alerts": alerts, "may_handle": may_handle, "request": _Request()}
        if token is not None:
            context["csrf_token"] = token
        expected = engines["django"].from_string(ALERTS_REFERENCE).render(context)
        got = alert_rows(alerts, may_handle, csrf_token=token, full_path=_Request().get_full_path())
        assert str(got) == expected
    assert "Acknowledge" in expected and "o&#x27;dd&amp;&lt;x&gt;" in expected
    assert "<td>1e-12 / 0.2</td>" in expected and "<td>0.312 / 0.2</td>" in expected
