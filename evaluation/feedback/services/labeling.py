"""Labeling: a rater's next item, their judgments, skips and undo; adjudication; AI judgments.

Values come in **as the rater saw the responses** and are stored **in the item's own order**:

- pairwise ``{"choice": "a" | "b" | "tie" | "both_bad", "reason": "..."}``: ``a`` is the
  response shown first, ``b`` the one shown second;
- ranking ``{"ranking": [positions, best first]}``: positions 1..n as shown;
- rating ``{"ratings": [{criterion: 1..5, ...} per response, in the shown order]}``;
- correction ``{"text": "...", "response": position}`` (``response`` may be left out when the
  item has one response).

:func:`validate_judgment_value` maps them through the assignment's ``order`` (the permutation
the rater saw, ``order[position - 1]`` = the index in ``item.responses``) to the stored shape
the model documents: pairwise a/b naming ``responses[0]``/``[1]``, ranking and correction by
0-based index, ratings listed per response index. A manager adjudicating, and an AI rater
recording without an order, see the item's own order (the identity).

A judgment is committed before the service returns; nothing is counted twice: the
assignment's status moves under its row lock, and the one-to-one key refuses a second row.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NoReturn

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.http import Http404
from django.utils import timezone

from evaluation.feedback import assignment as queue
from evaluation.feedback.models import (
    RATING_SCALE,
    AIRater,
    Assignment,
    AssignmentStatus,
    Campaign,
    CampaignStatus,
    FeedbackTask,
    Item,
    Judgment,
)
from projects.audit import record_event
from projects.permissions import Action, role_allows
from projects.services import require

PAIRWISE_CHOICES = ("a", "b", "tie", "both_bad")
MAX_REASON_CHARS = 2000
MAX_CORRECTION_CHARS = 20_000
MAX_SKIP_REASON_CHARS = 500
MAX_SECONDS_SPENT = 24 * 3600
DEFAULT_CRITERIA = ("overall",)

NOT_YOURS = "No assignment of yours has this id."


# --- values -----------------------------------------------------------------------------------


def _fail(message: str) -> ValidationError:
    return ValidationError({"value": message})


def _check_keys(value: dict, allowed: set[str], required: set[str]) -> None:
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise _fail(f"Unknown keys {', '.join(unknown)}; a value has {', '.join(sorted(allowed))}.")
    missing = sorted(required - set(value))
    if missing:
        raise _fail(f"Give {', '.join(missing)}.")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _position(x: Any, n: int, what: str) -> int:
    if not _is_int(x) or not 1 <= x <= n:
        raise _fail(f"{what} must be a position from 1 to {n}, as the responses were shown.")
    return x


def campaign_criteria(campaign: Campaign) -> list[str]:
    """The criteria a rating campaign asks for (its own, else one overall rating)."""
    return [str(c) for c in (campaign.criteria or DEFAULT_CRITERIA)]


def validate_judgment_value(
    campaign: Campaign, item: Item, value: Any, *, order: list[int] | None = None
) -> dict:
    """The stored value of a judgment given as seen through ``order`` (None: the item's own
    order); raises ValidationError ``{"value": reason}`` for anything malformed or out of range.
    The one validator per task type: the rater API and screen, adjudication and AI raters."""
    n = len(item.responses)
    order = list(range(n)) if order is None else list(order)
    if sorted(order) != list(range(n)):
        raise _fail("The assignment's order does not match the item's responses.")
    if not isinstance(value, dict):
        raise _fail('Give the judgment as an object, e.g. {"choice": "a"}.')
    task = campaign.task
    if task == FeedbackTask.PAIRWISE:
        _check_keys(value, {"choice", "reason"}, {"choice"})
        choice = value["choice"]
        if choice not in PAIRWISE_CHOICES:
            raise _fail(f"choice must be one of {', '.join(PAIRWISE_CHOICES)}.")
        reason = value.get("reason") or ""
        if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
            raise _fail(f"reason must be text of at most {MAX_REASON_CHARS} characters.")
        if n != 2:
            raise _fail("A pairwise judgment needs an item with exactly two responses.")
        if choice in ("a", "b"):
            shown = 0 if choice == "a" else 1
            choice = "a" if order[shown] == 0 else "b"
        return {"choice": choice, "reason": reason.strip()}
    if task == FeedbackTask.RANKING:
        _check_keys(value, {"ranking"}, {"ranking"})
        ranking = value["ranking"]
        if not isinstance(ranking, list) or len(ranking) != n:
            raise _fail(f"ranking must list all {n} positions, best first.")
        positions = [_position(p, n, "Each ranking entry") for p in ranking]
        if len(set(positions)) != n:
            raise _fail("ranking must name each position once.")
        return {"ranking": [order[p - 1] for p in positions]}
    if task == FeedbackTask.RATING:
        _check_keys(value, {"ratings"}, {"ratings"})
        ratings = value["ratings"]
        criteria = campaign_criteria(campaign)
        if not isinstance(ratings, list) or len(ratings) != n:
            raise _fail(f"ratings must hold one object per response ({n}), in the shown order.")
        low, high = RATING_SCALE
        stored: list[dict | None] = [None] * n
        for shown, row in enumerate(ratings):
            if not isinstance(row, dict) or set(row) != set(criteria):
                raise _fail(f"Rate each response on exactly: {', '.join(criteria)}.")
            for criterion, score in row.items():
                if not _is_int(score) or not low <= score <= high:
                    raise _fail(f"{criterion} must be a whole number from {low} to {high}.")
            stored[order[shown]] = {c: row[c] for c in criteria}
        return {"ratings": stored}
    if task == FeedbackTask.CORRECTION:
        _check_keys(value, {"text", "response"}, {"text"})
        text = value["text"]
        if not isinstance(text, str) or not text.strip():
            raise _fail("text must be the corrected response, not empty.")
        if len(text) > MAX_CORRECTION_CHARS:
            raise _fail(f"text has at most {MAX_CORRECTION_CHARS} characters.")
        if "response" not in value and n > 1:
            raise _fail("Say which response you corrected (response: its position).")
        position = _position(value.get("response", 1), n, "response")
        return {"response": order[position - 1], "text": text}
    raise _fail(f"This campaign's task ({task}) takes no judgments.")


def _clean_seconds(seconds_spent: Any) -> float | None:
    if seconds_spent is None:
        return None
    if isinstance(seconds_spent, bool) or not isinstance(seconds_spent, int | float):
        raise ValidationError({"seconds_spent": "Give seconds as a number."})
    if not 0 <= seconds_spent <= MAX_SECONDS_SPENT:
        raise ValidationError(
            {"seconds_spent": f"seconds_spent must be from 0 to {MAX_SECONDS_SPENT}."}
        )
    return float(seconds_spent)


# --- who may label --------------------------------------------------------------------------


def _refuse_non_rater(role: str) -> NoReturn:
    """Why a member whose role allows labeling may not label this campaign: a manager (who sees
    the team's work) is told with a 403; a rater of other campaigns gets 404 (outside what they
    see)."""
    if role_allows(role, Action.VIEW_WORK):
        raise PermissionDenied(
            "You are not a rater of this campaign; a manager can add you to its raters."
        )
    raise Http404("Not found.")


def _require_rater(rater, campaign: Campaign) -> None:
    """LABEL in the campaign's team and being one of its raters (see :func:`_refuse_non_rater`)."""
    role = require(rater, campaign.project.team, Action.LABEL)
    if not campaign.rater_rows.filter(user=rater).exists():
        _refuse_non_rater(role)


