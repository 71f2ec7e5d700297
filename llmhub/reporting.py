"""The small interface through which ML runtime code reports to whoever runs it.

The runtimes (``datasets_app/cleaning``, ``training/runtime``, ``evaluation/metrics``,
``serving/engine``) never import Django. They take paths and configs, and talk back through a
:class:`Reporter`: progress, metric points, and a cancellation flag they poll. The job wrapper in
``llmhub.jobs`` passes a reporter backed by the job row; tests and scripts pass
:class:`NullReporter` or :class:`RecordingReporter`.

Errors the user can act on (bad input, a missing column, a model that does not fit) are raised
as :class:`JobInputError`; the job then fails with that message shown as is. Any other
exception is a crash: the job fails with the exception type and message and keeps the traceback.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class JobInputError(Exception):
    """An expected failure caused by the job's input; its message is shown to the user as is."""


class JobCancelled(Exception):
    """Raised by runtime code that noticed ``reporter.should_stop()`` and stopped cleanly."""


@runtime_checkable
class Reporter(Protocol):
    def progress(self, fraction: float, message: str = "") -> None:
        """Report overall progress in [0, 1] with an optional short status line."""

    def metrics(self, step: int, values: dict[str, float], *, epoch: float | None = None) -> None:
        """Record metric values (loss, learning_rate, eval_loss, tokens_per_second...) at a step."""

    def should_stop(self) -> bool:
        """True once cancellation was requested; long loops poll it and stop cleanly."""


class NullReporter:
    """Reports nowhere and never stops: for scripts and benchmarks."""

    def progress(self, fraction: float, message: str = "") -> None:
        pass

    def metrics(self, step: int, values: dict[str, float], *, epoch: float | None = None) -> None:
        pass

    def should_stop(self) -> bool:
        return False


@dataclass
class RecordingReporter:
    """Keeps everything it is told, and can be told to stop: for tests of the runtimes."""

    progress_calls: list[tuple[float, str]] = field(default_factory=list)
    metric_points: list[tuple[int, dict[str, float], float | None]] = field(default_factory=list)
    stop_after_metric_points: int | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def progress(self, fraction: float, message: str = "") -> None:
        self.progress_calls.append((fraction, message))

    def metrics(self, step: int, values: dict[str, float], *, epoch: float | None = None) -> None:
        self.metric_points.append((step, dict(values), epoch))
        if (
            self.stop_after_metric_points is not None
            and len(self.metric_points) >= self.stop_after_metric_points
        ):
            self._stop.set()

    def request_stop(self) -> None:
        self._stop.set()

    def should_stop(self) -> bool:
        return self._stop.is_set()


runtime_logger = logging.getLogger("llmhub.runtime")
