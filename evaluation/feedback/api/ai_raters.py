"""REST endpoints of AI raters (feedback-ai-raters: create, run, approve), their jobs
(feedback-ai-rating-jobs: read, cancel) and generations of model versions for a campaign
(feedback-generations: launch, read, cancel). An AI rater's key is never returned."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from datasets_app.selectors import versions_for_user
from evaluation.feedback import ai_selectors as selectors
from evaluation.feedback.models import AIRater, AIRatingJob, GenerationJob
from evaluation.feedback.runtime.judge import DEFAULT_PROMPTS
from evaluation.feedback.services import ai_raters as services
from llmhub.api.fields import ScopedPrimaryKeyRelatedField
from llmhub.api.serializers import JobSerializer, StrictSerializer
from llmhub.api.viewsets import CreateMixin, ListRetrieveMixin, ScopedViewSet
from llmhub.services import job_cancel
from projects.permissions import Action
from serving.selectors import endpoints_for_user
from training.selectors import model_versions_for_user

# --- serializers ------------------------------------------------------------------------------


class AIRaterSerializer(serializers.ModelSerializer):
    """An AI rater; ``has_api_key`` says whether a key is set (the key itself never leaves)."""

    has_api_key = serializers.SerializerMethodField()
    approved_by = serializers.CharField(source="approved_by.username", default=None, read_only=True)
    judged = serializers.IntegerField(read_only=True)

    class Meta:
        model = AIRater
        fields = (
            "id",
            "campaign",
            "name",
            "endpoint",
            "base_url",
            "model",
            "has_api_key",
            "judging_prompt",
            "use_for_training",
            "agreement_when_approved",
            "approved_by",
            "judged",
            "created_at",
        )
        read_only_fields = fields

    def get_has_api_key(self, rater: AIRater) -> bool:
        return bool(rater.api_key)


class AIRaterCreateSerializer(StrictSerializer):
    campaign = ScopedPrimaryKeyRelatedField(selector=selectors.work_campaigns_for_user)
    name = serializers.CharField(max_length=120)
    judging_prompt = serializers.CharField(
        max_length=20_000,
        help_text="Placeholders: {instructions}, {prompt}, {responses} (required), {criteria}. "
        "GET feedback-ai-raters/default-prompts/ gives a default for each task type.",
    )
    endpoint = ScopedPrimaryKeyRelatedField(
        selector=endpoints_for_user, required=False, allow_null=True, default=None
    )
    base_url = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    model = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    api_key = serializers.CharField(
        max_length=500, required=False, allow_blank=True, default="", write_only=True
    )


class AIRatingLaunchSerializer(StrictSerializer):
    max_items = serializers.IntegerField(
        min_value=1, max_value=services.MAX_AI_ITEMS, required=False, allow_null=True, default=None
    )


class AIRaterApproveSerializer(StrictSerializer):
    use_for_training = serializers.BooleanField()


class AIRatingJobSerializer(JobSerializer):
    class Meta:
        model = AIRatingJob
        fields = (*JobSerializer.JOB_FIELDS, "ai_rater", "max_items", "judged")
        read_only_fields = fields


class GenerationJobSerializer(JobSerializer):
    class Meta:
        model = GenerationJob
        fields = (
            *JobSerializer.JOB_FIELDS,
            "campaign",
            "version_ids",
            "endpoint_ids",
            "settings",
            "made",
        )
        read_only_fields = fields


class GenerationLaunchSerializer(StrictSerializer):
    campaign = ScopedPrimaryKeyRelatedField(selector=selectors.work_campaigns_for_user)
    versions = serializers.ListField(
        child=ScopedPrimaryKeyRelatedField(selector=model_versions_for_user),
        required=False,
        default=list,
        min_length=2,
        max_length=8,
        help_text="Model versions the job loads and runs; or give endpoints.",
    )
    endpoints = serializers.ListField(
        child=ScopedPrimaryKeyRelatedField(selector=endpoints_for_user),
        required=False,
        default=list,
        min_length=2,
        max_length=8,
        help_text="Endpoints of the project the job calls through the inference process (each "
        "response records the version that answered); or give versions.",
    )
    prompts = serializers.ListField(
        child=serializers.CharField(max_length=services.MAX_PROMPT_CHARS, trim_whitespace=False),
        required=False,
        default=list,
        max_length=services.MAX_GENERATION_PROMPTS,
    )
    dataset_version = ScopedPrimaryKeyRelatedField(
        selector=versions_for_user, required=False, allow_null=True, default=None
    )
    column = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    settings = serializers.DictField(
        required=False, default=dict, help_text="max_tokens (1-2048), temperature (0-2)."
    )


# --- views ------------------------------------------------------------------------------------


@extend_schema_view(
    create=extend_schema(request=AIRaterCreateSerializer, responses={201: AIRaterSerializer})
)
class AIRaterViewSet(ListRetrieveMixin, CreateMixin, ScopedViewSet):
    """Models that judge a campaign's items (an endpoint of the project, or an OpenAI-compatible
    URL with a key) with a judging prompt; ``run`` starts a job, ``approve`` lets (or stops) its
    labels count for training, with its agreement with the humans on record."""

    serializer_class = AIRaterSerializer
    create_serializer_class = AIRaterCreateSerializer
    required_actions = {
        "create": Action.EDIT_PROJECT,
        "run": Action.EDIT_PROJECT,
        "approve": Action.EDIT_PROJECT,
    }
    filterset_fields = ("campaign", "use_for_training")
    search_fields = ("name",)
    ordering_fields = ("name", "created_at")

    def scoped_queryset(self, user):
        return selectors.ai_raters_for_user(user)

    def perform_service_create(self, data):
        return services.ai_rater_create(actor=self.request.user, **data)

    @extend_schema(request=AIRatingLaunchSerializer, responses={201: AIRatingJobSerializer})
    @action(detail=True, methods=["post"])
    def run(self, request: Request, pk=None) -> Response:
        """Queue a job: the AI judges the items it has not judged yet (at most ``max_items``)."""
        rater = self.get_object()
        data = self._validated(AIRatingLaunchSerializer, request.data)
        job = services.ai_rating_launch(actor=request.user, ai_rater=rater, **data)
        job = selectors.ai_rating_jobs_for_user(request.user).get(pk=job.pk)
        return Response(AIRatingJobSerializer(job).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=AIRaterApproveSerializer, responses=AIRaterSerializer)
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk=None) -> Response:
        """``use_for_training`` true: its labels may be exported for training (refused while no
        human judged the same items); false: they may not."""
        rater = self.get_object()
        data = self._validated(AIRaterApproveSerializer, request.data)
        services.ai_rater_approve(actor=request.user, ai_rater=rater, **data)
        return self.respond(rater)

    @extend_schema(responses=dict[str, str])
    @action(detail=False, methods=["get"], url_path="default-prompts")
    def default_prompts(self, request: Request) -> Response:
        """The default judging prompt of each task type."""
        return Response(DEFAULT_PROMPTS)


class AIRatingJobViewSet(ListRetrieveMixin, ScopedViewSet):
    """AI-rating jobs: progress, what was judged; ``cancel`` stops one."""

    serializer_class = AIRatingJobSerializer
    required_actions = {"cancel": Action.RUN_JOBS}
    filterset_fields = ("project", "status", "ai_rater")
    ordering_fields = ("created_at", "finished_at")

    def scoped_queryset(self, user):
        return selectors.ai_rating_jobs_for_user(user)

    @extend_schema(request=None, responses=AIRatingJobSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk=None) -> Response:
        return self.respond(job_cancel(actor=request.user, job=self.get_object()))


@extend_schema_view(
    create=extend_schema(
        request=GenerationLaunchSerializer, responses={201: GenerationJobSerializer}
    )
)
class GenerationJobViewSet(ListRetrieveMixin, CreateMixin, ScopedViewSet):
    """Generations of two or more model versions on the same prompts (a list, or a column of a
    dataset version), made into a "versions" campaign's items by a gpu job: the versions loaded
    by the job, or the project's endpoints called through the inference process."""

    serializer_class = GenerationJobSerializer
    create_serializer_class = GenerationLaunchSerializer
    required_actions = {"create": Action.EDIT_PROJECT, "cancel": Action.RUN_JOBS}
    filterset_fields = ("project", "status", "campaign")
    ordering_fields = ("created_at", "finished_at")

    def scoped_queryset(self, user):
        return selectors.generation_jobs_for_user(user)

    def perform_service_create(self, data):
        return services.generation_launch(actor=self.request.user, **data)

    @extend_schema(request=None, responses=GenerationJobSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk=None) -> Response:
        return self.respond(job_cancel(actor=request.user, job=self.get_object()))
