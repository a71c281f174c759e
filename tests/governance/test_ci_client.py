"""``govctl``: against the real API over HTTP (live_server), and a stub for documented answers."""

from __future__ import annotations

import email
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from governance import ci_client, services
from governance.api import gate_views
from governance.audit import Actor
from governance.ci_client import RUN_ID_VARIABLES, main

SYSTEM = Actor.system("tests")
live = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for name in (*RUN_ID_VARIABLES, "GOVERNANCE_URL", "GOVERNANCE_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(ci_client.time, "sleep", lambda seconds: None)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- against the real API ---------------------------------------------------------------


@pytest.fixture
def server(live_server, monkeypatch, transactional_db) -> str:
    services.role_grant(username="ci-bot", roles=["ci"], actor=SYSTEM)
    _, token = services.token_create(username="ci-bot", name="ci-main", actor=SYSTEM)
    monkeypatch.setenv("GOVERNANCE_URL", live_server.url)
    monkeypatch.setenv("GOVERNANCE_TOKEN", token)
    return live_server.url


@pytest.fixture
def body_file(tmp_path, version_body):
    def write(version: str = "1.0.0", **overrides) -> str:
        path = tmp_path / f"body-{version}.json"
        path.write_text(json.dumps(version_body(version, **overrides)))
        return str(path)

    return write


@live
def test_register_model_then_again_is_ok(server, capsys):
    assert run(capsys, "register-model", "hotspot", "--description", "grid cells")[:2] == (
        0,
        "registered model hotspot\n",
    )
    code, out, _ = run(capsys, "register-model", "hotspot")
    assert code == 0 and "already exists" in out
    from registry.models import RegisteredModel

    assert RegisteredModel.objects.get(name="hotspot").description == "grid cells"


@live
def test_register_a_version_from_flags(server, capsys, tmp_path, version_body):
    body = version_body("1.0.0")
    card = tmp_path / "card.json"
    card.write_text(json.dumps(body["model_card"]))
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"C": 0.5}))
    run(capsys, "register-model", "hotspot")
    code, out, err = run(
        capsys,
        "register",
        "hotspot",
        "--version=1.0.0",
        f"--mlflow-uri={body['mlflow_uri']}",
        f"--data-hash={body['training_data_hash']}",
        "--data-start=2025-01-01",
        "--data-end=2025-12-31",
        "--features=f1,f2,f3",
        "--threshold=0.42",
        f"--engineer={body['responsible_engineer']}",
        f"--card={card}",
        f"--hyperparameters={params}",
    )
    assert (code, err) == (0, ""), err
    assert out.startswith("registered hotspot 1.0.0 (stage development, artifact ")
    from registry.models import ModelVersion

    version = ModelVersion.objects.get(model__name="hotspot", version="1.0.0")
    assert version.thresholds == {"decision": 0.42} and version.hyperparameters == {"C": 0.5}
    assert version.feature_list == ["f1", "f2", "f3"]


@live
def test_register_from_a_body_file_then_read_its_status(server, capsys, body_file):
    run(capsys, "register-model", "hotspot")
    code, _, err = run(capsys, "register", "hotspot", "--body", body_file("1.0.0"))
    assert code == 0, err
    code, out, _ = run(capsys, "status", "hotspot", "1.0.0")
    assert code == 0
    assert out.splitlines()[0] == "hotspot 1.0.0"
    assert "  stage: development" in out and "  responsible_engineer: erin" in out
    code, out, _ = run(capsys, "status", "hotspot", "1.0.0", "--json")
    assert code == 0 and json.loads(out)["stage"] == "development"


@live
def test_a_400_prints_the_field_names_and_exits_2(server, capsys, body_file):
    run(capsys, "register-model", "hotspot")
    code, out, err = run(
        capsys, "register", "hotspot", "--body", body_file("1.0.0"), "--data-hash", "md5 please"
    )
    assert (code, out) == (2, "")
    assert "HTTP 400" in err and "Invalid input." in err
    assert "  training_data_hash: must look like 'sha256:<hex digest>'" in err


@live
def test_a_nested_field_error_is_named_with_its_path(server, capsys, body_file):
    run(capsys, "register-model", "hotspot")
    code, _, err = run(
        capsys, "register", "hotspot", "--body", body_file("1.0.0", model_card={"owners": []})
    )
    assert code == 2 and "  model_card.intended_use: This field is required." in err


