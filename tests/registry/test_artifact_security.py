"""Issue 10: model artifacts are code. Registration reads only allowed sources, parses MLflow URIs
strictly, binds a model to its own MLflow registered model, applies the artifact policy, and never
deserializes anything of an artifact in the web (test) process."""

from __future__ import annotations

import http.server
import os
import pickle
import shutil
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from django.conf import settings as django_settings

from governance import services
from governance.audit import Actor
from governance.models import AuditEvent
from registry import mlflow_bridge
from registry.models import ModelVersion

pytestmark = pytest.mark.django_db

SYSTEM = Actor.system("tests")
FEATURES = ["f1", "f2", "f3"]
URL = "/api/v1/models/hotspot/versions/"
GENERIC = "artifact_uri is not an allowed artifact source: allowed are"


@pytest.fixture
def ci(api_client):
    services.model_register(name="hotspot", actor=SYSTEM)
    return api_client("ci", username="ci-hotspot", model="hotspot")


@pytest.fixture
def lead(api_client, ci):
    return api_client("ml_lead", username="lee-lead", model="hotspot")


def _leftover_temp_dirs() -> list[str]:
    root = Path(django_settings.ARTIFACT_CACHE_DIR)
    if not root.is_dir():
        return []
    return [p.name for p in root.iterdir() if p.name.startswith(("probe-", "fetch-", "log-"))]


def _training_frame(seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(100, 3)), columns=FEATURES)
    return frame, (frame["f1"] > 0).astype(int)


def _artifact_dir(name: str) -> Path:
    """A fresh directory under the MLflow artifact root (an allowed source)."""
    path = Path(django_settings.MLFLOW_ARTIFACT_ROOT) / "imports" / name
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _saved_sklearn(name: str, *, payload=None) -> Path:
    """An MLflow sklearn model saved as a plain pickle; ``payload`` replaces the pickled model."""
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    from demo.mlflow_logging import PIP_REQUIREMENTS

    path = _artifact_dir(name)
    frame, labels = _training_frame()
    mlflow.sklearn.save_model(
        LogisticRegression().fit(frame, labels),
        str(path),
        serialization_format="pickle",
        pip_requirements=PIP_REQUIREMENTS,
    )
    if payload is not None:
        (path / "model.pkl").write_bytes(pickle.dumps(payload))
    return path


class _RunsCode:
    """A pickle whose loading runs ``source`` (what a crafted model.pkl does)."""

    def __init__(self, source: str):
        self.source = source

    def __reduce__(self):
        return (exec, (self.source,))


def _marker_payload(marker: Path) -> _RunsCode:
    return _RunsCode(f"import os; open({str(marker)!r}, 'w').write(str(os.getpid()))")


# --- finding 1: nothing is deserialized in the web process ----------------------------------


def test_a_crafted_pickle_never_runs_in_the_web_process(ci, version_body, monkeypatch):
    import mlflow.pyfunc

    def refuse(*args, **kwargs):
        raise AssertionError("the web process loaded an artifact")

    monkeypatch.setattr(mlflow.pyfunc, "load_model", refuse)
    shared = _artifact_dir("marker-out")
    shared.mkdir()
    shared.chmod(0o777)  # the probe may run as an unprivileged user
    marker = shared / "ran"
    source = _saved_sklearn("evil-model", payload=_marker_payload(marker))

    response = ci.post(
        URL, version_body(mlflow_uri="", artifact_uri=source.as_uri()), format="json"
    )

    assert response.status_code in (201, 400), response.content
    assert marker.exists(), "the probe child loads the artifact"
    assert int(marker.read_text()) != os.getpid()  # ...and only the child
    assert _leftover_temp_dirs() == []


