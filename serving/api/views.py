"""REST endpoints of the deploy stage: endpoints (promote, roll back, canary, the goal gate,
history, figures), serving keys, the request log and feedback on responses.

The inference process's own API (``/v1/completions`` ...) is not here: it is the engine's
(serving/engine/app.py), served by ``manage.py serve``.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from llmhub.api.params import query_id, query_int
from llmhub.api.viewsets import (
    CreateMixin,
    DestroyMixin,
    ListRetrieveMixin,
    ScopedViewSet,
    UpdateMixin,
)
from projects.permissions import Action
from serving import selectors, services
from serving.api import filters
from serving.api import serializers as s
from serving.monitoring import dashboard
from training.selectors import get_model_version_for_user

MAX_HISTORY_ROWS = 500
MAX_STATS_HOURS = 24 * 90


@extend_schema_view(
    create=extend_schema(request=s.EndpointCreateSerializer, responses={201: s.EndpointSerializer}),
    partial_update=extend_schema(
        request=s.EndpointUpdateSerializer, responses=s.EndpointSerializer
    ),
    destroy=extend_schema(description="Archive the endpoint: it stops serving; history stays."),
)
class EndpointViewSet(ListRetrieveMixin, CreateMixin, UpdateMixin, DestroyMixin, ScopedViewSet):
    """Endpoints applications call with the OpenAI API (``model`` = the slug): what version
    each serves, its canary, its history; promotion is gated by the project's goals."""

    serializer_class = s.EndpointSerializer
    create_serializer_class = s.EndpointCreateSerializer
    update_serializer_class = s.EndpointUpdateSerializer
    required_actions = {
        "create": Action.EDIT_PROJECT,
        "partial_update": Action.EDIT_PROJECT,
        "destroy": Action.EDIT_PROJECT,
        "promote": Action.EDIT_PROJECT,
        "rollback": Action.EDIT_PROJECT,
        "canary": Action.EDIT_PROJECT,
    }
    filterset_class = filters.EndpointFilterSet
    search_fields = ("name", "slug")
    ordering_fields = ("name", "created_at", "updated_at")

    def scoped_queryset(self, user):
        if getattr(self, "action", None) == "dashboard":
            # The dashboard reads rollups only: not the list's counts of the raw log.
            return dashboard.endpoints_for_user(user)
        return selectors.endpoints_for_user(user)

    def perform_service_create(self, data):
        return services.endpoint_create(actor=self.request.user, **data)

    def perform_service_update(self, instance, data):
        return services.endpoint_update(actor=self.request.user, endpoint=instance, **data)

    def perform_service_destroy(self, instance) -> None:
        services.endpoint_archive(actor=self.request.user, endpoint=instance)

    @extend_schema(request=s.PromoteSerializer, responses=s.EndpointSerializer)
    @action(detail=True, methods=["post"])
    def promote(self, request: Request, pk=None) -> Response:
        """Serve ``version``. Unmet or unmeasured goals refuse it (400 listing every reason
        under ``fields.version``) unless ``override_reason`` says why to go on (audited)."""
        endpoint = self.get_object()
        data = self._validated(s.PromoteSerializer, request.data)
        services.endpoint_promote(actor=request.user, endpoint=endpoint, **data)
        return self.respond(endpoint)

    @extend_schema(request=s.RollbackSerializer, responses=s.EndpointSerializer)
    @action(detail=True, methods=["post"])
    def rollback(self, request: Request, pk=None) -> Response:
        """Serve the previous primary version again (not gated: it served before)."""
        endpoint = self.get_object()
        data = self._validated(s.RollbackSerializer, request.data)
        services.endpoint_rollback(actor=request.user, endpoint=endpoint, **data)
        return self.respond(endpoint)

    @extend_schema(request=s.CanarySerializer, responses=s.EndpointSerializer)
    @action(detail=True, methods=["post"])
    def canary(self, request: Request, pk=None) -> Response:
        """Send ``percent`` (1-99) of the traffic to ``version`` (gated like a promotion);
        ``version`` null or ``percent`` 0 stops the canary."""
        endpoint = self.get_object()
        data = self._validated(s.CanarySerializer, request.data)
        services.endpoint_set_canary(actor=request.user, endpoint=endpoint, **data)
        return self.respond(endpoint)

    @extend_schema(
        parameters=[OpenApiParameter("version", int, required=True)],
        responses=s.GateSerializer,
    )
    @action(detail=True, methods=["get"])
    def gate(self, request: Request, pk=None) -> Response:
        """Whether ``version`` may be promoted here: what refuses it outright, and the goals
        it misses (which an override may go past), for forms before they post."""
        endpoint = self.get_object()
        version = get_model_version_for_user(
            request.user, query_id(request, "version", required=True)
        )
        blockers = selectors.promotion_blockers(version)
        refused = services.promotion_refusal(endpoint=endpoint, version=version)
        return Response(
            {
                "version": version.pk,
                "version_name": str(version),
                "allowed": refused is None and not blockers,
                "refused": refused,
                "blockers": blockers,
            }
        )

    @extend_schema(responses=s.DeploymentSerializer(many=True))
    @action(detail=True, methods=["get"])
    def deployments(self, request: Request, pk=None) -> Response:
        """The endpoint's history, newest first: which version, in which role, from when to
        when, by whom, why (and the goals an override went past)."""
        endpoint = self.get_object()
        rows = selectors.deployments_for_user(request.user).filter(endpoint=endpoint)
        return Response(s.DeploymentSerializer(rows[:MAX_HISTORY_ROWS], many=True).data)

    @extend_schema(
        parameters=[OpenApiParameter("hours", int, description="The window (default 24).")],
        responses=OpenApiTypes.OBJECT,
    )
    @action(detail=True, methods=["get"])
    def stats(self, request: Request, pk=None) -> Response:
        """Per version serving in the window (primary and canary side by side): requests,
        errors, p50/p95 latency, time to first token, tokens, cache hits, thumbs."""
        endpoint = self.get_object()
        hours = query_int(request, "hours", default=24, min_value=1, max_value=MAX_STATS_HOURS)
        since = timezone.now() - timedelta(hours=hours)
        return Response(
            {
                "endpoint": endpoint.pk,
                "hours": hours,
                "since": since.isoformat(),
                "versions": selectors.version_stats(endpoint, since=since),
            }
        )

    @extend_schema(parameters=[s.DashboardParamsSerializer], responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["get"])
    def dashboard(self, request: Request, pk=None) -> Response:
        """Series per version (the canary's beside the main one) over ``range`` or ``start`` to
        ``end``, from the per-minute/hour/day rollups: requests per minute, errors by status,
        latency and time-to-first-token percentiles, tokens/s, cache hit rate, feedback score.
        Every bucket is a point (no traffic: zero counts, null percentiles); an empty range
        says so in ``message``."""
        endpoint = self.get_object()
        names = ("range", "start", "end", "version")
        data = self._validated(
            s.DashboardParamsSerializer,
            {n: request.query_params[n] for n in names if request.query_params.get(n)},
        )
        time_range = dashboard.resolve_range(
            range_name=data.get("range"), start=data.get("start"), end=data.get("end")
        )
        return Response(
            {
                "endpoint": endpoint.pk,
                **dashboard.endpoint_dashboard(
                    endpoint, time_range=time_range, version_id=data.get("version")
                ),
            }
        )


