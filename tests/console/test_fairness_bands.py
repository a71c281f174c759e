"""The fairness charts' interval bands: the bounds a fairness run keeps ride on each point as
``lo``/``hi``; runs that kept none draw a line without a band."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse

from monitoring.models import Check, MetricPoint
from tests.console.model_data import NOW, seed

pytestmark = pytest.mark.django_db


def add_bounds(model, *, skip_first: bool = True) -> None:
    """Interval bounds beside the seeded fairness points (not the first day's: an older run)."""
    rows = MetricPoint.objects.filter(
        model=model, kind=Check.FAIRNESS, metric__in=("tpr", "equalized_odds_difference")
    ).order_by("window_end", "id")
    first = rows.first().window_end
    bounds = []
    for p in rows:
        if skip_first and p.window_end == first:
            continue
        for side, shift in (("lower", -0.05), ("upper", 0.05)):
            bounds.append(
                MetricPoint(
                    run_id=p.run_id,
                    model_id=p.model_id,
                    version_id=p.version_id,
                    kind=p.kind,
                    metric=f"{p.metric}_{side}",
                    feature=p.feature,
                    group=p.group,
                    value=round(p.value + shift, 4),
                    window_end=p.window_end,
                )
            )
    MetricPoint.objects.bulk_create(bounds)


def test_each_fairness_point_carries_its_interval_and_the_chart_its_level(client, lead):
    seeded = seed()
    add_bounds(seeded.model)
    with time_machine.travel(NOW + timedelta(hours=1), tick=False):
        response = client.get(reverse("console:model-series", args=["hotspot"]))
    charts = {c["id"]: c for c in response.json()["charts"]}

    gap = charts["fairness_gap"]
    assert gap["confidence_level"] == 0.95
    first, second = gap["series"][0]["points"][:2]
    assert "lo" not in first and "hi" not in first  # a run that kept no interval: no band
    assert second["lo"] == pytest.approx(second["y"] - 0.05)
    assert second["hi"] == pytest.approx(second["y"] + 0.05)
    tpr_b = next(s for s in charts["fairness_groups"]["series"] if s["label"] == "TPR race=B")
    last = tpr_b["points"][-1]
    assert (last["lo"], last["hi"]) == pytest.approx((last["y"] - 0.05, last["y"] + 0.05))
    assert last["n"] is not None
    fpr_b = next(s for s in charts["fairness_groups"]["series"] if s["label"] == "FPR race=B")
    assert all("lo" not in p for p in fpr_b["points"])  # no bounds stored for FPR here


def test_the_text_alternative_gives_the_latest_interval(client, lead):
    add_bounds(seed().model)
    with time_machine.travel(NOW + timedelta(hours=1), tick=False):
        page = client.get(reverse("console:model", args=["hotspot"])).content.decode()
    groups = page[page.index('data-chart="fairness_groups"') :]
    assert "95 % interval" in groups
