from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from llmhub.api.fields import ScopedPrimaryKeyRelatedField
from llmhub.api.serializers import StrictSerializer
from projects.selectors import projects_for_user
from serving import selectors
from serving.models import (
    MAX_LOG_RETENTION_DAYS,
    SERVING_KEY_MAX_DAYS,
    BudgetPeriod,
    Deployment,
    Endpoint,
    EndpointStage,
    EngineKind,
    RequestLog,
    ResponseFeedback,
    ServingKey,
)
from training.selectors import model_versions_for_user

REASON = {"max_length": 2000, "required": False, "allow_blank": True, "default": ""}


def _label(version) -> str | None:
    return str(version) if version is not None else None


class EndpointSerializer(serializers.ModelSerializer):
    """An endpoint; the upstream's key is never returned (``has_upstream_api_key`` says
    whether one is set)."""

    version_name = serializers.SerializerMethodField()
    canary_version_name = serializers.SerializerMethodField()
    serve_kind = serializers.SerializerMethodField()
    has_upstream_api_key = serializers.SerializerMethodField()
    created_by = serializers.CharField(source="created_by.username", default=None, read_only=True)
    requests_24h = serializers.IntegerField(read_only=True)
    errors_24h = serializers.IntegerField(read_only=True)
    key_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Endpoint
        fields = (
            "id",
            "project",
            "name",
            "slug",
            "stage",
            "engine",
            "version",
            "version_name",
            "canary_version",
            "canary_version_name",
            "canary_percent",
            "serve_kind",
            "upstream_url",
            "upstream_model",
            "has_upstream_api_key",
            "store_text",
            "log_retention_days",
            "revision",
            "archived_at",
            "created_by",
            "created_at",
            "updated_at",
            "requests_24h",
            "errors_24h",
            "key_count",
        )
        read_only_fields = fields

    def get_version_name(self, endpoint) -> str | None:
        return _label(endpoint.version)

    def get_canary_version_name(self, endpoint) -> str | None:
        return _label(endpoint.canary_version)

    def get_serve_kind(self, endpoint) -> str | None:
        if endpoint.engine == EngineKind.EXTERNAL:
            return "upstream"
        return selectors.serve_kind_for(endpoint.version) if endpoint.version else None

    def get_has_upstream_api_key(self, endpoint) -> bool:
        return bool(endpoint.upstream_api_key)


class EndpointCreateSerializer(StrictSerializer):
    project = ScopedPrimaryKeyRelatedField(selector=projects_for_user)
    name = serializers.CharField(max_length=120)
    slug = serializers.SlugField(
        max_length=64,
        required=False,
        allow_blank=True,
        default="",
        help_text="What clients pass as `model`; derived from the name when left out.",
    )
    stage = serializers.ChoiceField(choices=EndpointStage.choices, default=EndpointStage.STAGING)
    engine = serializers.ChoiceField(choices=EngineKind.choices, default=EngineKind.LOCAL)
    upstream_url = serializers.CharField(
        max_length=500,
        required=False,
        allow_blank=True,
        default="",
        help_text="External engines: the upstream's OpenAI-compatible base URL (…/v1).",
    )
    upstream_model = serializers.CharField(
        max_length=200, required=False, allow_blank=True, default=""
    )
    upstream_api_key = serializers.CharField(
        max_length=500, required=False, allow_blank=True, default="", write_only=True
    )
    store_text = serializers.BooleanField(default=True)
    log_retention_days = serializers.IntegerField(
        min_value=1, max_value=MAX_LOG_RETENTION_DAYS, default=30
    )


class EndpointUpdateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=120, required=False)
    stage = serializers.ChoiceField(choices=EndpointStage.choices, required=False)
    store_text = serializers.BooleanField(required=False)
    log_retention_days = serializers.IntegerField(
        min_value=1, max_value=MAX_LOG_RETENTION_DAYS, required=False
    )
    upstream_url = serializers.CharField(max_length=500, required=False, allow_blank=True)
    upstream_model = serializers.CharField(max_length=200, required=False, allow_blank=True)
    upstream_api_key = serializers.CharField(
        max_length=500, required=False, allow_blank=True, write_only=True
    )


class PromoteSerializer(StrictSerializer):
    version = ScopedPrimaryKeyRelatedField(selector=model_versions_for_user)
    reason = serializers.CharField(**REASON, help_text="Why (kept in the history).")
    override_reason = serializers.CharField(
        **REASON, help_text="Required to go past unmet goals: why promote anyway (audited)."
    )


class RollbackSerializer(StrictSerializer):
    reason = serializers.CharField(**REASON)


class CanarySerializer(StrictSerializer):
    version = ScopedPrimaryKeyRelatedField(
        selector=model_versions_for_user,
        required=False,
        allow_null=True,
        default=None,
        help_text="The canary version; null (or percent 0) stops the canary.",
    )
    percent = serializers.IntegerField(min_value=0, max_value=99, default=0)
    reason = serializers.CharField(**REASON)
    override_reason = serializers.CharField(**REASON)


class DeploymentSerializer(serializers.ModelSerializer):
    version_name = serializers.SerializerMethodField()
    started_by = serializers.CharField(source="started_by.username", default=None, read_only=True)

    class Meta:
        model = Deployment
        fields = (
            "id",
            "endpoint",
            "version",
            "version_name",
            "role",
            "action",
            "traffic_percent",
            "reason",
            "gate_failures",
            "override_reason",
            "started_at",
            "ended_at",
            "started_by",
        )
        read_only_fields = fields

    def get_version_name(self, deployment) -> str | None:
        return _label(deployment.version)


