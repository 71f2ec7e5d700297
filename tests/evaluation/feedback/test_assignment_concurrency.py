"""The fair queue under concurrent raters: threads asking, submitting and abandoning at once,
on the database the suite runs on. Run it on real PostgreSQL (row locks, SKIP LOCKED) with
``DATABASE_URL=postgres://postgres@127.0.0.1:5432/llmhub pytest -p no:xdist
tests/evaluation/feedback/test_assignment_concurrency.py``; on SQLite the write lock
serialises the same code, and the same invariants must hold."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from evaluation.feedback.models import Assignment, AssignmentStatus, Item, Judgment
from evaluation.feedback.services import labeling as svc
from tests.evaluation.feedback.builders import campaign_with_items, extra_raters

pytestmark = pytest.mark.django_db(transaction=True)

N_RATERS = 8
N_ITEMS = 12
OVERLAP = 3


def _run_all(workers) -> list[BaseException]:
    """Start every worker at the same moment; the errors they raised."""
    start = threading.Barrier(len(workers))
    errors: list[BaseException] = []

    def run(work) -> None:
        try:
            start.wait(30)
            work()
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(t.is_alive() for t in threads), "a rater thread hung"
    return errors


def _assert_invariants(campaign) -> None:
    # Never twice to one rater (the unique key would have refused it, and nothing got through).
    per_rater = Counter(
        Assignment.objects.filter(item__campaign=campaign, rater__isnull=False).values_list(
            "item_id", "rater_id"
        )
    )
    assert max(per_rater.values()) == 1
    # Never past the overlap: held slots (active or submitted), counted from the rows.
    held = (
        Assignment.objects.filter(
            item__campaign=campaign,
            rater__isnull=False,
            status__in=[AssignmentStatus.ACTIVE, AssignmentStatus.SUBMITTED],
        )
        .values("item_id")
        .annotate(n=Count("id"))
    )
    assert all(row["n"] <= OVERLAP for row in held)
    # The counters the queue reads agree with the rows.
    counted = {row["item_id"]: row["n"] for row in held}
    judged = Counter(
        Judgment.objects.filter(item__campaign=campaign, withdrawn_at__isnull=True).values_list(
            "item_id", flat=True
        )
    )
    for item in Item.objects.filter(campaign=campaign):
        assert item.taken == counted.get(item.pk, 0), item
        assert item.submitted == judged.get(item.pk, 0), item


def test_concurrent_raters_never_exceed_the_overlap_nor_get_an_item_twice(world) -> None:
    raters = extra_raters(world, N_RATERS, prefix="conc")
    campaign = campaign_with_items(world, n_items=N_ITEMS, overlap=OVERLAP, raters=raters)
    done: Counter = Counter()

    def label_everything(rater) -> None:
        while True:
            assignment = svc.assignment_next(rater=rater, campaign=campaign)
            if assignment is None:
                return
            svc.judgment_submit(rater=rater, assignment=assignment, value={"choice": "a"})
            done[rater.pk] += 1

    errors = _run_all([lambda r=r: label_everything(r) for r in raters])
    assert not errors, errors
    _assert_invariants(campaign)
    # Everything got its overlap, each label by a different rater.
    assert set(Item.objects.filter(campaign=campaign).values_list("submitted", flat=True)) == {
        OVERLAP
    }
    assert sum(done.values()) == N_ITEMS * OVERLAP


def test_concurrent_next_of_one_rater_gives_one_assignment(world) -> None:
    raters = extra_raters(world, 2, prefix="twin")
    campaign = campaign_with_items(world, n_items=4, overlap=1, raters=raters)
    got: list[int] = []

    def ask() -> None:  # one rater, six tabs asking at the same moment
        got.append(svc.assignment_next(rater=raters[0], campaign=campaign).pk)

    errors = _run_all([ask] * 6)
    assert not errors, errors
    assert len(set(got)) == 1
    assert Assignment.objects.filter(rater=raters[0]).count() == 1


def test_expiry_skips_and_abandons_under_concurrency_return_items(world) -> None:
    raters = extra_raters(world, N_RATERS, prefix="mix")
    campaign = campaign_with_items(world, n_items=N_ITEMS, overlap=OVERLAP, raters=raters)
    past = timezone.now() - timedelta(hours=1)

    def work(i: int, rater) -> None:
        for step in range(N_ITEMS):
            assignment = svc.assignment_next(rater=rater, campaign=campaign)
            if assignment is None:
                return
            if (i + step) % 4 == 0:  # walks away: the assignment expires
                Assignment.objects.filter(pk=assignment.pk).update(expires_at=past)
            elif (i + step) % 4 == 1:
                svc.assignment_skip(rater=rater, assignment=assignment, reason="unsure")
            else:
                svc.judgment_submit(rater=rater, assignment=assignment, value={"choice": "tie"})

    errors = _run_all([lambda i=i, r=r: work(i, r) for i, r in enumerate(raters)])
    assert not errors, errors
    svc.assignments_expire()
    _assert_invariants(campaign)
    assert not Assignment.objects.filter(
        item__campaign=campaign, status=AssignmentStatus.ACTIVE
    ).exists()
    statuses = Counter(
        Assignment.objects.filter(item__campaign=campaign).values_list("status", flat=True)
    )
    assert statuses[AssignmentStatus.EXPIRED] and statuses[AssignmentStatus.SKIPPED]
    # The slots came back: labeling on to the end, every item reaches its overlap, or as many
    # raters as did not lose it (an item abandoned or skipped never goes back to that rater).
    for rater in raters:
        while (assignment := svc.assignment_next(rater=rater, campaign=campaign)) is not None:
            svc.judgment_submit(rater=rater, assignment=assignment, value={"choice": "b"})
    _assert_invariants(campaign)
    for item in Item.objects.filter(campaign=campaign):
        lost = Assignment.objects.filter(
            item=item, status__in=[AssignmentStatus.EXPIRED, AssignmentStatus.SKIPPED]
        ).count()
        assert item.submitted == min(OVERLAP, N_RATERS - lost), item