def test_with_allow_executable_false_a_pickle_is_refused_before_any_load(ci, lead, version_body):
    lead.put(
        "/api/v1/models/hotspot/artifact-policy/",
        {"allow_executable": False, "reason": "no pickles"},
        format="json",
    )
    marker = _artifact_dir("marker-never") / "ran"
    marker.parent.mkdir()
    marker.parent.chmod(0o777)
    source = _saved_sklearn("evil-refused", payload=_marker_payload(marker))

    response = ci.post(
        URL, version_body(mlflow_uri="", artifact_uri=source.as_uri()), format="json"
    )

    assert response.status_code == 400
    message = response.json()["errors"]["artifact_uri"][0]
    assert "is a pickle, which runs code when loaded" in message
    assert "allows only non-executable formats: onnx, skops" in message
    assert not marker.exists()
    assert not ModelVersion.objects.exists()


# --- finding 2: sources, traversal, SSRF, size, time ------------------------------------------


def _refusal(ci, version_body, artifact_uri: str) -> str:
    response = ci.post(URL, version_body(mlflow_uri="", artifact_uri=artifact_uri), format="json")
    assert response.status_code == 400, response.content
    return response.json()["errors"]["artifact_uri"][0]


def test_files_outside_the_roots_get_one_message_whether_they_exist_or_not(
    ci, version_body, tmp_path
):
    outside = tmp_path / "existing-model"
    outside.mkdir()
    (outside / "MLmodel").write_text("flavors: {}\n")
    root = Path(django_settings.MLFLOW_ARTIFACT_ROOT)
    messages = {
        uri: _refusal(ci, version_body, uri)
        for uri in (
            "file:///etc/shadow",
            "file:///nonexistent",
            "/etc/passwd",
            outside.as_uri(),
            f"file://{root}/../../../etc",
            "file://otherhost/etc/passwd",
        )
    }
    assert len(set(messages.values())) == 1, messages
    text = next(iter(messages.values()))
    assert text.startswith(GENERIC)
    assert "/etc" not in text and str(tmp_path) not in text and str(root) not in text
    assert _leftover_temp_dirs() == []


def test_a_symlink_escaping_the_root_gets_the_same_message(ci, version_body, tmp_path):
    outside = tmp_path / "secret"
    outside.write_text("root's secret")
    linked_dir = _artifact_dir("linked-dir")
    linked_dir.symlink_to(tmp_path)  # the artifact itself is a link out of the root
    inside = _saved_sklearn("link-inside")
    (inside / "stolen.txt").symlink_to(outside)  # a file in the artifact links out

    first = _refusal(ci, version_body, linked_dir.as_uri())
    second = _refusal(ci, version_body, inside.as_uri())
    third = _refusal(ci, version_body, "file:///nonexistent")

    assert first == second == third and first.startswith(GENERIC)
    assert _leftover_temp_dirs() == []


def test_http_sources_are_refused_without_a_request(ci, version_body):
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"upstream secret")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        texts = {
            _refusal(ci, version_body, f"http://127.0.0.1:{port}/model"),
            _refusal(ci, version_body, f"https://127.0.0.1:{port}/model"),
            _refusal(ci, version_body, "s3://someone-elses-bucket/model"),
        }
    finally:
        server.shutdown()
        server.server_close()
    assert hits == []
    assert len(texts) == 1 and "upstream secret" not in texts.pop()


def test_a_too_large_artifact_is_refused_and_leaves_no_temp_dir(ci, version_body, settings):
    source = _saved_sklearn("too-large")
    (source / "padding.bin").write_bytes(b"\0" * 200_000)
    settings.ARTIFACT_MAX_BYTES = 100_000

    text = _refusal(ci, version_body, source.as_uri())

    assert "larger than the limit of 100000 bytes" in text
    assert _leftover_temp_dirs() == []
    assert not ModelVersion.objects.exists()


def test_a_too_large_mlflow_version_is_refused_while_downloading(
    ci, version_body, settings, mlflow_models
):
    body = version_body("1.0.0")
    settings.ARTIFACT_MAX_BYTES = 2_000  # the logged model is larger

    response = ci.post(URL, body, format="json")

    assert response.status_code == 400
    assert "larger than the limit" in response.json()["errors"]["mlflow_uri"][0]
    assert _leftover_temp_dirs() == []


