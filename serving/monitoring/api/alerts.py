"""REST endpoints of alerts (list, acknowledge, resolve) and of their webhook deliveries (list,
retry a failed one)."""

from __future__ import annotations

import django_filters
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from llmhub.api.serializers import StrictSerializer
from llmhub.api.viewsets import ListRetrieveMixin, ScopedViewSet
from projects.permissions import Action
from serving.monitoring import alert_selectors, alerts, retrain, webhooks
from serving.monitoring.models import Alert, WebhookDelivery


class AlertSerializer(serializers.ModelSerializer):
    project = serializers.IntegerField(source="endpoint.project_id", read_only=True)
    endpoint_slug = serializers.CharField(source="endpoint.slug", read_only=True)
    version_name = serializers.SerializerMethodField()
    acknowledged_by = serializers.CharField(
        source="acknowledged_by.username", default=None, read_only=True
    )
    resolved_by = serializers.CharField(source="resolved_by.username", default=None, read_only=True)

    class Meta:
        model = Alert
        fields = (
            "id",
            "project",
            "endpoint",
            "endpoint_slug",
            "version",
            "version_name",
            "kind",
            "statistic",
            "state",
            "value",
            "threshold",
            "message",
            "drift_job",
            "times_seen",
            "opened_at",
            "last_seen_at",
            "acknowledged_at",
            "acknowledged_by",
            "resolved_at",
            "resolved_by",
            "retrain_dataset_version",
        )
        read_only_fields = fields

    def get_version_name(self, alert: Alert) -> str | None:
        return str(alert.version) if alert.version_id else None


class AlertNoteSerializer(StrictSerializer):
    note = serializers.CharField(
        max_length=alerts.NOTE_MAX_LENGTH, required=False, allow_blank=True, default=""
    )


class RetrainSerializer(serializers.Serializer):
    """The answer of ``POST /alerts/{id}/retrain/`` (the schema's; never reads a body)."""

    dataset_version = serializers.IntegerField()
    launch_url = serializers.CharField()
    training_job = serializers.DictField(help_text="The pre-filled launch values.")


class AlertFilterSet(django_filters.FilterSet):
    project = django_filters.NumberFilter(field_name="endpoint__project")

    class Meta:
        model = Alert
        fields = {"endpoint": ["exact"], "state": ["exact"], "kind": ["exact"]}


class AlertViewSet(ListRetrieveMixin, ScopedViewSet):
    """Alerts of the endpoints: a drift statistic past its threshold, an error rate or p95
    latency over its limit, a feedback score under its limit. Open -> acknowledged -> resolved
    (or open -> resolved); each move is in the activity feed and sent to the webhook."""

    serializer_class = AlertSerializer
    required_actions = {
        "acknowledge": Action.RUN_JOBS,
        "resolve": Action.RUN_JOBS,
        "retrain": Action.EDIT_DATA,
    }
    filterset_class = AlertFilterSet
    ordering_fields = ("opened_at", "last_seen_at", "times_seen")

    def scoped_queryset(self, user):
        return alert_selectors.alerts_for_user(user)

    @extend_schema(request=AlertNoteSerializer, responses=AlertSerializer)
    @action(detail=True, methods=["post"])
    def acknowledge(self, request: Request, pk=None) -> Response:
        """Someone is on it (an open alert only); ``note`` goes to the activity feed."""
        alert = self.get_object()
        data = self._validated(AlertNoteSerializer, request.data)
        return self.respond(alerts.alert_acknowledge(actor=request.user, alert=alert, **data))

    @extend_schema(request=AlertNoteSerializer, responses=AlertSerializer)
    @action(detail=True, methods=["post"])
    def resolve(self, request: Request, pk=None) -> Response:
        """Done (an open or acknowledged alert); the next breach opens a new alert."""
        alert = self.get_object()
        data = self._validated(AlertNoteSerializer, request.data)
        return self.respond(alerts.alert_resolve(actor=request.user, alert=alert, **data))

    @extend_schema(request=None, responses=RetrainSerializer)
    @action(detail=True, methods=["post"])
    def retrain(self, request: Request, pk=None) -> Response:
        """Drift to retraining: a dataset version of the alert's window of prompts (labels from
        thumbs up; made once, a second call answers the same), the launch page pre-filled to
        fine-tune the serving version on it, and those launch values (ids), which
        ``POST /api/v1/training-jobs/`` takes as they are. 400 with the reason for an endpoint
        that stores no text or a window without prompts."""
        alert = self.get_object()
        version = retrain.retrain_propose(actor=request.user, alert=alert)
        return Response(
            {
                "dataset_version": version.pk,
                "launch_url": retrain.retrain_launch_url(alert),
                "training_job": retrain.launch_values(alert),
            }
        )


class WebhookDeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = (
            "id",
            "alert",
            "endpoint",
            "event",
            "url",
            "status",
            "attempts",
            "next_attempt_at",
            "last_error",
            "response_status",
            "created_at",
            "delivered_at",
            "payload",
        )
        read_only_fields = fields


class WebhookDeliveryFilterSet(django_filters.FilterSet):
    project = django_filters.NumberFilter(field_name="endpoint__project")

    class Meta:
        model = WebhookDelivery
        fields = {"endpoint": ["exact"], "alert": ["exact"], "status": ["exact"]}


class WebhookDeliveryViewSet(ListRetrieveMixin, ScopedViewSet):
    """What was sent to the endpoints' webhooks, with retries and backoff; a delivery out of
    attempts stays ``failed`` with its last error until someone retries it."""

    serializer_class = WebhookDeliverySerializer
    required_actions = {"retry": Action.RUN_JOBS}
    filterset_class = WebhookDeliveryFilterSet
    ordering_fields = ("created_at", "next_attempt_at")

    def scoped_queryset(self, user):
        return alert_selectors.deliveries_for_user(user)

    @extend_schema(request=None, responses=WebhookDeliverySerializer)
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk=None) -> Response:
        """Send a failed delivery again: pending, attempts from zero, due now."""
        delivery = self.get_object()
        return self.respond(webhooks.delivery_retry(actor=request.user, delivery=delivery))
