"""The two storage backends for tests: this host's directory and a real S3 API.

The S3 backend is a local S3-compatible server (``moto_server``, from the dev dependencies) on
``TEST_S3_ENDPOINT`` (default http://127.0.0.1:5999), which ``.ci/run`` starts. Each test gets
its own prefix in the bucket ``TEST_S3_BUCKET``, removed afterwards. When the server does not
answer, the S3 legs skip saying how to start it, except under ``CI=true``, where they fail.

Use ``use_backend(name, settings, tmp_path)`` from a fixture parametrised over ``BACKENDS``
(the store, evidence and spool tests do): the store's suite runs against both.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from functools import cache

import pytest

from platform_core import storage

BACKENDS = ("local", "s3")
ENDPOINT = os.environ.get("TEST_S3_ENDPOINT", "http://127.0.0.1:5999")
BUCKET = os.environ.get("TEST_S3_BUCKET", "governance-test")
CREDENTIALS = {"STORAGE_S3_ACCESS_KEY": "test", "STORAGE_S3_SECRET_KEY": "test"}


def s3_settings(prefix: str) -> dict[str, str]:
    return {
        "STORAGE_URL": f"s3://{BUCKET}/{prefix}",
        "STORAGE_S3_ENDPOINT": ENDPOINT,
        "STORAGE_S3_REGION": "us-east-1",
        **CREDENTIALS,
    }


def s3_environment(prefix: str) -> dict[str, str]:
    """The same, as a child process's environment (``config.settings.base`` reads it)."""
    return {
        "GOVERNANCE_STORAGE_URL": f"s3://{BUCKET}/{prefix}",
        "AWS_ENDPOINT_URL": ENDPOINT,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
    }


@cache
def s3_unavailable() -> str:
    """Why the S3 server cannot be used ("" when it can); creates the bucket."""
    from urllib.parse import urlparse

    from pyarrow import fs

    url = urlparse(ENDPOINT)
    try:
        client = fs.S3FileSystem(
            access_key="test",
            secret_key="test",
            region="us-east-1",
            allow_bucket_creation=True,
            endpoint_override=url.netloc,
            scheme=url.scheme,
            connect_timeout=2,
            request_timeout=5,
            retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=1),
        )
        client.create_dir(BUCKET)
        client.get_file_info(fs.FileSelector(BUCKET, allow_not_found=True))
    except Exception as exc:  # connection refused, timeout
        return f"no S3 server at {ENDPOINT} ({type(exc).__name__}: {exc})"
    return ""


def require_s3() -> None:
    reason = s3_unavailable()
    if not reason:
        return
    message = (
        f"{reason}: start one with `.venv/bin/moto_server -H 127.0.0.1 -p 5999` "
        "(.ci/run does) or set TEST_S3_ENDPOINT"
    )
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI needs the S3 server: {message}")
    pytest.skip(message)


def use_backend(name: str, settings, tmp_path):
    """Point the settings at ``name``'s storage for one test; yields the storage."""
    settings.VAR_DIR = tmp_path
    if name == "local":
        settings.STORAGE_URL = ""
        yield storage.current()
        return
    require_s3()
    for key, value in s3_settings(f"t-{uuid.uuid4().hex}").items():
        setattr(settings, key, value)
    where = storage.current()
    yield where
    with contextlib.suppress(Exception):
        where.fs.delete_dir_contents(where.base, missing_dir_ok=True)


def keys(prefix: str) -> list[str]:
    """Every stored key under ``prefix``, sorted."""
    return sorted(found.key for found in storage.current().scan(prefix))


class CountingProxy:
    """An HTTP proxy in front of the S3 server that records each request it forwards: a test
    points ``STORAGE_S3_ENDPOINT`` at it to pin how many requests (and of which kind) an
    operation makes, so a change that adds a HEAD or a listing per object fails."""

    def __init__(self, upstream: str = ENDPOINT) -> None:
        import http.client
        import http.server
        import threading
        from urllib.parse import urlparse

        self.requests: list[tuple[str, str, str]] = []  # (method, path?query, Range)
        lock = threading.Lock()
        target = urlparse(upstream)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the S3 client expects

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with lock:
                    proxy.requests.append((self.command, self.path, self.headers.get("Range", "")))
                upstream_connection = http.client.HTTPConnection(target.hostname, target.port)
                try:
                    upstream_connection.request(
                        self.command, self.path, body=body, headers=dict(self.headers)
                    )
                    answer = upstream_connection.getresponse()
                    data = answer.read()
                finally:
                    upstream_connection.close()
                self.send_response_only(answer.status, answer.reason)
                for name, value in answer.getheaders():
                    if name.lower() not in {"transfer-encoding", "connection", "content-length"}:
                        self.send_header(name, value)
                length = answer.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

            def log_message(self, *args) -> None:  # quiet
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kinds(self) -> dict[str, int]:
        """The requests so far by kind: HEAD, GET (an object's bytes), LIST, PUT, POST, DELETE."""
        counts: dict[str, int] = {}
        for method, target, _ in self.requests:
            path, _, query = target.partition("?")
            kind = method
            if method == "GET" and (
                path.rstrip("/").count("/") < 2 or path.endswith("/") or "list-type" in query
            ):
                kind = "LIST"
            counts[kind] = counts.get(kind, 0) + 1
        return counts

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
