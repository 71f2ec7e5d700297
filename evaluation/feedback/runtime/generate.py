"""Responses of several model versions to the same prompts, for a feedback campaign's items.

Two ways, one result shape:

- :func:`generate_versions`: each version is loaded in turn (only one is in memory at a time),
  generates every prompt with the same settings, and is freed; cancellation is honoured
  between batches.
- :func:`generate_through_endpoints`: each prompt is sent to each endpoint's OpenAI-compatible
  ``/completions`` route (the prompt as is, as a loaded version reads it), a few calls at a
  time, through the AI raters' client (``judge.openai_post``); each answer keeps the version
  that gave it (the ``x-llmhub-version`` header: a canary may answer some prompts).
  Cancellation is honoured between answers; a failed call leaves that prompt unanswered.

Plain Python: the caller passes model directories or call targets and a ``Reporter``.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from llmhub.reporting import JobCancelled, JobInputError, NullReporter, Reporter

BATCH_SIZE = 8
# Calls in flight at once through endpoints: enough to fill the engine's batches, well below
# its queue depth (a full queue answers 429).
ENDPOINT_CONCURRENCY = 4


@dataclass(frozen=True)
class EndpointTarget:
    """Where one endpoint is called: an OpenAI-compatible base URL (``…/v1``), the ``model``
    it is asked for, the headers (the key) and a name for messages."""

    base_url: str
    model: str
    headers: Mapping[str, str] = field(default_factory=dict)
    name: str = ""


@dataclass(frozen=True)
class EndpointAnswer:
    text: str
    version: str  # the x-llmhub-version header ("" when the server sends none)
    canary: bool
    response_id: str  # x-request-id: the request log's row


def completions_url(base_url: str) -> str:
    """The (text) completions URL of an OpenAI-compatible base URL (``…/v1``)."""
    return base_url.rstrip("/") + "/completions"


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


def _answer(
    target: EndpointTarget,
    prompt: str,
    *,
    max_new_tokens: int,
    temperature: float,
    timeout: float,
    client,
) -> EndpointAnswer:
    from evaluation.feedback.runtime.judge import OpenAICallError, openai_post

    body = {
        "model": target.model,
        "prompt": prompt,
        "max_tokens": max_new_tokens,
        "temperature": temperature,
    }
    who = f"The endpoint {target.name or target.model}"
    answer, headers = openai_post(
        url=completions_url(target.base_url),
        body=body,
        headers=target.headers,
        timeout=timeout,
        client=client,
        who=who,
    )
    try:
        text = answer["choices"][0]["text"]
    except (KeyError, IndexError, TypeError):
        raise OpenAICallError(f"{who}'s reply is not an OpenAI completion.") from None
    return EndpointAnswer(
        text=text if isinstance(text, str) else "",
        version=headers.get("x-llmhub-version", ""),
        canary=headers.get("x-llmhub-canary") == "true",
        response_id=headers.get("x-request-id", ""),
    )


def generate_through_endpoints(
    targets: Sequence[EndpointTarget],
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    timeout: float = 120.0,
    concurrency: int = ENDPOINT_CONCURRENCY,
    reporter: Reporter | None = None,
) -> tuple[list[list[EndpointAnswer | None]], list[str]]:
    """``(answers, errors)``: ``answers[t][p]`` is ``targets[t]``'s answer to ``prompts[p]``,
    None where the call failed; ``errors`` the failed calls' reasons, in the order they came."""
    import httpx

    from evaluation.feedback.runtime.judge import OpenAICallError

    reporter = reporter or NullReporter()
    answers: list[list[EndpointAnswer | None]] = [[None] * len(prompts) for _ in targets]
    errors: list[str] = []
    calls = [(t, p) for p in range(len(prompts)) for t in range(len(targets))]
    total = len(calls)
    done = 0
    with (
        httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client,
        ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="gen") as pool,
    ):
        pending = {}
        queue = iter(calls)

        def submit_next() -> None:
            for t, p in queue:
                future = pool.submit(
                    _answer,
                    targets[t],
                    prompts[p],
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                    timeout=timeout,
                    client=client,
                )
                pending[future] = (t, p)
                return

        for _ in range(max(1, concurrency)):
            submit_next()
        while pending:
            finished, _rest = wait(list(pending), return_when=FIRST_COMPLETED)
            for future in finished:
                t, p = pending.pop(future)
                try:
                    answers[t][p] = future.result()
                except OpenAICallError as exc:
                    errors.append(str(exc))
                done += 1
            if reporter.should_stop():
                for future in pending:
                    future.cancel()
                raise JobCancelled()
            reporter.progress(
                done / max(total, 1),
                f"{done} of {total} answers" + (f" ({len(errors)} failed)" if errors else ""),
            )
            for _ in finished:
                submit_next()
    return answers, errors