class KeyUsageSerializer(serializers.Serializer):
    period_tokens = serializers.IntegerField()
    period_requests = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    total_requests = serializers.IntegerField()
    period_start = serializers.DateField()
    resets_at = serializers.DateTimeField()


class ServingKeySerializer(serializers.ModelSerializer):
    status = serializers.SerializerMethodField()
    usage = serializers.SerializerMethodField()
    endpoint_slug = serializers.CharField(source="endpoint.slug", default=None, read_only=True)
    created_by = serializers.CharField(source="created_by.username", default=None, read_only=True)

    class Meta:
        model = ServingKey
        fields = (
            "id",
            "project",
            "endpoint",
            "endpoint_slug",
            "name",
            "prefix",
            "status",
            "requests_per_minute",
            "tokens_per_minute",
            "token_budget",
            "budget_period",
            "usage",
            "created_by",
            "created_at",
            "expires_at",
            "revoked_at",
            "last_used_at",
        )
        read_only_fields = fields

    def get_status(self, key) -> str:
        from django.utils import timezone

        if key.revoked_at is not None:
            return "revoked"
        if key.expires_at is not None and key.expires_at <= timezone.now():
            return "expired"
        return "active"

    @extend_schema_field(KeyUsageSerializer)
    def get_usage(self, key) -> dict:
        start, _end = selectors.budget_window(key.budget_period)
        return {
            "period_tokens": getattr(key, "period_tokens", 0),
            "period_requests": getattr(key, "period_requests", 0),
            "total_tokens": getattr(key, "total_tokens", 0),
            "total_requests": getattr(key, "total_requests", 0),
            "period_start": start.isoformat(),
            "resets_at": selectors.budget_resets_at(key.budget_period).isoformat(),
        }


class ServingKeyCreatedSerializer(ServingKeySerializer):
    key = serializers.CharField(read_only=True, help_text="Shown once: store it now.")

    class Meta(ServingKeySerializer.Meta):
        fields = (*ServingKeySerializer.Meta.fields, "key")


class ServingKeyCreateSerializer(StrictSerializer):
    project = ScopedPrimaryKeyRelatedField(selector=projects_for_user)
    name = serializers.CharField(max_length=120)
    endpoint = ScopedPrimaryKeyRelatedField(
        selector=selectors.endpoints_for_user,
        required=False,
        allow_null=True,
        default=None,
        help_text="Limit the key to one endpoint; null: every endpoint of the project.",
    )
    expires_in_days = serializers.IntegerField(
        required=False, allow_null=True, default=None, min_value=1, max_value=SERVING_KEY_MAX_DAYS
    )
    requests_per_minute = serializers.IntegerField(
        required=False, allow_null=True, default=None, min_value=1, max_value=2**31 - 1
    )
    tokens_per_minute = serializers.IntegerField(
        required=False, allow_null=True, default=None, min_value=1, max_value=2**31 - 1
    )
    token_budget = serializers.IntegerField(
        required=False, allow_null=True, default=None, min_value=1, max_value=2**62
    )
    budget_period = serializers.ChoiceField(choices=BudgetPeriod.choices, default="month")


class RequestLogSerializer(serializers.ModelSerializer):
    version_name = serializers.SerializerMethodField()
    key_prefix = serializers.CharField(source="key.prefix", default=None, read_only=True)

    class Meta:
        model = RequestLog
        fields = (
            "id",
            "response_id",
            "created_at",
            "endpoint",
            "version",
            "version_name",
            "key",
            "key_prefix",
            "source",
            "route",
            "status_code",
            "error_code",
            "latency_ms",
            "ttft_ms",
            "prompt_tokens",
            "completion_tokens",
            "cache_hit",
            "stream",
            "canary",
            "aborted",
            "finish_reason",
            "prompt_text",
            "completion_text",
        )
        read_only_fields = fields

    def get_version_name(self, log) -> str | None:
        return _label(log.version)


class ResponseFeedbackSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.username", default=None, read_only=True)

    class Meta:
        model = ResponseFeedback
        fields = (
            "id",
            "endpoint",
            "response_id",
            "score",
            "comment",
            "source",
            "user",
            "key",
            "created_at",
        )
        read_only_fields = fields


class FeedbackCreateSerializer(StrictSerializer):
    endpoint = ScopedPrimaryKeyRelatedField(selector=selectors.endpoints_for_user)
    response_id = serializers.CharField(max_length=64, help_text="The `id` of the answer.")
    score = serializers.IntegerField(
        min_value=-1, max_value=1, help_text="1 (thumbs up) or -1 (thumbs down)."
    )
    comment = serializers.CharField(max_length=10_000, required=False, allow_blank=True, default="")


class GateSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    version_name = serializers.CharField()
    allowed = serializers.BooleanField(help_text="May be promoted without an override.")
    refused = serializers.CharField(
        allow_null=True, help_text="Why no override lets it through, or null."
    )
    blockers = serializers.ListField(child=serializers.CharField())


class DashboardParamsSerializer(StrictSerializer):
    """The dashboard's query parameters (types only; ``dashboard.resolve_range`` checks the
    range itself)."""

    range = serializers.CharField(
        max_length=10,
        required=False,
        help_text="1h, 6h, 24h (default), 7d, 30d or 90d, ending now; or give start and end.",
    )
    start = serializers.DateTimeField(required=False, help_text="ISO 8601 (UTC if no offset).")
    end = serializers.DateTimeField(required=False, help_text="ISO 8601; default now.")
    version = serializers.IntegerField(
        min_value=1, required=False, help_text="Only this model version's series."
    )
