"""Embeddings and classification: one forward pass per batch of texts, gathered dynamically.

A shared batcher thread per backend collects the texts of concurrent requests for up to
``max_wait_ms`` (or until ``max_batch_size`` texts wait), runs them together and hands each
request its own rows back.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from serving.engine.backends import (
    BackendClosed,
    BackendError,
    Classification,
    GenerationParams,
    ModelLoadError,
    QueueFull,
)
from serving.engine.backends.loading import resolve_future
from serving.engine.config import EngineSettings
from serving.engine.types import SERVE_CLASSIFY, SERVE_EMBED, VersionSpec

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _Job:
    texts: list[str]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    arrived: float


class _TextBackend:
    """What the embedding and classification backends share: the queue, the batcher thread,
    tokenising, closing."""

    serve_kind = ""

    def __init__(self, spec: VersionSpec, settings: EngineSettings, loaded: Any) -> None:
        self.spec = spec
        self.settings = settings
        self.max_context = int(loaded.max_positions)
        self.batches_run = 0
        self._loaded = loaded
        self._tokenizer = loaded.tokenizer
        if self._tokenizer.pad_token is None:  # batches pad; the mask hides which token
            self._tokenizer.pad_token = self._tokenizer.convert_ids_to_tokens(loaded.pad_id)
        self._device = loaded.device
        self._waiting: collections.deque[_Job] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._running = 0
        self._thread = threading.Thread(
            target=self._run, name=f"{self.serve_kind}-{spec.version_id}", daemon=True
        )
        self._thread.start()

    # --- the Backend interface ----------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=True)["input_ids"])

    def chat_prompt(self, messages: list[dict]) -> str:
        raise ValueError(f"{self.spec.label} does not generate text, so it has no chat prompt.")

    def generate(self, params: GenerationParams):
        raise ValueError(f"{self.spec.label} does not generate text.")

    async def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        raise ValueError(f"{self.spec.label} does not serve embeddings.")

    async def classify(self, texts: list[str]) -> tuple[list[Classification], int]:
        raise ValueError(f"{self.spec.label} does not classify text.")

    def queue_depth(self) -> int:
        return len(self._waiting)

    def running(self) -> int:
        return self._running

    def close(self, *, drain: bool = True) -> None:
        with self._cond:
            self._closed = True
            if not drain:
                while self._waiting:
                    job = self._waiting.popleft()
                    resolve_future(job.loop, job.future, BackendClosed("The model was unloaded."))
            self._cond.notify_all()

    def wait_closed(self, timeout: float | None = None) -> bool:
        """After close(): True once the batcher thread has exited (the model is freed)."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # --- batching -------------------------------------------------------------------------------

    async def _submit(self, texts: list[str]) -> tuple[list, int]:
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError("Give one or more texts.")
        loop = asyncio.get_running_loop()
        job = _Job(list(texts), loop, loop.create_future(), time.monotonic())
        with self._cond:
            if self._closed:
                raise BackendClosed(f"{self.spec.label} is being unloaded.")
            if len(self._waiting) >= self.settings.max_queue_depth:
                raise QueueFull(retry_after=self.settings.queue_full_retry_after)
            self._waiting.append(job)
            self._cond.notify_all()
        return await job.future

    def _run(self) -> None:
        import torch

        try:
            with torch.inference_mode():
                while True:
                    jobs = self._next_jobs()
                    if jobs is None:
                        break
                    jobs = [j for j in jobs if not j.future.cancelled()]
                    if not jobs:
                        continue
                    self._running = len(jobs)
                    try:
                        self._run_jobs(jobs)
                    except Exception as exc:  # a failed batch must not stop the backend
                        logger.exception("Batch failed on %s", self.spec.label)
                        error = BackendError(
                            f"{self.spec.label} failed: {type(exc).__name__}: {exc}"
                        )
                        for job in jobs:
                            resolve_future(job.loop, job.future, error)
                    finally:
                        self._running = 0
        finally:
            with self._cond:
                self._closed = True
                leftover = list(self._waiting)
                self._waiting.clear()
            for job in leftover:
                resolve_future(job.loop, job.future, BackendClosed("The model was unloaded."))
            self._loaded = None
            if self._device.startswith("cuda"):
                torch.cuda.empty_cache()

    def _next_jobs(self) -> list[_Job] | None:
        cfg = self.settings
        with self._cond:
            while True:
                if not self._waiting:
                    if self._closed:
                        return None
                    self._cond.wait()
                    continue
                texts = sum(len(j.texts) for j in self._waiting)
                wait = self._waiting[0].arrived + cfg.max_wait_ms / 1000 - time.monotonic()
                if texts >= cfg.max_batch_size or wait <= 0 or self._closed:
                    break
                self._cond.wait(wait)
            taken, used = [], 0
            while self._waiting and (
                not taken or used + len(self._waiting[0].texts) <= cfg.max_batch_size
            ):
                job = self._waiting.popleft()
                taken.append(job)
                used += len(job.texts)
            return taken

    def _run_jobs(self, jobs: list[_Job]) -> None:
        texts = [t for job in jobs for t in job.texts]
        results: list = []
        tokens: list[int] = []
        size = self.settings.max_batch_size
        for start in range(0, len(texts), size):  # one request may hold more than a batch
            rows, counts = self._forward(texts[start : start + size])
            self.batches_run += 1
            results += rows
            tokens += counts
        at = 0
        for job in jobs:
            n = len(job.texts)
            resolve_future(job.loop, job.future, (results[at : at + n], sum(tokens[at : at + n])))
            at += n

    def _tokenise(self, texts: list[str]) -> dict:
        enc = self._tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_context,
            return_tensors="pt",
        )
        return {k: v.to(self._device) for k, v in enc.items()}

    _forward: Callable[[list[str]], tuple[list, list[int]]]


