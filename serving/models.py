"""The deploy stage's data: endpoints, their deployment history, serving keys, the request log
and users' feedback on responses.

An endpoint is what applications call (``model`` in the OpenAI API is its slug). It serves one
model version (``version``), optionally a second one for a share of the traffic (the canary),
or forwards to an external OpenAI-compatible upstream (vLLM, TGI). Every change of what it
serves is a :class:`Deployment` row (which version, from when to when, by whom, why), so the
history is a table and a rollback is a new row pointing at the previous version.

``revision`` grows on every change that the inference process must see (versions, canary,
keys of the endpoint's project, privacy switch): the runner compares it to decide whether to
rebuild its snapshot, and the engine clears the endpoint's response cache when it moves.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

# The token budget periods a key may have.
BUDGET_PERIOD_DAYS = {"day": 1, "week": 7, "month": 30}
# The longest log retention a manager may choose, and the default.
MAX_LOG_RETENTION_DAYS = 3650
DEFAULT_LOG_RETENTION_DAYS = 30
# Keys expire at most this long after creation (the same bound as user API tokens).
SERVING_KEY_MAX_DAYS = 3650


class EndpointStage(models.TextChoices):
    STAGING = "staging", "Staging"
    PRODUCTION = "production", "Production"


class EngineKind(models.TextChoices):
    LOCAL = "local", "LLMHub inference process"
    EXTERNAL = "external", "External OpenAI-compatible engine (vLLM, TGI)"


class Endpoint(models.Model):
    project = models.ForeignKey(
        "projects.Project", on_delete=models.CASCADE, related_name="endpoints"
    )
    name = models.CharField(max_length=120)
    slug = models.SlugField(
        max_length=64, help_text="What clients pass as `model` (unique in the project)."
    )
    stage = models.CharField(
        max_length=12, choices=EndpointStage.choices, default=EndpointStage.STAGING
    )
    engine = models.CharField(max_length=10, choices=EngineKind.choices, default=EngineKind.LOCAL)
    version = models.ForeignKey(
        "training.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="endpoints",
        help_text="The version serving the main share of the traffic.",
    )
    canary_version = models.ForeignKey(
        "training.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="canary_endpoints",
    )
    canary_percent = models.PositiveSmallIntegerField(
        default=0, validators=[MaxValueValidator(100)]
    )
    # External engines: requests are forwarded to this OpenAI-compatible base URL (…/v1).
    upstream_url = models.URLField(max_length=500, blank=True, default="")
    upstream_model = models.CharField(max_length=200, blank=True, default="")
    # Sent as the upstream's bearer key; never returned by the API or shown on a page.
    upstream_api_key = models.CharField(max_length=500, blank=True, default="")
    store_text = models.BooleanField(
        default=True,
        help_text="Store prompt and completion text in the request log (off: counts only).",
    )
    log_retention_days = models.PositiveIntegerField(
        default=DEFAULT_LOG_RETENTION_DAYS,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_LOG_RETENTION_DAYS)],
    )
    revision = models.PositiveIntegerField(default=1)
    archived_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["project_id", "name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "slug"], name="endpoint_slug_unique"),
            models.CheckConstraint(
                condition=models.Q(canary_percent__lte=100), name="endpoint_canary_percent_range"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class DeploymentRole(models.TextChoices):
    PRIMARY = "primary", "Primary"
    CANARY = "canary", "Canary"


class DeploymentAction(models.TextChoices):
    PROMOTE = "promote", "Promoted"
    ROLLBACK = "rollback", "Rolled back"
    CANARY = "canary", "Canary started or changed"
    UPSTREAM = "upstream", "External engine set"


class Deployment(models.Model):
    """One period during which a version served an endpoint (in a role, with a share)."""

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="deployments")
    version = models.ForeignKey(
        "training.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="deployments",
    )
    role = models.CharField(max_length=10, choices=DeploymentRole.choices)
    action = models.CharField(max_length=10, choices=DeploymentAction.choices)
    traffic_percent = models.PositiveSmallIntegerField(
        default=100, validators=[MaxValueValidator(100)]
    )
    reason = models.TextField(blank=True, default="")
    # Set when a manager promoted past the goal gate: what it refused, and why they went on.
    gate_failures = models.JSONField(default=list, blank=True)
    override_reason = models.TextField(blank=True, default="")
    started_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["endpoint_id", "-started_at", "-id"]
        indexes = [models.Index(fields=["endpoint", "role", "ended_at"])]

    def __str__(self) -> str:
        return f"{self.endpoint}: {self.version} ({self.role})"


class BudgetPeriod(models.TextChoices):
    DAY = "day", "Per day"
    WEEK = "week", "Per week"
    MONTH = "month", "Per 30 days"


class ServingKey(models.Model):
    """A key applications send as ``Authorization: Bearer ...`` to the inference process.

    For a whole project (every endpoint) or one endpoint. Only a hash is stored; the plaintext
    is shown once, at creation.
    """

    project = models.ForeignKey(
        "projects.Project", on_delete=models.CASCADE, related_name="serving_keys"
    )
    endpoint = models.ForeignKey(
        Endpoint, null=True, blank=True, on_delete=models.CASCADE, related_name="keys"
    )
    name = models.CharField(max_length=120)
    prefix = models.CharField(max_length=16, help_text="Shown to tell keys apart.")
    key_hash = models.CharField(max_length=64, unique=True)
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    token_budget = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Prompt + completion tokens per budget period."
    )
    budget_period = models.CharField(
        max_length=8, choices=BudgetPeriod.choices, default=BudgetPeriod.MONTH
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["project_id", "-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"


class KeyUsage(models.Model):
    """What a key used on one day (UTC): the budget sums the days of its current period."""

    key = models.ForeignKey(ServingKey, on_delete=models.CASCADE, related_name="usage")
    day = models.DateField()
    requests = models.PositiveBigIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["key_id", "-day"]
        constraints = [models.UniqueConstraint(fields=["key", "day"], name="key_usage_day_unique")]

    def __str__(self) -> str:
        return f"{self.key_id} on {self.day}"


class RequestRoute(models.TextChoices):
    COMPLETIONS = "completions", "/v1/completions"
    CHAT = "chat", "/v1/chat/completions"
    EMBEDDINGS = "embeddings", "/v1/embeddings"
    PREDICT = "predict", "/v1/predict"


class RequestSource(models.TextChoices):
    API = "api", "API"
    PLAYGROUND = "playground", "Playground"


class RequestLog(models.Model):
    """One request the inference process answered (or refused), written in batches."""

    response_id = models.CharField(max_length=64, db_index=True)
    created_at = models.DateTimeField(db_index=True)
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="requests")
    version = models.ForeignKey(
        "training.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    key = models.ForeignKey(
        ServingKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="requests"
    )
    source = models.CharField(
        max_length=10, choices=RequestSource.choices, default=RequestSource.API
    )
    route = models.CharField(max_length=12, choices=RequestRoute.choices)
    status_code = models.PositiveSmallIntegerField()
    error_code = models.CharField(max_length=64, blank=True, default="")
    latency_ms = models.FloatField()
    ttft_ms = models.FloatField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cache_hit = models.BooleanField(default=False)
    stream = models.BooleanField(default=False)
    canary = models.BooleanField(default=False)
    aborted = models.BooleanField(default=False, help_text="The client went away mid-stream.")
    finish_reason = models.CharField(max_length=16, blank=True, default="")
    # Empty (null) when the endpoint's store_text switch is off.
    prompt_text = models.TextField(null=True, blank=True)
    completion_text = models.TextField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["endpoint", "created_at"]),
            models.Index(fields=["key", "created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.response_id} {self.status_code}"


class FeedbackSource(models.TextChoices):
    PLAYGROUND = "playground", "Playground"
    API = "api", "Feedback API"


class ResponseFeedback(models.Model):
    """A thumbs up (+1) or down (-1) on one response, by its response id.

    Not a foreign key to the log: feedback may arrive before the log batch holding its
    response is written.
    """

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="feedback")
    response_id = models.CharField(max_length=64, db_index=True)
    score = models.SmallIntegerField(choices=[(1, "Thumbs up"), (-1, "Thumbs down")])
    comment = models.TextField(blank=True, default="")
    source = models.CharField(max_length=10, choices=FeedbackSource.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    key = models.ForeignKey(
        ServingKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="feedback"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(score__in=[1, -1]), name="feedback_score_is_thumb"
            )
        ]

    def __str__(self) -> str:
        return f"{self.response_id}: {self.score:+d}"


# The monitor stage's rows (rollups, drift, alerts) live in their own module of this app.
from serving.monitoring.models import (  # noqa: E402, F401
    Alert,
    DriftJob,
    DriftStatistic,
    MonitorSettings,
    RequestRollup,
    WebhookDelivery,
)
