"""How much CPU other processes took while a bench round ran.

A round's timing is only the product's if nothing else competed for the cores. ``Round``
measures, over the round's wall time, the machine's busy CPU time (``psutil.cpu_times()``:
everything but idle and I/O wait) minus the CPU time of this process and its descendants
(their own time, plus the time of children they have already reaped, so workers that exit
during the round still count as ours). What is left is the other processes' share, in cores:
0.15 means others kept 15% of one core busy on average.

    with Round() as meter:
        work()
    meter.other_cores, meter.contended

``split_rounds`` keeps the clean rounds and counts the discarded ones.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import psutil

# Other processes' CPU above this (in cores, averaged over the round) marks a round contended.
CONTENDED_ABOVE = 0.15

T = TypeVar("T")


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores)."""
    times = psutil.cpu_times()
    busy = times.user + times.system
    for field in ("nice", "irq", "softirq", "steal"):  # guest time is already in user
        busy += getattr(times, field, 0.0)
    return busy


def _tree_seconds(root: psutil.Process) -> float:
    """CPU seconds of ``root`` and its live descendants, including children they reaped."""
    total = 0.0
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return total
    for process in processes:
        with contextlib.suppress(psutil.Error):  # a process that exited between the calls
            t = process.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


class Round:
    """Context manager measuring one round: ``wall`` seconds, ``own_cores`` (this process
    tree's CPU over the wall time) and ``other_cores`` (everyone else's)."""

    def __init__(self, threshold: float = CONTENDED_ABOVE) -> None:
        self.threshold = threshold
        self.wall = self.own_cores = self.other_cores = 0.0
        self._me = psutil.Process()

    def __enter__(self) -> Round:
        self._busy = _busy_seconds()
        self._own = _tree_seconds(self._me)
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._started
        own = _tree_seconds(self._me) - self._own
        busy = _busy_seconds() - self._busy
        span = max(self.wall, 1e-9)
        self.own_cores = own / span
        # The kernel's tick accounting and the per-process counters are not read at the same
        # instant: a small negative rest is measurement noise, not negative contention.
        self.other_cores = max(0.0, busy - own) / span

    @property
    def contended(self) -> bool:
        return self.other_cores > self.threshold

    def describe(self) -> str:
        flag = " CONTENDED" if self.contended else ""
        return f"others {self.other_cores:.2f} cores{flag}"


def split_rounds(
    rounds: Sequence[T], meters: Callable[[T], Sequence[Round]]
) -> tuple[list[T], int]:
    """The rounds none of whose meters was contended, and how many were discarded. When every
    round was contended, all of them are returned (the caller flags the figures)."""
    clean = [r for r in rounds if not any(m.contended for m in meters(r))]
    discarded = len(rounds) - len(clean)
    return (clean or list(rounds)), discarded


def cores() -> int:
    """Logical cores of this machine (what ``other_cores`` is a fraction of)."""
    return psutil.cpu_count() or 1
