"""Production data manifests, reference profiles, monitoring policies, runs, metrics and alerts.

Prediction, label and reference records live in Parquet partitions (one file per batch, per model
and day) so a 1M-row window loads in a fraction of a second; these rows are their manifest,
committed after the file is written.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from governance.models import ValidationPolicy
from governance.policy_base import VersionedPolicy
from registry.models import ModelVersion, RegisteredModel

from .policies import MONITORING


class BatchKind(models.TextChoices):
    PREDICTIONS = "predictions"
    LABELS = "labels"
    REFERENCE = "reference"


class DataBatch(models.Model):
    """One stored Parquet file of records; the file is written first, this row commits second."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="batches")
    version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="batches"
    )
    kind = models.CharField(max_length=12, choices=BatchKind.choices)
    day = models.DateField(help_text="UTC day of the records (partition)")
    path = models.CharField(max_length=500, help_text="Relative to VAR_DIR")
    rows = models.PositiveIntegerField()
    size = models.PositiveBigIntegerField(
        default=0,
        help_text="Bytes of the file: an object store reads it with no request for its size "
        "(0 for batches stored before sizes were recorded)",
    )
    digest = models.CharField(max_length=80)
    source = models.CharField(max_length=20, default="api", help_text="api, upload or gateway")
    id_index = models.CharField(
        max_length=500,
        blank=True,
        help_text="Predictions: the sorted id digests covering this batch (relative to VAR_DIR), "
        "shared by batches of its version and day once merged; blank for older batches",
    )
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=200)

    class Meta:
        indexes = [
            models.Index(fields=["model", "kind", "day"]),
            # the nightly compaction counts files per (version, day) over a range of days, all
            # models at once (store.compact.due_partitions): an index-only scan of those days
            models.Index(fields=["day", "version", "kind"], name="databatch_day_version_kind"),
        ]
        verbose_name_plural = "data batches"

    def __str__(self) -> str:
        return f"{self.kind} of {self.model} on {self.day} ({self.rows} rows)"


class IngestKey(models.Model):
    """A caller's name for a batch it ingested (a gateway spool file): a retry is recognised.

    One row per key, pointing at the first manifest row of the ingestion that stored it; the
    unique constraint makes two concurrent ingestions of one key store it once.
    """

    version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="+", db_index=False
    )  # the unique constraint's index leads with it
    key = models.CharField(max_length=200)
    batch = models.ForeignKey(DataBatch, on_delete=models.CASCADE, related_name="keys")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["version", "key"], name="uniq_ingest_key")]

    def __str__(self) -> str:
        return f"{self.key} ({self.version})"


class RetiredFiles(models.Model):
    """Objects of one partition directory that no manifest row points to any more (those a
    compaction replaced), kept for ``ORPHAN_GRACE`` so a reader that loaded the manifest before
    the change still finds them.

    The orphan sweeper counts them as referenced until then (their own write times are old, so
    its age cutoff alone would not). One row per directory and compaction, not per object: a
    busy day retires ~1,440 objects at once.
    """

    partition = models.CharField(
        max_length=500, db_index=True, help_text="The keys' directory (.../day=YYYY-MM-DD)"
    )
    paths = models.JSONField(help_text="The retired keys (relative to VAR_DIR)")
    retired_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        verbose_name_plural = "retired files"

    def __str__(self) -> str:
        return f"{len(self.paths)} retired in {self.partition}"


class ReferenceProfile(models.Model):
    """Quantile edges, counts and a sorted score sample, computed once per version."""

    version = models.OneToOneField(
        ModelVersion, on_delete=models.PROTECT, related_name="reference_profile"
    )
    profile = models.JSONField()
    rows = models.PositiveIntegerField()
    batch = models.ForeignKey(DataBatch, null=True, blank=True, on_delete=models.PROTECT)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"reference profile of {self.version}"


class MonitoringPolicy(VersionedPolicy):
    """Thresholds, windows and minimum sizes of one model's checks, versioned like gate policies."""

    kind = "monitoring"
    schema = MONITORING
    audit_action = "monitoring_policy.updated"

    class Meta(VersionedPolicy.Meta):
        verbose_name_plural = "monitoring policies"


class Check(models.TextChoices):
    DATA_DRIFT = "data_drift"
    CONCEPT_DRIFT = "concept_drift"
    LABEL_DRIFT = "label_drift"
    PREDICTION_DRIFT = "prediction_drift"
    FAIRNESS = "fairness"
    CALIBRATION = "calibration"
    FEEDBACK_LOOP = "feedback_loop"


class Severity(models.TextChoices):
    # a breach whose interval still includes the threshold (fairness): shown, acted on by nothing
    WATCH = "watch"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


