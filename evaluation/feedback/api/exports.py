"""REST endpoints of feedback exports: launch one (a job), list and follow them."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from evaluation.feedback.export_selectors import exportable_campaigns_for_user, exports_for_user
from evaluation.feedback.models import FeedbackExport
from evaluation.feedback.services.exports import EXPORT_FORMATS, feedback_export_launch
from llmhub.api.fields import ScopedPrimaryKeyRelatedField
from llmhub.api.serializers import JobSerializer, StrictSerializer
from llmhub.api.viewsets import CreateMixin, ListRetrieveMixin, ScopedViewSet
from llmhub.services import job_cancel
from projects.permissions import Action


class FeedbackExportSerializer(JobSerializer):
    campaign_name = serializers.CharField(source="campaign.name", read_only=True)
    dataset = serializers.IntegerField(
        source="dataset_version.dataset_id", default=None, read_only=True
    )

    class Meta:
        model = FeedbackExport
        fields = (
            *JobSerializer.JOB_FIELDS,
            "campaign",
            "campaign_name",
            "format",
            "include_ai",
            "rows",
            "dataset_version",
            "dataset",
        )
        read_only_fields = fields


class FeedbackExportLaunchSerializer(StrictSerializer):
    campaign = ScopedPrimaryKeyRelatedField(selector=exportable_campaigns_for_user)
    format = serializers.ChoiceField(
        choices=EXPORT_FORMATS,
        help_text="preference: prompt/chosen/rejected; unpaired: prompt/completion/label.",
    )
    include_ai = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Also count the judgments of AI raters approved for training.",
    )


@extend_schema_view(
    create=extend_schema(
        request=FeedbackExportLaunchSerializer, responses={201: FeedbackExportSerializer}
    ),
)
class FeedbackExportViewSet(ListRetrieveMixin, CreateMixin, ScopedViewSet):
    """Exports of a campaign's labels as dataset versions (background jobs with progress)."""

    serializer_class = FeedbackExportSerializer
    create_serializer_class = FeedbackExportLaunchSerializer
    required_actions = {"create": Action.EDIT_PROJECT, "cancel": Action.RUN_JOBS}
    filterset_fields = ("project", "campaign", "status", "format")

    def scoped_queryset(self, user):
        return exports_for_user(user)

    def perform_service_create(self, data):
        return feedback_export_launch(
            actor=self.request.user,
            campaign=data["campaign"],
            format=data["format"],
            include_ai=data.get("include_ai", False),
        )

    @extend_schema(request=None, responses=FeedbackExportSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk=None) -> Response:
        return self.respond(
            job_cancel(actor=request.user, job=self.get_object()), status_code=status.HTTP_200_OK
        )