@live
def test_status_of_an_unknown_version_exits_2(server, capsys):
    run(capsys, "register-model", "hotspot")
    code, _, err = run(capsys, "status", "hotspot", "9.9.9")
    assert code == 2 and "HTTP 404" in err and "no version '9.9.9'" in err


@live
def test_a_refused_transition_exits_1_listing_what_is_unmet(server, capsys, body_file):
    run(capsys, "register-model", "hotspot")
    assert run(capsys, "register", "hotspot", "--body", body_file("1.0.0"))[0] == 0
    code, out, err = run(capsys, "transition", "hotspot", "1.0.0", "submit_for_validation")
    assert code == 1, err
    assert out.startswith("hotspot 1.0.0: submit_for_validation refused\n")
    assert "  - " in out and "unit_tests" in out
    assert "blocked" in err


@live
def test_a_token_without_the_role_is_an_http_error(server, capsys, monkeypatch):
    services.role_grant(username="pm", roles=["product_manager"], actor=SYSTEM)
    _, token = services.token_create(username="pm", actor=SYSTEM)
    code, _, err = run(capsys, "register-model", "hotspot", "--token", token)
    assert code == 2 and "HTTP 403" in err and "register" in err


@live
@pytest.mark.skipif(
    not hasattr(gate_views.EvaluationListCreateView, "post"),
    reason="the evaluations endpoint is still a placeholder",
)
def test_unit_test_evidence_against_the_real_api(server, capsys, body_file):
    run(capsys, "register-model", "hotspot")
    assert run(capsys, "register", "hotspot", "--body", body_file("1.0.0"))[0] == 0
    code, out, err = run(
        capsys, "evidence", "hotspot", "1.0.0", "--unit-tests", "passed", "--summary", "9 passed"
    )
    assert code == 0, err
    assert out.startswith("unit_tests evidence for hotspot 1.0.0: PASSED")
    code, out, _ = run(capsys, "evidence", "hotspot", "1.0.0", "--unit-tests", "failed")
    assert code == 1 and "FAILED" in out


@live
def test_a_retry_while_the_first_request_runs_waits_and_gets_its_answer(
    server, capsys, body_file, monkeypatch
):
    """A CI step retried while its first attempt still runs (e.g. after a proxy timeout): the
    evidence is recorded once and both attempts get the same report."""
    import io
    import os

    from governance import gates
    from governance.models import Evaluation

    run(capsys, "register-model", "hotspot")
    assert run(capsys, "register", "hotspot", "--body", body_file("1.0.0"))[0] == 0
    real, inside, release = gates.evaluation_submit, threading.Event(), threading.Event()

    def held(**kwargs):
        inside.set()
        assert release.wait(60)
        return real(**kwargs)

    monkeypatch.setattr(gates, "evaluation_submit", held)
    first: dict = {}
    client = ci_client.Client(
        server, os.environ["GOVERNANCE_TOKEN"], timeout=60, retries=0, log=io.StringIO()
    )
    parts = ["models", "hotspot", "versions", "1.0.0", "evaluations"]
    body = {"kind": "unit_tests", "passed": True}
    attempt = threading.Thread(
        target=lambda: first.update(reply=client.post_json(parts, body, key="ci-run-5"))
    )
    attempt.start()
    assert inside.wait(60)

    def sleep(seconds: float) -> None:  # while govctl waits, the first attempt finishes
        release.set()
        attempt.join(60)

    monkeypatch.setattr(ci_client.time, "sleep", sleep)
    code, out, err = run(
        capsys,
        "--idempotency-key",
        "ci-run-5",
        "evidence",
        "hotspot",
        "1.0.0",
        "--unit-tests",
        "passed",
    )
    assert code == 0, err
    assert "still processing" in err
    assert out.startswith("unit_tests evidence for hotspot 1.0.0: PASSED")
    assert first["reply"].status == 201
    assert Evaluation.objects.count() == 1


