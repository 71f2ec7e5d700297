"""Divergence detection: is the training loss blowing up?

A run has diverged when a logged training loss is NaN or infinite, or when the smoothed loss
stays far above where it started for a sustained stretch. Precisely, with the constants below:

* the *baseline* is the lowest of the first ``BASELINE_POINTS`` logged training losses (the
  loss of the model as it starts; the lowest, so that a run exploding within its first steps
  does not raise its own baseline: 1.4, 5.7, 22.8 gives 1.4);
* the *smoothed loss* is an exponential moving average of the logged losses,
  ``ema = EMA_WEIGHT * loss + (1 - EMA_WEIGHT) * ema`` (a single noisy batch does not count);
* the *threshold* is ``max(RISE_FACTOR * baseline, baseline + MIN_RISE)``: relative for large
  losses, with an absolute floor so that a fine-tune starting near zero loss (0.05 -> 0.2 is a
  4x rise but no divergence) is not flagged;
* the run has diverged once the smoothed loss is above the threshold for ``PATIENCE``
  consecutive logged steps, or at the first non-finite logged loss, or once the gradient norm
  is not finite for ``PATIENCE`` consecutive logged steps.

Why the gradient norm: the Trainer replaces a NaN or infinite step loss in its logs by the
average of the window (its ``logging_nan_inf_filter``, kept on, because a batch with nothing to
predict, e.g. a masked-LM batch where no token was masked, has a NaN loss but a zero gradient
and harms nothing). A model whose weights have become NaN therefore logs a loss of 0 while its
gradient norm is NaN at every step; one overflowing fp16 step (an infinite norm the loss
scaler skips) is not a stretch of them. A step whose gradient norm is exactly 0 (such an empty
batch) is left out of the loss rule: its logged loss is the Trainer's filler, not a measurement.

The issue's example, a learning rate of 1.0 sending a classifier's loss from 1.4 to 44, is far
past any of these; a healthy run, whose loss falls, never comes near them. The monitor is pure
Python (no torch), so it is tested on plain sequences of numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BASELINE_POINTS = 3
EMA_WEIGHT = 0.3
RISE_FACTOR = 2.0
MIN_RISE = 1.0  # nats
PATIENCE = 5


@dataclass(frozen=True)
class Divergence:
    """What the monitor saw when it decided the run diverged."""

    step: int
    loss: float
    baseline: float
    smoothed: float | None
    since_step: int
    gradients: bool = False  # judged by the gradient norm, not the loss

    def describe(self) -> str:
        """One sentence for the job's reason or warning."""
        if self.gradients:
            return (
                f"diverged at step {self.step}: the gradient norm is no longer a finite number "
                f"(for {PATIENCE} logged steps since step {self.since_step}; the loss was "
                f"{self.baseline:.4g} at the start). Lower the learning rate, add warmup, or use "
                "fp32."
            )
        if not math.isfinite(self.loss):
            return (
                f"diverged at step {self.step}: loss {self.loss} from {self.baseline:.4g} at the "
                "start (the loss is no longer a finite number). Lower the learning rate, add "
                "warmup, or use fp32."
            )
        return (
            f"diverged at step {self.step}: loss {self.loss:.4g} from {self.baseline:.4g} at the "
            f"start (smoothed loss {self.smoothed:.4g}, above {RISE_FACTOR:g}x the start for "
            f"{PATIENCE} logged steps since step {self.since_step}). Lower the learning rate or "
            "add warmup."
        )


class DivergenceMonitor:
    """Feed it every logged training loss with :meth:`observe`; it returns the
    :class:`Divergence` once, at the step the run is judged diverged, and None otherwise."""

    def __init__(self) -> None:
        self.start: list[float] = []
        self.smoothed: float | None = None
        self.above_since: int | None = None
        self.above_count = 0
        self.bad_gradients_since: int | None = None
        self.bad_gradients = 0
        self.divergence: Divergence | None = None

    @property
    def baseline(self) -> float | None:
        return min(self.start) if self.start else None

    def threshold(self) -> float | None:
        baseline = self.baseline
        if baseline is None or len(self.start) < BASELINE_POINTS:
            return None
        return max(RISE_FACTOR * baseline, baseline + MIN_RISE)

    def observe(self, step: int, loss: float, grad_norm: float | None = None) -> Divergence | None:
        if self.divergence is not None:
            return None  # said once; the run goes on or stops as configured
        if grad_norm is not None and not math.isfinite(grad_norm):
            if self.bad_gradients_since is None:
                self.bad_gradients_since = step
            self.bad_gradients += 1
            if self.bad_gradients >= PATIENCE:
                baseline = self.baseline
                self.divergence = Divergence(
                    step=step,
                    loss=loss,
                    baseline=baseline if baseline is not None else math.nan,
                    smoothed=self.smoothed,
                    since_step=self.bad_gradients_since,
                    gradients=True,
                )
                return self.divergence
        elif grad_norm is not None:
            self.bad_gradients_since, self.bad_gradients = None, 0
        if grad_norm == 0.0:
            # Nothing to predict in the batch (its loss NaN, logged as the Trainer's filler):
            # the step says nothing about where the loss is going.
            return None
        if not math.isfinite(loss):
            self.divergence = Divergence(
                step=step,
                loss=loss,
                baseline=self.baseline if self.baseline is not None else math.nan,
                smoothed=self.smoothed,
                since_step=step,
            )
            return self.divergence
        self.smoothed = (
            loss if self.smoothed is None else EMA_WEIGHT * loss + (1 - EMA_WEIGHT) * self.smoothed
        )
        if len(self.start) < BASELINE_POINTS:
            self.start.append(loss)
            if len(self.start) < BASELINE_POINTS:
                return None
        threshold = self.threshold()
        if threshold is not None and self.smoothed > threshold:
            if self.above_since is None:
                self.above_since = step
            self.above_count += 1
            if self.above_count >= PATIENCE:
                self.divergence = Divergence(
                    step=step,
                    loss=loss,
                    baseline=self.baseline,
                    smoothed=self.smoothed,
                    since_step=self.above_since,
                )
                return self.divergence
        else:
            self.above_since, self.above_count = None, 0
        return None
