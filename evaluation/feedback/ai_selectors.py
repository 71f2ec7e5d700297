"""Reads of AI raters, their jobs and generation jobs, scoped to the user: the team's work
(VIEW_WORK). A rater who only labels (LABEL without VIEW_WORK) sees none of them: they name
models, which blind mode hides."""

from __future__ import annotations

from django.db.models import Count, Q, QuerySet

from evaluation.feedback.models import AIRater, AIRatingJob, Campaign, GenerationJob
from projects.selectors import visible_to


def work_campaigns_for_user(user) -> QuerySet[Campaign]:
    """Campaigns of the projects whose work ``user`` sees (not those they only rate)."""
    return visible_to(Campaign.objects.select_related("project__team"), user)


def ai_raters_for_user(user) -> QuerySet[AIRater]:
    """AI raters with ``judged`` (their judgments not withdrawn)."""
    return (
        visible_to(
            AIRater.objects.select_related("campaign__project__team", "endpoint", "approved_by"),
            user,
            team_path="campaign__project__team",
        )
        .annotate(judged=Count("judgments", filter=Q(judgments__withdrawn_at__isnull=True)))
        .order_by("campaign_id", "id")
    )


def ai_rating_jobs_for_user(user) -> QuerySet[AIRatingJob]:
    return visible_to(
        AIRatingJob.objects.select_related("project__team", "ai_rater", "created_by"), user
    )


def generation_jobs_for_user(user) -> QuerySet[GenerationJob]:
    return visible_to(
        GenerationJob.objects.select_related("project__team", "campaign", "created_by"), user
    )
