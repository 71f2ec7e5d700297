"""The manager's statistics of a campaign: GET /api/v1/feedback-stats/{campaign id}/.

Read-only, for whoever sees the project's work (VIEW_WORK): a rater gets 404, since the
statistics name raters, models and everyone's answers (blind mode)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from evaluation.feedback.stats import campaign_stats, campaigns_with_stats_for_user
from llmhub.api.viewsets import ScopedViewSet
from projects.permissions import Action


class FeedbackStatsViewSet(ScopedViewSet):
    """A campaign's progress per rater, agreement (Cohen, Fleiss, Krippendorff, with 95%
    intervals), AI raters against the humans, position bias, items in disagreement, outlying
    raters, and per-model win rates with a Bradley-Terry ranking."""

    http_method_names = ["get", "head", "options"]
    read_action = Action.VIEW_WORK
    required_actions: dict = {}

    def scoped_queryset(self, user):
        return campaigns_with_stats_for_user(user)

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def retrieve(self, request: Request, *args, **kwargs) -> Response:
        return Response(campaign_stats(self.get_object()))
