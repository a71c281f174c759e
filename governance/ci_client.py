"""``govctl``: the command a CI pipeline calls to register versions, submit evidence and ask for
transitions. Standard library only, so a pipeline can run it without Django installed.

Exit status: 0 success; 1 a gate blocked (an evaluation that did not pass, a refused transition);
2 a usage, network or HTTP error. Every POST carries an ``Idempotency-Key``, so a retried step
(by this client or by a re-run of the same CI pipeline) changes nothing twice; while the server
still processes an earlier request with the key (409 with ``Retry-After``) the client waits and asks
again, for at most ``--timeout`` seconds in all.

Configuration: ``--url``/``GOVERNANCE_URL`` (the server, e.g. ``https://governance.example``) and
``--token``/``GOVERNANCE_TOKEN`` (prefer the environment: arguments show in process lists).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

OK, BLOCKED, ERROR = 0, 1, 2
RUN_ID_VARIABLES = ("CI_PIPELINE_ID", "GITHUB_RUN_ID", "BUILD_TAG")
RETRY_STATUSES = frozenset({502, 503, 504})
TABULAR = {".csv": "text/csv", ".parquet": "application/vnd.apache.parquet"}
TABULAR[".pq"] = TABULAR[".parquet"]
USER_AGENT = "govctl/1"


class UsageError(Exception):
    """A mistake in the command line or a local file: exit 2 before anything is sent."""


@dataclass
class Reply:
    status: int
    body: Any
    reason: str = ""


class Client:
    def __init__(
        self, base_url: str, token: str, *, timeout: float, retries: int, log: TextIO
    ) -> None:
        base = base_url.rstrip("/")
        self.api = base if base.endswith("/api/v1") else base + "/api/v1"
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self.log = log

    def url(self, *parts: str) -> str:
        return self.api + "/" + "/".join(urllib.parse.quote(p, safe="") for p in parts) + "/"

    def request(
        self,
        method: str,
        url: str,
        *,
        data: bytes | None = None,
        content_type: str = "",
        idempotency_key: str = "",
    ) -> Reply:
        headers = {
            "Authorization": f"Token {self.token}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        if content_type:
            headers["Content-Type"] = content_type
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        attempt = 0
        waited = 0.0
        while True:
            req = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return Reply(resp.status, _decode(resp.read()), resp.reason)
            except urllib.error.HTTPError as exc:
                reply = Reply(exc.code, _decode(exc.read()), exc.reason)
                wait = _in_progress_wait(exc) if idempotency_key else None
                if wait is not None:
                    # The same key is still running (e.g. our own earlier attempt that timed out
                    # at a proxy): wait for it, up to as long as we would wait for one response.
                    if waited + wait > self.timeout:
                        raise UsageError(
                            f"HTTP 409 from {method} {url}: an earlier request with "
                            f"Idempotency-Key '{idempotency_key}' is still being processed after "
                            f"{waited:g}s; run the step again later (it will not be applied twice)"
                        ) from None
                    waited += wait
                    self.log.write(
                        "govctl: the server is still processing an earlier request with this "
                        f"Idempotency-Key; asking again in {wait:g}s\n"
                    )
                    time.sleep(wait)
                    continue
                if exc.code not in RETRY_STATUSES or attempt >= self.retries:
                    return reply
                problem = f"HTTP {exc.code}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if attempt >= self.retries:
                    reason = getattr(exc, "reason", exc)
                    raise UsageError(f"cannot reach {url}: {reason}") from None
                problem = str(getattr(exc, "reason", exc))
            attempt += 1
            delay = min(2**attempt, 30)
            self.log.write(f"govctl: {problem}; retrying in {delay}s ({attempt}/{self.retries})\n")
            time.sleep(delay)

    def get(self, *parts: str) -> Reply:
        return self.request("GET", self.url(*parts))

    def post_json(self, parts: Sequence[str], body: Any, *, key: str) -> Reply:
        data = json.dumps(body).encode()
        return self.request(
            "POST",
            self.url(*parts),
            data=data,
            content_type="application/json",
            idempotency_key=key,
        )

    def post_multipart(
        self, parts: Sequence[str], fields: dict[str, str], file: Path, *, key: str
    ) -> Reply:
        data, content_type = encode_multipart(fields, file)
        return self.request(
            "POST", self.url(*parts), data=data, content_type=content_type, idempotency_key=key
        )


def _in_progress_wait(exc: urllib.error.HTTPError) -> float | None:
    """Seconds to wait when the answer is "this Idempotency-Key is still being processed".

    That answer is a 409 with ``Retry-After``; a 409 without it is a refusal (e.g. a gate).
    """
    if exc.code != 409 or exc.headers is None:
        return None
    retry_after = exc.headers.get("Retry-After")
    if retry_after is None:
        return None
    try:
        seconds = float(retry_after)
    except ValueError:  # an HTTP-date: not sent by this server; wait a moment
        seconds = 5.0
    return min(max(seconds, 1.0), 30.0)


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def encode_multipart(fields: dict[str, str], file: Path) -> tuple[bytes, str]:
    """``multipart/form-data`` with the form fields and the file as the part named ``file``."""
    boundary = "govctl-" + uuid.uuid4().hex
    chunks: list[bytes] = []
    for name, value in fields.items():
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    filename = file.name.replace('"', "").replace("\r", "").replace("\n", "")
    content_type = TABULAR.get(file.suffix.lower(), "application/octet-stream")
    chunks.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n".encode()
        + file.read_bytes()
        + b"\r\n"
    )
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def idempotency_key(explicit: str | None, command: str, *material: Any) -> str:
    """The given key; else one derived from the CI run id and the request, so a re-run of the
    same pipeline step replays the first answer; else a fresh key for this invocation's retries."""
    if explicit:
        return explicit
    run_id = next((os.environ[v] for v in RUN_ID_VARIABLES if os.environ.get(v)), "")
    if not run_id:
        return f"govctl-{command}-{uuid.uuid4().hex}"
    digest = hashlib.sha256()
    for part in material:
        digest.update(
            part if isinstance(part, bytes) else json.dumps(part, sort_keys=True).encode()
        )
        digest.update(b"\0")
    return f"govctl-{run_id[:80]}-{command}-{digest.hexdigest()[:32]}"


