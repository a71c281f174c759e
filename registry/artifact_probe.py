"""The artifact probe: runs in an isolated child (``python -m registry.artifact_probe``).

It downloads or copies one artifact into the directory it is given, refuses what is too large or
escapes its root, reads the MLmodel file and signature, classifies the serialization format,
applies the model's artifact policy, hashes the files and then - only if the policy allows it -
loads the model as pyfunc and predicts its own input example. Loading a pickle runs code: that is
why this happens here and not in the web process (``registry.sandbox`` starts, limits and kills
this process and removes its directory).

Protocol: one JSON request on stdin; JSON lines on the original stdout. The first line with
``"stage": "facts"`` is written and flushed *before* any artifact code can run, so a malicious
model cannot rewrite what the parent decides on; a later ``"stage": "loaded"`` line only says the
load and predict worked. A failure is a line ``{"error": code}``. Error lines carry codes, not
exception texts, so no upstream answer or server path reaches the API caller. Nothing here
imports Django.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import traceback
from pathlib import Path
from typing import Any

import yaml

NON_EXECUTABLE = frozenset({"onnx", "skops"})
# skops reads its trusted-types list from the MLmodel file itself: types outside these packages
# would let a crafted artifact whitelist code, so such a skops artifact counts as executable.
SKOPS_SAFE_PREFIXES = ("sklearn.", "numpy.", "scipy.")
COMMIT_TAG = "mlflow.source.git.commit"


class ProbeError(Exception):
    """A refusal with a code the parent turns into a message; ``detail`` is safe to show."""

    def __init__(self, code: str, detail: str = ""):
        self.code, self.detail = code, detail
        super().__init__(code)


def directory_digest(path: Path) -> str:
    """sha256 over every file's relative path and bytes, in sorted order."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode())
        digest.update(b"\0")
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return "sha256:" + digest.hexdigest()


