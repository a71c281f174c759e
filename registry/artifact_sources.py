"""Which artifact URIs registration may read: an allowlist, checked before anything is fetched.

Who may register is trusted like code, but a CI token must still not read server files, reach
internal URLs or another model's MLflow versions. Allowed are the configured MLflow registry's
``models:/NAME/N`` (NAME = the model's mapped MLflow name) and ``runs:/<run id>/<path>``, and
files or URIs under ``MLFLOW_ARTIFACT_ROOT`` and ``ARTIFACT_SOURCE_ROOTS``. Everything refused
gets the same message, which names neither the path nor whether it exists: nothing is touched on
disk to decide (``realpath`` resolves symlinks without reading files), and the probe child
re-checks every symlink inside the copied tree against the same root.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from django.conf import settings

# NAME: no slash, no alias marker, no whitespace; N: a plain positive integer (no 0-prefix, sign).
_MODELS_URI = re.compile(r"models:/(?P<name>[^/@\s]+)/(?P<version>[1-9][0-9]{0,9})")
_ALIAS_URI = re.compile(r"models:/(?P<name>[^/@\s]+)@(?P<alias>\S*)")
_RUNS_URI = re.compile(r"runs:/(?P<run>[0-9a-f]{32})(?P<path>(/[A-Za-z0-9._-]+)+)/?")


class SourceRefused(ValueError):
    """The URI is not an allowed artifact source; ``str()`` is safe to show the caller."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


@dataclass(frozen=True)
class Source:
    """An allowed source. ``kind``: models, runs, file or uri (a prefix of a non-file root)."""

    kind: str
    uri: str
    name: str = ""
    version: str = ""
    root: str = ""  # file: the resolved root the path lies under; the child re-checks links


def parse_models_uri(uri: str, *, field: str = "mlflow_uri") -> tuple[str, str]:
    """``(name, version)`` of a strict ``models:/NAME/N``; the version is canonical (no 0s)."""
    text = uri if isinstance(uri, str) else ""
    alias = _ALIAS_URI.fullmatch(text)
    if alias is not None:
        raise SourceRefused(
            field,
            f"aliases are not accepted ('@{alias['alias']}' moves; a registration binds one "
            f"version): give the version number, models:/{alias['name']}/<N>",
        )
    match = _MODELS_URI.fullmatch(text)
    if match is None:
        raise SourceRefused(
            field,
            f"{text[:200]!r} is not an MLflow model version URI: use models:/<registered name>/<N> "
            "with N a plain positive integer (no leading zeros, sign or spaces)",
        )
    return match["name"], match["version"]


def refused(field: str, mlflow_name: str) -> SourceRefused:
    """The one message for every refused source: it discloses no path, file or upstream answer."""
    return SourceRefused(
        field,
        f"{field} is not an allowed artifact source: allowed are models:/{mlflow_name}/<N> of the "
        "configured MLflow registry, runs:/<run id>/<path>, and files under the configured "
        "artifact roots (MLFLOW_ARTIFACT_ROOT, ARTIFACT_SOURCE_ROOTS)",
    )


def cross_model(field: str, name: str, model_name: str, mlflow_name: str) -> SourceRefused:
    return SourceRefused(
        field,
        f"MLflow registered model '{name}' does not back model '{model_name}': only "
        f"'{mlflow_name}' does (an ML lead can map another in the model's artifact policy)",
    )


def allowed_roots() -> list[str]:
    """The configured roots: absolute paths (resolved) and URI prefixes (no trailing slash)."""
    roots: list[str] = []
    for root in [settings.MLFLOW_ARTIFACT_ROOT, *getattr(settings, "ARTIFACT_SOURCE_ROOTS", [])]:
        text = str(root).strip()
        if not text:
            continue
        if text.startswith("file:"):
            text = unquote(urlsplit(text).path)
        if text.startswith("/"):
            roots.append(os.path.realpath(text))
        elif "://" in text or text.endswith(":"):
            roots.append(text.rstrip("/"))
    return roots


def check_artifact_uri(
    uri: str, *, model_name: str, mlflow_name: str, field: str = "artifact_uri"
) -> Source:
    """The allowed ``Source`` for ``uri``, or ``SourceRefused`` naming ``field``."""
    if not isinstance(uri, str) or not uri or any(c.isspace() or ord(c) < 32 for c in uri):
        raise refused(field, mlflow_name)
    if uri.startswith("models:"):
        name, version = parse_models_uri(uri, field=field)
        if name != mlflow_name:
            raise cross_model(field, name, model_name, mlflow_name)
        return Source("models", f"models:/{name}/{version}", name=name, version=version)
    if uri.startswith("runs:"):
        match = _RUNS_URI.fullmatch(uri)
        if match is None or ".." in match["path"].split("/"):
            raise refused(field, mlflow_name)
        return Source("runs", uri.rstrip("/"))
    path = _local_path(uri)
    if path is not None:
        return _check_file(path, field=field, mlflow_name=mlflow_name)
    for root in allowed_roots():
        if root.startswith("/"):
            continue
        parts = urlsplit(uri)
        if (
            uri.startswith(root + "/")
            and not parts.query
            and not parts.fragment
            and "@" not in parts.netloc
            and ".." not in PurePosixPath(unquote(parts.path)).parts
            and "%2e" not in uri.lower()
        ):
            return Source("uri", uri)
    raise refused(field, mlflow_name)


def _local_path(uri: str) -> str | None:
    if uri.startswith("/"):
        return uri
    if uri.startswith("file:"):
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            return ""  # refused below: a file URI on another host is not a local file
        return unquote(parts.path)
    return None


def _check_file(path: str, *, field: str, mlflow_name: str) -> Source:
    if not path.startswith("/") or ".." in PurePosixPath(path).parts or "\0" in path:
        raise refused(field, mlflow_name)
    real = os.path.realpath(path)
    for root in allowed_roots():
        if root.startswith("/") and Path(real).is_relative_to(root) and real != root:
            return Source("file", real, root=root)
    raise refused(field, mlflow_name)
