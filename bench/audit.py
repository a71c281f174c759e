"""Time ``governance.audit.verify`` over a long audit chain.

    .venv/bin/python bench/audit.py [--events 100000] [--repeats 3]
                                    [--database-url postgres://postgres@127.0.0.1:5432/NAME]

A temporary var directory and, by default, a temporary SQLite database (``--database-url`` names a
PostgreSQL database to use instead: it is migrated and its audit table emptied first, so give it
one nobody else uses). The events are written through ``audit.record`` (one transaction per 1000
events), each with a small before/after payload like a lifecycle transition's. ``--bulk`` seals
the same rows in Python and inserts them 5000 at a time instead (works on the code before the
keyed chain too, to compare). Printed: the time to write them and the median verification time
(wall clock, and this process's CPU time, which a loaded machine disturbs less), one JSON
object per line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO))


def _bulk(n: int) -> None:
    import hashlib

    from django.utils import timezone

    from governance import audit
    from governance.models import AuditChainHead, AuditEvent

    legacy = hasattr(audit, "chain_hash")  # the unkeyed chain, to time the code before this one
    if not legacy:
        from governance import audit_chain

        lkey = audit._keys()[1]
    prev = "0" * 64
    for first in range(0, n, 5000):
        rows = []
        for i in range(first, min(first + 5000, n)):
            event = AuditEvent(
                seq=i + 1,
                created_at=timezone.now(),
                actor="system:bench",
                actor_user_id=None,
                action="lifecycle.promote",
                object_type="governance.Lifecycle",
                object_id=str(i),
                object_repr=str(i),
                model_name="hotspot-classifier",
                before={"stage": "staging", "version": f"1.0.{i}"},
                after={"stage": "production", "version": f"1.0.{i}"},
                reason="bench",
                request_id="",
            )
            if legacy:
                event.prev_hash = prev
                event.payload_digest = hashlib.sha256(audit.canonical_payload(event)).hexdigest()
                event.hash = audit.chain_hash(prev, event.seq, event.payload_digest)
            else:
                audit_chain.seal(event, prev_hash=prev, lkey=lkey)
            prev = event.hash
            rows.append(event)
        AuditEvent.objects.bulk_create(rows)
    AuditChainHead.objects.update_or_create(pk=1, defaults={"seq": n, "hash": prev})


def main() -> None:
    args = _arguments()
    _set_up(args.database_url)
    from django.db import connection

    started = time.perf_counter()
    if args.bulk:
        _bulk(args.events)
    else:
        _record(args.events)
    write_s = time.perf_counter() - started
    from governance.models import AuditEvent

    assert AuditEvent.objects.count() == args.events
    times, cpu = _verify(args.repeats, profile=args.profile)
    common = {"events": args.events, "vendor": connection.vendor, "load1": os.getloadavg()[0]}
    print(json.dumps({"bench": "audit.write", "value": round(write_s, 2), "unit": "s", **common}))
    print(
        json.dumps(
            {
                "bench": "audit.verify",
                "value": round(statistics.median(times), 2),
                "min": round(min(times), 2),
                "cpu_s_median": round(statistics.median(cpu), 2),
                "cpu_s_min": round(min(cpu), 2),
                "unit": "s",
                **common,
            }
        )
    )


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--profile", action="store_true", help="cProfile one verification")
    parser.add_argument(
        "--bulk",
        action="store_true",
        help="Seal the events in Python and insert them 5000 at a time (same rows, much faster "
        "to set up than one record() each)",
    )
    return parser.parse_args()


def _set_up(database_url: str) -> None:
    """A temporary var dir, the database migrated and its audit log emptied."""
    os.environ["GOVERNANCE_VAR_DIR"] = tempfile.mkdtemp(prefix="bench-audit-")
    os.environ.pop("CELERY_BROKER_URL", None)
    if database_url:
        os.environ["DATABASE_URL"] = database_url
    else:
        os.environ.pop("DATABASE_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    os.chdir(REPO)

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from governance.models import AuditChainHead

    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET governance.allow_truncate = on")
            cursor.execute("TRUNCATE governance_auditevent")
        else:
            cursor.execute("DELETE FROM governance_auditevent")
    AuditChainHead.objects.all().delete()


def _record(n: int) -> None:
    """``n`` events through ``audit.record``, one transaction per 1000."""
    from django.db import transaction

    from governance import audit

    actor = audit.Actor.system("bench")
    for first in range(0, n, 1000):
        with transaction.atomic():
            for i in range(first, min(first + 1000, n)):
                audit.record(
                    actor=actor,
                    action="lifecycle.promote",
                    object_type="governance.Lifecycle",
                    object_id=str(i),
                    model_name="hotspot-classifier",
                    before={"stage": "staging", "version": f"1.0.{i}"},
                    after={"stage": "production", "version": f"1.0.{i}"},
                    reason="bench",
                )


def _verify(repeats: int, *, profile: bool) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of each full verification (each must pass); a profile on stderr."""
    from governance import audit

    times, cpu = [], []
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        result = audit.verify()
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
        assert result.valid, result
    if profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(audit.verify)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(15)
    return times, cpu


if __name__ == "__main__":
    main()