def tree_size(path: Path) -> int:
    """Bytes of the regular files under ``path`` (links are not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


# --- getting the files ---------------------------------------------------------------------------


def copy_tree(source: Path, root: Path, dest: Path, max_bytes: int) -> None:
    """Copy a local artifact without following links out of ``root``, stopping at ``max_bytes``.

    Special files (FIFOs, devices, sockets) and links whose target leaves the root are refused
    with the same code as a source outside the roots.
    """
    if not source.is_relative_to(root):
        raise ProbeError("source_not_allowed")
    try:
        top = os.lstat(source)
    except OSError:
        raise ProbeError("source_not_allowed") from None
    if not stat.S_ISDIR(top.st_mode):
        raise ProbeError("source_not_allowed")
    planned: list[tuple[Path, Path]] = []
    total = 0
    for dirpath, dirs, files in os.walk(source):
        for name in [*dirs, *files]:
            entry = Path(dirpath) / name
            info = os.lstat(entry)
            if stat.S_ISLNK(info.st_mode):
                if not Path(os.path.realpath(entry)).is_relative_to(root):
                    raise ProbeError("source_not_allowed")
                info = os.stat(entry)
            if stat.S_ISDIR(info.st_mode):
                continue
            if not stat.S_ISREG(info.st_mode):
                raise ProbeError("source_not_allowed")
            total += info.st_size
            if total > max_bytes:
                raise ProbeError("too_large")
            planned.append((entry, dest / entry.relative_to(source)))
        # a linked directory is not descended into by os.walk: copy what it holds only if inside
        for name in list(dirs):
            if os.path.islink(Path(dirpath) / name):
                raise ProbeError("source_not_allowed")
    copied = 0
    dest.mkdir(parents=True, exist_ok=True)
    for src, dst in planned:
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(src, "rb") as reader, open(dst, "wb") as writer:
            for chunk in iter(lambda r=reader: r.read(1 << 20), b""):
                copied += len(chunk)
                if copied > max_bytes:  # a file grew while copied
                    raise ProbeError("too_large")
                writer.write(chunk)


def download(request: dict[str, Any], dest: Path) -> dict[str, Any]:
    """Fetch the artifact into ``dest``; returns what MLflow knows of its origin."""
    kind, uri, max_bytes = request["kind"], request["source"], int(request["max_bytes"])
    if kind == "file":
        copy_tree(Path(uri), Path(request["root"]), dest, max_bytes)
        return {}
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(request["tracking_uri"])
    mlflow.set_registry_uri(request["registry_uri"])
    client = MlflowClient(
        tracking_uri=request["tracking_uri"], registry_uri=request["registry_uri"]
    )
    origin: dict[str, Any] = {}
    if kind == "models":
        try:
            mv = client.get_model_version(request["name"], request["version"])
        except Exception:
            raise ProbeError("no_such_version") from None
        if mv.name != request["name"] or str(mv.version) != request["version"]:
            raise ProbeError("no_such_version")
        origin = {
            "mlflow_name": mv.name,
            "mlflow_version": str(mv.version),
            "source": mv.source or "",
            "run_id": mv.run_id or "",
            "created_ms": mv.creation_timestamp,
        }
    elif kind == "runs":
        origin = {"run_id": uri.split("/")[1]}
    staging = dest.parent / "download"
    staging.mkdir()
    try:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=uri,
                dst_path=str(staging),
                tracking_uri=request["tracking_uri"],
                registry_uri=request["registry_uri"],
            )
        )
    except OSError as exc:
        if exc.errno == 27:  # EFBIG: the RLIMIT_FSIZE the parent set stopped a large file
            raise ProbeError("too_large") from None
        raise ProbeError("download_failed") from None
    except Exception:
        raise ProbeError("download_failed") from None
    if not local.is_dir():
        raise ProbeError("not_mlflow_model")
    for dirpath, dirs, files in os.walk(local):
        for name in [*dirs, *files]:
            if os.path.islink(Path(dirpath) / name):
                raise ProbeError("source_not_allowed")
    if tree_size(local) > max_bytes:
        raise ProbeError("too_large")
    os.replace(local, dest)
    if origin.get("run_id"):
        try:
            run = client.get_run(origin["run_id"])
            origin["source_commit"] = run.data.tags.get(COMMIT_TAG, "")
            origin["run_started_ms"] = run.info.start_time
        except Exception:
            print("run of the artifact not found", file=sys.stderr)
    return origin


# --- what the artifact is ------------------------------------------------------------------------


def read_mlmodel(path: Path) -> dict[str, Any]:
    mlmodel = path / "MLmodel"
    if not mlmodel.is_file():
        raise ProbeError("not_mlflow_model", "it has no MLmodel file")
    try:
        data = yaml.safe_load(mlmodel.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError):
        raise ProbeError("not_mlflow_model", "its MLmodel file is not valid YAML") from None
    if not isinstance(data, dict) or not isinstance(data.get("flavors"), dict):
        raise ProbeError("not_mlflow_model", "its MLmodel file lists no flavours")
    return data


def classify(mlmodel: dict[str, Any]) -> dict[str, Any]:
    """Flavour, serialization format and whether loading it runs code from the artifact."""
    flavors: dict[str, Any] = mlmodel["flavors"]
    pyfunc = flavors.get("python_function")
    if not isinstance(pyfunc, dict):
        raise ProbeError("no_pyfunc")
    specific = sorted(f for f in flavors if f != "python_function")
    flavor = specific[0] if specific else "python_function"
    loader = str(pyfunc.get("loader_module") or "")
    custom_code = bool(pyfunc.get("code")) or any(
        isinstance(conf, dict) and conf.get("code") for conf in flavors.values()
    )
    if "onnx" in flavors and loader == "mlflow.onnx":
        fmt = "onnx"
    elif "sklearn" in flavors and loader == "mlflow.sklearn":
        conf = flavors["sklearn"] if isinstance(flavors["sklearn"], dict) else {}
        fmt = str(conf.get("serialization_format") or "pickle")
        if fmt not in ("pickle", "cloudpickle", "skops"):
            fmt = "other"
        trusted = conf.get("skops_trusted_types") or []
        if fmt == "skops" and any(
            not str(t).startswith(SKOPS_SAFE_PREFIXES) for t in trusted if isinstance(t, str)
        ):
            custom_code = True  # the artifact whitelists types of its own choosing
    elif pyfunc.get("python_model") or pyfunc.get("cloudpickle_version"):
        fmt = "cloudpickle"
    elif "pickle" in str(pyfunc.get("model_path") or "") or loader.endswith("pickle"):
        fmt = "pickle"
    else:
        fmt = "other"
    # a loader module of the model's own, or code it ships, runs whatever the format
    executable = fmt not in NON_EXECUTABLE or custom_code or not loader.startswith("mlflow.")
    return {"flavor": flavor, "serialization_format": fmt, "executable": executable}


def signature(mlmodel: dict[str, Any]) -> dict[str, Any] | None:
    """The signature's inputs and outputs as ``[{"name", "type"}]``, or None when none is logged."""
    sig = mlmodel.get("signature")
    if not isinstance(sig, dict) or not sig.get("inputs"):
        return None
    shown: dict[str, Any] = {}
    for part in ("inputs", "outputs"):
        try:
            specs = json.loads(sig[part]) if isinstance(sig.get(part), str) else sig.get(part)
        except ValueError:
            specs = None
        if not isinstance(specs, list):
            shown[part] = []
            continue
        shown[part] = [
            {
                "name": spec.get("name"),
                "type": spec.get("type")
                if spec.get("type") != "tensor"
                else f"tensor<{(spec.get('tensor-spec') or {}).get('dtype', '?')}>",
            }
            for spec in specs
            if isinstance(spec, dict)
        ]
    return shown


