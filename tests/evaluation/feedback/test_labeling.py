"""Labeling: the fair queue, judgments and their validation, skip, undo, expiry, adjudication,
AI judgments, and the rater API (blind mode included)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.utils import timezone

from evaluation.feedback.models import (
    AIRater,
    Assignment,
    AssignmentStatus,
    Campaign,
    CampaignRater,
    CampaignStatus,
    Item,
    Judgment,
)
from evaluation.feedback.services import labeling as svc
from projects.audit import AuditEvent
from projects.models import Role
from tests.evaluation.feedback.builders import MODEL_NAMES, campaign_with_items
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db


def make_rater(world, name: str, role: str = Role.RATER):
    user = UserFactory(username=name)
    MembershipFactory(team=world.team, user=user, role=role)
    return user


def make_campaign(
    world,
    *,
    task: str = "pairwise",
    n_items: int = 4,
    n_responses: int | None = None,
    overlap: int = 2,
    raters=(),
    blind: bool = True,
    status: str = CampaignStatus.ACTIVE,
    criteria=None,
    timeout: int = 1800,
) -> Campaign:
    """A campaign built with the ORM (the campaign services are another module's)."""
    n_responses = n_responses or {"pairwise": 2, "ranking": 3}.get(task, 1)
    campaign = Campaign.objects.create(
        project=world.project,
        name=f"c-{Campaign.objects.count()}",
        task=task,
        overlap=overlap,
        blind=blind,
        status=status,
        source="upload",
        criteria=criteria or [],
        instructions="Pick the more helpful answer.",
        assignment_timeout_seconds=timeout,
    )
    for rater in raters:
        CampaignRater.objects.create(campaign=campaign, user=rater)
    Item.objects.bulk_create(
        Item(
            campaign=campaign,
            index=i,
            prompt=f"prompt {i}",
            responses=[
                {"text": f"answer {i}.{r}", "model_version_id": 100 + r, "label": f"bot v{r}"}
                for r in range(n_responses)
            ],
        )
        for i in range(n_items)
    )
    return campaign


def shown_a_for(assignment: Assignment, index: int) -> str:
    """The letter the rater saw for ``item.responses[index]``."""
    return "a" if assignment.order[0] == index else "b"


# --- the queue ------------------------------------------------------------------------------


def test_next_is_fair_one_at_a_time_and_records_a_random_order(world) -> None:
    r1, r2, r3 = (make_rater(world, f"r{i}") for i in range(3))
    campaign = make_campaign(world, n_items=3, overlap=2, raters=[r1, r2, r3])
    first = svc.assignment_next(rater=r1, campaign=campaign)
    assert first.item.index == 0 and sorted(first.order) == [0, 1]
    assert first.expires_at - first.assigned_at == timedelta(seconds=1800)
    # One at a time: asking again gives the same assignment, and counts nothing more.
    assert svc.assignment_next(rater=r1, campaign=campaign).pk == first.pk
    assert Item.objects.get(pk=first.item_id).taken == 1
    # Fewest taken first: the others get items no one has yet, lowest index first.
    assert svc.assignment_next(rater=r2, campaign=campaign).item.index == 1
    assert svc.assignment_next(rater=r3, campaign=campaign).item.index == 2


def test_overlap_is_never_exceeded_and_no_item_goes_twice_to_a_rater(world) -> None:
    raters = [make_rater(world, f"r{i}") for i in range(4)]
    campaign = make_campaign(world, n_items=3, overlap=2, raters=raters)
    given: dict[int, list[int]] = {}
    while True:
        progressed = False
        for rater in raters:
            assignment = svc.assignment_next(rater=rater, campaign=campaign)
            if assignment is None:
                continue
            progressed = True
            given.setdefault(assignment.item_id, []).append(rater.pk)
            svc.judgment_submit(rater=rater, assignment=assignment, value={"choice": "tie"})
        if not progressed:
            break
    assert len(given) == 3
    for holders in given.values():
        assert len(holders) == 2 and len(set(holders)) == 2
    assert set(Item.objects.filter(campaign=campaign).values_list("taken", "submitted")) == {(2, 2)}
    assert Judgment.objects.filter(item__campaign=campaign).count() == 6


def test_expired_assignments_return_to_the_queue(world) -> None:
    r1, r2 = make_rater(world, "r1"), make_rater(world, "r2")
    campaign = make_campaign(world, n_items=1, overlap=1, raters=[r1, r2])
    first = svc.assignment_next(rater=r1, campaign=campaign)
    assert svc.assignment_next(rater=r2, campaign=campaign) is None  # the one slot is held
    Assignment.objects.filter(pk=first.pk).update(expires_at=timezone.now() - timedelta(1))
    second = svc.assignment_next(rater=r2, campaign=campaign)  # expired lazily, then given
    assert second.item_id == first.item_id
    first.refresh_from_db()
    assert first.status == AssignmentStatus.EXPIRED
    assert Item.objects.get(pk=first.item_id).taken == 1
    # The slot went to r2: r1's late answer is refused with the reason, nothing counted.
    with pytest.raises(ValidationError, match="gone to other raters"):
        svc.judgment_submit(rater=r1, assignment=first, value={"choice": "a"})
    assert Item.objects.get(pk=first.item_id).submitted == 0
    # r1 never gets that item again.
    assert svc.assignment_next(rater=r1, campaign=campaign) is None


def test_an_expired_assignment_whose_slot_is_free_can_still_be_submitted(world) -> None:
    r1 = make_rater(world, "r1")
    campaign = make_campaign(world, n_items=1, overlap=1, raters=[r1])
    first = svc.assignment_next(rater=r1, campaign=campaign)
    Assignment.objects.filter(pk=first.pk).update(expires_at=timezone.now() - timedelta(1))
    assert svc.assignments_expire() == 1
    assert svc.assignments_expire() == 0  # never twice
    assert Item.objects.get(pk=first.item_id).taken == 0
    first.refresh_from_db()
    svc.judgment_submit(rater=r1, assignment=first, value={"choice": "a"})
    item = Item.objects.get(pk=first.item_id)
    assert (item.taken, item.submitted) == (1, 1)


def test_skip_frees_the_slot_but_never_gives_the_item_back(world) -> None:
    r1, r2 = make_rater(world, "r1"), make_rater(world, "r2")
    campaign = make_campaign(world, n_items=1, overlap=1, raters=[r1, r2])
    first = svc.assignment_next(rater=r1, campaign=campaign)
    with pytest.raises(ValidationError, match="why"):
        svc.assignment_skip(rater=r1, assignment=first, reason="  ")
    skipped = svc.assignment_skip(rater=r1, assignment=first, reason="not English")
    assert skipped.status == AssignmentStatus.SKIPPED and skipped.skip_reason == "not English"
    assert Item.objects.get(pk=first.item_id).taken == 0
    assert svc.assignment_next(rater=r1, campaign=campaign) is None
    assert svc.assignment_next(rater=r2, campaign=campaign).item_id == first.item_id
    with pytest.raises(ValidationError, match="skipped"):
        svc.judgment_submit(rater=r1, assignment=first, value={"choice": "a"})
    assert AuditEvent.objects.filter(verb="feedback_assignment.skipped").count() == 1


def test_undo_withdraws_the_last_judgment_and_gives_its_assignment_back(world) -> None:
    r1 = make_rater(world, "r1")
    campaign = make_campaign(world, n_items=3, overlap=1, raters=[r1])
    first = svc.assignment_next(rater=r1, campaign=campaign)
    svc.judgment_submit(rater=r1, assignment=first, value={"choice": "a"}, seconds_spent=4)
    second = svc.assignment_next(rater=r1, campaign=campaign)  # looking at the next one
    assert second.item_id != first.item_id
    undone = svc.judgment_undo(rater=r1, campaign=campaign)
    assert undone.pk == first.pk and undone.status == AssignmentStatus.ACTIVE
    judgment = Judgment.objects.get(assignment=first)
    assert judgment.withdrawn_at is not None
    assert Item.objects.get(pk=first.item_id).submitted == 0
    # The next item went back to the queue; the undone one is the current one again.
    assert not Assignment.objects.filter(pk=second.pk).exists()
    assert Item.objects.get(pk=second.item_id).taken == 0
    assert svc.assignment_next(rater=r1, campaign=campaign).pk == first.pk
    # Answered again: the same row, counted once.
    svc.judgment_submit(rater=r1, assignment=undone, value={"choice": "b"})
    judgment.refresh_from_db()
    assert judgment.withdrawn_at is None
    assert Judgment.objects.filter(assignment=first).count() == 1
    assert Item.objects.get(pk=first.item_id).submitted == 1
    event = AuditEvent.objects.get(verb="feedback_judgment.withdrawn")
    assert event.changes["value"]["choice"] in ("a", "b")
    # Nothing left to undo after undoing the only judgment and not answering again.
    svc.judgment_undo(rater=r1, campaign=campaign)
    assert svc.judgment_undo(rater=r1, campaign=campaign) is None


# --- values ---------------------------------------------------------------------------------


def test_pairwise_choice_is_mapped_from_the_shown_position(world) -> None:
    r1 = make_rater(world, "r1")
    campaign = make_campaign(world, n_items=1, overlap=1, raters=[r1])
    assignment = svc.assignment_next(rater=r1, campaign=campaign)
    Assignment.objects.filter(pk=assignment.pk).update(order=[1, 0])
    assignment.refresh_from_db()
    judgment = svc.judgment_submit(
        rater=r1, assignment=assignment, value={"choice": "a", "reason": " clearer "}
    )
    # Shown first was responses[1]: stored as "b" (the item's own order).
    assert judgment.value == {"choice": "b", "reason": "clearer"}
    assert judgment.rater == r1


def test_ranking_rating_and_correction_values(world) -> None:
    item = Item(responses=[{"text": "x"}, {"text": "y"}, {"text": "z"}])
    ranking = Campaign(task="ranking")
    assert svc.validate_judgment_value(ranking, item, {"ranking": [3, 1, 2]}, order=[2, 0, 1]) == {
        "ranking": [1, 2, 0]
    }
    for bad in ([1, 1, 2], [1, 2], [0, 1, 2], [1, 2, "3"], "123"):
        with pytest.raises(ValidationError):
            svc.validate_judgment_value(ranking, item, {"ranking": bad})
    rating = Campaign(task="rating", criteria=["helpfulness", "factuality"])
    row = {"helpfulness": 5, "factuality": 1}
    value = {"ratings": [row, {"helpfulness": 2, "factuality": 3}, row]}
    stored = svc.validate_judgment_value(rating, item, value, order=[1, 2, 0])
    assert stored["ratings"][1] == row and stored["ratings"][2]["helpfulness"] == 2
    for score in (0, 6, 2.5, True, "5"):
        with pytest.raises(ValidationError, match="helpfulness"):
            svc.validate_judgment_value(
                rating, item, {"ratings": [{"helpfulness": score, "factuality": 1}, row, row]}
            )
    with pytest.raises(ValidationError, match="exactly"):
        svc.validate_judgment_value(rating, item, {"ratings": [{"helpfulness": 1}, row, row]})
    correction = Campaign(task="correction")
    single = Item(responses=[{"text": "x"}])
    assert svc.validate_judgment_value(correction, single, {"text": "better"}) == {
        "response": 0,
        "text": "better",
    }
    for bad in ({"text": "  "}, {"text": "x" * 20_001}, {"text": 3}, {"txt": "a"}):
        with pytest.raises(ValidationError):
            svc.validate_judgment_value(correction, single, bad)
    pairwise = Campaign(task="pairwise")
    two = Item(responses=[{"text": "x"}, {"text": "y"}])
    for bad in (
        {"choice": "c"},
        {},
        {"choice": "a", "extra": 1},
        ["a"],
        {"choice": "a", "reason": 3},
    ):
        with pytest.raises(ValidationError):
            svc.validate_judgment_value(pairwise, two, bad)


def test_bad_judgments_are_refused_and_nothing_counted_twice(world) -> None:
    r1, r2 = make_rater(world, "r1"), make_rater(world, "r2")
    campaign = make_campaign(world, task="rating", n_items=2, overlap=2, raters=[r1, r2])
    assignment = svc.assignment_next(rater=r1, campaign=campaign)
    good = {"ratings": [{"overall": 4}]}
    with pytest.raises(Http404, match="of yours"):  # another's assignment
        svc.judgment_submit(rater=r2, assignment=assignment, value=good)
    with pytest.raises(ValidationError, match="from 1 to 5"):
        svc.judgment_submit(rater=r1, assignment=assignment, value={"ratings": [{"overall": 9}]})
    with pytest.raises(ValidationError, match="seconds_spent"):
        svc.judgment_submit(rater=r1, assignment=assignment, value=good, seconds_spent=-1)
    assert not Judgment.objects.exists()
    svc.judgment_submit(rater=r1, assignment=assignment, value=good)
    with pytest.raises(ValidationError, match="already submitted"):
        svc.judgment_submit(rater=r1, assignment=assignment, value=good)
    assert Judgment.objects.count() == 1
    assert Item.objects.get(pk=assignment.item_id).submitted == 1


def test_who_may_label(world) -> None:
    r1 = make_rater(world, "r1")
    stranger = make_rater(world, "stranger")
    campaign = make_campaign(world, n_items=1, overlap=1, raters=[r1])
    with pytest.raises(Http404):  # a rater of other campaigns: not found
        svc.assignment_next(rater=stranger, campaign=campaign)
    with pytest.raises(PermissionDenied, match="not a rater"):  # a manager: told why
        svc.assignment_next(rater=world.users["manager"], campaign=campaign)
    with pytest.raises(PermissionDenied, match="engineer"):
        svc.assignment_next(rater=world.users["engineer"], campaign=campaign)
    with pytest.raises(Http404):
        svc.assignment_next(rater=world.outsider, campaign=campaign)
    Campaign.objects.filter(pk=campaign.pk).update(status=CampaignStatus.DRAFT)
    campaign.refresh_from_db()
    with pytest.raises(ValidationError, match="draft"):
        svc.assignment_next(rater=r1, campaign=campaign)


# --- adjudication and AI raters ---------------------------------------------------------------


def test_adjudication_is_the_items_label_and_managers_only(world) -> None:
    campaign = make_campaign(world, n_items=1, overlap=1)
    item = campaign.items.get()
    with pytest.raises(PermissionDenied):
        svc.item_adjudicate(actor=world.users["rater"], item=item, value={"choice": "a"})
    with pytest.raises(ValidationError):
        svc.item_adjudicate(actor=world.users["manager"], item=item, value={"choice": "x"})
    item = svc.item_adjudicate(actor=world.users["manager"], item=item, value={"choice": "b"})
    item.refresh_from_db()
    assert item.adjudicated["value"] == {"choice": "b", "reason": ""}
    assert item.adjudicated["by"] == world.users["manager"].pk and item.adjudicated["at"]
    assert AuditEvent.objects.filter(verb="feedback_item.adjudicated").count() == 1


def test_ai_judgments_are_never_counted_in_the_humans_overlap(world) -> None:
    campaign = make_campaign(world, n_items=1, overlap=1)
    ai = AIRater.objects.create(campaign=campaign, name="judge", judging_prompt="Judge.")
    item = campaign.items.get()
    judgment = svc.ai_judgment_record(ai_rater=ai, item=item, value={"choice": "a"}, order=[1, 0])
    assert judgment.value["choice"] == "b" and judgment.ai_rater == ai and judgment.rater is None
    assert judgment.assignment.status == AssignmentStatus.SUBMITTED
    item.refresh_from_db()
    assert (item.taken, item.submitted) == (0, 0)
    with pytest.raises(ValidationError, match="already judged"):
        svc.ai_judgment_record(ai_rater=ai, item=item, value={"choice": "a"})
    with pytest.raises(ValidationError, match="permutation"):
        svc.ai_judgment_record(ai_rater=ai, item=item, value={"choice": "a"}, order=[0, 0])


# --- the rater API --------------------------------------------------------------------------


def _keys(node) -> str:
    """Every key of a JSON answer, joined (to look for names that must not be there)."""
    if isinstance(node, dict):
        return " ".join(f"{k} {_keys(v)}" for k, v in node.items())
    if isinstance(node, list):
        return " ".join(_keys(v) for v in node)
    return ""


def _next(client, campaign):
    return client.post(f"/api/v1/feedback-labeling/{campaign.pk}/next/", format="json")


def test_rater_api_next_judgment_skip_undo(world, api) -> None:
    r1, r2 = make_rater(world, "r1"), make_rater(world, "r2")
    campaign = make_campaign(world, n_items=3, overlap=1, raters=[r1, r2])
    client = api(r1)
    body = _next(client, campaign).json()
    assert body["campaign"]["task"] == "pairwise"
    assert body["campaign"]["instructions"] == "Pick the more helpful answer."
    assert body["progress"] == {"done": 0, "total_for_me": 3}
    shown = body["assignment"]
    assignment = Assignment.objects.get(pk=shown["id"])
    item = assignment.item
    assert [r["position"] for r in shown["responses"]] == [1, 2]
    assert [r["text"] for r in shown["responses"]] == [
        item.responses[i]["text"] for i in assignment.order
    ]
    url = f"/api/v1/feedback-assignments/{assignment.pk}/judgment/"
    # Another rater's assignment: not found; out of range: 400 naming the value.
    response = api(r2).post(url, {"value": {"choice": "a"}}, format="json")
    assert response.status_code == 404, response.content
    response = client.post(url, {"value": {"choice": "maybe"}}, format="json")
    assert response.status_code == 400 and "choice" in response.json()["error"]["message"]
    response = client.post(url, {"value": {"choice": "a"}, "seconds_spent": 3.5}, format="json")
    assert response.status_code == 201, response.content
    chosen = shown_a_for(assignment, 0)  # "a" as shown, stored in the item's own order
    assert response.json()["value"]["choice"] == ("a" if chosen == "a" else "b")
    again = client.post(url, {"value": {"choice": "b"}}, format="json")
    assert again.status_code == 400 and "already submitted" in again.json()["error"]["message"]
    assert Judgment.objects.count() == 1
    # Skip the next one, with a reason.
    second = _next(client, campaign).json()["assignment"]
    skip_url = f"/api/v1/feedback-assignments/{second['id']}/skip/"
    assert client.post(skip_url, {}, format="json").status_code == 400
    response = client.post(skip_url, {"reason": "unreadable"}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "skipped"
    # Undo gives the judged item back as the current one.
    third = _next(client, campaign).json()
    assert third["progress"] == {"done": 1, "total_for_me": 2}
    undone = client.post(f"/api/v1/feedback-labeling/{campaign.pk}/undo/", format="json")
    assert undone.status_code == 200, undone.content
    assert undone.json()["assignment"]["id"] == assignment.pk
    assert undone.json()["progress"]["done"] == 0


def test_blind_mode_hides_models_and_nothing_shows_other_raters_answers(world, api) -> None:
    r1, r2 = make_rater(world, "r1"), make_rater(world, "r2")
    for blind in (True, False):
        # Responses by real, named model versions (the builders' campaign).
        campaign = campaign_with_items(world, n_items=1, overlap=2, raters=[r1, r2], blind=blind)
        first = svc.assignment_next(rater=r1, campaign=campaign)
        svc.judgment_submit(
            rater=r1, assignment=first, value={"choice": "tie", "reason": "SECRET-REASON"}
        )
        response = _next(api(r2), campaign)
        text = response.content.decode()
        assert response.status_code == 200
        assert "SECRET-REASON" not in text and "tie" not in text and "judgment" not in text
        assert "version" not in _keys(response.json())
        body = response.json()
        shown = body["assignment"]["responses"]
        if blind:
            # The builders' texts name their model ("Answer 0 by falcon-support."): that is the
            # response itself; nothing else of the answer may name one.
            for r in shown:
                r["text"] = ""
            rest = json.dumps(body)
            assert "label" not in rest and not [n for n in MODEL_NAMES if n in rest], rest
        else:
            labels = {r["label"] for r in shown}
            assert len(labels) == 2 and all(
                any(n in label for n in MODEL_NAMES) for label in labels
            )


def test_rater_api_scoping(world, api) -> None:
    r1 = make_rater(world, "r1")
    stranger = make_rater(world, "stranger")
    campaign = make_campaign(world, n_items=1, overlap=1, raters=[r1])
    assert _next(api(stranger), campaign).status_code == 404
    assert _next(api(world.outsider), campaign).status_code == 404
    assert _next(api(world.users["engineer"]), campaign).status_code == 404
    response = _next(api(world.users["manager"]), campaign)
    assert response.status_code == 403 and "not a rater" in response.json()["error"]["message"]
    assignment = svc.assignment_next(rater=r1, campaign=campaign)
    url = f"/api/v1/feedback-assignments/{assignment.pk}/judgment/"
    assert api(stranger).post(url, {"value": {"choice": "a"}}, format="json").status_code == 404


def test_adjudicate_api(world, api) -> None:
    campaign = make_campaign(world, n_items=1, overlap=1, raters=[world.users["rater"]])
    item = campaign.items.get()
    url = f"/api/v1/feedback-labeling/{campaign.pk}/adjudicate/"
    body = {"item": item.pk, "value": {"choice": "a"}}
    assert api(world.users["rater"]).post(url, body, format="json").status_code == 403
    response = api(world.users["manager"]).post(url, body, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["adjudicated"]["value"]["choice"] == "a"
    other = make_campaign(world, n_items=1, overlap=1).items.get()
    response = api(world.users["manager"]).post(
        url, {"item": other.pk, "value": {"choice": "a"}}, format="json"
    )
    assert response.status_code == 400
