"""REST endpoints of feedback campaigns (feedback-campaigns: create, with an uploaded file in
multipart; change; launch; close; set the raters), their items (feedback-items) and judgments
(feedback-judgments).

Campaigns are read by anyone in the team who may see them (a rater: only the campaigns they
rate, without what names the models or the other raters); items and judgments by those who see
the team's work only: raters get items one at a time through their assignments.
"""

from __future__ import annotations

import django_filters
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework.decorators import action
from rest_framework.parsers import FormParser
from rest_framework.request import Request
from rest_framework.response import Response

from datasets_app.uploads import SizeLimitedUploadMixin, UploadParser
from evaluation.feedback import selectors
from evaluation.feedback.api import campaign_serializers as s
from evaluation.feedback.models import Campaign, Item, Judgment
from evaluation.feedback.services import campaigns as services
from llmhub.api.parsers import SafeJSONParser
from llmhub.api.viewsets import CreateMixin, ListRetrieveMixin, ScopedViewSet, UpdateMixin
from projects.permissions import Action


class CampaignFilterSet(django_filters.FilterSet):
    class Meta:
        model = Campaign
        fields = {"project": ["exact"], "status": ["exact"], "task": ["exact"]}


class ItemFilterSet(django_filters.FilterSet):
    class Meta:
        model = Item
        fields = {"campaign": ["exact"]}


class JudgmentFilterSet(django_filters.FilterSet):
    campaign = django_filters.NumberFilter(field_name="item__campaign")

    class Meta:
        model = Judgment
        fields = {"item": ["exact"]}


@extend_schema_view(
    create=extend_schema(
        request={
            "application/json": s.CampaignCreateSerializer,
            "multipart/form-data": s.CampaignCreateSerializer,
        },
        responses={201: s.CampaignSerializer},
    ),
    partial_update=extend_schema(
        request=s.CampaignUpdateSerializer, responses=s.CampaignSerializer
    ),
)
class CampaignViewSet(
    SizeLimitedUploadMixin, ListRetrieveMixin, CreateMixin, UpdateMixin, ScopedViewSet
):
    """Campaigns of judgments on model outputs: their items come from an evaluation run's
    outputs, logged production requests, an uploaded file, or generations of model versions."""

    upload_actions = ("create",)  # a campaign of an uploaded file: multipart create
    upload_field = "upload"

    serializer_class = s.CampaignSerializer
    create_serializer_class = s.CampaignCreateSerializer
    update_serializer_class = s.CampaignUpdateSerializer
    # Raters read the campaigns they rate (the selector keeps only those for them).
    read_action = Action.VIEW
    required_actions = {
        "create": Action.EDIT_PROJECT,
        "partial_update": Action.EDIT_PROJECT,
        "launch": Action.EDIT_PROJECT,
        "close": Action.EDIT_PROJECT,
        "raters": Action.EDIT_PROJECT,
    }
    parser_classes = (SafeJSONParser, UploadParser, FormParser)
    filterset_class = CampaignFilterSet
    search_fields = ("name",)
    ordering_fields = ("name", "created_at", "launched_at")

    def scoped_queryset(self, user):
        return selectors.campaigns_for_user(user)

    def create(self, request: Request, *args, **kwargs) -> Response:
        self.refuse_oversized_upload(request)
        return super().create(request, *args, **kwargs)

    def perform_service_create(self, data):
        return services.campaign_create(actor=self.request.user, **data)

    def perform_service_update(self, instance, data):
        return services.campaign_update(actor=self.request.user, campaign=instance, **data)

    @extend_schema(request=None, responses=s.CampaignSerializer)
    @action(detail=True, methods=["post"])
    def launch(self, request: Request, pk=None) -> Response:
        """Open the draft campaign to its raters (it needs items and raters for its overlap)."""
        campaign = services.campaign_launch(actor=request.user, campaign=self.get_object())
        return self.respond(campaign)

    @extend_schema(request=None, responses=s.CampaignSerializer)
    @action(detail=True, methods=["post"])
    def close(self, request: Request, pk=None) -> Response:
        """Close the campaign: assignments in hand expire; submitted judgments stay."""
        campaign = services.campaign_close(actor=request.user, campaign=self.get_object())
        return self.respond(campaign)

    @extend_schema(request=s.RatersSerializer, responses=s.CampaignSerializer)
    @action(detail=True, methods=["post"])
    def raters(self, request: Request, pk=None) -> Response:
        """Set the human raters (user ids of team members who may label). A rater with
        submitted judgments cannot be removed; a removed rater's assignments expire."""
        campaign = self.get_object()
        data = self._validated(s.RatersSerializer, request.data)
        campaign = services.campaign_set_raters(
            actor=request.user, campaign=campaign, raters=data["raters"]
        )
        return self.respond(campaign)


class ItemViewSet(ListRetrieveMixin, ScopedViewSet):
    """A campaign's items with their responses and where they came from (the team's work:
    raters get their items through their assignments)."""

    serializer_class = s.ItemSerializer
    required_actions = {}
    filterset_class = ItemFilterSet
    ordering_fields = ("index", "submitted")

    def scoped_queryset(self, user):
        return selectors.items_for_user(user)


class JudgmentViewSet(ListRetrieveMixin, ScopedViewSet):
    """Submitted judgments (the team's work), with the order each rater saw the responses."""

    serializer_class = s.JudgmentSerializer
    required_actions = {}
    filterset_class = JudgmentFilterSet
    ordering_fields = ("created_at",)

    def scoped_queryset(self, user):
        return selectors.judgments_for_user(user)