class EmbedBackend(_TextBackend):
    """Mean-pooled, L2-normalised last hidden states of an encoder."""

    serve_kind = SERVE_EMBED

    def __init__(self, spec: VersionSpec, settings: EngineSettings, loaded: Any) -> None:
        from evaluation.runtime.models import CAUSAL_LM, SEQ2SEQ

        if loaded.kind in (CAUSAL_LM, SEQ2SEQ):
            raise ModelLoadError(
                f"{spec.label} is a {loaded.kind.replace('_', ' ')} model; embeddings are served "
                "from encoders (masked LMs, sentence encoders)."
            )
        super().__init__(spec, settings, loaded)

    async def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        return await self._submit(texts)

    def _forward(self, texts: list[str]) -> tuple[list, list[int]]:
        from evaluation.runtime.models import mean_pooled

        enc = self._tokenise(texts)
        out = self._loaded.model(**enc, output_hidden_states=True)
        vectors = mean_pooled(out.hidden_states[-1].float(), enc["attention_mask"])
        return vectors.cpu().tolist(), enc["attention_mask"].sum(dim=1).tolist()


class ClassifyBackend(_TextBackend):
    """Softmax scores of a sequence classifier, labels from config.id2label, best first."""

    serve_kind = SERVE_CLASSIFY

    def __init__(self, spec: VersionSpec, settings: EngineSettings, loaded: Any) -> None:
        from evaluation.runtime.models import SEQUENCE_CLASSIFICATION

        if loaded.kind != SEQUENCE_CLASSIFICATION:
            raise ModelLoadError(
                f"{spec.label} is a {loaded.kind.replace('_', ' ')} model, not a sequence "
                "classifier."
            )
        id2label = getattr(loaded.config, "id2label", None) or {}
        labels = int(getattr(loaded.config, "num_labels", len(id2label)) or len(id2label))
        self._labels = [
            str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(labels)
        ]
        super().__init__(spec, settings, loaded)

    async def classify(self, texts: list[str]) -> tuple[list[Classification], int]:
        return await self._submit(texts)

    def _forward(self, texts: list[str]) -> tuple[list, list[int]]:
        enc = self._tokenise(texts)
        probs = self._loaded.model(**enc).logits.float().softmax(dim=-1).cpu().tolist()
        rows = [
            Classification(
                sorted(zip(self._labels, row, strict=True), key=lambda x: x[1], reverse=True)
            )
            for row in probs
        ]
        return rows, enc["attention_mask"].sum(dim=1).tolist()
