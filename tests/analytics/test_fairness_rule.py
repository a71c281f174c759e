"""One fairness rule: the validation gate and the monitoring check judge the same data alike."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from analytics import fairness, stats
from governance.evidence import EvidenceBatch
from governance.gates import fairness_gate
from governance.models import ValidationPolicy
from monitoring import checks
from monitoring.models import MonitoringPolicy

THRESHOLDS = ValidationPolicy.schema.defaults()
SETTINGS = MonitoringPolicy.schema.defaults()
VERSION = SimpleNamespace(thresholds={"decision": 0.5}, feature_list=[], pk=0)


def group(name: str, n: int, *, positives: int, tpr: float, fpr: float) -> pd.DataFrame:
    """``n`` records of one area: the first ``positives`` are positive; exact TPR and FPR."""
    negatives = n - positives
    labels = np.r_[np.ones(positives), np.zeros(negatives)]
    predicted = np.r_[
        np.arange(positives) < round(tpr * positives),
        np.arange(negatives) < round(fpr * negatives),
    ].astype(float)
    return pd.DataFrame(
        {
            "score": np.where(predicted == 1, 0.8, 0.2),
            "prediction": predicted,
            "label": labels,
            "s.area": name,
        }
    )


CASES = {
    "fair": [
        group("north", 1000, positives=300, tpr=0.8, fpr=0.1),
        group("south", 1000, positives=300, tpr=0.8, fpr=0.1),
    ],
    "unfair": [
        group("north", 1000, positives=300, tpr=0.8, fpr=0.05),
        group("south", 1000, positives=300, tpr=0.8, fpr=0.30),
    ],
    # no positive in the south: its TPR and FNR are undefined, so is the FNR ratio
    "undefined": [
        group("north", 1000, positives=300, tpr=0.8, fpr=0.1),
        group("south", 1000, positives=0, tpr=0.0, fpr=0.1),
    ],
}


def gate_verdict(window: pd.DataFrame) -> dict:
    batch = EvidenceBatch(
        scores=window["score"].to_numpy(),
        labels=window["label"].to_numpy().astype(np.int8),
        predictions=window["prediction"].to_numpy(),
        sensitive={"area": window["s.area"].to_numpy(dtype=str)},
        timestamps=None,
        digest="test",
    )
    predicted = stats.predicted_class(batch.scores, batch.predictions, decision_threshold=0.5)
    return fairness_gate(batch, predicted, thresholds=THRESHOLDS)


def check_verdict(window: pd.DataFrame) -> checks.CheckResult:
    return checks.run_check("fairness", window, None, VERSION, SETTINGS, THRESHOLDS)


@pytest.mark.parametrize(
    ("case", "status"), [("fair", "passed"), ("unfair", "violated"), ("undefined", "undefined")]
)
def test_the_gate_and_the_monitoring_check_reach_the_same_verdict(case, status):
    window = pd.concat(CASES[case], ignore_index=True)
    gate = gate_verdict(window)
    check = check_verdict(window).metrics["attributes"]["area"]
    assert gate["values"]["area"]["status"] == check["status"] == status
    assert gate["passed"] is (status == "passed")


def test_an_undefined_rate_fails_the_gate_and_raises_no_alert_but_is_recorded():
    window = pd.concat(CASES["undefined"], ignore_index=True)
    gate = gate_verdict(window)
    result = check_verdict(window)
    assert gate["reasons"] == [
        "area: FNR ratio is undefined (fewer than two judged groups have positives)"
    ]
    assert result.breach is None  # no evidence of harm: not an alert
    assert result.metrics["attributes"]["area"]["undefined"] == ["fnr_ratio"]


def test_a_violation_names_the_same_aggregate_in_both():
    window = pd.concat(CASES["unfair"], ignore_index=True)
    gate = gate_verdict(window)
    result = check_verdict(window)
    assert [r.split(" ")[1:3] for r in gate["reasons"]] == [["equalized", "odds"], ["FPR", "ratio"]]
    violated = {v["metric"] for v in result.metrics["attributes"]["area"]["violations"]}
    assert violated == {"equalized_odds_difference", "fpr_ratio"}
    assert result.breach is not None and result.breach.feature == "area"


def test_without_two_judged_groups_the_gate_fails_and_the_check_skips():
    window = pd.concat(
        [
            group("north", 1000, positives=300, tpr=0.8, fpr=0.1),
            group("south", 10, positives=3, tpr=0.8, fpr=0.1),
        ],
        ignore_index=True,
    )
    report = stats.fairness_metrics(
        window["label"].astype(np.int8),
        window["prediction"].astype(np.int8),
        {"area": window["s.area"].to_numpy(dtype=str)},
        min_group_size=30,
    )
    assert fairness.judge(report, THRESHOLDS).status == "not_judged"
    assert gate_verdict(window)["passed"] is False
    with pytest.raises(checks.Skip):
        check_verdict(window)


def test_noise_in_a_small_group_is_a_watch_in_both_the_gate_passes_the_check_does_not_act():
    # TPR 0.60 vs 0.75 on 100 positives per area: EOD 0.15 > 0.10, its interval includes 0.10
    window = pd.concat(
        [
            group("north", 300, positives=100, tpr=0.60, fpr=0.2),
            group("south", 300, positives=100, tpr=0.75, fpr=0.2),
        ],
        ignore_index=True,
    )
    gate = gate_verdict(window)
    check = check_verdict(window)
    area = gate["values"]["area"]
    assert area["status"] == check.metrics["attributes"]["area"]["status"] == "watch"
    assert gate["passed"] is True and gate["reasons"] == []
    assert any("includes the limit: a watch" in w for w in area["watch"])
    assert area["intervals"] == check.metrics["attributes"]["area"]["intervals"]
    assert area["intervals"]["equalized_odds_difference"][0] <= 0.10
    assert check.breach is not None and check.breach.severity == "watch"


def test_the_gate_reports_the_power_of_groups_too_small_to_judge():
    window = pd.concat(
        [
            group("north", 1000, positives=300, tpr=0.8, fpr=0.1),
            group("south", 1000, positives=300, tpr=0.8, fpr=0.1),
            group("east", 20, positives=6, tpr=0.5, fpr=0.5),
        ],
        ignore_index=True,
    )
    gate = gate_verdict(window)
    area = gate["values"]["area"]
    assert gate["passed"] is True
    east = area["groups"]["east"]
    assert east["judged"] is False and east["power"]["equalized_odds_difference"] < 0.2
    assert "east" in area["note"] and "power to detect" in area["note"]
    assert area["groups"]["north"]["power"]["equalized_odds_difference"] > 0.8
    lo, hi = area["groups"]["east"]["intervals"]["fpr"]
    assert lo < 0.5 < hi
