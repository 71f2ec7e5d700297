"""The fair queue of a campaign: which item a rater gets next, and how slots come back.

No role checks here (``services/labeling.py`` does them); these functions keep the queue's
invariants, whoever calls them:

- an item is never held by more human raters than the campaign's overlap: ``Item.taken``
  counts the human assignments that hold a slot (active or submitted) and is only raised by a
  conditional ``UPDATE ... WHERE taken < overlap`` made under the item's row lock;
- an item never goes twice to one rater: the ``assignment_once_per_rater`` unique key, and the
  candidate query leaves out every item the rater ever had, whatever became of it;
- one assignment at a time per rater and campaign: the rater's ``CampaignRater`` row is locked
  first, so two requests of one rater (two tabs) queue on their own row, not on the others';
- fewest-taken items first, then the lowest index, so every item gets its first label before
  any gets its third.

On PostgreSQL the candidate item is locked with ``FOR UPDATE SKIP LOCKED``: twenty raters
asking at once each take a different free row instead of queueing on the first one. SQLite has
no row locks; its write lock (the settings open every transaction IMMEDIATE) serialises the
picks instead, and the conditional update holds the invariant there too.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone

from evaluation.feedback.models import (
    Assignment,
    AssignmentStatus,
    Campaign,
    CampaignRater,
    Item,
)
from projects.permissions import Action
from projects.selectors import team_ids_for, visible_to

# One candidate locked per attempt (PostgreSQL re-checks ``taken < overlap`` on the row it locks,
# and skips rows other picks hold); another attempt only if a race still took it.
MAX_PICK_ATTEMPTS = 5


def shown_order(n: int) -> list[int]:
    """A random permutation of ``range(n)``: the positions a rater sees the responses in."""
    order = list(range(n))
    random.shuffle(order)
    return order


def current_assignment(*, rater, campaign: Campaign, now: datetime) -> Assignment | None:
    """The rater's active, unexpired assignment in ``campaign`` (the newest if ever several)."""
    return (
        Assignment.objects.select_related("item")
        .filter(
            item__campaign=campaign,
            rater=rater,
            status=AssignmentStatus.ACTIVE,
            expires_at__gt=now,
        )
        .order_by("-assigned_at", "-id")
        .first()
    )


def expire_due(*, campaign: Campaign | None = None, now: datetime | None = None) -> int:
    """Mark the human assignments past their expiry EXPIRED and give their slots back.

    Each row changes through a conditional update (``status = active``), so concurrent sweeps
    (two raters' requests, a periodic task) never give one slot back twice. Cheap when nothing
    is due: the ``assignment_expiry`` index holds the active rows by expiry.
    """
    now = now or timezone.now()
    due = Assignment.objects.filter(
        status=AssignmentStatus.ACTIVE, expires_at__lte=now, rater__isnull=False
    )
    if campaign is not None:
        due = due.filter(item__campaign=campaign)
    expired = 0
    for assignment_id, item_id in due.values_list("id", "item_id")[:10_000]:
        with transaction.atomic():
            changed = Assignment.objects.filter(
                pk=assignment_id, status=AssignmentStatus.ACTIVE, expires_at__lte=now
            ).update(status=AssignmentStatus.EXPIRED)
            if changed:
                release_slot(item_id)
                expired += 1
    return expired


def release_slot(item_id: int) -> None:
    """One human slot of the item is free again (expiry, skip, an undone next item)."""
    Item.objects.filter(pk=item_id, taken__gt=0).update(taken=F("taken") - 1)


def take_slot(item: Item, overlap: int) -> bool:
    """Hold one more slot of ``item`` if it has one free (the one place ``taken`` grows)."""
    return bool(Item.objects.filter(pk=item.pk, taken__lt=overlap).update(taken=F("taken") + 1))