@live
def test_a_validation_csv_is_judged_by_the_real_gates(server, capsys, body_file, tmp_path):
    import numpy as np

    from governance.models import Evaluation

    rng = np.random.default_rng(7)
    scores = rng.uniform(0.02, 0.98, size=600)
    labels = (rng.uniform(size=600) < scores).astype(int)
    areas = np.where(np.arange(600) % 2 == 0, "north", "south")
    path = tmp_path / "val.csv"
    path.write_text(
        "score,label,sensitive.area\n"
        + "".join(f"{s:.4f},{y},{a}\n" for s, y, a in zip(scores, labels, areas, strict=True))
    )
    run(capsys, "register-model", "hotspot")
    assert run(capsys, "register", "hotspot", "--body", body_file("1.0.0"))[0] == 0
    code, out, err = run(capsys, "evidence", "hotspot", "1.0.0", "--validation", str(path))
    evaluation = Evaluation.objects.get(version__version="1.0.0", kind="validation")
    assert evaluation.records == 600
    assert code == (0 if evaluation.passed else 1), err
    verdict = "PASSED" if evaluation.passed else "FAILED"
    assert out.startswith(
        f"validation evidence for hotspot 1.0.0: {verdict} (validation policy v1)"
    )
    for gate in ("metrics", "fairness", "calibration"):
        assert f"] {gate}: " in out
    assert "auc 0." in out and "(min 0.7)" in out


# --- against a stub that answers with the documented shapes -----------------------------


