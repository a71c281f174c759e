"""``manage.py compact_partitions [--model NAME] [--dry-run]``: what the daily beat task does,
at once and in this process, printing each partition as it goes."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from governance.audit import Actor
from registry.models import RegisteredModel

from ...store import compact


class Command(BaseCommand):
    help = (
        "Merge each closed (version, day) partition's prediction files into one file and its "
        "label files into one (before today minus MONITORING_COMPACT_AFTER_DAYS, within "
        "MONITORING_COMPACT_LOOKBACK_DAYS before that). One transaction and one audit event per "
        "partition; the old files are deleted by the orphan sweeper after ORPHAN_GRACE."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--model", help="Only this registered model's partitions")
        parser.add_argument(
            "--dry-run", action="store_true", help="List the partitions due; change nothing"
        )

    def handle(self, *, model: str | None, dry_run: bool, **_) -> None:
        if model is not None and not RegisteredModel.objects.filter(name=model).exists():
            raise CommandError(f"--model: no registered model named '{model}'")
        due = compact.due_partitions(model=model)
        self.stdout.write(f"{len(due)} partition(s) due for compaction")
        named = compact.names(due)
        if dry_run:
            for p in due:
                self.stdout.write(
                    f"  {named[p.version_id]} on {p.day}: {p.prediction_files} prediction, "
                    f"{p.label_files} label files"
                )
            return

        def progress(outcome: compact.Outcome, i: int, n: int) -> None:
            p = outcome.partition
            reason = f" ({outcome.reason})" if outcome.reason else ""
            self.stdout.write(
                f"  [{i}/{n}] {named[p.version_id]} on {p.day}: {outcome.status}, "
                f"{outcome.prediction_files} prediction + {outcome.label_files} label files, "
                f"{outcome.rows} rows{reason}"
            )

        run = compact.compact(
            due, actor=Actor.system("manage.py compact_partitions"), progress=progress
        )
        self.stdout.write(
            f"compacted {run.compacted} of {run.partitions} partition(s), skipped {run.skipped}: "
            f"{run.files_before} files -> {run.files_after}"
        )
