"""The registry of periodic functions (llmhub/periodic.py), run by each process's sweeper thread,
and the feedback stage's assignment expiry registered there."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.utils import timezone

from llmhub import periodic
from llmhub.sweeper import Sweeper


@pytest.fixture
def temporary(monkeypatch):
    """Register functions for one test, in a registry of their own (the apps' functions, which
    need the database, are put back afterwards)."""
    monkeypatch.setattr(periodic, "_registry", {})

    def add(name: str, fn, every_seconds: float) -> None:
        periodic.register(name, fn, every_seconds=every_seconds)

    return add


def test_a_function_runs_at_the_first_tick_then_once_per_period(temporary) -> None:
    calls = []
    temporary("test.count", lambda: calls.append(1), 60)
    entry = periodic.registered()["test.count"]
    start = entry.next_at  # due at once
    assert "test.count" in periodic.run_due(now=start + 1)
    assert "test.count" not in periodic.run_due(now=start + 2)  # not yet: 60 s (+-20%)
    assert "test.count" not in periodic.run_due(now=start + 1 + 47)
    assert "test.count" in periodic.run_due(now=start + 1 + 73)
    assert calls == [1, 1] and entry.runs == 2
    assert entry.next_at > start + 1 + 73 + 47  # the next period counted from that run


def test_a_failing_function_is_logged_and_never_stops_the_others(temporary, caplog) -> None:
    calls = []

    def broken() -> None:
        raise RuntimeError("the database went away")

    temporary("test.broken", broken, 10)
    temporary("test.fine", lambda: calls.append(1), 10)
    ran = periodic.run_due(now=10**9)
    assert {"test.broken", "test.fine"} <= set(ran) and calls == [1]
    assert periodic.registered()["test.broken"].failures == 1
    assert "test.broken failed" in caplog.text and "the database went away" in caplog.text
    # It is due again at its next time, like any other.
    assert "test.broken" in periodic.run_due(now=10**9 + 13)


def test_registering_again_replaces_and_bad_periods_are_refused(temporary) -> None:
    first, second = [], []
    temporary("test.twice", lambda: first.append(1), 30)
    temporary("test.twice", lambda: second.append(1), 5)
    assert list(periodic.registered()).count("test.twice") == 1
    assert periodic.registered()["test.twice"].every_seconds == 5
    periodic.run_due(now=10**9)
    assert (first, second) == ([], [1])
    for bad in (0, -1, True):
        with pytest.raises(ValueError, match="positive"):
            periodic.register("test.bad", lambda: None, every_seconds=bad)
    assert "test.bad" not in periodic.registered()


def test_the_sweeper_wakes_for_periodic_functions_between_sweeps(transactional_db, temporary):
    """A sweep every hour, a function every 0.1 s: the thread wakes for the function."""
    ran = threading.Event()
    count = [0]

    def tick() -> None:
        count[0] += 1
        if count[0] >= 3:
            ran.set()

    temporary("test.often", tick, 0.1)
    sweeper = Sweeper(interval=3600, where="test")
    sweeper.start()
    try:
        assert ran.wait(10), count
    finally:
        sweeper.stop()
    assert not sweeper.is_alive()
    assert sweeper.sweeps == 1  # the first sweep at start, the next one an hour away


@pytest.mark.django_db
def test_the_feedback_expiry_is_registered_and_expires_every_campaign(
    world, django_assert_num_queries
) -> None:
    from evaluation.apps import ASSIGNMENT_EXPIRY_EVERY_SECONDS
    from evaluation.feedback.models import Assignment, AssignmentStatus, Item
    from evaluation.feedback.services.labeling import assignment_next, assignments_expire
    from projects.models import Role
    from tests.evaluation.feedback.builders import campaign_with_items

    entry = periodic.registered()["feedback.expire_assignments"]
    assert entry.fn is assignments_expire
    assert entry.every_seconds == ASSIGNMENT_EXPIRY_EVERY_SECONDS
    with django_assert_num_queries(1):  # nothing due: one indexed read
        entry.fn()

    rater = world.users[Role.RATER]
    campaigns = [campaign_with_items(world, n_items=2, overlap=1) for _ in range(2)]
    held = [assignment_next(rater=rater, campaign=c) for c in campaigns]
    Assignment.objects.filter(pk__in=[a.pk for a in held]).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert [Item.objects.get(pk=a.item_id).taken for a in held] == [1, 1]
    # What the sweeper of any process calls: both campaigns' slots come back, nobody asked.
    entry.fn()
    for assignment in held:
        assignment.refresh_from_db()
        assert assignment.status == AssignmentStatus.EXPIRED
        assert Item.objects.get(pk=assignment.item_id).taken == 0
    entry.fn()  # a second run (another process) gives nothing back twice
    assert sum(sum(c.items.values_list("taken", flat=True)) for c in campaigns) == 0
