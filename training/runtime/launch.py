"""Run one training job in several processes under ``torchrun`` (one per GPU, or several CPU
processes with the gloo backend), talking to the worker through files.

The worker (``training/tasks.py``) starts::

    python -m torch.distributed.run --standalone --nproc_per_node N \\
        -m training.runtime.launch --config job.json --events events.jsonl --stop stop

Every rank builds the same ``TrainingConfig`` and calls ``run.train``; the Trainer picks up the
distributed environment torchrun sets. Rank 0 appends one JSON object per line to the events
file: ``progress``, ``metrics``, ``checkpoint`` (a finished checkpoint directory), and at the end
``result``, ``input_error`` or ``cancelled``. The worker asks for a stop by creating the stop
file; the ranks agree on the step to stop at (see ``run._stop_everywhere``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

from llmhub.reporting import JobCancelled, JobInputError
from training.runtime.config import TrainingConfig
from training.runtime.presets import ModelSpec

PATH_FIELDS = (
    "train_path",
    "eval_path",
    "output_dir",
    "tokenizer_dir",
    "base_model_dir",
    "resume_from_checkpoint",
)


def config_to_json(config: TrainingConfig) -> dict[str, Any]:
    """The config as JSON (paths as strings, the model spec as a dict)."""
    from dataclasses import fields

    data: dict[str, Any] = {}
    for item in fields(config):
        value = getattr(config, item.name)
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, ModelSpec):
            value = value.to_dict()
        data[item.name] = value
    return data


def config_from_json(data: dict[str, Any]) -> TrainingConfig:
    data = dict(data)
    if data.get("model_spec"):
        data["model_spec"] = ModelSpec.from_dict(data["model_spec"])
    for name in PATH_FIELDS:
        if data.get(name):
            data[name] = Path(data[name])
    return TrainingConfig(**data)


class FileReporter:
    """A Reporter for a rank: rank 0 writes events, every rank reads the stop file."""

    def __init__(self, events: Path, stop: Path, *, rank: int) -> None:
        self.events, self.stop, self.rank = events, stop, rank
        self._lock = threading.Lock()

    def emit(self, event: dict[str, Any]) -> None:
        if self.rank != 0:
            return
        with self._lock, open(self.events, "a") as handle:
            handle.write(json.dumps(event) + "\n")

    def progress(self, fraction: float, message: str = "") -> None:
        self.emit({"type": "progress", "fraction": fraction, "message": message})

    def metrics(self, step: int, values: dict[str, float], *, epoch: float | None = None) -> None:
        self.emit({"type": "metrics", "step": step, "values": values, "epoch": epoch})

    def should_stop(self) -> bool:
        return self.stop.exists()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--events", type=Path, required=True)
    parser.add_argument("--stop", type=Path, required=True)
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    reporter = FileReporter(args.events, args.stop, rank=rank)
    try:
        from training.runtime.run import train

        config = config_from_json(json.loads(args.config.read_text()))

        def hand_over(path: Path, step: int) -> None:
            # The Trainer may rotate the checkpoint away before the worker has uploaded it:
            # hand over a copy the worker owns (and deletes once stored).
            copy = config.output_dir / "handover" / f"step-{step}"
            shutil.copytree(path, copy, dirs_exist_ok=True)
            reporter.emit({"type": "checkpoint", "path": str(copy), "step": step})

        result = train(config, reporter=reporter, checkpoint_callback=hand_over)
    except JobInputError as exc:
        reporter.emit({"type": "input_error", "message": str(exc)})
        return 2
    except JobCancelled:
        reporter.emit({"type": "cancelled"})
        return 3
    reporter.emit({"type": "result", **result.to_dict()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
