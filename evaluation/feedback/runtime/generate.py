"""Responses of several model versions to the same prompts, for a feedback campaign's items.

Each version is loaded in turn (only one is in memory at a time), generates every prompt with
the same settings, and is freed. Plain Python: the caller passes model directories and a
``Reporter``; cancellation is honoured between batches.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from pathlib import Path

from llmhub.reporting import JobCancelled, JobInputError, NullReporter, Reporter

BATCH_SIZE = 8


def generate_versions(
    model_dirs: Sequence[Path],
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    batch_size: int = BATCH_SIZE,
    device: str = "auto",
    reporter: Reporter | None = None,
) -> list[list[str]]:
    """``texts[v][p]``: the response of ``model_dirs[v]`` to ``prompts[p]``."""
    from evaluation.runtime.models import CAUSAL_LM, GenerationSettings, generate, load_model

    reporter = reporter or NullReporter()
    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature)
    out: list[list[str]] = []
    for v, model_dir in enumerate(model_dirs):
        if reporter.should_stop():
            raise JobCancelled()
        reporter.progress(v / len(model_dirs), f"Loading version {v + 1} of {len(model_dirs)}")
        loaded = load_model(model_dir, device=device)
        if loaded.kind != CAUSAL_LM:
            raise JobInputError(
                f"Version {v + 1} is a {loaded.kind.replace('_', ' ')} model; generations for "
                "feedback need causal language models."
            )

        def on_batch(b: int, total: int, v: int = v) -> None:
            if reporter.should_stop():
                raise JobCancelled()
            reporter.progress(
                (v + b / max(total, 1)) / len(model_dirs),
                f"Version {v + 1} of {len(model_dirs)}: batch {b + 1} of {total}",
            )

        texts, _lengths, _truncated = generate(
            loaded, list(prompts), settings, batch_size=batch_size, on_batch=on_batch
        )
        out.append(texts)
        del loaded
        gc.collect()
    return out
