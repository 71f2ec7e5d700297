"""Periodic work of the stage apps, run on the job sweeper's timer in every long-lived process.

The core may not import a stage app, and a stage may not start threads of its own in every
process. So a stage registers what must happen every so often in its ``AppConfig.ready()``::

    periodic.register("feedback.expire_assignments", assignments_expire, every_seconds=60)

and the sweeper thread of each worker and web process (``llmhub/sweeper.py``) calls
:func:`run_due` on each tick, waking for whichever comes first: its next job sweep or the next
function due. Each process keeps its own schedule (with jitter, so processes started together
do not run in lockstep); the first tick runs everything once.

What a registered function must be, since every process runs it:

- callable with no arguments, cheap when there is nothing to do (one indexed query);
- safe to run in several processes at once: each change a conditional update on the row as
  read, as the job sweep does, so two processes never do one thing twice;
- a function that must run once per period across all processes (enqueueing a job) claims the
  period itself, with a conditional update on a row of its own.

An exception is logged and the function runs again at its next time; it never stops the timer,
the sweep or the other functions. ``LLMHUB_JOB_SWEEP_IN_PROCESS=false`` turns the timer, and so
these, off.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

JITTER = (0.8, 1.2)  # the sweep's own jitter


@dataclass
class PeriodicFunction:
    """One registered function and this process's schedule for it (monotonic seconds)."""

    name: str
    fn: Callable[[], Any]
    every_seconds: float
    next_at: float = 0.0  # 0: due at the first tick
    runs: int = 0
    failures: int = 0


_lock = threading.Lock()
_registry: dict[str, PeriodicFunction] = {}


def register(name: str, fn: Callable[[], Any], *, every_seconds: float) -> None:
    """Run ``fn()`` every ``every_seconds`` in each process with a sweeper. Registering a name
    again (a second ``ready()`` in tests) replaces its function and period, keeping its
    schedule."""
    if not name or not callable(fn):
        raise ValueError("A periodic function needs a name and a callable.")
    if isinstance(every_seconds, bool) or not every_seconds > 0:
        raise ValueError(f"every_seconds must be positive, not {every_seconds!r}.")
    with _lock:
        current = _registry.get(name)
        if current is not None:
            current.fn, current.every_seconds = fn, float(every_seconds)
        else:
            _registry[name] = PeriodicFunction(name, fn, float(every_seconds))


def unregister(name: str) -> None:
    with _lock:
        _registry.pop(name, None)


def registered() -> dict[str, PeriodicFunction]:
    """name -> its entry (the live objects: their counters move as they run)."""
    with _lock:
        return dict(_registry)


def run_due(*, now: float | None = None) -> list[str]:
    """Run every function whose time has come (``now``: ``time.monotonic()``), in registration
    order; returns the names run. A failure is logged and counted, never raised."""
    now = time.monotonic() if now is None else now
    with _lock:
        due = [entry for entry in _registry.values() if entry.next_at <= now]
    ran = []
    for entry in due:
        # Scheduled before the call: a slow or failing run does not make the next one sooner.
        entry.next_at = now + entry.every_seconds * random.uniform(*JITTER)
        try:
            entry.fn()
        except Exception:
            entry.failures += 1
            logger.exception(
                "The periodic function %s failed; it runs again in about %ss",
                entry.name,
                entry.every_seconds,
            )
        entry.runs += 1
        ran.append(entry.name)
    return ran


def next_due() -> float | None:
    """When (``time.monotonic()``) the next function is due; None when none is registered."""
    with _lock:
        return min((entry.next_at for entry in _registry.values()), default=None)
