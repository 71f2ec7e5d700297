"""Reads of campaigns, items and judgments, scoped to the user and their role."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.http import Http404
from django.utils import timezone

from evaluation.feedback import selectors
from evaluation.feedback.models import Assignment, AssignmentStatus, Judgment
from projects.models import Membership, Role
from tests.evaluation.feedback.builders import campaign_with_items, extra_raters


def test_who_sees_which_campaigns(world) -> None:
    rated = campaign_with_items(world, name="rated")
    unrated = campaign_with_items(world, name="unrated", raters=extra_raters(world, 3)[1:])
    for role in (Role.ADMIN, Role.MANAGER, Role.ENGINEER, Role.VIEWER):
        seen = set(selectors.campaigns_for_user(world.users[role]))
        assert seen == {rated, unrated}, role
    rater = world.users[Role.RATER]
    assert list(selectors.campaigns_for_user(rater)) == [rated]
    assert selectors.get_campaign_for_user(rater, rated.pk) == rated
    with pytest.raises(Http404):
        selectors.get_campaign_for_user(rater, unrated.pk)
    with pytest.raises(Http404):
        selectors.get_campaign_for_user(world.outsider, rated.pk)
    assert selectors.campaigns_for_user(world.outsider).count() == 0
    annotated = selectors.campaigns_for_user(world.users[Role.MANAGER]).get(pk=rated.pk)
    assert (annotated.n_items, annotated.n_raters) == (10, 2)


def test_a_rater_whose_role_no_longer_labels_loses_the_campaign(world) -> None:
    campaign = campaign_with_items(world)
    rater = world.users[Role.RATER]
    Membership.objects.filter(user=rater, team=world.team).update(role=Role.VIEWER)
    assert list(selectors.campaigns_for_user(rater)) == [campaign]  # as a viewer, the work
    assert selectors.rater_campaigns_for_user(rater).count() == 0  # but no longer to rate
    Membership.objects.filter(user=rater, team=world.team).delete()
    assert selectors.campaigns_for_user(rater).count() == 0


def test_items_and_judgments_are_the_teams_work_only(world) -> None:
    campaign = campaign_with_items(world)
    rater = world.users[Role.RATER]
    assert selectors.items_for_user(rater).count() == 0
    assert selectors.judgments_for_user(rater).count() == 0
    assert selectors.items_for_user(world.users[Role.VIEWER]).count() == 10
    assert selectors.items_for_user(world.outsider).count() == 0
    assert campaign.items.count() == 10


def test_rater_campaigns_carry_progress(world) -> None:
    rater = world.users[Role.RATER]
    campaign = campaign_with_items(world, n_items=4)
    draft = campaign_with_items(world, name="draft", launch=False)
    items = list(campaign.items.all())
    later = timezone.now() + timedelta(hours=1)
    for item, state in zip(items, ["submitted", "submitted", "skipped", "active"], strict=True):
        assignment = Assignment.objects.create(
            item=item, rater=rater, status=state, order=[0, 1], expires_at=later
        )
        if state == AssignmentStatus.SUBMITTED:
            Judgment.objects.create(
                assignment=assignment, item=item, rater=rater, value={"choice": "a"}
            )
    Judgment.objects.filter(item=items[1]).update(withdrawn_at=timezone.now())
    rows = list(selectors.rater_campaigns_for_user(rater))
    assert rows == [campaign] and draft not in rows
    row = rows[0]
    assert (row.n_items, row.my_submitted, row.my_skipped, row.my_active) == (4, 1, 1, 1)
    other = world.users[Role.ADMIN]
    assert selectors.rater_campaigns_for_user(other).count() == 0