class Stub:
    """A local HTTP server: canned answers per (method, path); records every request."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], list[tuple]] = {}
        self.requests: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                stub.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": self.rfile.read(length),
                    }
                )
                queue = stub.answers.get((self.command, self.path)) or [(404, {"detail": "?"})]
                status, body, *headers = queue.pop(0) if len(queue) > 1 else queue[0]
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in (headers[0] if headers else {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def on(self, method: str, path: str, *answers: tuple) -> None:
        """Each answer is (status, body) or (status, body, {header: value})."""
        self.answers[(method, path)] = list(answers)

    def json(self, index: int = -1) -> dict:
        return json.loads(self.requests[index]["body"])


@pytest.fixture
def stub(monkeypatch) -> Iterator[Stub]:
    server = Stub()
    thread = threading.Thread(target=server.httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv("GOVERNANCE_URL", server.url)
    monkeypatch.setenv("GOVERNANCE_TOKEN", "stub-token")
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


EVALUATIONS = "/api/v1/models/hotspot/versions/1.2.0/evaluations/"
TRANSITIONS = "/api/v1/models/hotspot/versions/1.2.0/transitions/"
FAILED_REPORT = {
    "passed": False,
    "policy_version": 3,
    "gates": [
        {
            "gate": "metrics",
            "passed": True,
            "values": {"auc": 0.8123},
            "thresholds": {"auc_min": 0.7},
        },
        {
            "gate": "fairness",
            "passed": False,
            "values": {"area": {"equalized_odds_difference": 0.1432, "fpr_ratio": 0.71}},
            "thresholds": {"equalized_odds_difference_max": 0.1, "fpr_ratio_min": 0.8},
            "reasons": ["area: FPR ratio 0.71 below 0.8"],
        },
        {"gate": "shadow_period", "passed": True, "values": {"span_days": 9.5}, "thresholds": {}},
    ],
    "stage": "development",
}


def test_failed_unit_tests_exit_1_and_send_the_documented_body(stub, capsys):
    stub.on("POST", EVALUATIONS, (201, {"passed": False, "policy_version": 3, "gates": []}))
    code, out, err = run(
        capsys, "evidence", "hotspot", "1.2.0", "--unit-tests", "failed", "--summary", "3 failed"
    )
    assert code == 1
    assert out.startswith("unit_tests evidence for hotspot 1.2.0: FAILED (validation policy v3)")
    assert "blocked" in err
    request = stub.requests[0]
    assert request["headers"]["Authorization"] == "Token stub-token"
    assert request["headers"]["Idempotency-Key"].startswith("govctl-evidence-")
    assert stub.json() == {"kind": "unit_tests", "passed": False, "summary": "3 failed"}


def test_a_failing_gate_report_is_printed_gate_by_gate(stub, capsys, tmp_path):
    records = [{"score": 0.7, "label": 1, "sensitive": {"area": "north"}}]
    path = tmp_path / "val.json"
    path.write_text(json.dumps(records))
    stub.on("POST", EVALUATIONS, (201, FAILED_REPORT))
    code, out, _ = run(capsys, "evidence", "hotspot", "1.2.0", "--validation", str(path))
    assert code == 1
    assert stub.json() == {"kind": "validation", "records": records}
    assert "  [pass] metrics: auc 0.8123 (min 0.7)\n" in out
    assert (
        "  [FAIL] fairness: area: equalized_odds_difference 0.1432 (max 0.1), "
        "fpr_ratio 0.71 (min 0.8)\n"
        "         ! area: FPR ratio 0.71 below 0.8\n"
    ) in out
    assert "  [pass] shadow_period: span_days 9.5\n" in out
    assert out.endswith("  stage afterwards: development\n")


def test_a_passing_report_exits_0(stub, capsys):
    stub.on("POST", EVALUATIONS, (201, {**FAILED_REPORT, "passed": True}))
    code, out, _ = run(capsys, "evidence", "hotspot", "1.2.0", "--unit-tests", "passed")
    assert code == 0 and "PASSED" in out


@pytest.mark.parametrize(
    ("name", "content", "content_type"),
    [
        ("val.csv", b"score,label,area\n0.7,1,north\n", "text/csv"),
        (
            "val.parquet",
            b"PAR1\x00\x01binary\r\n--not-a-boundaryPAR1",
            "application/vnd.apache.parquet",
        ),
    ],
)
def test_tabular_evidence_is_uploaded_as_multipart(
    stub, capsys, tmp_path, name, content, content_type
):
    path = tmp_path / name
    path.write_bytes(content)
    stub.on("POST", EVALUATIONS, (201, {**FAILED_REPORT, "passed": True}))
    code, _, err = run(capsys, "evidence", "hotspot", "1.2.0", "--validation", str(path))
    assert code == 0, err
    request = stub.requests[0]
    header = request["headers"]["Content-Type"]
    assert header.startswith("multipart/form-data; boundary=")
    message = email.message_from_bytes(f"Content-Type: {header}\r\n\r\n".encode() + request["body"])
    parts = {part.get_param("name", header="content-disposition"): part for part in message.walk()}
    assert parts["kind"].get_payload(decode=True) == b"validation"
    assert parts["file"].get_filename() == name
    assert parts["file"].get_content_type() == content_type
    assert parts["file"].get_payload(decode=True) == content


def test_shadow_replay_records_go_as_json(stub, capsys, tmp_path):
    path = tmp_path / "replay.json"
    path.write_text(json.dumps({"records": [{"score": 0.1, "timestamp": "2025-01-01T00:00Z"}]}))
    stub.on("POST", EVALUATIONS, (201, {"passed": True, "gates": []}))
    assert run(capsys, "evidence", "hotspot", "1.2.0", "--shadow-replay", str(path))[0] == 0
    assert stub.json()["kind"] == "shadow_replay" and len(stub.json()["records"]) == 1


def test_a_refused_transition_exits_1_with_its_reasons(stub, capsys):
    reasons = [
        "needs an approval from ethics_officer",
        "the 7-day shadow period ends 2025-06-08 12:00 UTC",
    ]
    stub.on("POST", TRANSITIONS, (409, {"detail": "promote refused", "reasons": reasons}))
    code, out, err = run(
        capsys, "transition", "hotspot", "1.2.0", "promote", "--comment", "weekly release"
    )
    assert code == 1
    assert out == (
        "hotspot 1.2.0: promote refused\n"
        "  promote refused\n"
        "  - needs an approval from ethics_officer\n"
        "  - the 7-day shadow period ends 2025-06-08 12:00 UTC\n"
    )
    assert "2 unmet" in err
    assert stub.json() == {"transition": "promote", "comment": "weekly release"}


def test_an_allowed_transition_prints_the_new_stage(stub, capsys):
    stub.on("POST", TRANSITIONS, (200, {"version": "1.2.0", "stage": "validation"}))
    code, out, _ = run(capsys, "transition", "hotspot", "1.2.0", "submit_for_validation")
    assert code == 0 and out == "hotspot 1.2.0: submit_for_validation done, stage validation\n"


def test_a_403_is_an_error_not_a_gate(stub, capsys):
    stub.on("POST", TRANSITIONS, (403, {"detail": "none of your roles may request promote"}))
    code, _, err = run(capsys, "transition", "hotspot", "1.2.0", "promote")
    assert code == 2 and "none of your roles may request promote" in err


def test_the_idempotency_key_follows_the_ci_run_and_the_request(stub, capsys, monkeypatch):
    stub.on("POST", TRANSITIONS, (200, {"stage": "validation"}))
    monkeypatch.setenv("GITHUB_RUN_ID", "777")
    for _ in range(2):
        run(capsys, "transition", "hotspot", "1.2.0", "submit_for_validation")
    run(capsys, "transition", "hotspot", "1.2.0", "submit_for_validation", "--comment", "x")
    run(capsys, "--idempotency-key", "mine-1", "transition", "hotspot", "1.2.0", "promote")
    keys = [r["headers"]["Idempotency-Key"] for r in stub.requests]
    assert keys[0] == keys[1] and keys[0].startswith("govctl-777-transition-")
    assert keys[2] != keys[0] and keys[3] == "mine-1"


def test_a_503_is_retried_with_the_same_key(stub, capsys):
    stub.on("POST", TRANSITIONS, (503, {"detail": "MLflow is down"}), (200, {"stage": "staging"}))
    code, out, err = run(capsys, "transition", "hotspot", "1.2.0", "approve_for_staging")
    assert code == 0 and "stage staging" in out and "retrying" in err
    first, second = (r["headers"]["Idempotency-Key"] for r in stub.requests)
    assert first == second


IN_PROGRESS = (
    409,
    {"detail": "a request with this Idempotency-Key is still being processed; retry later"},
    {"Retry-After": "2"},
)


def test_a_key_still_in_progress_is_waited_for_then_asked_again(stub, capsys, monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(ci_client.time, "sleep", slept.append)
    stub.on("POST", TRANSITIONS, IN_PROGRESS, IN_PROGRESS, (200, {"stage": "staging"}))
    code, out, err = run(capsys, "transition", "hotspot", "1.2.0", "approve_for_staging")
    assert code == 0 and "stage staging" in out, err
    assert "still processing" in err and slept == [2.0, 2.0]
    keys = {r["headers"]["Idempotency-Key"] for r in stub.requests}
    assert len(stub.requests) == 3 and len(keys) == 1


def test_waiting_on_a_key_in_progress_stops_after_the_timeout(stub, capsys, monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(ci_client.time, "sleep", slept.append)
    stub.on("POST", TRANSITIONS, IN_PROGRESS)
    code, _, err = run(
        capsys, "--timeout", "7", "transition", "hotspot", "1.2.0", "approve_for_staging"
    )
    assert code == 2 and "HTTP 409" in err and "is still being processed after 6s" in err
    assert sum(slept) <= 7 and len(stub.requests) == len(slept) + 1 == 4


def test_a_409_without_retry_after_is_a_refusal_not_retried(stub, capsys):
    stub.on(
        "POST",
        TRANSITIONS,
        (409, {"detail": "unmet", "reasons": ["needs an approval from a ml_lead"]}),
        (200, {"stage": "staging"}),
    )
    code, _, _ = run(capsys, "transition", "hotspot", "1.2.0", "approve_for_staging")
    assert code == 1 and len(stub.requests) == 1


def test_the_status_command_reads_the_version(stub, capsys):
    stub.on(
        "GET",
        "/api/v1/models/hotspot/versions/1.2.0/",
        (200, {"version": "1.2.0", "stage": "staging", "metrics": {"auc": 0.8}}),
    )
    code, out, _ = run(capsys, "--url", stub.url + "/api/v1/", "status", "hotspot", "1.2.0")
    assert code == 0 and "  stage: staging\n" in out
    assert "Idempotency-Key" not in stub.requests[0]["headers"]


# --- usage errors -----------------------------------------------------------------------


def test_no_server_configured_exits_2(capsys):
    code, _, err = run(capsys, "status", "hotspot", "1.0.0")
    assert code == 2 and "GOVERNANCE_URL" in err


def test_no_token_exits_2(capsys):
    code, _, err = run(capsys, "--url", "http://127.0.0.1:9", "status", "m", "1.0.0")
    assert code == 2 and "GOVERNANCE_TOKEN" in err


def test_an_unreachable_server_exits_2(capsys, monkeypatch):
    monkeypatch.setenv("GOVERNANCE_TOKEN", "t")
    code, _, err = run(
        capsys, "status", "m", "1.0.0", "--url", "http://127.0.0.1:9", "--retries", "0"
    )
    assert code == 2 and "cannot reach http://127.0.0.1:9/api/v1/models/m/versions/1.0.0/" in err


def test_bad_arguments_exit_2(stub, capsys):
    assert run(capsys, "evidence", "hotspot", "1.2.0")[0] == 2  # one kind of evidence needed
    assert run(capsys, "evidence", "hotspot", "1.2.0", "--unit-tests", "maybe")[0] == 2
    code, _, err = run(capsys, "evidence", "hotspot", "1.2.0", "--validation", "missing.csv")
    assert code == 2 and "no file missing.csv" in err
    code, _, err = run(capsys, "register", "hotspot", "--body", "missing.json")
    assert code == 2 and "cannot read missing.json" in err
    assert stub.requests == []


def test_help_exits_0(capsys):
    assert run(capsys, "--help")[0] == 0
