"""The model page: the lifecycle diagram, the live version's facts, and the JSON series behind
the charts (thresholds, alert markers, lifecycle and halt annotations), per-model grants and a
query count that does not grow with days, features or versions."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.urls import reverse

from governance.models import RoleGrant, Stage
from monitoring.models import Check, MonitorRun
from registry.models import ModelCard
from tests.console.model_data import NOW, seed
from tests.factories import RegisteredModelFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def frozen():
    with time_machine.travel(NOW + timedelta(hours=1), tick=False):
        yield


def _series(client, name="hotspot", **params):
    response = client.get(reverse("console:model-series", args=[name]), params)
    assert response.status_code == 200, response.content
    return response.json()


def _chart(data, chart_id):
    return next(c for c in data["charts"] if c["id"] == chart_id)


def test_the_diagram_shows_every_stage_with_its_versions_and_highlights_the_live_one(
    client, lead, frozen
):
    seed()
    page = client.get(reverse("console:model", args=["hotspot"])).content.decode()

    svg = page[page.index("<svg") : page.index("</svg>")]
    for stage in Stage:
        assert f'data-stage="{stage.value}"' in svg
    assert svg.count('class="lc-box lc-live"') == 1
    live = re.search(r'<g class="lc-box lc-live" data-stage="(\w+)">(.*?)</g>', svg, re.S)
    assert live.group(1) == "monitoring"
    assert "1.0.0 live" in live.group(2)
    assert re.search(r'data-stage="staging">.*?1\.1\.0', svg, re.S)
    assert re.search(r'data-stage="retired">.*?1\.0\.1 \(cold\)', svg, re.S)
    assert 'role="img" aria-labelledby="lc-title lc-desc"' in svg
    assert "Version 1.0.0 is live, in stage Monitoring." in svg


def test_the_live_versions_facts_and_model_card(client, lead, frozen):
    seeded = seed()
    ModelCard.objects.filter(version=seeded.versions["1.0.0"]).update(
        intended_use="Rank grid cells for weekly patrol review", owners=["erin", "lee"]
    )
    page = client.get(reverse("console:model", args=["hotspot"])).content.decode()
    facts = page[page.index('id="live-h"') : page.index('id="charts-h"')]

    assert "1.0.0" in facts and "Monitoring since 2026-11-28 12:00 UTC" in facts
    assert "Live since</dt><dd>2026-11-20 12:00 UTC" in facts
    assert seeded.versions["1.0.0"].responsible_engineer.username in facts
    assert "card owners: erin, lee" in facts
    assert "<dt>Features</dt><dd>3</dd>" in facts
    assert "decision 0.457" in facts  # thresholds rounded to three significant digits
    assert "2025-01-01 to 2025-12-31" in facts
    assert "Rank grid cells for weekly patrol review" in facts
    assert reverse("registry:model-card", args=["hotspot", "1.0.0"]) in facts


def test_series_carry_each_charts_points_and_the_policies_thresholds(client, lead, frozen):
    seeded = seed(days=10, features=3)
    data = _series(client)

    assert data["model"] == "hotspot" and data["to_ms"] - data["from_ms"] == 90 * 86_400_000
    psi = _chart(data, "psi")
    assert [s["label"] for s in psi["series"]] == ["f1", "f2", "f3"]
    assert all(len(s["points"]) == 10 for s in psi["series"])
    assert psi["thresholds"][0]["value"] == 0.2
    first = psi["series"][0]["points"][0]
    assert first == {
        "t": int(seeded.days[0].timestamp() * 1000),
        "y": 0.01,
        "version": "1.0.0",
    }
    assert psi["series"][0]["points"][4]["version"] == "1.0.1"

    ks = _chart(data, "ks")
    assert {s["label"]: s["axis"] for s in ks["series"]} == {"KS statistic": "y", "p-value": "y2"}
    assert ks["thresholds"] == [
        {"value": 0.01, "axis": "y2", "label": "p-value limit 0.01 (below: drift)", "kind": "min"}
    ]

    performance = _chart(data, "performance")
    current, baseline, band = performance["series"]
    assert [s["role"] for s in (current, baseline, band)] == ["value", "baseline", "limit"]
    assert baseline["points"][0]["y"] == 0.8 and band["points"][0]["y"] == pytest.approx(0.76)
    assert current["points"][-1]["y"] == pytest.approx(0.754)

    gap, ratio = _chart(data, "fairness_gap"), _chart(data, "fairness_ratio")
    assert gap["thresholds"][0]["value"] == 0.1 and gap["series"][0]["label"] == "race"
    assert [t["value"] for t in ratio["thresholds"]] == [0.8, 0.8]
    assert {s["label"] for s in ratio["series"]} == {"FPR ratio (race)", "FNR ratio (race)"}
    groups = _chart(data, "fairness_groups")
    tpr_b = next(s for s in groups["series"] if s["label"] == "TPR race=B")
    assert [p["n"] for p in tpr_b["points"]] == list(range(90, 100))  # the group's size each day
    assert groups["min_group_size"] == 30

    ece = _chart(data, "ece")
    assert ece["thresholds"][0]["value"] == 0.05 and len(ece["series"][0]["points"]) == 10
    labels = _chart(data, "labels")
    arrived, logged = labels["series"]
    assert arrived["label"] == "labels arrived" and {p["y"] for p in arrived["points"]} == {300}
    assert {p["y"] for p in logged["points"]} == {1200}  # two batches a day, summed


def test_windows_estimated_before_their_labels_are_a_dashed_series(client, lead, frozen):
    seed(days=10, features=3)
    last = MonitorRun.objects.filter(kind=Check.CONCEPT_DRIFT).order_by("window_end").last()
    last.metrics = {"metric": "auc", "baseline": 0.8, "estimated": True, "estimated_value": 0.71}
    last.save(update_fields=["metrics"])
    series = _chart(_series(client), "performance")["series"]
    current, estimated = series[0], series[-1]
    assert estimated["label"] == "AUC estimated before labels" and estimated["dash"] is True
    assert [p["y"] for p in estimated["points"]] == [0.71]
    assert current["points"][-1]["y"] is None  # no realised value until the labels arrive


def test_alerts_are_markers_on_their_charts(client, lead, frozen):
    seeded = seed()
    data = _series(client)

    (psi_alert,) = _chart(data, "psi")["alerts"]
    assert psi_alert["y"] == 0.25 and psi_alert["severity"] == "medium"
    assert psi_alert["version"] == "1.0.1"
    assert psi_alert["t"] == int(seeded.days[5].timestamp() * 1000)
    assert "psi of f3 0.25 (limit 0.2)" in psi_alert["label"]
    (fairness,) = _chart(data, "fairness_gap")["alerts"]
    assert fairness["severity"] == "critical"
    (performance,) = _chart(data, "performance")["alerts"]
    assert performance["y"] == 0.752  # drawn at the metric's value, not at the relative drop
    assert _chart(data, "ece")["alerts"] == []


def test_promotions_rollbacks_and_halts_are_annotations_naming_a_version(client, lead, frozen):
    seeded = seed()
    notes = _series(client)["annotations"]

    def at(moment):
        return int(moment.timestamp() * 1000)

    assert [(n["kind"], n["label"]) for n in notes] == [
        ("promotion", "1.0.0 promoted"),
        ("promotion", "1.0.1 promoted"),
        ("rollback", "1.0.1 rolled back to 1.0.0"),
        ("halt", "halt (1.0.0)"),
        ("halt_released", "halt released (1.0.0)"),
    ]
    assert [n["t"] for n in notes[1:]] == [
        at(seeded.promoted_1_0_1),
        at(seeded.rolled_back),
        at(seeded.halted),
        at(seeded.released),
    ]
    page = client.get(reverse("console:model", args=["hotspot"])).content.decode()
    assert "1.0.1 rolled back to 1.0.0" in page  # the events are listed in words too


def test_a_global_halt_is_an_annotation_too(client, lead, frozen):
    from serving.models import Halt

    seed()
    Halt.objects.create(
        scope="global",
        reason="drill",
        engaged_by_label="lee",
        engaged_at=NOW - timedelta(hours=2),
    )
    notes = _series(client)["annotations"]
    assert notes[-1]["label"] == "global halt (1.0.0)" and notes[-1]["kind"] == "halt"


def test_the_period_filter_bounds_every_series(client, lead, frozen):
    seeded = seed(days=10)
    start, end = seeded.days[2].date(), seeded.days[4].date()

    data = _series(client, **{"from": start.isoformat(), "to": end.isoformat()})

    assert (
        data["from"] == f"{start}T00:00:00Z"
        and data["to"] == f"{end + timedelta(days=1)}T00:00:00Z"
    )
    assert [len(s["points"]) for s in _chart(data, "psi")["series"]] == [3, 3, 3]
    assert len(_chart(data, "labels")["series"][0]["points"]) == 3
    assert [n["label"] for n in data["annotations"]] == ["1.0.1 promoted"]
    assert len(_chart(data, "psi")["alerts"]) == 0
    week = _series(client, days="7")
    assert len(_chart(week, "ece")["series"][0]["points"]) == 7
    around = _series(
        client,
        **{"from": "2026-11-26T00:00:00Z", "to": "2026-11-26T12:00:00+00:00"},
    )
    assert [p["t"] for p in _chart(around, "ece")["series"][0]["points"]] == [
        int(datetime(2026, 11, 26, 12, tzinfo=UTC).timestamp() * 1000)
    ]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"days": "0"}, "days"),
        ({"days": "x"}, "days"),
        ({"from": "yesterday"}, "from"),
        ({"from": "2026-11-10", "to": "2026-11-01"}, "from"),
        ({"from": "2020-01-01", "to": "2026-11-01"}, "to"),
        ({"to": "99999-01-01"}, "to"),
        ({"days": "custom"}, "from"),
    ],
)
def test_a_bad_period_is_a_400_naming_the_parameter(client, lead, params, field):
    seed()
    response = client.get(reverse("console:model-series", args=["hotspot"]), params)
    assert response.status_code == 400 and field in response.json()["errors"]
    page = client.get(reverse("console:model", args=["hotspot"]), params)
    assert page.status_code == 200 and "message-error" in page.content.decode()


def test_the_page_renders_a_text_alternative_per_chart_and_the_period_form(client, lead, frozen):
    seed()
    page = client.get(reverse("console:model", args=["hotspot"]), {"days": "30"}).content.decode()

    assert page.count("<details>") == 9  # the versions table and one per chart
    assert page.count('<canvas data-chart="') == 8
    ece = page[page.index('data-chart="ece"') :]
    ece = ece[: ece.index("</details>")]
    assert '<th scope="row">ECE</th><td>0.038</td>' in ece
    assert "ECE limit 0.05" in ece
    groups = page[page.index('data-chart="fairness_groups"') :]
    assert "group size 99" in groups[: groups.index("</details>")]
    assert '<option value="30" selected>' in page
    url = reverse("console:model-series", args=["hotspot"])
    assert f'data-series-url="{url}?from=2026-10-31T13:00:00Z&amp;to=2026-11-30T13:00:00Z"' in page
    assert "vendor/chartjs/4.5.1/chart.umd.min.js" in page and "<script>" not in page


def test_the_overview_and_the_registry_link_to_the_model_page(client, lead):
    seed()
    url = reverse("console:model", args=["hotspot"])
    assert url in client.get(reverse("console:overview")).content.decode()
    assert url in client.get(reverse("registry:model-detail", args=["hotspot"])).content.decode()


def test_per_model_grants_a_user_sees_exactly_their_models(client):
    seed("mine")
    RegisteredModelFactory(name="theirs")
    user = UserFactory(username="scoped")
    RoleGrant.objects.create(
        user=user,
        role="ml_engineer",
        model_id=RegisteredModelFactory._meta.model.objects.get(name="mine").pk,
    )
    client.force_login(user)

    assert client.get(reverse("console:model", args=["mine"])).status_code == 200
    assert client.get(reverse("console:model-series", args=["mine"])).status_code == 200
    for route in ("console:model", "console:model-series"):
        assert client.get(reverse(route, args=["theirs"])).status_code == 404
        assert client.get(reverse(route, args=["nonexistent"])).status_code == 404


def test_anonymous_is_sent_to_log_in(client):
    seed()
    response = client.get(reverse("console:model-series", args=["hotspot"]))
    assert response.status_code == 302 and "login" in response["Location"]


def test_the_query_count_does_not_grow_with_days_features_or_versions(
    client, lead, frozen, django_assert_max_num_queries
):
    seed("small", days=3, features=2)
    big = seed("big", days=60, features=12)
    from tests.factories import ModelVersionFactory

    for i in range(10):
        ModelVersionFactory(model=big.model, version=f"0.{i}.0")

    def counts(name):
        with django_assert_max_num_queries(100) as page:
            client.get(reverse("console:model", args=[name]), {"days": "90"})
        with django_assert_max_num_queries(100) as data:
            _series(client, name, days="90")
        return len(page.captured_queries), len(data.captured_queries)

    small_page, small_series = counts("small")
    assert counts("big") == (small_page, small_series)
    assert small_series <= 12


def test_a_model_without_versions_or_data_shows_an_empty_diagram_and_empty_charts(client, lead):
    RegisteredModelFactory(name="fresh")

    page = client.get(reverse("console:model", args=["fresh"])).content.decode()
    data = _series(client, "fresh")

    assert "No version is live." in page and "lc-live" not in page
    assert "No version of this model is serving." in page
    assert page.count("No values in this period.") == 8
    assert all(c["alerts"] == [] for c in data["charts"]) and data["annotations"] == []
    assert [len(c["series"]) for c in data["charts"]] == [0, 0, 3, 0, 0, 0, 0, 2]
    assert all(s["points"] == [] for c in data["charts"] for s in c["series"])