def _require_open(campaign: Campaign) -> None:
    if campaign.status != CampaignStatus.ACTIVE:
        raise ValidationError(
            f"This campaign is {campaign.get_status_display().lower()}, not open for labeling."
        )


def _own_assignment(rater, assignment: Assignment) -> Assignment:
    campaign = assignment.item.campaign
    _require_rater(rater, campaign)
    if assignment.rater_id != rater.pk:
        raise Http404(NOT_YOURS)
    return assignment


# --- the queue ------------------------------------------------------------------------------


def assignments_expire(*, now: datetime | None = None, campaign: Campaign | None = None) -> int:
    """EXPIRE the human assignments past their time and return their slots to the queue (every
    campaign, or one). Called lazily by :func:`assignment_next`; safe to run concurrently."""
    return queue.expire_due(campaign=campaign, now=now)


def assignment_next(*, rater, campaign: Campaign) -> Assignment | None:
    """The rater's current assignment in ``campaign``, else a new one picked fairly (see
    ``evaluation/feedback/assignment.py``); None when nothing is left for them."""
    role = require(rater, campaign.project.team, Action.LABEL)
    now = timezone.now()
    queue.expire_due(campaign=campaign, now=now)
    with transaction.atomic():
        # The rater's own row, locked: it says they rate the campaign (gone if a manager just
        # removed them) and queues two tabs of theirs, in one query.
        if queue.lock_rater_row(rater=rater, campaign=campaign) is None:
            _refuse_non_rater(role)
        _require_open(campaign)
        # Read under the lock: another request of this rater may have just taken one.
        current = queue.current_assignment(rater=rater, campaign=campaign, now=now)
        if current is not None:
            return current
        return queue.pick_next(rater=rater, campaign=campaign, now=now)