SEVERITY = {
    Check.DATA_DRIFT: Severity.MEDIUM,
    Check.LABEL_DRIFT: Severity.MEDIUM,
    Check.PREDICTION_DRIFT: Severity.MEDIUM,
    Check.CALIBRATION: Severity.MEDIUM,
    Check.CONCEPT_DRIFT: Severity.HIGH,
    Check.FAIRNESS: Severity.CRITICAL,
    Check.FEEDBACK_LOOP: Severity.HIGH,
}
DAILY_CHECKS = (Check.DATA_DRIFT, Check.PREDICTION_DRIFT, Check.FAIRNESS)
WEEKLY_CHECKS = (Check.CONCEPT_DRIFT, Check.CALIBRATION, Check.LABEL_DRIFT)
# Weekly too, but only for the models whose monitoring policy names a cell field
# (schedule.schedule_weekly); its window is its periods (runs.window_days).
FEEDBACK_CHECKS = (Check.FEEDBACK_LOOP,)


# One run, and so at most one alert, per version, check and window: retries find it, never
# repeat it (MonitorRun and Alert are unique on it).
WINDOW_KEY = ("version", "kind", "window_start", "window_end")


class RunStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


class MonitorRun(models.Model):
    """One check of one version over one window; unique, so retries find it, not repeat it."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="runs")
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="runs")
    kind = models.CharField(max_length=20, choices=Check.choices, help_text="the check")
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    policy = models.ForeignKey(MonitoringPolicy, on_delete=models.PROTECT)
    validation_policy = models.ForeignKey(
        ValidationPolicy, null=True, blank=True, on_delete=models.PROTECT
    )
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.PENDING)
    reason = models.TextField(blank=True, help_text="Why it failed or was skipped")
    metrics = models.JSONField(default=dict, blank=True)
    rows = models.PositiveIntegerField(default=0)
    trigger = models.CharField(max_length=20, default="schedule", help_text="schedule or api")
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_by = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-window_end", "-id"]
        constraints = [models.UniqueConstraint(fields=WINDOW_KEY, name="uniq_monitor_run")]
        indexes = [models.Index(fields=["model", "kind", "-window_end"])]

    def __str__(self) -> str:
        return f"{self.kind} of {self.version} to {self.window_end:%Y-%m-%d} [{self.status}]"


class MetricPoint(models.Model):
    """One number of one run: the time series per model, check, metric, feature and group."""

    run = models.ForeignKey(MonitorRun, on_delete=models.CASCADE, related_name="points")
    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="+")
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=20, choices=Check.choices, help_text="the check")
    metric = models.CharField(max_length=60)
    feature = models.CharField(max_length=200, blank=True)
    group = models.CharField(max_length=200, blank=True, help_text="attribute=value for fairness")
    value = models.FloatField(null=True)
    window_end = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["model", "kind", "metric", "window_end"]),
            # The console's charts read several checks and metrics of one model over a period in
            # one query (console.model_page): a range on window_end within the model, with
            # check and metric filtered in the index (bench/console.py).
            models.Index(
                fields=["model", "window_end", "kind", "metric"], name="metricpoint_model_period"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.metric}={self.value}"


class AlertStatus(models.TextChoices):
    OPEN = "open"
    QUEUED = "queued", "queued for retraining review"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Alert(models.Model):
    """A threshold crossed; one per (version, check, window). Routed by the incidents layer."""

    run = models.OneToOneField(MonitorRun, on_delete=models.PROTECT, related_name="alert")
    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="alerts")
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="alerts")
    kind = models.CharField(max_length=20, choices=Check.choices, help_text="the check")
    severity = models.CharField(max_length=10, choices=Severity.choices)
    feature = models.CharField(max_length=200, blank=True)
    metric = models.CharField(max_length=60)
    value = models.FloatField(null=True)
    threshold = models.FloatField(null=True)
    details = models.JSONField(default=dict, blank=True)
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    status = models.CharField(max_length=12, choices=AlertStatus.choices, default=AlertStatus.OPEN)
    created_at = models.DateTimeField(default=timezone.now)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.CharField(max_length=200, blank=True, help_text="The actor as audited")
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.CharField(max_length=200, blank=True, help_text="The actor as audited")
    note = models.TextField(blank=True, help_text="Why it was acknowledged or resolved")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=WINDOW_KEY, name="uniq_alert")]
        indexes = [models.Index(fields=["model", "severity", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.severity} {self.kind} alert on {self.version}"


class ReviewItem(models.Model):
    """A medium alert waiting for the next retraining review; the version keeps its stage."""

    alert = models.OneToOneField(Alert, on_delete=models.PROTECT, related_name="review_item")
    created_at = models.DateTimeField(default=timezone.now)
    reviewed_at = models.DateTimeField(null=True, blank=True)
    reviewed_by = models.CharField(max_length=200, blank=True)
    note = models.TextField(blank=True)

    def __str__(self) -> str:
        return f"review of {self.alert}"


class AuditTask(models.Model):
    """The monthly human audit (model card update), created for the ML Lead."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="audit_tasks")
    version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT)
    period = models.CharField(max_length=7, help_text="YYYY-MM")
    due_at = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)
    completed_by = models.CharField(max_length=200, blank=True)
    note = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model", "period"], name="uniq_audit_task_period")
        ]

    def __str__(self) -> str:
        return f"{self.period} audit of {self.model}"
