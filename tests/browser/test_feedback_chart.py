"""The feedback-loop chart in a real browser: the ratio with its limit, the top-k shares on the
right axis and the alert marker, for a model whose monitoring policy names a cell field."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from governance.audit import Actor
from governance.policies import policy_publish
from monitoring import runs
from monitoring.models import MetricPoint, RunStatus
from monitoring.runs import metric_points
from tests.browser.model_page import open_model_page
from tests.factories import ModelVersionFactory, alert_of

pytestmark = pytest.mark.django_db(transaction=True)

WEEKS = 4


def test_the_feedback_chart_draws_the_ratio_its_limit_the_shares_and_the_alert(
    page, login_as, assert_accessible
):
    version = ModelVersionFactory(model__name="patrols", feature_list=["beat"])
    lead = Actor.system("tests")
    policy_publish(
        "monitoring",
        model=version.model,
        values={"feedback_cell_field": "beat"},
        reason="the beat is the cell",
        actor=lead,
    )
    now = timezone.now().replace(microsecond=0)
    for week in range(WEEKS):
        run = runs.run_create(
            model=version.model,
            version=version,
            check="feedback_loop",
            window_end=now - timedelta(days=7 * (WEEKS - 1 - week), hours=1),
            trigger="schedule",
            actor=lead,
        )
        run.status = RunStatus.SUCCEEDED
        run.save(update_fields=["status"])
        ratio = 1.0 + 0.5 * week
        points = [
            ("ratio", "", "", ratio),
            ("topk_label_share", "", "", 0.2 + 0.2 * week),
            ("expected_topk_share", "", "", 0.2),
            ("p_value", "", "", 0.5),
        ]
        MetricPoint.objects.bulk_create(metric_points(run, points))
    alert_of(run, "high")
    open_model_page(page, login_as, "patrols")
    drawn = page.evaluate(
        """() => { const chart = Chart.getChart(
                     document.querySelector('canvas[data-chart=feedback_loop]'));
                   return { points: chart.data.datasets.map(d => d.data.length),
                            axes: chart.data.datasets.map(d => d.yAxisID),
                            alerts: chart.data.datasets.filter(d => d.type === 'scatter').length,
                            thresholds: chart.options.plugins.consoleGuides.thresholds.length };
        }"""
    )
    assert drawn["points"][:3] == [WEEKS, WEEKS, WEEKS]
    assert drawn["axes"][:3] == ["y", "y2", "y2"]
    assert drawn["alerts"] == 1 and drawn["thresholds"] == 1
    card = page.locator("section.chart-card").filter(has_text="Feedback loop")
    card.locator("summary").click()
    assert "ratio limit 1.5" in card.inner_text()
    assert page.js_errors == []
    assert_accessible(page)
