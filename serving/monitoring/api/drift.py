"""REST endpoints of drift checks (list, follow, start one) and of each endpoint's monitor
settings (list, read, change: drift reference and thresholds, alert limits, webhook)."""

from __future__ import annotations

import django_filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.response import Response

from datasets_app.selectors import versions_for_user
from llmhub.api.fields import ScopedPrimaryKeyRelatedField
from llmhub.api.serializers import JobSerializer, StrictSerializer
from llmhub.api.viewsets import CreateMixin, ListRetrieveMixin, ScopedViewSet, UpdateMixin
from llmhub.services import job_cancel
from projects.api.permissions import required_action
from projects.permissions import Action
from projects.services import require
from serving.monitoring import selectors, services
from serving.monitoring.models import DriftJob, MonitorSettings
from serving.selectors import endpoints_for_user

# --- drift jobs ----------------------------------------------------------------------------


class DriftJobSerializer(JobSerializer):
    """A drift check; ``message`` says what it found (or why there was nothing to compare)."""

    endpoint_slug = serializers.CharField(source="endpoint.slug", read_only=True)
    version_name = serializers.SerializerMethodField()
    reference_name = serializers.SerializerMethodField()
    message = serializers.SerializerMethodField()

    class Meta:
        model = DriftJob
        fields = (
            *JobSerializer.JOB_FIELDS,
            "endpoint",
            "endpoint_slug",
            "version",
            "version_name",
            "reference_version",
            "reference_name",
            "reference_split",
            "reference_column",
            "window_start",
            "window_end",
            "window_requests",
            "scheduled",
            "result",
            "message",
            "reference_rows",
            "window_rows",
        )
        read_only_fields = fields

    def get_version_name(self, job: DriftJob) -> str | None:
        return str(job.version) if job.version_id else None

    def get_reference_name(self, job: DriftJob) -> str | None:
        return str(job.reference_version) if job.reference_version_id else None

    def get_message(self, job: DriftJob) -> str:
        return (job.report or {}).get("message", "")


class DriftJobDetailSerializer(DriftJobSerializer):
    """With the whole report (every check, its statistics, what moved most) and the config."""

    class Meta(DriftJobSerializer.Meta):
        fields = (*DriftJobSerializer.Meta.fields, "config", "report")
        read_only_fields = fields


class DriftJobCreateSerializer(StrictSerializer):
    endpoint = ScopedPrimaryKeyRelatedField(selector=endpoints_for_user)
    window_hours = serializers.IntegerField(
        min_value=1,
        max_value=services.MAX_WINDOW_HOURS,
        required=False,
        help_text="How far back the window reaches (default: the endpoint's monitor settings).",
    )


class DriftJobFilterSet(django_filters.FilterSet):
    class Meta:
        model = DriftJob
        fields = {
            "project": ["exact"],
            "endpoint": ["exact"],
            "result": ["exact"],
            "status": ["exact"],
            "scheduled": ["exact"],
        }


@extend_schema_view(
    create=extend_schema(request=DriftJobCreateSerializer, responses={201: DriftJobSerializer}),
    retrieve=extend_schema(responses=DriftJobDetailSerializer),
)
class DriftJobViewSet(ListRetrieveMixin, CreateMixin, ScopedViewSet):
    """Drift checks of endpoints' recent requests against a reference (the periodic ones and
    those started by hand); the detail holds the whole report."""

    serializer_class = DriftJobSerializer
    create_serializer_class = DriftJobCreateSerializer
    required_actions = {"create": Action.RUN_JOBS, "cancel": Action.RUN_JOBS}
    filterset_class = DriftJobFilterSet
    ordering_fields = ("created_at", "window_end", "finished_at")

    def get_serializer_class(self):
        if self.action == "retrieve":
            return DriftJobDetailSerializer
        return DriftJobSerializer

    def scoped_queryset(self, user):
        return selectors.drift_jobs_for_user(user)

    def perform_service_create(self, data):
        return services.drift_job_create(
            actor=self.request.user,
            endpoint=data["endpoint"],
            window_hours=data.get("window_hours"),
        )

    @extend_schema(request=None, responses=DriftJobSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk=None) -> Response:
        return self.respond(
            job_cancel(actor=request.user, job=self.get_object()), status_code=status.HTTP_200_OK
        )


# --- monitor settings ----------------------------------------------------------------------