def apply_policy(facts: dict[str, Any], policy: dict[str, Any]) -> None:
    allowed = list(policy.get("allowed_flavors") or [])
    if allowed and facts["flavor"] not in allowed:
        raise ProbeError("flavor_not_allowed", str(facts["flavor"]))
    if facts["executable"] and not policy.get("allow_executable", True):
        raise ProbeError("executable_not_allowed", str(facts["serialization_format"]))


def probe_load(path: Path) -> None:
    """Load as the gateway will (pyfunc) and predict the logged input example, if any."""
    import mlflow.pyfunc

    try:
        model = mlflow.pyfunc.load_model(str(path))
    except MemoryError:
        raise ProbeError("out_of_memory") from None
    except Exception as exc:
        raise ProbeError("load_failed", type(exc).__name__) from None
    try:
        from mlflow.models import Model

        example = Model.load(str(path)).load_input_example(str(path))
    except Exception:
        example = None
    if example is None:
        return
    try:
        model.predict(example)
    except MemoryError:
        raise ProbeError("out_of_memory") from None
    except Exception as exc:
        raise ProbeError("predict_failed", type(exc).__name__) from None


# --- main ----------------------------------------------------------------------------------------


def run(request: dict[str, Any], emit) -> None:
    dest = Path(request["dest"])
    origin = download(request, dest)
    mlmodel = read_mlmodel(dest)
    facts = classify(mlmodel)
    facts.update(
        signature=signature(mlmodel),
        digest=directory_digest(dest),
        size=tree_size(dest),
        run_id=origin.get("run_id") or str(mlmodel.get("run_id") or ""),
        source_commit=origin.get("source_commit", ""),
        **{k: v for k, v in origin.items() if k not in ("run_id", "source_commit")},
    )
    apply_policy(facts, request.get("policy") or {})
    emit({"stage": "facts", **facts})  # before any artifact code can run
    if request.get("load", True):
        probe_load(dest)
    emit({"stage": "loaded"})


def run_safely(request: dict[str, Any], emit) -> None:
    try:
        run(request, emit)
    except ProbeError as exc:
        emit({"error": exc.code, "detail": exc.detail})
    except MemoryError:
        emit({"error": "out_of_memory"})
    except Exception:
        traceback.print_exc()
        emit({"error": "probe_failed"})


