"""Reads of the feedback stage, scoped to the user.

Whoever may see the team's work (VIEW_WORK: managers, engineers, viewers, admins) sees every
campaign of the team's projects, with its items and judgments. A rater (LABEL without
VIEW_WORK) sees only the campaigns they rate, and none of their items or judgments through
these reads: they get items one at a time through their assignments (the labeling API), so
"not yours" is the same 404 as "does not exist".
"""

from __future__ import annotations

from django.db.models import Count, Exists, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from evaluation.feedback.models import (
    Assignment,
    AssignmentStatus,
    Campaign,
    CampaignRater,
    CampaignStatus,
    Item,
    Judgment,
)
from projects.permissions import Action
from projects.selectors import User, get_visible, team_ids_for, visible_to


def _subcount(model, *, campaign_path: str, **filters) -> Coalesce:
    """A correlated count per campaign (no join multiplying the campaign rows)."""
    rows = (
        model.objects.filter(**{campaign_path: OuterRef("pk")}, **filters)
        .order_by()
        .values(campaign_path)
        .annotate(_n=Count("pk"))
        .values("_n")[:1]
    )
    return Coalesce(Subquery(rows, output_field=IntegerField()), Value(0))


def campaigns_for_user(user: User) -> QuerySet[Campaign]:
    """Campaigns of the projects whose work the user sees, and those the user rates (in a
    team where their role allows labeling), each with ``n_items`` and ``n_raters``."""
    if not user.is_authenticated:
        return Campaign.objects.none()
    rates = CampaignRater.objects.filter(campaign=OuterRef("pk"), user=user)
    return (
        Campaign.objects.select_related("project__team", "created_by")
        .prefetch_related("rater_rows")
        .filter(
            Q(project__team__id__in=team_ids_for(user, Action.VIEW_WORK))
            | (Q(project__team__id__in=team_ids_for(user, Action.LABEL)) & Exists(rates))
        )
        .annotate(
            n_items=_subcount(Item, campaign_path="campaign"),
            n_raters=_subcount(CampaignRater, campaign_path="campaign"),
        )
    )


def get_campaign_for_user(user: User, pk) -> Campaign:
    """One campaign the user may see (404 otherwise, whether it exists or not)."""
    return get_visible(campaigns_for_user(user), user, pk, action=Action.VIEW)


def can_view_work(user: User, campaign: Campaign) -> bool:
    """Whether ``user`` sees the campaign's project work (items with their models, judgments,
    statistics), not only their own assignments."""
    return visible_to(
        Campaign.objects.filter(pk=campaign.pk), user, action=Action.VIEW_WORK
    ).exists()


def items_for_user(user: User) -> QuerySet[Item]:
    """Items of the campaigns whose project work the user sees (raters: none)."""
    return visible_to(
        Item.objects.select_related("campaign__project__team"),
        user,
        team_path="campaign__project__team",
    )


def judgments_for_user(user: User) -> QuerySet[Judgment]:
    """Judgments of the campaigns whose project work the user sees (raters: none)."""
    return visible_to(
        Judgment.objects.select_related(
            "item__campaign__project__team", "assignment", "rater", "ai_rater"
        ),
        user,
        team_path="item__campaign__project__team",
    )


def rater_campaigns_for_user(user: User) -> QuerySet[Campaign]:
    """The active and closed campaigns the user rates (drafts are not open yet), with their
    progress: ``n_items``, ``my_submitted`` (judgments not withdrawn), ``my_skipped``,
    ``my_active`` (assignments in hand)."""
    if not user.is_authenticated:
        return Campaign.objects.none()
    rates = CampaignRater.objects.filter(campaign=OuterRef("pk"), user=user)
    mine = {"rater": user}
    return (
        Campaign.objects.select_related("project__team")
        .filter(project__team__id__in=team_ids_for(user, Action.LABEL))
        .filter(Exists(rates))
        .exclude(status=CampaignStatus.DRAFT)
        .annotate(
            n_items=_subcount(Item, campaign_path="campaign"),
            my_submitted=_subcount(
                Judgment, campaign_path="item__campaign", withdrawn_at__isnull=True, **mine
            ),
            my_skipped=_subcount(
                Assignment,
                campaign_path="item__campaign",
                status=AssignmentStatus.SKIPPED,
                **mine,
            ),
            my_active=_subcount(
                Assignment, campaign_path="item__campaign", status=AssignmentStatus.ACTIVE, **mine
            ),
        )
    )