def judgment_submit(
    *, rater, assignment: Assignment, value: Any, seconds_spent: float | None = None
) -> Judgment:
    """Record the rater's judgment of their assignment (``value`` as they saw the responses).

    Refused: another's assignment (404), one already submitted or skipped (400), a malformed or
    out-of-range value (400). An assignment that expired may still be submitted while its slot
    is free (the rater's work is not thrown away); once the item went to enough other raters,
    it is refused with that reason.
    """
    campaign = assignment.item.campaign
    role = require(rater, campaign.project.team, Action.LABEL)
    if assignment.rater_id != rater.pk:
        _require_rater(rater, campaign)  # a manager who rates nothing here is told why
        raise Http404(NOT_YOURS)
    _require_open(campaign)
    seconds = _clean_seconds(seconds_spent)
    stored = validate_judgment_value(campaign, assignment.item, value, order=assignment.order)
    now = timezone.now()
    with transaction.atomic():
        # One read under the lock: the assignment, its judgment if an undo left one, and whether
        # its rater still rates the campaign (a manager may have just removed them).
        locked = (
            Assignment.objects.select_for_update(of=("self",))
            .select_related("judgment")
            .annotate(still_rater=queue.rates(rater=rater, campaign=campaign))
            .get(pk=assignment.pk)
        )
        if not locked.still_rater:
            _refuse_non_rater(role)
        if locked.status == AssignmentStatus.SUBMITTED:
            raise ValidationError("This assignment's judgment was already submitted.")
        if locked.status == AssignmentStatus.SKIPPED:
            raise ValidationError("You skipped this item; a skipped item takes no judgment.")
        if locked.status == AssignmentStatus.EXPIRED:
            item = Item.objects.select_for_update().get(pk=locked.item_id)
            if not queue.take_slot(item, campaign.overlap):
                raise ValidationError(
                    "This assignment expired and its item has gone to other raters since; "
                    "your judgment was not recorded. Ask for the next item."
                )
        # No savepoint for the one-to-one key: judgments of a human assignment are only written
        # here, under its row lock, after the status check above.
        judgment = getattr(locked, "judgment", None)
        if judgment is None:
            judgment = Judgment.objects.create(
                assignment=locked,
                item_id=locked.item_id,
                rater=rater,
                value=stored,
                seconds_spent=seconds,
                created_at=now,
            )
        else:  # an undone judgment, answered again: the row is reused (one-to-one)
            judgment.value, judgment.seconds_spent = stored, seconds
            judgment.created_at, judgment.withdrawn_at = now, None
            judgment.save(update_fields=["value", "seconds_spent", "created_at", "withdrawn_at"])
        locked.status = AssignmentStatus.SUBMITTED
        locked.save(update_fields=["status"])
        Item.objects.filter(pk=locked.item_id).update(submitted=F("submitted") + 1)
        record_event(
            actor=rater,
            verb="feedback_judgment.submitted",
            target=judgment,
            team=campaign.project.team,
            project=campaign.project,
            changes={"campaign": campaign.pk, "item": locked.item_id, "assignment": locked.pk},
        )
    assignment.status = AssignmentStatus.SUBMITTED
    return judgment


def assignment_skip(*, rater, assignment: Assignment, reason: str) -> Assignment:
    """Skip an item (a reason is required): its slot goes back to the queue for others, and
    this rater never gets it again."""
    _own_assignment(rater, assignment)
    campaign = assignment.item.campaign
    reason = (reason or "").strip() if isinstance(reason, str) else ""
    if not reason:
        raise ValidationError({"reason": "Say why you skip this item."})
    if len(reason) > MAX_SKIP_REASON_CHARS:
        raise ValidationError({"reason": f"At most {MAX_SKIP_REASON_CHARS} characters."})
    with transaction.atomic():
        locked = Assignment.objects.select_for_update().get(pk=assignment.pk)
        if locked.status == AssignmentStatus.SUBMITTED:
            raise ValidationError("This item is already judged; undo the judgment to skip it.")
        if locked.status == AssignmentStatus.SKIPPED:
            raise ValidationError("This item is already skipped.")
        if locked.status == AssignmentStatus.ACTIVE:
            queue.release_slot(locked.item_id)  # an expired one gave its slot back already
        locked.status, locked.skip_reason = AssignmentStatus.SKIPPED, reason
        locked.save(update_fields=["status", "skip_reason"])
        record_event(
            actor=rater,
            verb="feedback_assignment.skipped",
            target=locked,
            team=campaign.project.team,
            project=campaign.project,
            changes={"campaign": campaign.pk, "item": locked.item_id, "reason": reason},
        )
    return locked


