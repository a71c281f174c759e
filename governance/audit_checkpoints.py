"""Signed checkpoints of the audit chain head, kept in an append-only place outside the database.

A checkpoint says "at this time the chain had this many events and this last link", signed with
an HMAC derived from the audit key. The database can be rewritten by its owner; the checkpoint
store cannot (a directory whose files are created exclusively and never rewritten in the embedded
default; an S3 bucket with Object Lock in compliance mode in production), so ``verify`` compares
the rows with the latest checkpoint: a truncated tail or a re-linked chain no longer matches.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings
from django.utils.module_loading import import_string

from . import audit_chain

FORMAT = "governance-audit-checkpoint/1"
_NAME = re.compile(r"^(\d{12})-(\d{8}T\d{12}Z)\.json$")


class CheckpointExists(Exception):
    """A checkpoint of that name is already stored: the store never rewrites one."""


class CheckpointStore(Protocol):
    """Where checkpoints live. ``write`` must refuse an existing name; nothing is ever deleted."""

    def write(self, name: str, data: bytes) -> None: ...

    def names(self) -> list[str]: ...

    def read(self, name: str) -> bytes: ...

    def describe(self) -> str: ...


class DirectoryStore:
    """One file per checkpoint, linked into place in one step so no reader sees half a file."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path or settings.AUDIT_CHECKPOINT_DIR)

    def write(self, name: str, data: bytes) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        final = self.path / name
        temp = self.path / f".tmp-{secrets.token_hex(8)}-{name}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o440)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(temp, final)  # atomic and exclusive: fails if the name exists
            except FileExistsError:
                raise CheckpointExists(name) from None
        finally:
            temp.unlink(missing_ok=True)

    def names(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return [entry.name for entry in os.scandir(self.path) if _NAME.match(entry.name)]

    def read(self, name: str) -> bytes:
        return (self.path / name).read_bytes()

    def describe(self) -> str:
        return f"directory {self.path}"


class S3ObjectLockStore:
    """An S3 bucket with Object Lock: each checkpoint an object under compliance-mode retention.

    ``IfNoneMatch='*'`` makes a second write of a name fail (HTTP 412); the retention means that
    nobody, the bucket owner and the root account included, can delete or overwrite it until it
    expires. Needs ``boto3`` (not a dependency of the embedded default).
    """

    def __init__(self, client: Any = None) -> None:
        self.bucket = settings.AUDIT_CHECKPOINT_S3_BUCKET
        self.prefix = settings.AUDIT_CHECKPOINT_S3_PREFIX
        self.retention = timedelta(days=settings.AUDIT_CHECKPOINT_RETENTION_DAYS)
        if client is None:
            import boto3  # optional: production only

            client = boto3.client("s3")
        self.client = client

    def write(self, name: str, data: bytes) -> None:
        from django.utils import timezone

        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self.prefix + name,
                Body=data,
                ContentType="application/json",
                IfNoneMatch="*",
                ObjectLockMode="COMPLIANCE",
                ObjectLockRetainUntilDate=timezone.now() + self.retention,
            )
        except Exception as exc:
            status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status in (409, 412):
                raise CheckpointExists(name) from exc
            raise

    def names(self) -> list[str]:
        found: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for item in page.get("Contents", []):
                name = item["Key"][len(self.prefix) :]
                if _NAME.match(name):
                    found.append(name)
        return found

    def read(self, name: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"].read()

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def get_store() -> CheckpointStore:
    return import_string(settings.AUDIT_CHECKPOINT_STORE)()


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    link: str
    created_at: str
    key_id: str
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "link": self.link,
            "created_at": self.created_at,
            "name": self.name,
        }


def _signed_part(seq: int, link: str, created_at: str, key_id: str) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "seq": seq,
        "link": link,
        "created_at": created_at,
        "key_id": key_id,
    }


def _signature(key: bytes, body: dict[str, Any]) -> str:
    return hmac.new(audit_chain.signing_key(key), audit_chain.canonical(body), "sha256").hexdigest()


def name_for(seq: int, when: datetime) -> str:
    return f"{seq:012d}-{when.strftime('%Y%m%dT%H%M%S%f')}Z.json"


def write(seq: int, link: str, *, when: datetime, key: bytes, store: CheckpointStore) -> Checkpoint:
    kid = audit_chain.key_id(key)
    body = _signed_part(seq, link, when.isoformat(), kid)
    document = {**body, "signature": _signature(key, body)}
    name = name_for(seq, when)
    store.write(name, json.dumps(document, indent=1, sort_keys=True).encode() + b"\n")
    return Checkpoint(seq, link, body["created_at"], kid, name)


class Refused(ValueError):
    """A checkpoint that must not be trusted: malformed, signed with another key, or forged."""


def parse(name: str, data: bytes, *, key: bytes) -> Checkpoint:
    match = _NAME.match(name)
    if match is None:
        raise Refused("not a checkpoint name")
    try:
        document = json.loads(data)
        body = _signed_part(
            int(document["seq"]),
            str(document["link"]),
            str(document["created_at"]),
            str(document["key_id"]),
        )
        signature = str(document["signature"])
    except (ValueError, KeyError, TypeError):
        raise Refused("not a readable checkpoint") from None
    if document.get("format") != FORMAT:
        raise Refused(f"unknown format {document.get('format')!r}")
    if body["key_id"] != audit_chain.key_id(key):
        raise Refused(f"signed with another key ({body['key_id']})")
    if not hmac.compare_digest(signature, _signature(key, body)):
        raise Refused("the signature does not verify (forged or altered)")
    if int(match.group(1)) != body["seq"]:
        raise Refused("its name and its sequence number differ")
    return Checkpoint(body["seq"], body["link"], body["created_at"], body["key_id"], name)


@dataclass(frozen=True)
class Scan:
    """The newest valid checkpoint, and what was refused on the way to it."""

    latest: Checkpoint | None
    refused: tuple[tuple[str, str], ...] = ()

    def refused_dicts(self) -> list[dict[str, str]]:
        return [{"name": name, "reason": reason} for name, reason in self.refused]


def checkpoints(*, key: bytes, store: CheckpointStore | None = None):
    """Valid checkpoints, newest (highest sequence number, then time) first; refusals as
    ``(name, reason)`` tuples in between, so a caller can note them and go on."""
    store = store or get_store()
    for name in sorted(store.names(), reverse=True):
        try:
            yield parse(name, store.read(name), key=key)
        except Refused as exc:
            yield (name, str(exc))
        except OSError as exc:
            yield (name, f"unreadable: {exc.strerror or exc}")


def latest(*, key: bytes, store: CheckpointStore | None = None) -> Scan:
    refused = []
    for item in checkpoints(key=key, store=store):
        if isinstance(item, Checkpoint):
            return Scan(item, tuple(refused))
        refused.append(item)
    return Scan(None, tuple(refused))
