"""A fairness "watch" (a breach whose interval still includes the limit) counts toward nothing
automatic: no incident, page, degradation, rollback or ethics halt."""

from __future__ import annotations

import pytest

from governance.models import Stage
from incidents.alert_response import route_alert
from incidents.ethics import alert_breaches, ethics_check_alert, ethics_check_model
from incidents.models import Incident, Notification, Rollback
from monitoring.models import MonitorRun, ReviewItem
from serving.models import Halt
from tests.incidents.helpers import live_pair, stage
from tests.incidents.test_ethics import FAIR, fairness_alert, set_policy

pytestmark = pytest.mark.django_db


def test_a_watch_alert_opens_nothing_pages_nobody_and_halts_nothing_even_past_a_hard_bound(
    django_capture_on_commit_callbacks,
):
    _, v2 = live_pair()
    set_policy(v2.model)  # hard minimum FPR ratio 0.5
    watches = [fairness_alert(v2, "watch", district={**FAIR, "fpr_ratio": 0.31}) for _ in "ab"]

    with django_capture_on_commit_callbacks(execute=True):
        outcomes = [route_alert(alert) for alert in watches]

    assert all("counts toward nothing automatic" in o["action"] for o in outcomes)
    assert all(o["default"].startswith("nothing: a watch alert") for o in outcomes)
    assert stage(v2) == Stage.PRODUCTION
    assert not Incident.objects.exists() and not Notification.objects.exists()
    assert not Halt.objects.exists() and not Rollback.objects.exists()
    assert not ReviewItem.objects.exists()
    assert {a.status for a in watches} == {"open"}


def test_a_hard_bound_halts_only_when_the_runs_interval_lies_wholly_beyond_it():
    _, v2 = live_pair()
    set_policy(v2.model)  # hard minimum FPR ratio 0.5
    noisy = {**FAIR, "fpr_ratio": 0.45, "intervals": {"fpr_ratio": [0.3, 0.62]}}
    fairness_alert(v2, "watch", district=noisy)
    assert ethics_check_model(v2.model) is None
    assert not Halt.objects.exists()

    clear = {**FAIR, "fpr_ratio": 0.31, "intervals": {"fpr_ratio": [0.22, 0.43]}}
    MonitorRun.objects.filter(version=v2).update(metrics={"attributes": {"district": clear}})
    outcome = ethics_check_model(v2.model)
    assert outcome is not None and outcome["action"] == "halted"
    assert Halt.objects.get().released_at is None


def test_the_ethics_check_finds_no_breach_in_a_watch_alert_whoever_calls_it():
    _, v2 = live_pair()
    set_policy(v2.model)
    watch = fairness_alert(v2, "watch", district={**FAIR, "fpr_ratio": 0.31})
    assert alert_breaches(watch) == [] and ethics_check_alert(watch) is None
    critical = fairness_alert(v2, "critical", district={**FAIR, "fpr_ratio": 0.31})
    assert [b.metric for b in alert_breaches(critical)] == ["fpr_ratio"]
