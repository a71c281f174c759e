"""The fairness charts' interval bands in a real browser: a shaded band per series that has one,
left out of the legend and the tooltip, dataset 0 still the first series, nothing raises."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.browser.model_page import open_model_page
from tests.console.model_data import seed
from tests.console.test_fairness_bands import add_bounds

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

DAYS = 8


def test_intervals_draw_as_bands_outside_the_legend(page, login_as, assert_accessible, shot):
    now = timezone.now().replace(microsecond=0)
    seeded = seed(days=DAYS, features=2, now=now - timedelta(hours=1))
    add_bounds(seeded.model)
    open_model_page(page, login_as, "hotspot")
    drawn = page.evaluate(
        """() => Object.fromEntries(['fairness_gap', 'fairness_groups'].map(id => {
             const chart = Chart.getChart(document.querySelector(`canvas[data-chart=${id}]`));
             const sets = chart.data.datasets;
             return [id, {
               first: sets[0].label,
               bands: sets.filter(d => d.band).map(d => [d.label, d.data.length,
                                                         JSON.stringify(d.fill)]),
               legend: chart.legend.legendItems.map(i => i.text) }]; }))"""
    )
    gap = drawn["fairness_gap"]
    assert gap["first"] == "race"
    # upper edge, then the lower edge filled up to it (the dataset just before)
    assert gap["bands"] == [
        ["race (interval, upper)", DAYS, "false"],
        ["race (interval)", DAYS, '{"target":1}'],
    ]
    assert not any("interval" in text for text in gap["legend"])
    groups = drawn["fairness_groups"]
    assert [b[0] for b in groups["bands"]] == [
        "TPR race=A (interval, upper)",
        "TPR race=A (interval)",
        "TPR race=B (interval, upper)",
        "TPR race=B (interval)",
    ]
    assert page.js_errors == []
    assert_accessible(page)
    shot(page, "fairness-bands")
