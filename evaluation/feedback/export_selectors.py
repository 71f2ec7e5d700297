"""Reads of feedback exports, scoped to the user: the team's work (VIEW_WORK), so a rater who
only labels sees none (an export holds every rater's labels and the responses' text)."""

from __future__ import annotations

from django.db.models import QuerySet

from evaluation.feedback.models import Campaign, FeedbackExport
from projects.selectors import visible_to


def exports_for_user(user) -> QuerySet[FeedbackExport]:
    return visible_to(
        FeedbackExport.objects.select_related(
            "project__team", "campaign", "dataset_version__dataset", "created_by"
        ),
        user,
    )


def exportable_campaigns_for_user(user) -> QuerySet[Campaign]:
    """Campaigns whose project's work ``user`` sees (an export's ``campaign`` is one)."""
    return visible_to(Campaign.objects.select_related("project__team"), user)
