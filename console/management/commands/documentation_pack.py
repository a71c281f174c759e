"""``manage.py documentation_pack NAME VERSION [--format json|html|pdf] [--as-of SEQ] [-o FILE]``.

Writes the technical-documentation pack of a version (the same bytes as the API's for a reader
of the audit trail): to ``-o`` or, without it, to standard output.
"""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from console.documentation import pack, render
from platform_core.errors import DomainError
from registry import services as registry_services


def pack_bytes(name: str, version: str, *, fmt: str, as_of: int | None) -> tuple[bytes, pack.Cut]:
    """One pack with the audit trail included (an operator's view), and the cut it was built at."""
    instance = registry_services.version_get(name, version)
    cut = pack.cut_at(instance, as_of)
    return render.render(pack.build(instance, cut, audit_visible=True), fmt), cut


def write_pack(name: str, version: str, *, fmt: str, as_of: int | None, out: Path) -> pack.Cut:
    data, cut = pack_bytes(name, version, fmt=fmt, as_of=as_of)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return cut


class Command(BaseCommand):
    help = "Write the technical-documentation pack (EU AI Act Annex IV) of a model version."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="the model's name")
        parser.add_argument("version", help="the version, e.g. 1.0.1")
        parser.add_argument("--format", choices=render.FORMATS, default="json")
        parser.add_argument(
            "--as-of", type=int, default=None, help="audit sequence number (default: the head)"
        )
        parser.add_argument("-o", "--output", default="", help="file to write (default: stdout)")

    def handle(self, name: str, version: str, format: str, as_of, output: str, **_) -> None:
        try:
            if output:
                cut = write_pack(name, version, fmt=format, as_of=as_of, out=Path(output))
                self.stdout.write(
                    f"wrote {output} ({name} {version}, audit seq {cut.seq}, {cut.hash})"
                )
                return
            data, _ = pack_bytes(name, version, fmt=format, as_of=as_of)
        except DomainError as exc:
            raise CommandError(str(exc)) from exc
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