def judgment_undo(*, rater, campaign: Campaign) -> Assignment | None:
    """Withdraw the rater's last judgment in ``campaign`` (kept, marked, no longer counted) and
    make its assignment theirs again with a fresh expiry; None when there is nothing to undo.

    The item they were given after it (not answered yet) goes back to the queue, so they still
    hold one assignment at a time.
    """
    _require_rater(rater, campaign)
    _require_open(campaign)
    now = timezone.now()
    with transaction.atomic():
        queue.lock_rater_row(rater=rater, campaign=campaign)
        judgment = (
            Judgment.objects.select_for_update()
            .filter(item__campaign=campaign, rater=rater, withdrawn_at__isnull=True)
            .order_by("-created_at", "-id")
            .first()
        )
        if judgment is None:
            return None
        undone = Assignment.objects.select_for_update().get(pk=judgment.assignment_id)
        for other in Assignment.objects.select_for_update().filter(
            item__campaign=campaign, rater=rater, status=AssignmentStatus.ACTIVE
        ):
            # Unanswered, so nothing is lost; deleting it (not expiring it) lets the item
            # come back to this rater later. One holding an earlier undone judgment keeps its
            # row (the withdrawn record) and expires instead.
            if Judgment.objects.filter(assignment=other).exists():
                other.status = AssignmentStatus.EXPIRED
                other.save(update_fields=["status"])
            else:
                other.delete()
            queue.release_slot(other.item_id)
        judgment.withdrawn_at = now
        judgment.save(update_fields=["withdrawn_at"])
        Item.objects.filter(pk=undone.item_id, submitted__gt=0).update(submitted=F("submitted") - 1)
        undone.status = AssignmentStatus.ACTIVE
        undone.expires_at = now + timedelta(seconds=campaign.assignment_timeout_seconds)
        undone.save(update_fields=["status", "expires_at"])
        record_event(
            actor=rater,
            verb="feedback_judgment.withdrawn",
            target=judgment,
            team=campaign.project.team,
            project=campaign.project,
            # The withdrawn value stays on record here: answering again reuses the row.
            changes={"campaign": campaign.pk, "item": undone.item_id, "value": judgment.value},
        )
    return Assignment.objects.select_related("item").get(pk=undone.pk)


# --- managers and AI raters -------------------------------------------------------------------


def item_adjudicate(*, actor, item: Item, value: Any) -> Item:
    """Record a manager's label for an item in disagreement: THE label of the item
    (``item.adjudicated = {"value", "by", "at"}``), the raters' judgments kept beside it.
    ``value`` names the responses in the item's own order."""
    campaign = item.campaign
    require(actor, campaign.project.team, Action.EDIT_PROJECT)
    stored = validate_judgment_value(campaign, item, value)
    with transaction.atomic():
        locked = Item.objects.select_for_update().get(pk=item.pk)
        previous = locked.adjudicated
        locked.adjudicated = {"value": stored, "by": actor.pk, "at": timezone.now().isoformat()}
        locked.save(update_fields=["adjudicated"])
        record_event(
            actor=actor,
            verb="feedback_item.adjudicated",
            target=locked,
            team=campaign.project.team,
            project=campaign.project,
            changes={"campaign": campaign.pk, "value": stored, "previous": previous},
        )
    return locked


def ai_judgment_record(
    *, ai_rater: AIRater, item: Item, value: Any, order: list[int] | None = None
) -> Judgment:
    """An AI rater's judgment of ``item`` (a system write from its job): its assignment,
    submitted, and the judgment in one transaction. ``value`` is as the AI saw the responses,
    in ``order`` (None: the item's own order). Never counted in ``Item.taken`` nor
    ``Item.submitted``: the overlap and the progress are the humans'."""
    if item.campaign_id != ai_rater.campaign_id:
        raise ValidationError("This item is not in the AI rater's campaign.")
    n = len(item.responses)
    order = list(range(n)) if order is None else list(order)
    if not all(_is_int(i) for i in order) or sorted(order) != list(range(n)):
        raise ValidationError({"order": f"order must be a permutation of 0..{n - 1}."})
    stored = validate_judgment_value(item.campaign, item, value, order=order)
    now = timezone.now()
    try:
        with transaction.atomic():
            assignment = Assignment.objects.create(
                item=item,
                ai_rater=ai_rater,
                status=AssignmentStatus.SUBMITTED,
                order=order,
                assigned_at=now,
                expires_at=now,
            )
            return Judgment.objects.create(
                assignment=assignment, item=item, ai_rater=ai_rater, value=stored, created_at=now
            )
    except IntegrityError:
        raise ValidationError(f"{ai_rater.name} has already judged this item.") from None