class MonitorSettingsSerializer(serializers.ModelSerializer):
    """An endpoint's monitor settings; the webhook secret is never returned
    (``has_webhook_secret`` says whether one is set)."""

    project = serializers.IntegerField(source="endpoint.project_id", read_only=True)
    endpoint_slug = serializers.CharField(source="endpoint.slug", read_only=True)
    reference_name = serializers.SerializerMethodField()
    has_webhook_secret = serializers.SerializerMethodField()

    class Meta:
        model = MonitorSettings
        fields = (
            "id",
            "project",
            "endpoint",
            "endpoint_slug",
            "drift_enabled",
            "reference_version",
            "reference_name",
            "reference_split",
            "reference_column",
            "window_requests",
            "window_hours",
            "drift_every_minutes",
            "thresholds",
            "error_rate_max",
            "p95_latency_ms_max",
            "feedback_score_min",
            "limit_window_minutes",
            "limit_min_requests",
            "webhook_url",
            "has_webhook_secret",
            "drift_claimed_at",
            "limits_checked_at",
            "updated_at",
        )
        read_only_fields = fields

    def get_reference_name(self, row: MonitorSettings) -> str | None:
        return str(row.reference_version) if row.reference_version_id else None

    def get_has_webhook_secret(self, row: MonitorSettings) -> bool:
        return bool(row.webhook_secret)


class MonitorSettingsUpdateSerializer(StrictSerializer):
    drift_enabled = serializers.BooleanField(required=False)
    reference_version = ScopedPrimaryKeyRelatedField(
        selector=versions_for_user,
        required=False,
        allow_null=True,
        help_text="null: the serving version's training data.",
    )
    reference_split = serializers.CharField(max_length=64, required=False, allow_blank=True)
    reference_column = serializers.CharField(max_length=200, required=False, allow_blank=True)
    window_requests = serializers.IntegerField(required=False)
    window_hours = serializers.IntegerField(required=False)
    drift_every_minutes = serializers.IntegerField(required=False)
    thresholds = serializers.JSONField(
        required=False, help_text="Drift thresholds by name (see GET .../drift-settings-schema/)."
    )
    error_rate_max = serializers.FloatField(required=False, allow_null=True)
    p95_latency_ms_max = serializers.FloatField(required=False, allow_null=True)
    feedback_score_min = serializers.FloatField(required=False, allow_null=True)
    limit_window_minutes = serializers.IntegerField(required=False)
    limit_min_requests = serializers.IntegerField(required=False, min_value=0)
    webhook_url = serializers.CharField(max_length=500, required=False, allow_blank=True)
    webhook_secret = serializers.CharField(
        max_length=200, required=False, allow_blank=True, write_only=True
    )


class MonitorSettingsFilterSet(django_filters.FilterSet):
    project = django_filters.NumberFilter(field_name="endpoint__project")

    class Meta:
        model = MonitorSettings
        fields = {"endpoint": ["exact"]}


@extend_schema_view(
    partial_update=extend_schema(
        request=MonitorSettingsUpdateSerializer, responses=MonitorSettingsSerializer
    ),
)
class MonitorSettingsViewSet(ListRetrieveMixin, UpdateMixin, ScopedViewSet):
    """How each endpoint is watched. ``?endpoint=<id>`` lists that endpoint's settings (its
    defaults are written the first time they are asked for)."""

    serializer_class = MonitorSettingsSerializer
    update_serializer_class = MonitorSettingsUpdateSerializer
    required_actions = {"partial_update": Action.EDIT_PROJECT}
    filterset_class = MonitorSettingsFilterSet
    ordering_fields = ("endpoint", "updated_at")

    def scoped_queryset(self, user):
        return selectors.monitor_settings_for_user(user)

    def check_object_permissions(self, request: Request, obj: MonitorSettings) -> None:
        super().check_object_permissions(request, obj)
        # The role table's generic check follows foreign keys to the team, and these rows
        # reach theirs through a one-to-one: check the write here, before the body is read.
        if request.method not in SAFE_METHODS:
            needed = required_action(type(self), self.action or "", request.method)
            if needed is not None:
                require(request.user, obj.endpoint.project.team, needed)

    def list(self, request: Request, *args, **kwargs) -> Response:
        wanted = request.query_params.get("endpoint", "")
        if wanted.isdigit() and len(wanted) < 19:
            endpoint = endpoints_for_user(request.user).filter(pk=int(wanted)).first()
            if endpoint is not None:
                services.monitor_settings_get(endpoint=endpoint)
        return super().list(request, *args, **kwargs)

    def perform_service_update(self, instance, data):
        return services.monitor_settings_update(
            actor=self.request.user, endpoint=instance.endpoint, **data
        )

    @extend_schema(request=None, responses=OpenApiTypes.OBJECT)
    @action(detail=False, methods=["get"], url_path="drift-settings-schema")
    def drift_settings_schema(self, request: Request) -> Response:
        """Every drift threshold and size: name, type, default, range, help and rule."""
        return Response(services.drift_settings_schema())