@extend_schema_view(
    create=extend_schema(
        request=s.ServingKeyCreateSerializer, responses={201: s.ServingKeyCreatedSerializer}
    ),
)
class ServingKeyViewSet(ListRetrieveMixin, CreateMixin, ScopedViewSet):
    """Keys applications send to the inference process (``Authorization: Bearer ...``). The
    plaintext is in the create answer only; usage counts the key's budget period and all
    time."""

    serializer_class = s.ServingKeySerializer
    create_serializer_class = s.ServingKeyCreateSerializer
    required_actions = {"create": Action.EDIT_PROJECT, "revoke": Action.EDIT_PROJECT}
    filterset_class = filters.ServingKeyFilterSet
    search_fields = ("name", "prefix")
    ordering_fields = ("created_at", "name", "last_used_at")

    def scoped_queryset(self, user):
        return selectors.serving_keys_for_user(user)

    def create(self, request: Request, *args, **kwargs) -> Response:
        data = self._validated(self.create_serializer_class, request.data)
        key, plaintext = services.serving_key_create(actor=request.user, **data)
        key = self.get_queryset().get(pk=key.pk)  # with its usage annotations
        key.key = plaintext
        return Response(s.ServingKeyCreatedSerializer(key).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=s.ServingKeySerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk=None) -> Response:
        """Revoke at once (the inference process refuses it within a poll)."""
        return self.respond(services.serving_key_revoke(actor=request.user, key=self.get_object()))

    @extend_schema(responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["get"])
    def usage(self, request: Request, pk=None) -> Response:
        """Requests and tokens per UTC day, the last 90 days, newest first."""
        key = self.get_object()
        return Response({"key": key.pk, "days": selectors.key_usage(key)})


class RequestLogViewSet(ListRetrieveMixin, ScopedViewSet):
    """The request log the inference process writes in batches (no text where the endpoint's
    ``store_text`` is off)."""

    serializer_class = s.RequestLogSerializer
    filterset_class = filters.RequestLogFilterSet
    ordering_fields = ("created_at", "latency_ms")

    def scoped_queryset(self, user):
        return selectors.request_logs_for_user(user)


@extend_schema_view(
    create=extend_schema(
        request=s.FeedbackCreateSerializer, responses={201: s.ResponseFeedbackSerializer}
    ),
)
class ResponseFeedbackViewSet(ListRetrieveMixin, CreateMixin, ScopedViewSet):
    """Thumbs up or down on responses, by response id (applications with a serving key send
    theirs to the inference process's feedback route instead)."""

    serializer_class = s.ResponseFeedbackSerializer
    create_serializer_class = s.FeedbackCreateSerializer
    required_actions = {"create": Action.RUN_JOBS}
    filterset_class = filters.ResponseFeedbackFilterSet
    ordering_fields = ("created_at",)

    def scoped_queryset(self, user):
        return selectors.feedback_for_user(user)

    def perform_service_create(self, data):
        return services.feedback_record(actor=self.request.user, source="api", **data)