def test_a_probe_past_its_time_limit_is_killed_with_400_and_no_temp_dir(ci, version_body, settings):
    source = _saved_sklearn("sleeper", payload=_RunsCode("import time; time.sleep(3600)"))
    settings.ARTIFACT_PROBE_TIMEOUT = 3

    text = _refusal(ci, version_body, source.as_uri())

    assert "did not finish within 3 s" in text
    assert _leftover_temp_dirs() == []
    assert not ModelVersion.objects.exists()


def test_leftover_temp_dirs_are_swept_after_an_hour(settings):
    from registry.tasks import sweep_orphans

    root = Path(settings.ARTIFACT_CACHE_DIR)
    root.mkdir(parents=True, exist_ok=True)
    old = [root / "fetch-killed", root / "log-killed", root / "probe-killed"]
    fresh = root / "log-running"
    kept = root / ("sha256-" + "ab" * 32)
    for path in [*old, fresh, kept]:
        path.mkdir(exist_ok=True)
        (path / "data").write_bytes(b"x" * 10)
    two_hours_ago = __import__("time").time() - 7200
    for path in [*old, kept]:
        os.utime(path, (two_hours_ago, two_hours_ago))

    removed = sweep_orphans()

    assert sorted(removed) == sorted(p.name for p in old)
    assert not any(p.exists() for p in old)
    assert fresh.exists() and kept.exists()
    shutil.rmtree(fresh)
    shutil.rmtree(kept)


# --- finding 5: strict URIs, canonical comparison, one MLflow model per platform model --------


@pytest.mark.parametrize(
    "uri",
    [
        "models:/hotspot/01",
        "models:/hotspot/+1",
        "models:/hotspot/1 ",
        " models:/hotspot/1",
        "models:/hotspot/0",
        "models:/hotspot/1\n",
        "models:/hotspot/1.0",
    ],
)
def test_non_canonical_mlflow_uris_are_refused(ci, version_body, uri):
    response = ci.post(URL, version_body(mlflow_uri=uri), format="json")
    assert response.status_code == 400
    assert "plain positive integer" in response.json()["errors"]["mlflow_uri"][0]


def test_aliases_are_refused_with_a_clear_message(ci, version_body):
    response = ci.post(URL, version_body(mlflow_uri="models:/hotspot@production"), format="json")
    assert response.status_code == 400
    assert "aliases are not accepted" in response.json()["errors"]["mlflow_uri"][0]


def test_a_zero_padded_version_cannot_claim_an_mlflow_version_twice(ci, version_body):
    first = version_body("1.0.0")
    assert ci.post(URL, first, format="json").status_code == 201
    name, number = mlflow_bridge.parse_models_uri(first["mlflow_uri"])
    padded = version_body("1.0.1", mlflow_uri=f"models:/{name}/0{number}")
    response = ci.post(URL, padded, format="json")
    assert response.status_code == 400
    assert ModelVersion.objects.count() == 1


def test_another_models_mlflow_versions_cannot_back_this_model(ci, version_body, mlflow_models):
    race_uri = mlflow_models("race")
    name, number = mlflow_bridge.parse_models_uri(race_uri)
    client = mlflow_bridge.client()
    client.set_registered_model_alias(name, "production", number)
    tags_before = dict(client.get_model_version(name, number).tags)

    for field in ("mlflow_uri", "artifact_uri"):
        body = version_body(**{"mlflow_uri": "", field: race_uri})
        response = ci.post(URL, body, format="json")
        assert response.status_code == 400
        message = response.json()["errors"][field][0]
        assert "'race' does not back model 'hotspot'" in message

    assert dict(client.get_model_version(name, number).tags) == tags_before
    assert str(client.get_model_version_by_alias(name, "production").version) == number
    assert not ModelVersion.objects.exists()


def test_an_ml_lead_can_map_another_mlflow_model(
    ci, lead, version_body, mlflow_models, django_capture_on_commit_callbacks
):
    mapped = mlflow_models("hotspot-legacy", seed=3)
    response = lead.put(
        "/api/v1/models/hotspot/artifact-policy/",
        {"mlflow_name": "hotspot-legacy", "reason": "the MLflow name predates the platform"},
        format="json",
    )
    assert response.status_code == 200, response.content
    with django_capture_on_commit_callbacks(execute=True):
        response = ci.post(URL, version_body(mlflow_uri=mapped), format="json")
    assert response.status_code == 201, response.content
    name, number = mlflow_bridge.parse_models_uri(mapped)
    assert mlflow_bridge.client().get_model_version(name, number).tags["governance.stage"] == (
        "development"
    )


