"""Loaded model versions, one backend object each, behind one small interface.

The HTTP layer (``serving.engine.app``) only talks to :class:`Backend`; the batching lives
inside each backend (a scheduler thread per loaded version that runs batches of requests).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from serving.engine.config import EngineSettings
from serving.engine.types import VersionSpec


class QueueFull(Exception):
    """The version's queue is at max_queue_depth: answer 429 with Retry-After at once."""

    def __init__(self, retry_after: float = 1.0) -> None:
        super().__init__("The model's queue is full; retry shortly.")
        self.retry_after = retry_after


class BackendClosed(Exception):
    """The backend was unloaded (a version swap) before the request was queued: route again."""


class ModelLoadError(Exception):
    """The version's files are missing or cannot be loaded; the message says which."""


class BackendError(Exception):
    """A batch failed while it ran (raised inside the request's event iterator, or by embed /
    classify); the message says why. The backend goes on with the next batch."""


@dataclass(frozen=True)
class GenerationParams:
    prompt_ids: tuple[int, ...]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class Delta:
    """New text for choice ``index`` (``tokens`` new tokens; text may be empty while a
    multi-byte character or a possible stop string is held back)."""

    index: int
    text: str
    tokens: int = 1


@dataclass(frozen=True)
class Finish:
    """Choice ``index`` ended: 'stop' (end token or a stop string) or 'length' (max_tokens)."""

    index: int
    finish_reason: str
    completion_tokens: int


@dataclass(frozen=True)
class Classification:
    labels: list[tuple[str, float]] = field(default_factory=list)  # best first


class Backend(Protocol):
    spec: VersionSpec
    serve_kind: str
    max_context: int  # positions the model can attend to (prompt + completion)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` as the model reads a prompt (special tokens included)."""

    def chat_prompt(self, messages: list[dict]) -> str:
        """The prompt text for chat ``messages`` (the tokenizer's chat template, or the
        documented default)."""

    def generate(self, params: GenerationParams) -> AsyncIterator[Delta | Finish]:
        """Queue a generation (raises QueueFull / BackendClosed at once) and yield its events
        as the batch produces them, each choice ending with a Finish. Closing the iterator
        early (the client went away) frees its slot in the batch."""

    async def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """One vector per text, and the prompt tokens counted."""

    async def classify(self, texts: list[str]) -> tuple[list[Classification], int]:
        """Labels with scores per text, and the prompt tokens counted."""

    def queue_depth(self) -> int:
        """Requests waiting (not yet in a running batch)."""

    def running(self) -> int:
        """Requests in the running batch."""

    def close(self, *, drain: bool = True) -> None:
        """Refuse new requests; with ``drain`` finish those already queued, then free the
        model (the thread exits). Returns at once."""


def load_backend(spec: VersionSpec, settings: EngineSettings) -> Backend:
    """Load ``spec.model_dir`` and start the backend its ``serve_kind`` names (blocks while the
    weights load: call it from a worker thread). Raises ModelLoadError with the reason."""
    from serving.engine.backends.encoders import ClassifyBackend, EmbedBackend
    from serving.engine.backends.generate import GenerateBackend
    from serving.engine.backends.loading import load_for_serving
    from serving.engine.types import SERVE_CLASSIFY, SERVE_EMBED, SERVE_GENERATE

    classes = {
        SERVE_GENERATE: GenerateBackend,
        SERVE_EMBED: EmbedBackend,
        SERVE_CLASSIFY: ClassifyBackend,
    }
    if spec.serve_kind not in classes:
        raise ModelLoadError(
            f"{spec.label}: unknown serve kind {spec.serve_kind!r} (one of {', '.join(classes)})."
        )
    loaded = load_for_serving(spec, settings)
    return classes[spec.serve_kind](spec, settings, loaded)
