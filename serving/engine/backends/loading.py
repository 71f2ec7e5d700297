"""Loading a model version for serving, and the bridge from a backend's thread to asyncio."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from serving.engine.backends import ModelLoadError
from serving.engine.config import EngineSettings
from serving.engine.types import VersionSpec

logger = logging.getLogger(__name__)


def load_for_serving(spec: VersionSpec, settings: EngineSettings) -> Any:
    """The version's ``LoadedModel`` on ``settings.device``: bfloat16 on CUDA, float32 on the CPU.

    Every failure (no directory, not a model, pickle weights, no GPU) is a ModelLoadError
    carrying the loader's message.
    """
    import torch

    from evaluation.runtime.models import load_model, resolve_device
    from llmhub.reporting import JobInputError

    model_dir = Path(spec.model_dir)
    if not model_dir.is_dir():
        raise ModelLoadError(f"{spec.label}: no model directory at {model_dir}.")
    try:
        device = resolve_device(settings.device)
        loaded = load_model(model_dir, device=device)
    except JobInputError as exc:
        raise ModelLoadError(f"{spec.label}: {exc}") from exc
    except (OSError, RuntimeError, ValueError) as exc:  # e.g. CUDA out of memory
        raise ModelLoadError(f"{spec.label}: the model cannot be loaded: {exc}") from exc
    if device.startswith("cuda"):
        loaded.model.to(torch.bfloat16)
    loaded.model.eval()
    logger.info("Serving %s (%s) from %s on %s", spec.label, loaded.kind, model_dir, device)
    return loaded


def deliver(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, item: object) -> bool:
    """Hand ``item`` to ``queue`` on ``loop`` from another thread; False when the loop is gone."""
    try:
        loop.call_soon_threadsafe(queue.put_nowait, item)
    except RuntimeError:  # the loop was closed: nobody is listening any more
        return False
    return True


def resolve_future(loop: asyncio.AbstractEventLoop, future: asyncio.Future, result: object) -> None:
    """Set ``future``'s result (an exception instance is raised instead) from another thread."""

    def settle() -> None:
        if future.done():  # the awaiting task was cancelled
            return
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)

    with contextlib.suppress(RuntimeError):  # the loop was closed: nobody is waiting
        loop.call_soon_threadsafe(settle)
