"""Smoke test: the demo command on the embedded defaults (SQLite, local MLflow) in a fresh var/."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_registers_three_versions_with_cards_history_and_mlflow_tags(tmp_path):
    _run_demo_twice(tmp_path)
    db = sqlite3.connect(tmp_path / "governance.sqlite3")
    versions = _check_versions_and_history(db)
    _check_the_incident(db, tmp_path)
    _check_monitoring(db)
    _check_small_group_watch(db)
    _check_estimates_before_labels(db)
    _check_feedback_loop(db)
    _check_mlflow_tags(tmp_path, versions)


def _run_demo_twice(tmp_path: Path) -> None:
    # MLflow exports its tracking URI to the environment; the demo must use its own var/.
    dropped = {"DATABASE_URL", "CELERY_BROKER_URL", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env |= {"GOVERNANCE_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "config.settings.dev"}
    outputs = []
    for args in (["migrate", "-v0"], ["demo"], ["demo"]):
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
        outputs.append(done.stdout)
    assert "already registered" in done.stdout  # a second run changes nothing

    # the technical-documentation pack of the rolled-back 1.0.1, written and announced
    folder = tmp_path / "documentation"
    pdf = folder / "hotspot-classifier-1.0.1.pdf"
    assert "documentation pack of 1.0.1 (audit seq " in outputs[1] and str(pdf) in outputs[1]
    assert pdf.read_bytes().startswith(b"%PDF-")
    pack = json.loads((folder / "hotspot-classifier-1.0.1.json").read_text())
    oversight = pack["s4_risk_management_and_human_oversight"]
    assert [r["status_at_cut"] for r in oversight["rollbacks"]] == ["completed"]
    assert oversight["incidents"][0]["playbook"]["number"] == "2"
    assert pack["s8_changes"]["chain_verification"]["valid"] is True


def _check_versions_and_history(db: sqlite3.Connection) -> list[tuple]:
    """Four versions with cards, each where the story leaves it, and the audit trail; the rows
    (version, stage, mlflow name, mlflow version, intended use)."""
    versions = db.execute(
        "SELECT v.version, l.stage, v.mlflow_name, v.mlflow_version, c.intended_use "
        "FROM registry_modelversion v JOIN governance_lifecycle l ON l.version_id = v.id "
        "JOIN registry_modelcard c ON c.version_id = v.id ORDER BY v.major, v.minor"
    ).fetchall()
    every = versions
    # issue 13's scenario (demo/patrols.py): patrol-allocation 1.0.0 went live, and its high
    # alerts (the realised AUC drop the estimate missed, the feedback loop) degraded it
    assert [(v[0], v[1]) for v in every if v[2] == "patrol-allocation"] == [("1.0.0", "degraded")]
    versions = [v for v in versions if v[2] == "hotspot-classifier"]
    assert [v[0] for v in versions] == ["1.0.0", "1.0.1", "1.1.0", "2.0.0"]
    assert all(v[4] for v in versions)
    actions = {row[0] for row in db.execute("SELECT action FROM governance_auditevent")}
    assert {
        "role.granted",
        "model.registered",
        "version.registered",
        "evaluation.recorded",
        "approval.approved",
        "lifecycle.submit_for_validation",
        "predictions.ingested",
    } <= actions
    # every version went through review and the gates, and none skipped past staging unreviewed
    stages = {v[0]: v[1] for v in versions}
    # 1.0.0 went live, PATCH 1.0.1 (a lower threshold) replaced it; the injected fairness shift
    # raised critical alerts on 1.0.1 and the second rolled it back to 1.0.0 automatically;
    # 1.1.0's equalized-odds difference (0.11 > 0.10) is a watch, its 95 % interval including
    # the limit: not blocked by noise, it waits in staging for its shadow period; 2.0.0 passed
    # its gates and waits for the ML Lead
    assert stages == {
        "1.0.0": "production",
        "1.0.1": "retired",
        "1.1.0": "staging",
        "2.0.0": "validation",
    }
    [report] = db.execute(
        "SELECT e.report FROM governance_evaluation e JOIN registry_modelversion v "
        "ON v.id = e.version_id WHERE v.version = '1.1.0' AND e.kind = 'validation'"
    ).fetchone()
    [fairness] = [g for g in json.loads(report)["gates"] if g["gate"] == "fairness"]
    assert fairness["passed"] and fairness["values"]["neighbourhood"]["status"] == "watch"
    kinds = {row[0] for row in db.execute("SELECT kind FROM governance_evaluation")}
    assert {"unit_tests", "validation"} <= kinds
    return every


def _check_the_incident(db: sqlite3.Connection, var: Path) -> None:
    """One fairness incident, mitigated by a completed rollback, its people's steps waiting."""
    [(rollback_status, verification)] = db.execute(
        "SELECT status, verification FROM incidents_rollback"
    ).fetchall()
    assert rollback_status == "completed" and verification.startswith("gateway: 1.0.0 scored")
    [(incident_id, kind, playbook, status)] = db.execute(
        "SELECT i.id, i.kind, i.playbook, i.status FROM incidents_incident i "
        "JOIN registry_registeredmodel m ON m.id = i.model_id WHERE m.name = 'hotspot-classifier'"
    ).fetchall()
    assert (kind, playbook, status) == ("fairness", "2", "mitigating")  # steps still wait
    steps = dict(
        db.execute(
            'SELECT "order", status FROM incidents_steprun WHERE incident_id = ?', [incident_id]
        )
    )
    # the playbook is in progress: automated steps and the first people's steps done
    assert [steps[n] for n in (1, 2, 3, 4)] == ["done"] * 4
    assert {steps[n] for n in (5, 6, 7, 8)} == {"waiting"}
    # no paging service in the demo: the Ethics Officer's page is emailed instead, once, and said
    fallback = db.execute(
        "SELECT message FROM incidents_incidentevent WHERE incident_id = ? AND message LIKE ?",
        [incident_id, "page to ethics_officer could not be sent%"],
    ).fetchall()
    assert len(fallback) == 1 and "emailed ethics_officer instead" in fallback[0][0]
    assert list((var / "mail").iterdir())  # the email, as the file backend keeps it