# --- provenance, formats, signature -----------------------------------------------------------


def test_provenance_is_stored_and_shown(ci, version_body, monkeypatch):
    import mlflow.pyfunc

    monkeypatch.setattr(mlflow.pyfunc, "load_model", None)  # the web process must not need it
    body = version_body("1.0.0")
    response = ci.post(URL, body, format="json")
    assert response.status_code == 201, response.content
    name, number = mlflow_bridge.parse_models_uri(body["mlflow_uri"])
    mv = mlflow_bridge.client().get_model_version(name, number)
    shown = response.json()
    assert shown["mlflow_run_id"] == mv.run_id and mv.run_id
    assert shown["registered_by"] == "ci-hotspot"
    assert shown["serialization_format"] == "cloudpickle" and shown["executable"] is True
    assert [i["name"] for i in shown["signature"]["inputs"]] == FEATURES
    assert shown["source_commit"] == ""
    version = ModelVersion.objects.get()
    assert version.mlflow_run_id == mv.run_id and version.registered_by.username == "ci-hotspot"
    assert mlflow_bridge.cache_path(version.artifact_digest).is_dir()  # where the gateway looks


def test_provenance_fields_are_immutable(ci, version_body):
    from django.core.exceptions import ValidationError

    assert ci.post(URL, version_body("1.0.0"), format="json").status_code == 201
    version = ModelVersion.objects.get()
    version.serialization_format = "onnx"
    with pytest.raises(ValidationError, match="serialization_format"):
        version.save()


def _log_onnx(name: str) -> str:
    import mlflow
    import mlflow.onnx
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    frame, labels = _training_frame(1)
    model = LogisticRegression().fit(frame.to_numpy(np.float32), labels)
    onx = to_onnx(model, frame.to_numpy(np.float32)[:1], options={"zipmap": False})
    with mlflow.start_run(experiment_id=mlflow_bridge.ensure_experiment()):
        info = mlflow.onnx.log_model(onx, name="model", registered_model_name=name)
    return f"models:/{name}/{info.registered_model_version}"


def _log_skops(name: str, commit: str) -> tuple[str, str]:
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    from demo.mlflow_logging import PIP_REQUIREMENTS

    frame, labels = _training_frame(2)
    model = LogisticRegression().fit(frame, labels)
    with mlflow.start_run(experiment_id=mlflow_bridge.ensure_experiment()) as run:
        mlflow.set_tag("mlflow.source.git.commit", commit)
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=name,
            serialization_format="skops",
            signature=infer_signature(frame, model.predict_proba(frame)),
            pip_requirements=[*PIP_REQUIREMENTS, "skops"],
        )
    return f"models:/{name}/{info.registered_model_version}", run.info.run_id


