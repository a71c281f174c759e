"""Smoke test: the demo command on the embedded defaults (SQLite, local MLflow) in a fresh var/."""

import json
import os
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The console's data endpoint of a model page, read as the demo's ML Lead (in the demo's var/).
SERIES = """
import json
from django.contrib.auth import get_user_model
from django.test import Client
client = Client(HTTP_HOST="127.0.0.1")
client.force_login(get_user_model().objects.get(username="lee-lead"))
response = client.get("/console/models/{model}/series.json", {{"days": "90"}})
assert response.status_code == 200, response.status_code
print(json.dumps(response.json()))
"""


@pytest.mark.slow
def test_demo_registers_three_versions_with_cards_history_and_mlflow_tags(tmp_path):
    env = _run_demo_twice(tmp_path)
    db = sqlite3.connect(tmp_path / "governance.sqlite3")
    versions = _check_versions_and_history(db)
    _check_the_incident(db, tmp_path)
    _check_monitoring(db)
    _check_small_group_watch(db)
    _check_estimates_before_labels(db)
    _check_feedback_loop(db)
    _check_audit_in_time_order(db)
    _check_patrols_live_before_their_data(db)
    _check_patrol_charts(_series(env, "patrol-allocation"))
    _check_mlflow_tags(tmp_path, versions)


def _run_demo_twice(tmp_path: Path) -> dict[str, str]:
    """Migrate, seed, seed again; the environment the demo ran in."""
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
    return env


def _series(env: dict[str, str], model: str) -> dict:
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", SERIES.format(model=model)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


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


def _check_audit_in_time_order(db: sqlite3.Connection) -> None:
    """The back-dated history came first: the log's times never go back as its seq goes on."""
    times = [t for (t,) in db.execute("SELECT created_at FROM governance_auditevent ORDER BY seq")]
    assert times == sorted(times)


def _check_patrols_live_before_their_data(db: sqlite3.Connection) -> None:
    """patrol-allocation was registered, reviewed and promoted before its first request and
    its first monitored window, as its audited events and its stage times say."""
    model = "SELECT id FROM registry_registeredmodel WHERE name = 'patrol-allocation'"
    [(promoted_at,)] = db.execute(
        "SELECT l.promoted_at FROM governance_lifecycle l JOIN registry_modelversion v "
        f"ON v.id = l.version_id WHERE v.model_id = ({model})"
    ).fetchall()
    # the feedback-loop check's window counts four weeks back from its end, history included
    [(first_window, first_end)] = db.execute(
        "SELECT MIN(window_start), MIN(window_end) FROM monitoring_monitorrun "
        f"WHERE model_id = ({model}) AND kind != 'feedback_loop'"
    ).fetchall()
    [(first_day,)] = db.execute(
        f"SELECT MIN(day) FROM monitoring_databatch WHERE model_id = ({model}) "
        "AND kind = 'predictions'"
    ).fetchall()
    events = dict(
        db.execute(
            "SELECT action, MAX(created_at) FROM governance_auditevent "
            "WHERE model_name = 'patrol-allocation' AND action IN "
            "('model.registered', 'version.registered', 'approval.approved', "
            "'lifecycle.promote') GROUP BY action"
        )
    )
    assert len(events) == 4
    promoted = datetime.fromisoformat(promoted_at)
    assert max(events, key=events.get) == "lifecycle.promote"  # reviews came before it
    assert datetime.fromisoformat(events["lifecycle.promote"]) < datetime.fromisoformat(
        first_window
    )
    assert promoted < datetime.fromisoformat(first_window)
    assert promoted.date().isoformat() < first_day  # live the day before its first request
    assert datetime.fromisoformat(first_end) > promoted


def _check_patrol_charts(data: dict) -> None:
    """Every chart of patrol-allocation's page has points in every series, all after its
    promotion line; fairness, performance and the feedback loop carry alerts."""
    [promotion] = [a for a in data["annotations"] if a["kind"] == "promotion"]
    charts = {c["id"]: c for c in data["charts"]}
    assert set(charts) >= {"psi", "ks", "fairness_gap", "fairness_ratio", "fairness_groups"}
    assert {"performance", "ece", "labels", "feedback_loop"} <= set(charts)
    for chart_id, chart in charts.items():
        assert chart["series"], chart_id
        for series in chart["series"]:
            assert series["points"], (chart_id, series["label"])
            assert min(p["t"] for p in series["points"]) > promotion["t"], chart_id
    for chart_id in ("performance", "fairness_gap", "feedback_loop"):
        assert charts[chart_id]["alerts"], chart_id


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