# --- printing ---------------------------------------------------------------------------


def _flat(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        pairs: list[tuple[str, Any]] = []
        for key, item in value.items():
            pairs += _flat(item, f"{prefix}.{key}" if prefix else str(key))
        return pairs
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        pairs = []
        for index, item in enumerate(value):
            pairs += _flat(item, f"{prefix}[{index}]")
        return pairs
    return [(prefix, value)]


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def print_error(reply: Reply, method: str, url: str, err: TextIO) -> None:
    """The API's error body, field by field: ``{"detail": ..., "errors": {field: [...]}}``."""
    body = reply.body
    err.write(f"govctl: HTTP {reply.status} {reply.reason} from {method} {url}\n")
    if isinstance(body, dict):
        if body.get("detail"):
            err.write(f"  {body['detail']}\n")
        for field, messages in _flat(body.get("errors") or {}):
            listed = messages if isinstance(messages, list) else [messages]
            err.write(f"  {field}: {' '.join(str(m) for m in listed)}\n")
        for reason in body.get("reasons") or []:
            if reason != body.get("detail"):
                err.write(f"  - {reason}\n")
    elif body:
        err.write(f"  {str(body)[:2000]}\n")


def _gate_lines(gate: dict) -> list[str]:
    """The judged numbers next to their limits (``auc 0.81 (min 0.7)``), per attribute where the
    values are grouped; ``--json`` shows everything else the platform computed."""
    values, thresholds = gate.get("values") or {}, gate.get("thresholds") or {}
    limits: dict[str, str] = {}
    for key, limit in thresholds.items():
        for suffix in ("_min", "_max"):
            if key.endswith(suffix):
                limits[key.removesuffix(suffix)] = f"{suffix[1:]} {_show(limit)}"

    def judged(found: dict) -> str:
        return ", ".join(
            f"{stem} {_show(found[stem])} ({limit})"
            for stem, limit in limits.items()
            if stem in found and not isinstance(found[stem], (dict, list))
        )

    lines = [line for line in [judged(values)] if line]
    for name, group in values.items():
        if isinstance(group, dict) and judged(group):
            lines.append(f"{name}: {judged(group)}")
    if not lines:
        scalars = [f"{k} {_show(v)}" for k, v in values.items() if not isinstance(v, (dict, list))]
        lines += [", ".join(scalars)] if scalars else []
        if thresholds:
            lines.append("limits: " + ", ".join(f"{k} {_show(v)}" for k, v in thresholds.items()))
    return lines


def print_report(report: dict, title: str, out: TextIO) -> None:
    verdict = "PASSED" if report.get("passed") else "FAILED"
    policy = report.get("policy_version")
    out.write(f"{title}: {verdict}" + (f" (validation policy v{policy})" if policy else "") + "\n")
    for gate in report.get("gates") or []:
        mark = "pass" if gate.get("passed") else "FAIL"
        lines = _gate_lines(gate)
        head = f"  [{mark}] {gate.get('gate', '?')}"
        if len(lines) == 1:
            out.write(f"{head}: {lines[0]}\n")
        else:
            out.write(head + "\n" + "".join(f"         {line}\n" for line in lines))
        for reason in gate.get("reasons") or []:
            out.write(f"         ! {reason}\n")
    for key in ("summary", "detail"):
        if report.get(key):
            out.write(f"  {key}: {report[key]}\n")
    for reason in report.get("reasons") or []:
        out.write(f"  - {reason}\n")
    if report.get("stage"):
        out.write(f"  stage afterwards: {report['stage']}\n")


# --- commands ---------------------------------------------------------------------------


def _load_json(path: str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"{what}: cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"{what}: {path} is not valid JSON: {exc}") from None


def cmd_register_model(client: Client, args, out: TextIO, err: TextIO) -> int:
    body = {"name": args.name, "description": args.description}
    key = idempotency_key(args.idempotency_key, "register-model", body)
    reply = client.post_json(["models"], body, key=key)
    if reply.status == 201:
        out.write(f"registered model {args.name}\n")
        return OK
    if reply.status == 409:
        out.write(f"model {args.name} already exists\n")
        return OK
    print_error(reply, "POST", client.url("models"), err)
    return ERROR


def version_body(args) -> dict:
    body = _load_json(args.body, "--body") if args.body else {}
    if not isinstance(body, dict):
        raise UsageError("--body: the file must hold a JSON object")
    files = {
        "model_card": args.card,
        "hyperparameters": args.hyperparameters,
        "metrics": args.metrics,
    }
    for field, path in files.items():
        if path:
            body[field] = _load_json(path, f"--{field.replace('_', '-')}")
    flags = {
        "version": args.version,
        "mlflow_uri": args.mlflow_uri,
        "artifact_uri": args.artifact_uri,
        "training_data_hash": args.data_hash,
        "training_data_start": args.data_start,
        "training_data_end": args.data_end,
        "responsible_engineer": args.engineer,
    }
    body.update({k: v for k, v in flags.items() if v is not None})
    if args.features is not None:
        body["feature_list"] = [f.strip() for f in args.features.split(",") if f.strip()]
    if args.threshold is not None:
        body["thresholds"] = {**body.get("thresholds", {}), "decision": args.threshold}
    if "version" not in body:
        raise UsageError("register: give --version (or a --body file with a version)")
    return body


def cmd_register(client: Client, args, out: TextIO, err: TextIO) -> int:
    body = version_body(args)
    key = idempotency_key(args.idempotency_key, "register", args.model, body)
    reply = client.post_json(["models", args.model, "versions"], body, key=key)
    if reply.status == 201:
        if args.json:
            out.write(json.dumps(reply.body, indent=2) + "\n")
        else:
            v = reply.body
            out.write(
                f"registered {args.model} {v.get('version')} (stage {v.get('stage')}, "
                f"artifact {v.get('artifact_digest', '')})\n"
            )
        return OK
    print_error(reply, "POST", client.url("models", args.model, "versions"), err)
    return ERROR


def _evidence_request(args) -> tuple[str, dict | None, Path | None]:
    if args.unit_tests is not None:
        body = {"kind": "unit_tests", "passed": args.unit_tests == "passed"}
        if args.summary:
            body["summary"] = args.summary
        return "unit_tests", body, None
    kind = "validation" if args.validation else "shadow_replay"
    path = Path(args.validation or args.shadow_replay)
    if not path.is_file():
        raise UsageError(f"--{kind.replace('_', '-')}: no file {path}")
    suffix = path.suffix.lower()
    if suffix in TABULAR:
        return kind, None, path
    if suffix != ".json":
        raise UsageError(f"{path}: use a .csv, .parquet or .json file of records")
    data = _load_json(str(path), f"--{kind.replace('_', '-')}")
    if isinstance(data, list):
        return kind, {"kind": kind, "records": data}, None
    if isinstance(data, dict) and isinstance(data.get("records"), list):
        return kind, {**data, "kind": kind}, None
    raise UsageError(f"{path}: expected a JSON list of records or an object with 'records'")


def cmd_evidence(client: Client, args, out: TextIO, err: TextIO) -> int:
    kind, body, file = _evidence_request(args)
    parts = ["models", args.model, "versions", args.version, "evaluations"]
    if file is not None:
        content = file.read_bytes()
        key = idempotency_key(
            args.idempotency_key, "evidence", args.model, args.version, kind, content
        )
        reply = client.post_multipart(parts, {"kind": kind}, file, key=key)
    else:
        key = idempotency_key(args.idempotency_key, "evidence", args.model, args.version, body)
        reply = client.post_json(parts, body, key=key)
    if reply.status in (200, 201) and isinstance(reply.body, dict):
        if args.json:
            out.write(json.dumps(reply.body, indent=2) + "\n")
        else:
            print_report(reply.body, f"{kind} evidence for {args.model} {args.version}", out)
        if reply.body.get("passed"):
            return OK
        err.write(f"govctl: blocked: the {kind} evidence did not pass the gates\n")
        return BLOCKED
    print_error(reply, "POST", client.url(*parts), err)
    return ERROR


def cmd_transition(client: Client, args, out: TextIO, err: TextIO) -> int:
    body = {"transition": args.name, "comment": args.comment}
    parts = ["models", args.model, "versions", args.version, "transitions"]
    key = idempotency_key(args.idempotency_key, "transition", args.model, args.version, body)
    reply = client.post_json(parts, body, key=key)
    if reply.status == 200:
        if args.json:
            out.write(json.dumps(reply.body, indent=2) + "\n")
        else:
            stage = reply.body.get("stage") if isinstance(reply.body, dict) else "?"
            out.write(f"{args.model} {args.version}: {args.name} done, stage {stage}\n")
        return OK
    if reply.status == 409 and isinstance(reply.body, dict):
        out.write(f"{args.model} {args.version}: {args.name} refused\n")
        detail = reply.body.get("detail")
        reasons = reply.body.get("reasons") or ([detail] if detail else [])
        if detail and reasons != [detail]:
            out.write(f"  {detail}\n")
        for reason in reasons:
            out.write(f"  - {reason}\n")
        err.write(f"govctl: blocked: {args.name} is not allowed yet ({len(reasons)} unmet)\n")
        return BLOCKED
    print_error(reply, "POST", client.url(*parts), err)
    return ERROR


STATUS_FIELDS = (
    "stage",
    "mlflow_uri",
    "artifact_digest",
    "flavor",
    "training_data_hash",
    "responsible_engineer",
    "registered_at",
    "promoted_at",
)


def cmd_status(client: Client, args, out: TextIO, err: TextIO) -> int:
    reply = client.get("models", args.model, "versions", args.version)
    if reply.status != 200:
        print_error(reply, "GET", client.url("models", args.model, "versions", args.version), err)
        return ERROR
    if args.json:
        out.write(json.dumps(reply.body, indent=2) + "\n")
        return OK
    out.write(f"{args.model} {reply.body.get('version', args.version)}\n")
    for field in STATUS_FIELDS:
        out.write(f"  {field}: {_show(reply.body.get(field))}\n")
    return OK


# --- the command line -------------------------------------------------------------------


def _common() -> argparse.ArgumentParser:
    """Options accepted before or after the subcommand (SUPPRESS keeps a subparser from
    overwriting what the main parser already read)."""
    common = argparse.ArgumentParser(add_help=False)
    s = argparse.SUPPRESS
    common.add_argument("--url", default=s, help="server URL (default: $GOVERNANCE_URL)")
    common.add_argument("--token", default=s, help="API token (default: $GOVERNANCE_TOKEN)")
    common.add_argument(
        "--idempotency-key",
        default=s,
        help="key for POSTs (default: derived from $CI_PIPELINE_ID/$GITHUB_RUN_ID and the request)",
    )
    common.add_argument(
        "--timeout",
        type=float,
        default=s,
        help="seconds per request, and at most this long waiting on a key still in progress (300)",
    )
    common.add_argument(
        "--retries", type=int, default=s, help="retries on connection errors and 502/503/504 (3)"
    )
    common.add_argument("--json", action="store_true", default=s, help="print the raw response")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="govctl",
        parents=[common],
        description="Talk to the model governance API from a CI pipeline.",
        epilog="Exit status: 0 success, 1 a gate blocked, 2 usage or HTTP error.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # The version a command acts on, the first two positionals of each that takes one.
    one_version = argparse.ArgumentParser(add_help=False)
    one_version.add_argument("model")
    one_version.add_argument("version")

    p = sub.add_parser("register-model", parents=[common], help="register a model (ok if exists)")
    p.add_argument("name")
    p.add_argument("--description", default="")
    p.set_defaults(func=cmd_register_model)

    p = sub.add_parser("register", parents=[common], help="register a version of a model")
    p.add_argument("model")
    p.add_argument("--body", help="JSON file with the whole request body (flags override it)")
    p.add_argument("--version", help="MAJOR.MINOR.PATCH")
    p.add_argument("--mlflow-uri", help="models:/NAME/N of the MLflow version just logged")
    p.add_argument("--artifact-uri", help="an MLflow model directory (instead of --mlflow-uri)")
    p.add_argument("--data-hash", help="training data hash, sha256:<hex>")
    p.add_argument("--data-start", help="first day of the training data (YYYY-MM-DD)")
    p.add_argument("--data-end", help="last day of the training data (YYYY-MM-DD)")
    p.add_argument("--features", help="comma-separated feature list")
    p.add_argument("--threshold", type=float, help="decision threshold")
    p.add_argument("--engineer", help="username of the responsible engineer")
    p.add_argument("--card", help="model card JSON file")
    p.add_argument("--hyperparameters", help="JSON file")
    p.add_argument("--metrics", help="JSON file (stored for reference, never used for gating)")
    p.set_defaults(func=cmd_register)

    p = sub.add_parser(
        "evidence", parents=[common, one_version], help="submit evidence; exit 1 if it fails"
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--unit-tests", choices=["passed", "failed"])
    what.add_argument("--validation", metavar="FILE", help="validation split (.csv/.parquet/.json)")
    what.add_argument("--shadow-replay", metavar="FILE", help="offline replay with timestamps")
    p.add_argument("--summary", help="with --unit-tests: e.g. '412 passed in 38s'")
    p.set_defaults(func=cmd_evidence)

    p = sub.add_parser(
        "transition", parents=[common, one_version], help="request a lifecycle transition"
    )
    p.add_argument("name", help="e.g. submit_for_validation, approve_for_staging, promote")
    p.add_argument("--comment", default="")
    p.set_defaults(func=cmd_transition)

    p = sub.add_parser("status", parents=[common, one_version], help="show a version and its stage")
    p.set_defaults(func=cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    out, err = sys.stdout, sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help is 0, a usage error is 2
        return int(exc.code or 0)
    for name, default in {
        "url": os.environ.get("GOVERNANCE_URL", ""),
        "token": os.environ.get("GOVERNANCE_TOKEN", ""),
        "idempotency_key": None,
        "timeout": 300.0,
        "retries": 3,
        "json": False,
    }.items():
        if not hasattr(args, name):
            setattr(args, name, default)
    if not args.url:
        err.write("govctl: no server: pass --url or set GOVERNANCE_URL\n")
        return ERROR
    if not args.token:
        err.write("govctl: no token: set GOVERNANCE_TOKEN (or pass --token)\n")
        return ERROR
    if args.command == "evidence" and args.summary and args.unit_tests is None:
        err.write("govctl: --summary goes with --unit-tests\n")
        return ERROR
    client = Client(
        args.url, args.token, timeout=args.timeout, retries=max(args.retries, 0), log=err
    )
    try:
        return args.func(client, args, out, err)
    except UsageError as exc:
        err.write(f"govctl: {exc}\n")
        return ERROR


if __name__ == "__main__":
    sys.exit(main())
