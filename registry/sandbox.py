"""Run the artifact probe (``registry.artifact_probe``) in an isolated, limited child process.

How: each web process keeps one warm "zygote" (``python -m registry.artifact_probe --serve``,
cwd = BASE_DIR, started with a scrubbed environment) that has MLflow imported - importing it takes
seconds - and forks one child per probe. Nothing of an artifact is ever read by the zygote.

What is isolated: each probe child runs in its own session and process group, killed as a group
on timeout or when its directory outgrows
``ARTIFACT_MAX_BYTES``; its address space (``RLIMIT_AS``), file size (``RLIMIT_FSIZE``) and core
dumps are limited; its environment is scrubbed (no Django secret key, no database or broker URL,
only what MLflow needs to read the artifact store); when the web process is root it drops to
``ARTIFACT_PROBE_USER`` (nobody), so artifact code cannot write the project's files, the database
files or the cache, nor read root-only files. Its temporary directory is always removed by the
parent, also after a kill. The parent never unpickles: it only reads the child's JSON lines,
re-hashes the files after the child has exited and moves them into the cache atomically.

What is not isolated: the network (artifact code can open connections), files readable by the
probe user, the MLflow tracking URI and store credentials it is given, and (when the web process
is not root) the web process's own uid. A grandchild that leaves the process group can outlive the
kill. Treat whoever may register as trusted like code; the probe stops accidents and drive-by
payloads in the web process, not a determined attacker with a registration token.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from .artifact_probe import directory_digest, tree_size

logger = logging.getLogger(__name__)

TEMP_PREFIXES = ("probe-", "fetch-", "log-")
# Environment the child keeps: what MLflow needs to reach the artifact store, nothing else.
_KEPT_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
_KEPT_PREFIXES = ("MLFLOW_", "AWS_", "AZURE_STORAGE_", "GOOGLE_APPLICATION_CREDENTIALS")
_DROPPED = ("MLFLOW_TRACKING_TOKEN_FILE",)


class ProbeFailed(Exception):
    """The probe refused the artifact; ``code`` says why, ``detail`` is safe to show."""

    def __init__(self, code: str, detail: str = ""):
        self.code, self.detail = code, detail
        super().__init__(f"{code}: {detail}" if detail else code)


@dataclass
class Probed:
    """What the child found, and where the verified copy now lies (``path``)."""

    facts: dict[str, Any]
    staging: Path
    path: Path
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def cleanup(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def cache_root() -> Path:
    root = Path(settings.ARTIFACT_CACHE_DIR)
    root.mkdir(parents=True, exist_ok=True)
    return root


def _probe_user() -> pwd.struct_passwd | None:
    name = getattr(settings, "ARTIFACT_PROBE_USER", "nobody")
    if os.geteuid() != 0 or not name:
        return None
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        logger.warning("ARTIFACT_PROBE_USER %r does not exist: the probe runs as root", name)
        return None
    # the forked child imports lazily from the standard library, the venv and the project
    needed = [Path(os.__file__).resolve().parent, Path(settings.BASE_DIR), cache_root()]
    store = str(settings.MLFLOW_TRACKING_URI)
    if store.startswith("sqlite:///"):
        needed.append(Path(store.removeprefix("sqlite:///")))
    blocked = [str(p) for p in needed if not _reachable(user, p)]
    if blocked:
        logger.warning(
            "the probe runs as root: ARTIFACT_PROBE_USER %r cannot reach %s", name, blocked
        )
        return None
    return user


def _reachable(user: pwd.struct_passwd, path: Path) -> bool:
    """Whether ``user`` may traverse to ``path`` and read it, judged from the mode bits."""
    try:
        chain = [*reversed(path.parents), path]
        for i, part in enumerate(chain):
            info = os.stat(part)
            if info.st_uid == user.pw_uid:
                bits = info.st_mode >> 6
            elif info.st_gid == user.pw_gid:
                bits = info.st_mode >> 3
            else:
                bits = info.st_mode
            wanted = 0o4 if i == len(chain) - 1 else 0o1
            if os.path.isdir(part):
                wanted |= 0o1
            if bits & wanted != wanted:
                return False
    except OSError:
        return False
    return True


def _environment(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if (k in _KEPT_ENV or k.startswith(_KEPT_PREFIXES)) and k not in _DROPPED
    }
    env.update(
        HOME=str(home),
        TMPDIR=str(home),
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONHASHSEED="0",
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        GIT_PYTHON_REFRESH="quiet",
    )
    return env


def _own(path: Path, uid: int, gid: int) -> None:
    for dirpath, dirs, files in os.walk(path):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirs + files)]:
            os.lchown(name, uid, gid)


def run_probe(request: dict[str, Any]) -> Probed:
    """Run the probe on ``request`` (see ``artifact_probe``); ``ProbeFailed`` when it refuses.

    The caller owns the returned staging directory: ``Probed.cleanup()`` removes it (whatever
    was moved out of it into the cache stays).
    """
    staging = Path(tempfile.mkdtemp(prefix="probe-", dir=cache_root()))
    try:
        return _run(request, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


class _Zygote:
    """One warm ``python -m registry.artifact_probe --serve`` per web process (see the module)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.process: subprocess.Popen | None = None
        self.owner = 0
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def ensure(self, home: Path, timeout: float) -> subprocess.Popen:
        alive = self.process is not None and self.process.poll() is None
        if alive and self.owner == os.getpid():
            return self.process
        self.stop()
        self.lines = queue.Queue()
        self.owner = os.getpid()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "registry.artifact_probe", "--serve"],
            cwd=str(settings.BASE_DIR),
            env=_environment(home),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
        )
        threading.Thread(target=_relay, args=(self.process.stdout, self.lines), daemon=True).start()
        ready = self.next(time.monotonic() + max(timeout, 120.0))
        if not ready or not ready.get("ready"):
            self.stop()
            raise ProbeFailed("probe_failed")
        return self.process

    def next(self, deadline: float) -> dict[str, Any] | None:
        """The zygote's next message; None at the deadline or when it died."""
        while True:
            try:
                return self.lines.get(timeout=max(0.01, min(0.2, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() >= deadline:
                    return None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None and self.owner == os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                self.process.wait(timeout=5)
        self.process = None


_zygote = _Zygote()


def _relay(stream, lines: queue.Queue) -> None:
    for raw in stream:
        lines.put(_parse(raw.decode(errors="replace")))
    lines.put(None)


def _run(request: dict[str, Any], staging: Path) -> Probed:
    max_bytes = int(settings.ARTIFACT_MAX_BYTES)
    timeout = float(settings.ARTIFACT_PROBE_TIMEOUT)
    memory = int(settings.ARTIFACT_PROBE_MEMORY_BYTES)
    user = _probe_user()
    home = staging / "home"
    home.mkdir()
    if user is not None:
        _own(staging, user.pw_uid, user.pw_gid)
    dest = staging / "artifact"
    limits = {
        "memory": memory,
        "fsize": max_bytes + 1,
        "uid": user.pw_uid if user else None,
        "gid": user.pw_gid if user else None,
    }
    payload = {
        **request,
        "dest": str(dest),
        "home": str(home),
        "max_bytes": max_bytes,
        "limits": limits,
    }
    with _zygote.lock:
        zygote = _zygote.ensure(cache_root(), timeout)
        started = time.monotonic()
        try:
            zygote.stdin.write((json.dumps(payload) + "\n").encode())
            zygote.stdin.flush()
        except OSError:
            _zygote.stop()
            raise ProbeFailed("probe_failed") from None
        results, exit_code, killed = _supervise(
            staging, started=started, timeout=timeout, max_bytes=max_bytes
        )
        seconds = time.monotonic() - started
    if killed == "timeout":
        raise ProbeFailed("timeout", f"{timeout:g} s")
    if killed == "too_large":
        raise ProbeFailed("too_large")
    facts = next((r for r in results if r.get("stage") == "facts"), None)
    error = next((r for r in results if "error" in r), None)
    if error is not None:
        raise ProbeFailed(str(error["error"]), str(error.get("detail") or "")[:200])
    if exit_code != 0 or facts is None or not any(r.get("stage") == "loaded" for r in results):
        raise ProbeFailed("crashed" if exit_code else "probe_failed")
    if user is not None:  # take the files back before hashing: no probe process may touch them
        _own(staging, os.getuid(), os.getgid())
    os.chmod(staging, 0o700)
    if not dest.is_dir() or tree_size(dest) > max_bytes:
        raise ProbeFailed("too_large")
    if directory_digest(dest) != facts.get("digest"):
        raise ProbeFailed("changed")
    logger.info("artifact probe took %.2f s", seconds)
    return Probed(facts=facts, staging=staging, path=dest, seconds=seconds)


def _supervise(
    staging: Path, *, started: float, timeout: float, max_bytes: int
) -> tuple[list[dict[str, Any]], int, str]:
    """Collect the child's lines; kill its group on timeout or when its files outgrow the limit.

    Returns (result lines, exit code, "" | "timeout" | "too_large").
    """
    pid = 0
    results: list[dict[str, Any]] = []
    while True:
        message = _zygote.next(time.monotonic() + 0.2)
        if message is None and not _zygote.alive():
            _zygote.stop()  # the zygote died: a fresh one starts with the next probe
            return results, -1, ""
        if message:
            if "pid" in message:
                pid = int(message["pid"])
            elif "line" in message and len(results) < 16:
                results.append(_parse(str(message["line"])))
            elif "exit" in message:
                return results, int(message["exit"]), ""
        reason = ""
        if time.monotonic() - started > timeout:
            reason = "timeout"
        elif tree_size(staging) > max_bytes + 1024 * 1024:  # home/ holds a little too
            reason = "too_large"
        if reason:
            _kill(pid)
            return results, -9, reason


def _kill(pid: int) -> None:
    """Kill the child's process group and wait for the zygote to report its exit.

    A descendant that left the group may still hold the result pipe, so the zygote would wait
    on it: then the zygote goes too (a fresh one starts with the next probe).
    """
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid and time.monotonic() < deadline:
        message = _zygote.next(deadline)
        if message is None:
            break
        if "exit" in message:
            return
    _zygote.stop()


def _parse(line: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def move_into_cache(probed: Probed) -> Path:
    """Put the verified copy at ``cache_path(digest)`` by one rename; keep an existing copy."""
    target = cache_root() / probed.facts["digest"].replace(":", "-")
    if not target.exists():
        try:
            os.replace(probed.path, target)
        except OSError:
            if not target.exists():
                raise
    return target


def sweep_temp_dirs(*, older_than_seconds: float) -> list[str]:
    """Remove temporary directories that killed workers left in the artifact cache."""
    root = Path(settings.ARTIFACT_CACHE_DIR)
    if not root.is_dir():
        return []
    cutoff = time.time() - older_than_seconds
    removed = []
    for entry in root.iterdir():
        if not entry.name.startswith(TEMP_PREFIXES) or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            if entry.stat().st_mtime >= cutoff:
                continue
        except OSError:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry.name)
    return removed
