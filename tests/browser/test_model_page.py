"""The model page in a real browser: every chart draws the seeded points, alerts and annotations,
the text alternatives open, nothing raises, and axe-core finds nothing serious."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.browser.model_page import open_model_page
from tests.console.model_data import seed

pytestmark = pytest.mark.django_db(transaction=True)

DAYS, FEATURES = 12, 4
CHARTS = ("psi", "ks", "performance", "fairness_gap", "fairness_ratio", "fairness_groups", "ece")


def test_every_chart_draws_its_points_and_the_text_alternatives_open(
    page, login_as, assert_accessible, shot
):
    now = timezone.now().replace(microsecond=0)
    seeded = seed(days=DAYS, features=FEATURES, now=now - timedelta(hours=1))
    open_model_page(page, login_as, "hotspot")

    drawn = page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('canvas[data-chart]')].map(
            c => { const chart = Chart.getChart(c);
                   return [c.dataset.chart, {
                     first: chart.getDatasetMeta(0).data.length,
                     datasets: chart.data.datasets.length,
                     alerts: chart.data.datasets.filter(d => d.type === 'scatter').length,
                     events: chart.options.plugins.consoleGuides.events.length,
                     thresholds: chart.options.plugins.consoleGuides.thresholds.length }]; }))"""
    )
    # dataset 0 is each chart's first series: one point per seeded day (labels: per day too)
    assert {k: v["first"] for k, v in drawn.items()} == dict.fromkeys([*CHARTS, "labels"], DAYS)
    assert drawn["psi"]["datasets"] == FEATURES + 1  # one line per feature and the alert marker
    assert drawn["psi"]["alerts"] == drawn["fairness_gap"]["alerts"] == 1
    assert drawn["ece"]["alerts"] == 0
    assert {v["events"] for v in drawn.values()} == {5}  # on every time axis
    assert drawn["fairness_ratio"]["thresholds"] == 2
    groups = page.evaluate(
        "() => Chart.getChart(document.querySelector('canvas[data-chart=fairness_groups]'))"
        ".data.datasets.map(d => d.data.at(-1).n)"
    )
    assert groups == [600, 90 + DAYS - 1, 600, 90 + DAYS - 1]  # TPR then FPR, each with its n

    table = page.locator("section.chart-card").filter(has_text="Calibration").locator("table")
    assert not table.is_visible()
    page.locator("section.chart-card").filter(has_text="Calibration").locator("summary").click()
    assert table.is_visible() and "ECE limit 0.05" in table.locator("xpath=..").inner_text()

    svg = page.locator("svg.lifecycle")
    assert svg.get_attribute("role") == "img"
    assert "1.0.0 live" in svg.locator(".lc-live").text_content()
    assert str(seeded.versions["1.0.0"].version) in page.locator("#live-h + dl").inner_text()

    assert page.js_errors == []
    assert_accessible(page)
    shot(page, "model")

    # the period form: three days by date redraws every chart with three days of points
    first, last = seeded.days[2].date(), seeded.days[4].date()
    page.get_by_label("Period", exact=True).select_option("custom")
    page.get_by_label("From", exact=True).fill(first.isoformat())
    page.get_by_label("To", exact=True).fill(last.isoformat())
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(f"**from={first}**")
    page.wait_for_selector("[data-series-loaded=yes]")
    points = page.evaluate(
        "() => Chart.getChart(document.querySelector('canvas[data-chart=psi]'))"
        ".getDatasetMeta(0).data.length"
    )
    assert points == 3 and page.js_errors == []
