"""The job sweep on a timer inside a long-lived process (every worker, every web process).

Recovery must not depend on one process being alive: with the sweep only in a beat (or in the
one worker that runs ``--beat``), killing that process left its jobs "running" and lost queued
messages unsent for as long as it was down. Each worker and web process therefore runs
:func:`llmhub.jobs.sweep_stale_jobs` itself, every ``JOB_SWEEP_INTERVAL_SECONDS`` (with jitter,
so processes started together do not sweep in lockstep). Concurrent sweeps are harmless: every
change is a conditional update. ``LLMHUB_JOB_SWEEP_IN_PROCESS=false`` turns it off.

The same thread runs the stage apps' periodic functions (``llmhub/periodic.py``: assignment
expiry, later drift checks...), waking for whichever is due first, the sweep or one of them.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time

from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)

_lock = threading.RLock()  # re-entrant: stop_sweeper may run in a signal handler
_running: dict[int, Sweeper] = {}  # pid -> the sweeper of that process (none survives a fork)
MIN_WAIT_SECONDS = 0.05  # between ticks, whatever a periodic function's period


class Sweeper(threading.Thread):
    """A daemon thread sweeping every ``interval`` seconds (the first sweep right away) and
    running the periodic functions as they come due (one thread: a slow one delays the rest)."""

    def __init__(self, *, interval: float, where: str) -> None:
        super().__init__(name=f"llmhub-job-sweeper-{where}", daemon=True)
        self.interval = interval
        self.where = where
        self.stopped = threading.Event()
        self.sweeps = 0

    def run(self) -> None:
        from llmhub import periodic
        from llmhub.jobs import sweep_stale_jobs

        logger.info("Job sweep every %ss in this %s process", self.interval, self.where)
        next_sweep = time.monotonic()  # a (re)started process recovers what waited for it at once
        while True:
            if time.monotonic() >= next_sweep:
                try:
                    sweep_stale_jobs()
                except Exception:  # a database hiccup must not end the timer
                    logger.exception("The job sweep failed; trying again in %ss", self.interval)
                self.sweeps += 1
                next_sweep = time.monotonic() + self.interval * random.uniform(0.8, 1.2)
            try:
                periodic.run_due()  # each function's failure is logged there
            finally:
                # Do not hold a connection between ticks (the server may close idle ones).
                connection.close()
            due = periodic.next_due()
            wake = next_sweep if due is None else min(next_sweep, due)
            if self.stopped.wait(max(wake - time.monotonic(), MIN_WAIT_SECONDS)):
                return

    def stop(self, timeout: float = 10) -> None:
        self.stopped.set()
        self.join(timeout)


def start_sweeper(*, where: str, interval: float | None = None) -> Sweeper | None:
    """Start this process's sweeper unless it runs already or the setting turns it off."""
    if not settings.JOB_SWEEP_IN_PROCESS:
        return None
    with _lock:
        current = _running.get(os.getpid())
        if current is not None and current.is_alive():
            return current
        sweeper = Sweeper(
            interval=float(interval or settings.JOB_SWEEP_INTERVAL_SECONDS), where=where
        )
        sweeper.start()
        _running[os.getpid()] = sweeper
        return sweeper


def stop_sweeper(*, wait: bool = True) -> None:
    """Stop this process's sweeper, if any (tests, orderly shutdown). ``wait=False`` only tells
    it to stop (from a signal handler: a stopping worker must not re-send the jobs it hands
    back while it still consumes, see ``llmhub.celery``)."""
    with _lock:
        sweeper = _running.pop(os.getpid(), None)
    if sweeper is not None:
        if wait:
            sweeper.stop()
        else:
            sweeper.stopped.set()