def lock_rater_row(*, rater, campaign: Campaign) -> CampaignRater | None:
    """Lock (inside the caller's transaction) the row saying ``rater`` rates ``campaign``."""
    return CampaignRater.objects.select_for_update().filter(campaign=campaign, user=rater).first()


def rates(*, rater, campaign: Campaign) -> Exists:
    """An expression: whether ``rater`` is one of the campaign's raters (to fold into a read)."""
    return Exists(CampaignRater.objects.filter(campaign=campaign, user=rater))


def _candidates(*, rater, campaign: Campaign):
    had = Assignment.objects.filter(item=OuterRef("pk"), rater=rater)
    return (
        Item.objects.filter(campaign=campaign, taken__lt=campaign.overlap)
        .filter(~Exists(had))
        .order_by("taken", "index")
    )


def pick_next(*, rater, campaign: Campaign, now: datetime) -> Assignment | None:
    """Give ``rater`` the next item of ``campaign`` (inside the caller's transaction, after
    :func:`lock_rater_row`); None when every item they may get is done or full."""
    candidates = _candidates(rater=rater, campaign=campaign)
    skipping = connection.features.has_select_for_update_skip_locked
    expires_at = now + timedelta(seconds=campaign.assignment_timeout_seconds)
    for _attempt in range(MAX_PICK_ATTEMPTS):
        if skipping:
            item = candidates.select_for_update(skip_locked=True, of=("self",)).first()
            if item is None:
                # Every free row may be held by other raters' picks this instant (the queue's
                # tail): wait for one rather than answer "nothing left" too early.
                item = candidates.select_for_update(of=("self",)).first()
        else:
            item = candidates.first()
        if item is None:
            return None
        if take_slot(item, campaign.overlap):
            # No savepoint for the once-per-rater key: the candidates leave out every item the
            # rater had, and their locked row keeps their other requests out until this commits.
            return Assignment.objects.create(
                item=item,
                rater=rater,
                order=shown_order(len(item.responses)),
                assigned_at=now,
                expires_at=expires_at,
            )
    return None


# --- reads for the rater API ------------------------------------------------------------------


def labeling_campaigns_for_user(user) -> QuerySet[Campaign]:
    """Campaigns ``user`` may label in: LABEL in the team and one of its raters; those who see
    the team's work (managers) see the others too, so the service can say why they may not."""
    if not user.is_authenticated:
        return Campaign.objects.none()
    rates = CampaignRater.objects.filter(campaign=OuterRef("pk"), user=user)
    return (
        visible_to(Campaign.objects.select_related("project__team"), user, action=Action.LABEL)
        .filter(Q(Exists(rates)) | Q(project__team__id__in=team_ids_for(user, Action.VIEW_WORK)))
        .order_by("-created_at", "-id")
    )


def labeling_assignments_for_user(user) -> QuerySet[Assignment]:
    """Assignments of the campaigns ``user`` labels in (the services refuse another's)."""
    campaigns = labeling_campaigns_for_user(user).values("pk")
    return Assignment.objects.select_related("item__campaign__project__team").filter(
        item__campaign__in=campaigns
    )


def rater_progress(*, rater, campaign: Campaign) -> dict[str, int]:
    """``done``: the rater's judgments still counted (their submitted assignments: an undone
    one is active again); ``total_for_me``: those plus the items they could still get now,
    their current one included. Two queries, whatever the campaign's size."""
    mine = Assignment.objects.filter(rater=rater, item__campaign=campaign).aggregate(
        done=Count("id", filter=Q(status=AssignmentStatus.SUBMITTED)),
        active=Count("id", filter=Q(status=AssignmentStatus.ACTIVE)),
        had_open=Count("id", filter=Q(item__taken__lt=campaign.overlap)),
    )
    open_items = Item.objects.filter(campaign=campaign, taken__lt=campaign.overlap).count()
    remaining = mine["active"] + max(open_items - mine["had_open"], 0)
    return {"done": mine["done"], "total_for_me": mine["done"] + remaining}
