"""Campaigns of judgments on model outputs.

A :class:`Campaign` holds :class:`Item` rows (a prompt and two or more responses, each with
where it came from). Raters (people, and AI raters through a job) get :class:`Assignment` rows:
an item given to one rater, at most ``overlap`` raters per item, never twice to one rater,
returned to the queue when not submitted before ``expires_at``. A :class:`Judgment` is the
submitted answer of one assignment (one at most: the one-to-one key makes a second refused by
the database too). Raters see responses in a random order recorded on the assignment
(``order``), so position bias can be measured; in blind mode nothing they see names a model.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from llmhub.models import Job

# Bounds a manager may choose.
MAX_OVERLAP = 10
MAX_RESPONSES_PER_ITEM = 8
DEFAULT_ASSIGNMENT_TIMEOUT_SECONDS = 30 * 60
RATING_SCALE = (1, 5)


class FeedbackTask(models.TextChoices):
    PAIRWISE = "pairwise", "Pairwise preference (A or B, tie, both bad)"
    RANKING = "ranking", "Ranking of 3 or more responses"
    RATING = "rating", "1-5 ratings on named criteria"
    CORRECTION = "correction", "A corrected response"


class CampaignStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    ACTIVE = "active", "Active"
    CLOSED = "closed", "Closed"


class ItemSource(models.TextChoices):
    EVALUATION = "evaluation", "Outputs of an evaluation run"
    REQUESTS = "requests", "Logged production requests"
    VERSIONS = "versions", "Generations of model versions on the same prompts"
    UPLOAD = "upload", "An uploaded file of prompts with responses"


class Campaign(models.Model):
    project = models.ForeignKey(
        "projects.Project", on_delete=models.CASCADE, related_name="feedback_campaigns"
    )
    name = models.CharField(max_length=120)
    task = models.CharField(max_length=12, choices=FeedbackTask.choices)
    instructions = models.TextField(blank=True, default="")
    # Rating campaigns: the named criteria, e.g. ["helpfulness", "harmlessness", "factuality"].
    criteria = models.JSONField(default=list, blank=True)
    overlap = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(MAX_OVERLAP)]
    )
    blind = models.BooleanField(default=True)
    assignment_timeout_seconds = models.PositiveIntegerField(
        default=DEFAULT_ASSIGNMENT_TIMEOUT_SECONDS,
        validators=[MinValueValidator(30), MaxValueValidator(7 * 24 * 3600)],
    )
    status = models.CharField(
        max_length=8, choices=CampaignStatus.choices, default=CampaignStatus.DRAFT
    )
    source = models.CharField(max_length=12, choices=ItemSource.choices)
    # What the items were made from (ids, filters), for lineage and the page.
    source_params = models.JSONField(default=dict, blank=True)
    raters = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="CampaignRater", related_name="feedback_campaigns"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    launched_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["project_id", "-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="campaign_name_unique")
        ]

    def __str__(self) -> str:
        return self.name


class CampaignRater(models.Model):
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="rater_rows")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="rater_rows"
    )
    added_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["campaign_id", "id"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "user"], name="campaign_rater_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user_id} rates {self.campaign_id}"


class AIRater(models.Model):
    """A model that judges the campaign's items through a job: an endpoint of the deploy stage,
    or any OpenAI-compatible URL with a key."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="ai_raters")
    name = models.CharField(max_length=120)
    endpoint = models.ForeignKey(
        "serving.Endpoint", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    base_url = models.URLField(max_length=500, blank=True, default="")
    model = models.CharField(max_length=200, blank=True, default="")
    # Sent as the bearer key to base_url; never returned by the API or shown.
    api_key = models.CharField(max_length=500, blank=True, default="")
    judging_prompt = models.TextField()
    # Its labels count as training data only when a manager says so, with the agreement then.
    use_for_training = models.BooleanField(default=False)
    agreement_when_approved = models.JSONField(null=True, blank=True)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["campaign_id", "id"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "name"], name="ai_rater_name_unique")
        ]

    def __str__(self) -> str:
        return self.name


class Item(models.Model):
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="items")
    index = models.PositiveIntegerField()
    prompt = models.TextField()
    # [{"text": ..., "model_version_id": id | null, "label": "support-bot v3" | "upload" ...}]
    responses = models.JSONField(default=list)
    # Where it came from: {"evaluation_example": id} / {"request_log": id, "response_id": ...}.
    origin = models.JSONField(default=dict, blank=True)
    # Human assignments not expired (active or submitted): the fair queue reads it, the
    # assignment service keeps it (under the item's row lock) so no item goes past the overlap.
    taken = models.PositiveSmallIntegerField(default=0)
    submitted = models.PositiveSmallIntegerField(default=0)
    # Set when a manager adjudicated a disagreement (the label that counts).
    adjudicated = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["campaign_id", "index"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "index"], name="item_index_unique")
        ]
        indexes = [models.Index(fields=["campaign", "taken", "index"], name="item_queue")]

    def __str__(self) -> str:
        return f"item {self.index} of campaign {self.campaign_id}"


class AssignmentStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    SUBMITTED = "submitted", "Submitted"
    SKIPPED = "skipped", "Skipped"
    EXPIRED = "expired", "Expired"


class Assignment(models.Model):
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="assignments")
    rater = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="feedback_assignments",
    )
    ai_rater = models.ForeignKey(
        AIRater, null=True, blank=True, on_delete=models.CASCADE, related_name="assignments"
    )
    status = models.CharField(
        max_length=10, choices=AssignmentStatus.choices, default=AssignmentStatus.ACTIVE
    )
    # The order the rater saw the responses in (indexes into item.responses): position bias.
    order = models.JSONField(default=list)
    assigned_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    skip_reason = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        ordering = ["item_id", "id"]
        constraints = [
            # Never twice to one rater (an expired assignment keeps its row: the same rater
            # does not get the item again).
            models.UniqueConstraint(
                fields=["item", "rater"],
                condition=models.Q(rater__isnull=False),
                name="assignment_once_per_rater",
            ),
            models.UniqueConstraint(
                fields=["item", "ai_rater"],
                condition=models.Q(ai_rater__isnull=False),
                name="assignment_once_per_ai_rater",
            ),
            models.CheckConstraint(
                condition=models.Q(rater__isnull=False) ^ models.Q(ai_rater__isnull=False),
                name="assignment_has_one_rater",
            ),
        ]
        indexes = [
            models.Index(fields=["rater", "status"], name="assignment_rater_status"),
            models.Index(fields=["status", "expires_at"], name="assignment_expiry"),
        ]

    def __str__(self) -> str:
        return f"assignment {self.pk} of item {self.item_id}"


class Judgment(models.Model):
    """A submitted answer; its value's shape follows the campaign's task:

    - pairwise: ``{"choice": "a" | "b" | "tie" | "both_bad", "reason": str}``, a/b naming the
      responses as item.responses[0] and [1] (not as shown: the assignment's order says that);
    - ranking: ``{"ranking": [response indexes, best first]}``;
    - rating: ``{"ratings": [{criterion: 1..5} per response]}``;
    - correction: ``{"response": index, "text": corrected}``.
    """

    assignment = models.OneToOneField(Assignment, on_delete=models.CASCADE, related_name="judgment")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="judgments")
    rater = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    ai_rater = models.ForeignKey(
        AIRater, null=True, blank=True, on_delete=models.SET_NULL, related_name="judgments"
    )
    value = models.JSONField()
    seconds_spent = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Undo (U on the rater screen) withdraws the last judgment: kept, marked, not counted.
    withdrawn_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["item_id", "id"]
        indexes = [models.Index(fields=["rater", "created_at"], name="judgment_rater_time")]

    def __str__(self) -> str:
        return f"judgment of {self.assignment_id}"


class FeedbackExport(Job):
    """A background export of a campaign's labels as an immutable dataset version."""

    queue = "cpu"
    kind_label = "feedback export"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="exports")
    # "preference" (prompt/chosen/rejected) or "unpaired" (prompt/completion/label).
    format = models.CharField(max_length=12)
    include_ai = models.BooleanField(default=False)
    dataset_version = models.ForeignKey(
        "datasets_app.DatasetVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    rows = models.PositiveIntegerField(default=0)


class AIRatingJob(Job):
    """An AI rater labels the campaign's items (its own assignments and judgments)."""

    queue = "cpu"
    kind_label = "AI rating"

    ai_rater = models.ForeignKey(AIRater, on_delete=models.CASCADE, related_name="jobs")
    max_items = models.PositiveIntegerField(null=True, blank=True)
    judged = models.PositiveIntegerField(default=0)


class GenerationJob(Job):
    """Generations of two or more model versions on the same prompts, made into a campaign's
    items: the versions loaded by the job, or the project's endpoints called through the
    inference process (each response then names the version that answered it)."""

    queue = "gpu"
    kind_label = "generation for feedback"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="generations")
    # [model version ids] loaded directly, at least two, all of the campaign's project; empty
    # when the job calls endpoints instead.
    version_ids = models.JSONField(default=list, blank=True)
    # [endpoint ids] of the campaign's project called instead, at least two; else empty.
    endpoint_ids = models.JSONField(default=list, blank=True)
    prompts = models.JSONField(default=list)
    settings = models.JSONField(default=dict, blank=True)
    made = models.PositiveIntegerField(default=0)