def apply_limits(limits: dict[str, Any]) -> None:
    """Address space, file size, no core dumps, and the unprivileged user (set by the parent)."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (limits["memory"], limits["memory"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["fsize"], limits["fsize"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.umask(0o022)
    if limits.get("uid") is not None:
        os.setgroups([])
        os.setgid(limits["gid"])
        os.setuid(limits["uid"])


# Imported once by the zygote (each costs seconds): MLflow's client and stores, and the libraries
# the platform's flavours load with. Missing optional ones are skipped.
PRELOAD = (
    "mlflow",
    "mlflow.pyfunc",
    "mlflow.artifacts",
    "mlflow.models",
    "mlflow.sklearn",
    "mlflow.onnx",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "mlflow.store.artifact.local_artifact_repository",
    "cloudpickle",
    "sklearn",
    "sklearn.linear_model",
    "sklearn.ensemble",
    "skops.io",
    "onnxruntime",
)


def warm_requirement_checks() -> None:
    """Work out once, for every child to inherit, the map MLflow builds on each model load to
    compare the model's requirements with this environment: it reads every installed
    distribution's file list (0.4-1 s a probe otherwise; the map only changes when packages
    are installed, which restarts the zygote's parent anyway). A private MLflow function: if it
    moves, each child builds the map itself, as before."""
    try:
        from mlflow.utils import requirements_utils

        requirements_utils._init_modules_to_packages_map()
    except Exception:  # only a speed-up
        print("probe zygote: could not pre-build MLflow's requirements map", file=sys.stderr)


def serve() -> int:
    """The zygote: import MLflow once, then fork one limited child per request line.

    Forking a warm interpreter saves the seconds MLflow takes to import. The zygote holds
    nothing secret (its environment is the scrubbed one) and never runs artifact code itself:
    each child starts a new session, closes every inherited descriptor but stderr and its own
    result pipe, applies the limits and drops privileges before it reads the artifact. The
    zygote relays the child's lines to the parent as ``{"pid"}``, ``{"line"}`` and ``{"exit"}``.
    """
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    for module in PRELOAD:
        try:
            __import__(module)
        except ImportError:
            print(f"probe zygote: {module} not importable", file=sys.stderr)
    warm_requirement_checks()

    def send(payload: dict[str, Any]) -> None:
        out.write(json.dumps(payload) + "\n")
        out.flush()

    send({"ready": True})
    for raw in sys.stdin:
        request = json.loads(raw)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            try:
                os.setsid()
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                os.dup2(2, 1)
                keep = sorted({0, 1, 2, write_fd})
                os.closerange(3, keep[-1])
                os.closerange(keep[-1] + 1, 65536)
                apply_limits(request.pop("limits"))
                if request.get("home"):  # temporary files go to this probe's directory
                    import tempfile

                    os.environ["HOME"] = os.environ["TMPDIR"] = request["home"]
                    tempfile.tempdir = None
                channel = os.fdopen(write_fd, "w")

                def emit(payload: dict[str, Any], channel=channel) -> None:
                    channel.write(json.dumps(payload, default=str) + "\n")
                    channel.flush()

                run_safely(request, emit)
            finally:
                os._exit(0)
        os.close(write_fd)
        send({"pid": pid})
        with os.fdopen(read_fd, errors="replace") as results:
            for line in results:
                send({"line": line[:100_000]})
        _, status = os.waitpid(pid, 0)
        send({"exit": os.waitstatus_to_exitcode(status)})
    return 0


def main() -> int:
    if "--serve" in sys.argv[1:]:
        return serve()
    # One request on stdin. Artifact code may print: keep the result channel for ourselves.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def emit(payload: dict[str, Any]) -> None:
        out.write(json.dumps(payload, default=str) + "\n")
        out.flush()

    run_safely(json.loads(sys.stdin.read()), emit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