def test_onnx_and_skops_artifacts_register_under_a_no_executables_policy(api_client, version_body):
    for name in ("onnx-model", "skops-model"):
        services.model_register(name=name, actor=SYSTEM)
    lead = api_client("ml_lead", username="lee-lead")
    ci = api_client("ci", username="ci-any")
    for name in ("onnx-model", "skops-model"):
        response = lead.put(
            f"/api/v1/models/{name}/artifact-policy/",
            {"allow_executable": False, "reason": "onnx and skops only"},
            format="json",
        )
        assert response.status_code == 200, response.content

    onnx_uri = _log_onnx("onnx-model")
    response = ci.post(
        "/api/v1/models/onnx-model/versions/",
        version_body(mlflow_uri=onnx_uri),
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["serialization_format"] == "onnx"
    assert response.json()["executable"] is False

    commit = "0123456789abcdef0123456789abcdef01234567"
    skops_uri, run_id = _log_skops("skops-model", commit)
    response = ci.post(
        "/api/v1/models/skops-model/versions/",
        version_body(mlflow_uri=skops_uri),
        format="json",
    )
    assert response.status_code == 201, response.content
    shown = response.json()
    assert (shown["serialization_format"], shown["executable"]) == ("skops", False)
    assert (shown["mlflow_run_id"], shown["source_commit"]) == (run_id, commit)


def test_a_feature_list_that_disagrees_with_the_signature_is_400(ci, version_body):
    body = version_body("1.0.0", feature_list=["f1", "f2", "f4"])
    response = ci.post(URL, body, format="json")
    assert response.status_code == 400
    message = response.json()["errors"]["feature_list"][0]
    assert "missing f3" in message and "not in the signature: f4" in message
    assert not ModelVersion.objects.exists()


# --- the artifact policy endpoint -------------------------------------------------------------

POLICY = "/api/v1/models/hotspot/artifact-policy/"


def test_policy_defaults_are_shown(ci):
    response = ci.get(POLICY)
    assert response.status_code == 200
    assert response.json() == {
        "model": "hotspot",
        "allowed_flavors": [],
        "allow_executable": True,
        "mlflow_name": "hotspot",
        "non_executable_formats": ["onnx", "skops"],
        "reason": "",
        "updated_by": "",
        "updated_at": None,
    }


def test_only_an_ml_lead_of_the_model_changes_the_policy(api_client, ci):
    services.model_register(name="other", actor=SYSTEM)
    body = {"allow_executable": False, "reason": "security review"}
    assert ci.put(POLICY, body, format="json").status_code == 403
    engineer = api_client("ml_engineer", username="erin2", model="hotspot")
    assert engineer.put(POLICY, body, format="json").status_code == 403
    elsewhere = api_client("ml_lead", username="lead-other", model="other")
    assert elsewhere.put(POLICY, body, format="json").status_code == 403
    lead = api_client("ml_lead", username="lead-hotspot", model="hotspot")
    response = lead.put(POLICY, {**body, "allowed_flavors": ["onnx"]}, format="json")
    assert response.status_code == 200
    assert response.json()["allow_executable"] is False
    assert response.json()["allowed_flavors"] == ["onnx"]
    event = AuditEvent.objects.get(action="registry.artifact_policy_updated")
    assert event.before["allow_executable"] is True and event.after["allow_executable"] is False
    assert event.reason == "security review" and "lead-hotspot" in event.actor


def test_policy_input_errors_name_the_field(lead):
    services.model_register(name="taken", actor=SYSTEM)
    response = lead.put(
        POLICY,
        {
            "allowed_flavors": ["onnx", "Bad Flavour"],
            "allow_executable": "no",
            "mlflow_name": "a/b",
        },
        format="json",
    )
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert set(errors) == {"allowed_flavors.1", "allow_executable", "mlflow_name", "reason"}
    response = lead.put(POLICY, {"mlflow_name": "taken", "reason": "x"}, format="json")
    assert response.status_code == 400
    assert "already backs model 'taken'" in response.json()["errors"]["mlflow_name"][0]
    assert (
        lead.put(POLICY, {"allowed_flavors": "onnx", "reason": "x"}, format="json").status_code
        == 400
    )
    assert not AuditEvent.objects.filter(action="registry.artifact_policy_updated").exists()


def test_a_flavour_outside_the_policy_is_refused(ci, lead, version_body):
    lead.put(POLICY, {"allowed_flavors": ["onnx"], "reason": "onnx only"}, format="json")
    response = ci.post(URL, version_body("1.0.0"), format="json")
    assert response.status_code == 400
    assert "flavour is 'sklearn'" in response.json()["errors"]["mlflow_uri"][0]


def test_the_policy_and_provenance_are_in_the_schema(api_client):
    response = api_client("auditor").get("/api/schema/", {"format": "json"})
    schema = response.json()
    assert "/api/v1/models/{name}/artifact-policy/" in schema["paths"]
    assert "put" in schema["paths"]["/api/v1/models/{name}/artifact-policy/"]
    version = schema["components"]["schemas"]["Version"]["properties"]
    for field in ("mlflow_run_id", "source_commit", "serialization_format", "executable"):
        assert field in version and version[field].get("readOnly") is True
