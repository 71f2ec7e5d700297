"""The monitor stage's rows: request rollups, per-endpoint monitor settings, drift jobs and
their statistics, alerts, and webhook deliveries.

They belong to the ``serving`` app (imported at the end of ``serving/models.py``), so their
migrations live in ``serving/migrations``; the sub-package keeps the monitor's code apart from
the deploy stage's.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from llmhub.models import Job

# Latency histograms: bucket i holds values in [2^(i/4), 2^((i+1)/4)) milliseconds, so a
# percentile read from a rollup is within 19% (one bucket) of the raw one, 9% from the
# bucket's geometric middle. Kept sparse ({"i": count}); values under 0.01 ms go to the lowest.
HISTOGRAM_BUCKETS_PER_DOUBLING = 4
HISTOGRAM_MIN_MS = 0.01


class Resolution(models.TextChoices):
    MINUTE = "minute", "Minute"
    HOUR = "hour", "Hour"
    DAY = "day", "Day"


RESOLUTION_SECONDS = {Resolution.MINUTE: 60, Resolution.HOUR: 3600, Resolution.DAY: 86400}
# How long rollup rows of each resolution are kept (None: always). The dashboard draws a range
# from the finest resolution still kept for its start, so these bound its choice too.
ROLLUP_RETENTION_DAYS = {Resolution.MINUTE: 3, Resolution.HOUR: 100, Resolution.DAY: None}


class RequestRollup(models.Model):
    """Counts and histograms of one endpoint's requests in one minute, hour or day, per version
    and canary flag: written with the log (``request_logs_ingest``), read by the dashboard.

    ``version`` is null for requests no version answered (refused before routing) and for
    thumbs whose response is not in the log."""

    endpoint = models.ForeignKey(
        "serving.Endpoint", on_delete=models.CASCADE, related_name="rollups"
    )
    version = models.ForeignKey(
        "training.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    canary = models.BooleanField(default=False)
    resolution = models.CharField(max_length=6, choices=Resolution.choices)
    start = models.DateTimeField(help_text="Start of the minute, hour or day (UTC).")

    requests = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveBigIntegerField(default=0, help_text="Answers with status >= 500.")
    rate_limited = models.PositiveBigIntegerField(default=0, help_text="Answers with status 429.")
    rejected = models.PositiveBigIntegerField(
        default=0, help_text="Other 4xx answers (bad request, bad key, too large...)."
    )
    by_status = models.JSONField(default=dict, help_text='{"200": count, "429": count, ...}')
    cache_hits = models.PositiveBigIntegerField(default=0)
    streams = models.PositiveBigIntegerField(default=0)
    aborted = models.PositiveBigIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    # Successful (status < 400) answers that are not cache hits: the denominator of tokens/s.
    generated = models.PositiveBigIntegerField(default=0)
    generated_tokens = models.PositiveBigIntegerField(default=0)
    generated_ms = models.FloatField(default=0.0, help_text="Their latency, summed.")
    latency_ms_sum = models.FloatField(default=0.0)
    latency_hist = models.JSONField(default=dict)
    ttft_count = models.PositiveBigIntegerField(default=0)
    ttft_ms_sum = models.FloatField(default=0.0)
    ttft_hist = models.JSONField(default=dict)
    thumbs_up = models.PositiveBigIntegerField(default=0)
    thumbs_down = models.PositiveBigIntegerField(default=0)

    # Rows are written under a lock on the endpoint row (``rollups.add``), so a null version,
    # which the unique constraint does not cover, still gets one row per bucket.
    class Meta:
        ordering = ["endpoint_id", "resolution", "start"]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "version", "canary", "resolution", "start"],
                name="rollup_bucket_unique",
            )
        ]
        indexes = [models.Index(fields=["endpoint", "resolution", "start"])]

    def __str__(self) -> str:
        return f"{self.endpoint_id} {self.resolution} {self.start:%Y-%m-%d %H:%M}"


class MonitorSettings(models.Model):
    """How one endpoint is watched: the drift reference and window, the thresholds, the alert
    limits and the webhook. Created with its defaults the first time it is read."""

    endpoint = models.OneToOneField(
        "serving.Endpoint", on_delete=models.CASCADE, related_name="monitor_settings"
    )
    drift_enabled = models.BooleanField(default=True)
    # Null: the serving version's own training data (its job's dataset version).
    reference_version = models.ForeignKey(
        "datasets_app.DatasetVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    reference_split = models.CharField(max_length=64, blank=True, default="")
    reference_column = models.CharField(
        max_length=200, blank=True, default="", help_text="Blank: the version's text column."
    )
    window_requests = models.PositiveIntegerField(
        default=10_000, validators=[MinValueValidator(10), MaxValueValidator(100_000)]
    )
    window_hours = models.PositiveIntegerField(
        default=24, validators=[MinValueValidator(1), MaxValueValidator(24 * 90)]
    )
    drift_every_minutes = models.PositiveIntegerField(
        default=60, validators=[MinValueValidator(1), MaxValueValidator(7 * 24 * 60)]
    )
    # Overrides of serving.monitoring.runtime.config.DriftConfig, validated by it.
    thresholds = models.JSONField(default=dict, blank=True)
    # Limits of the traffic alerts, over the last `limit_window_minutes`; null: no alert.
    error_rate_max = models.FloatField(
        null=True,
        blank=True,
        default=0.05,
        validators=[MinValueValidator(0), MaxValueValidator(1)],
        help_text="Share of 5xx answers.",
    )
    p95_latency_ms_max = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0)])
    feedback_score_min = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0), MaxValueValidator(1)],
        help_text="Share of thumbs up among the thumbs.",
    )
    limit_window_minutes = models.PositiveIntegerField(
        default=15, validators=[MinValueValidator(1), MaxValueValidator(24 * 60)]
    )
    limit_min_requests = models.PositiveIntegerField(
        default=20, help_text="Fewer requests (or thumbs) in the window: no traffic alert."
    )
    webhook_url = models.URLField(max_length=500, blank=True, default="")
    # Signs each delivery (X-LLMHub-Signature: sha256 HMAC of the body); write-only in the API.
    webhook_secret = models.CharField(max_length=200, blank=True, default="")
    # When the drift job and the limit check last claimed their period (one per period across
    # every process: a conditional update on this row).
    drift_claimed_at = models.DateTimeField(null=True, blank=True)
    limits_checked_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "monitor settings"

    def __str__(self) -> str:
        return f"monitor of {self.endpoint_id}"


class DriftJob(Job):
    """One drift computation: a window of an endpoint's recent requests against a reference."""

    queue = "cpu"
    kind_label = "drift check"

    endpoint = models.ForeignKey(
        "serving.Endpoint", on_delete=models.CASCADE, related_name="drift_jobs"
    )
    version = models.ForeignKey(
        "training.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The version whose requests the window holds (the main one).",
    )
    reference_version = models.ForeignKey(
        "datasets_app.DatasetVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    reference_split = models.CharField(max_length=64, blank=True, default="")
    reference_column = models.CharField(max_length=200, blank=True, default="")
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    window_requests = models.PositiveIntegerField(default=10_000)
    config = models.JSONField(default=dict, blank=True, help_text="DriftConfig as validated.")
    scheduled = models.BooleanField(default=False, help_text="Started by the periodic check.")
    # The outcome: "drifted", "stable" or "no_data", and the runtime's whole report.
    result = models.CharField(max_length=10, blank=True, default="")
    report = models.JSONField(default=dict, blank=True)
    reference_rows = models.PositiveIntegerField(default=0)
    window_rows = models.PositiveIntegerField(default=0)

    class Meta(Job.Meta):
        indexes = [models.Index(fields=["endpoint", "window_end"])]


class DriftStatistic(models.Model):
    """One statistic of one drift job, for the charts over time."""

    job = models.ForeignKey(DriftJob, on_delete=models.CASCADE, related_name="statistics")
    endpoint = models.ForeignKey("serving.Endpoint", on_delete=models.CASCADE, related_name="+")
    check_name = models.CharField(max_length=40)
    name = models.CharField(max_length=60, help_text="The DriftConfig threshold's name.")
    value = models.FloatField()
    threshold = models.FloatField()
    rule = models.CharField(max_length=2)
    drifted = models.BooleanField()
    noise_floor = models.FloatField(null=True, blank=True)
    computed_at = models.DateTimeField()

    class Meta:
        ordering = ["endpoint_id", "name", "computed_at"]
        indexes = [models.Index(fields=["endpoint", "name", "computed_at"])]

    def __str__(self) -> str:
        return f"{self.name}={self.value:.4g}"


class AlertKind(models.TextChoices):
    DRIFT = "drift", "Drift"
    ERROR_RATE = "error_rate", "Error rate"
    LATENCY = "latency_p95", "p95 latency"
    FEEDBACK = "feedback_score", "Feedback score"


class AlertState(models.TextChoices):
    OPEN = "open", "Open"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    RESOLVED = "resolved", "Resolved"


class Alert(models.Model):
    """A statistic past its threshold or a limit crossed on one endpoint. At most one alert per
    endpoint, kind and statistic is not resolved: a repeat raises its count and value."""

    endpoint = models.ForeignKey(
        "serving.Endpoint", on_delete=models.CASCADE, related_name="alerts"
    )
    version = models.ForeignKey(
        "training.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    kind = models.CharField(max_length=16, choices=AlertKind.choices)
    statistic = models.CharField(max_length=60, help_text="e.g. classifier_auc, error_rate.")
    state = models.CharField(
        max_length=12, choices=AlertState.choices, default=AlertState.OPEN, db_index=True
    )
    value = models.FloatField()
    threshold = models.FloatField()
    message = models.CharField(max_length=500)
    drift_job = models.ForeignKey(
        DriftJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="alerts"
    )
    times_seen = models.PositiveIntegerField(default=1)
    opened_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Drift to retraining: the dataset version made from the window, once asked for.
    retrain_dataset_version = models.ForeignKey(
        "datasets_app.DatasetVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        ordering = ["-opened_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "kind", "statistic"],
                condition=~models.Q(state="resolved"),
                name="alert_one_unresolved",
            )
        ]
        indexes = [models.Index(fields=["endpoint", "state"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.statistic} ({self.state})"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


class WebhookDelivery(models.Model):
    """One alert event sent to the endpoint's webhook URL, retried with backoff; a delivery
    that runs out of attempts stays as failed, with its last error."""

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey("serving.Endpoint", on_delete=models.CASCADE, related_name="+")
    event = models.CharField(max_length=40, help_text="alert.opened, alert.resolved, ...")
    url = models.URLField(max_length=500)
    payload = models.JSONField()
    status = models.CharField(
        max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    # Due when pending and next_attempt_at <= now; a sender claims it by moving this forward.
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.CharField(max_length=500, blank=True, default="")
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.event} -> {self.url} ({self.status})"