def _check_monitoring(db: sqlite3.Connection) -> None:
    """The daily runs over the demo's weeks, the critical alerts and the injected drift found."""
    critical = db.execute(
        "SELECT COUNT(*) FROM monitoring_alert WHERE severity = 'critical'"
    ).fetchone()[0]
    assert critical >= 1
    watches = db.execute(
        "SELECT COUNT(*) FROM monitoring_alert WHERE kind = 'fairness' AND severity = 'watch'"
    ).fetchone()[0]
    assert watches >= 1  # ratio noise on ~40 cases a group, the shift's first days
    runs = dict(db.execute("SELECT status, COUNT(*) FROM monitoring_monitorrun GROUP BY status"))
    assert runs.get("succeeded", 0) >= 60
    drift_alerts = db.execute(
        "SELECT COUNT(*) FROM monitoring_alert WHERE kind = 'data_drift' "
        "AND feature = 'calls_for_service_lag_1w'"
    ).fetchone()[0]
    assert drift_alerts >= 5  # the drift injected from day 20 is found


def _patrol_runs(db: sqlite3.Connection, kind: str) -> list[tuple[int, dict]]:
    """patrol-allocation's runs of one check, oldest window first: (id, metrics)."""
    rows = db.execute(
        "SELECT r.id, r.metrics FROM monitoring_monitorrun r JOIN registry_registeredmodel m "
        "ON m.id = r.model_id WHERE m.name = 'patrol-allocation' AND r.kind = ? "
        "AND r.status = 'succeeded' ORDER BY r.window_end",
        [kind],
    ).fetchall()
    return [(run_id, json.loads(metrics)) for run_id, metrics in rows]


def _points(db: sqlite3.Connection, run_id: int) -> dict[str, float]:
    return dict(
        db.execute(
            "SELECT metric, value FROM monitoring_metricpoint WHERE run_id = ? AND feature = '' "
            "AND \"group\" = ''",
            [run_id],
        )
    )


def _check_small_group_watch(db: sqlite3.Connection) -> None:
    """A fairness breach on small groups is a watch that says its interval includes the limit."""
    rows = db.execute(
        "SELECT details FROM monitoring_alert WHERE kind = 'fairness' AND severity = 'watch'"
    ).fetchall()
    watches = [w for (details,) in rows for w in json.loads(details)["watch"]]
    assert watches
    assert all("includes the limit: a watch, not a violation" in w["description"] for w in watches)
    # reported with each group's power: some too small to see a gap of the limit's size
    assert min(w["power"] for w in watches) < 0.8


def _check_estimates_before_labels(db: sqlite3.Connection) -> None:
    """patrol-allocation's weekly AUC: realised for the labelled weeks, estimated for the last
    three, two of them reconciled once their labels arrived, the newest still an estimate."""
    runs = _patrol_runs(db, "concept_drift")
    assert [m["estimated"] for _, m in runs] == [False] * 5 + [True] * 3
    for run_id, _ in runs:  # every week has its estimate beside it
        assert "auc_estimated" in _points(db, run_id)
    *reconciled, newest = [(i, m) for i, m in runs if m["estimated"]]
    for run_id, metrics in reconciled:
        rec = metrics["reconciliation"]
        assert rec["status"] == "reconciled" and rec["estimated"] == metrics["estimated_value"]
        points = _points(db, run_id)
        assert points["auc"] == pytest.approx(rec["realised"])
        assert points["estimate_gap"] == pytest.approx(rec["estimated"] - rec["realised"])
        # the discovered incidents make the realised AUC fall short of the estimate
        assert rec["estimate_gap"] > 0.02
    assert "reconciliation" not in newest[1] and "auc" not in _points(db, newest[0])
    lo, hi = newest[1]["interval"]
    assert lo < newest[1]["estimated_value"] < hi


def _check_feedback_loop(db: sqlite3.Connection) -> None:
    """The weekly feedback-loop ratio stays under its threshold until the patrols follow the
    scores, then alerts (high)."""
    runs = _patrol_runs(db, "feedback_loop")
    ratios = [_points(db, run_id)["ratio"] for run_id, _ in runs]
    threshold = runs[0][1]["feedback_ratio_max"]
    assert len(ratios) == 6 and threshold == 1.5
    assert all(r < threshold for r in ratios[:3]) and all(r > threshold for r in ratios[-2:])
    alerts = db.execute(
        "SELECT a.severity, a.run_id FROM monitoring_alert a JOIN registry_registeredmodel m "
        "ON m.id = a.model_id WHERE m.name = 'patrol-allocation' AND a.kind = 'feedback_loop'"
    ).fetchall()
    assert {severity for severity, _ in alerts} == {"high"}
    assert {run_id for _, run_id in alerts} == {run_id for run_id, _ in runs[-2:]}


def _check_mlflow_tags(var: Path, versions: list[tuple]) -> None:
    """MLflow's governance.stage tag of every version says the stage the platform holds."""
    mlflow_db = sqlite3.connect(var / "mlflow.db")
    tags = dict(
        ((name, str(version)), stage)
        for name, version, stage in mlflow_db.execute(
            "SELECT name, version, value FROM model_version_tags WHERE key = 'governance.stage'"
        )
    )
    assert tags == {(v[2], str(v[3])): v[1] for v in versions}
