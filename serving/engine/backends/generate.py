"""Text generation with dynamic (and continuous) batching over a causal LM's KV cache.

One scheduler thread per loaded version. Requests wait in a bounded queue; when the model is
idle a batch starts once ``max_batch_size`` sequences wait or the oldest has waited
``max_wait_ms``. While a batch runs, waiting requests join it between decoding steps when there
is room (continuous batching; the new rows are prefilled on their own, then their KV cache is
left-padded to the running batch's length and stacked onto it). Finished and cancelled sequences
are dropped from the batch (rows removed from the cache), and cache columns that only padding
uses any more are trimmed away.

Every row is left-padded, with an attention mask and explicit position ids (a row's positions
count only its own tokens), so a sequence's logits do not depend on its batch company: at
temperature 0 a batched answer equals the unbatched one, and a seeded request (its own
``torch.Generator`` per choice) gives the same text whatever else runs beside it.

A model whose cache is not plain full-attention layers (sliding windows, linear attention...)
still batches, but waiting requests then join only when the running batch has finished.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from serving.engine.backends import (
    BackendClosed,
    BackendError,
    Classification,
    Delta,
    Finish,
    GenerationParams,
    ModelLoadError,
    QueueFull,
)
from serving.engine.config import EngineSettings
from serving.engine.types import SERVE_GENERATE, VersionSpec

logger = logging.getLogger(__name__)

# The prompt of a chat when the tokenizer has no chat_template: one line per message, the role
# capitalised (System, User, Assistant), then "Assistant:" for the model to continue. Written in
# the chat-template language for the record; chat_prompt renders it in plain Python.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}: {{ message['content'] }}\n"
    "{% endfor %}"
    "Assistant:"
)
MAX_STOP_STRINGS = 4
# Prompt tokens the incremental decoder reads before the completion, so tokenizers that drop a
# leading space at the start of a text (SentencePiece) keep the completion's first space.
_DECODE_CONTEXT = 4


def message_text(content: Any) -> str:
    """A chat message's content as text (OpenAI content parts: the text parts joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def default_chat_prompt(messages: list[dict]) -> str:
    """:data:`DEFAULT_CHAT_TEMPLATE` rendered."""
    lines = [
        f"{str(m.get('role', 'user')).capitalize()}: {message_text(m.get('content'))}\n"
        for m in messages
    ]
    return "".join(lines) + "Assistant:"


def _decoder(tokenizer: Any) -> Any:
    """``ids -> tokenizer.decode(ids, skip_special_tokens=True)``: straight into the Rust
    tokenizer where that is all decode does (a tokenizers-backed tokenizer whose decode is not
    overridden and cleans up no spaces), a third of the time of the Python wrapper; it runs
    twice per token per row on the scheduler thread."""
    try:
        from transformers.tokenization_utils_base import PreTrainedTokenizerBase
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:  # another transformers layout: the plain call
        TokenizersBackend = None
    cls = type(tokenizer)
    rust = getattr(tokenizer, "_tokenizer", None)
    if (
        TokenizersBackend is not None
        and isinstance(tokenizer, TokenizersBackend)
        and cls.decode is PreTrainedTokenizerBase.decode
        and cls._decode is TokenizersBackend._decode
        and not getattr(tokenizer, "clean_up_tokenization_spaces", False)
        and rust is not None
    ):
        return lambda ids: rust.decode(ids, skip_special_tokens=True)
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=True)


class _IncrementalDecoder:
    """Text of a growing token list, handed out piece by piece, never half a character.

    Decodes a short window (from the last point where the text was complete) and hands out the
    difference; a window whose text ends in U+FFFD (bytes of a character still to come) is held.
    """

    def __init__(self, tokenizer: Any, context: list[int]) -> None:
        self.tokenizer = tokenizer
        self._decode = _decoder(tokenizer)
        self.ids = list(context)
        self.before = self._decode(self.ids)  # the text of ids[prefix:read]
        if self.before.endswith("\ufffd"):
            self.ids, self.before = [], ""  # a prompt ending mid-character is no usable context
        self.prefix = 0
        self.read = len(self.ids)

    def add(self, token: int) -> str:
        self.ids.append(token)
        now = self._decode(self.ids[self.prefix :])
        if len(now) > len(self.before) and not now.endswith("\ufffd"):
            piece = now[len(self.before) :]
            self.prefix, self.read = self.read, len(self.ids)
            self.before = self._decode(self.ids[self.prefix : self.read])
            return piece
        return ""

    def flush(self) -> str:
        """What is still held (an unfinished character comes out as U+FFFD)."""
        now = self._decode(self.ids[self.prefix :])
        piece = now[len(self.before) :]
        self.prefix = self.read = len(self.ids)
        self.before = ""
        return piece


@dataclass(eq=False)
class _Request:
    params: GenerationParams
    loop: asyncio.AbstractEventLoop
    arrived: float
    cancelled: bool = False
    finished: bool = False
    # Events (and at most one exception, last) not yet read; touched on ``loop``'s thread only.
    inbox: collections.deque = field(default_factory=collections.deque)
    waiter: asyncio.Future | None = None  # the reader's, while it waits for the inbox to fill
    # While its reader collects the whole answer (_EventStream.collect): each inbox item's
    # arrival (time.perf_counter()), the choices still to finish, whether a failure came, the
    # loop time of the last arrival; that reader is woken only once all finished or one failed.
    times: collections.deque | None = None
    unfinished: int = 0
    failed: bool = False
    last_arrival: float = 0.0
    # Scheduler thread only: a collecting reader's events held back until its answer finishes
    # (no loop wake-up per step for it), each with its step's time.perf_counter(); and the time
    # of its last step, which the reader's wait limit counts from.
    held: list | None = None
    stepped: float = 0.0

    @property
    def n(self) -> int:
        return self.params.n


def _fan_out(handed: list[tuple[_Request, list, list[float]]]) -> None:
    """On a request loop's thread: each request's new items (and their times) into its inbox,
    its reader woken (a collecting reader only once its answer has finished or failed)."""
    for request, items, stamps in handed:
        request.inbox.extend(items)
        times = request.times
        if times is not None:  # a reader collecting the whole answer: wake it at the end only
            times.extend(stamps)
            request.last_arrival = request.loop.time()
            for item in items:
                if isinstance(item, Finish):
                    request.unfinished -= 1
                elif isinstance(item, BaseException):
                    request.failed = True
            if request.unfinished > 0 and not request.failed:
                continue
        waiter = request.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _hand_out(handed: list[tuple[_Request, list, list[float]]]) -> None:
    """From the scheduler thread: one callback per event loop for all of ``handed`` (one
    decoding step's events of every request), not one per request: each callback wakes the loop
    through its self-pipe, and a loop woken 16 times per step spends its time being woken."""
    by_loop: dict[int, tuple[asyncio.AbstractEventLoop, list]] = {}
    for entry in handed:
        loop = entry[0].loop
        by_loop.setdefault(id(loop), (loop, []))[1].append(entry)
    for loop, entries in by_loop.values():
        try:
            loop.call_soon_threadsafe(_fan_out, entries)
        except RuntimeError:  # the loop was closed: nobody is listening any more
            for request, _items, _stamps in entries:
                request.cancelled = True


def _with_held(request: _Request, items: list, now: float) -> tuple[_Request, list, list[float]]:
    """``items`` after the events held back for ``request`` (scheduler thread)."""
    held = request.held
    if not held:
        return request, items, [now] * len(items)
    request.held = None
    return (
        request,
        [e for _, e in held] + items,
        [t for t, _ in held] + [now] * len(items),
    )


def _fail(requests: list[_Request], error: BaseException) -> None:
    now = time.perf_counter()
    _hand_out([_with_held(request, [error], now) for request in requests])


@dataclass(eq=False)
class _Seq:
    """One choice of a request: its tokens, its text, what was already handed out."""

    request: _Request
    index: int
    prompt: list[int]
    generator: Any  # torch.Generator, or None for greedy choices
    decoder: _IncrementalDecoder
    text: str = ""
    emitted: int = 0  # characters of text handed out
    count: int = 0  # tokens generated
    done: bool = False
    events: list = field(default_factory=list)

    def advance(self, token: int, eos_ids: frozenset[int]) -> None:
        """Take the next token; queue its events on ``self.events``."""
        params = self.request.params
        self.count += 1
        if token in eos_ids:
            self._finish("stop", self._rest())
            return
        self.text += self.decoder.add(token)
        stops = params.stop
        if stops:
            hits = [p for p in (self.text.find(s, self.emitted) for s in stops) if p >= 0]
            if hits:
                cut = min(hits)
                self.text = self.text[:cut]
                self._finish("stop", self.text[self.emitted : cut])
                return
        if self.count >= params.max_tokens:
            self._finish("length", self._rest())
            return
        end = len(self.text) - _held_back(self.text, self.emitted, stops)
        piece = self.text[self.emitted : end]
        self.emitted = end
        self.events.append(Delta(self.index, piece, 1))

    def _rest(self) -> str:
        self.text += self.decoder.flush()
        piece = self.text[self.emitted :]
        self.emitted = len(self.text)
        return piece

    def _finish(self, reason: str, piece: str) -> None:
        self.done = True
        self.events.append(Delta(self.index, piece, 1))
        self.events.append(Finish(self.index, reason, self.count))


def _held_back(text: str, start: int, stops: tuple[str, ...]) -> int:
    """Characters at the end of ``text`` (after ``start``) that may begin a stop string."""
    longest = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text) - start), longest, -1):
            if stop.startswith(text[len(text) - k :]):
                longest = k
                break
    return longest


class _Batch:
    """The running rows: their sequences, KV cache, attention mask, next positions and tokens."""

    def __init__(self, seqs: list[_Seq], cache: Any, attn: Any, pos: Any, last: Any) -> None:
        self.seqs, self.cache, self.attn, self.pos, self.last = seqs, cache, attn, pos, last

    def __len__(self) -> int:
        return len(self.seqs)


class _EventStream:
    """The async iterator generate() returns: one request's events, in order.

    Stopping early (aclose, the consuming task cancelled, or the stream dropped) marks the
    request cancelled; the scheduler drops its rows at the next step.
    """

    def __init__(self, request: _Request, backend: GenerateBackend) -> None:
        self._request = request
        self._backend = backend
        self._open = request.n
        self._done = False

    def __aiter__(self) -> _EventStream:
        return self

    async def __anext__(self) -> Delta | Finish:
        if self._done:
            raise StopAsyncIteration
        request = self._request
        inbox = request.inbox
        while not inbox:
            request.waiter = waiter = request.loop.create_future()
            try:
                await waiter
            except BaseException:  # cancelled while waiting: the client went away
                self._stop()
                raise
            finally:
                request.waiter = None
        event = inbox.popleft()
        if isinstance(event, BaseException):
            self._stop()
            raise event
        if isinstance(event, Finish):
            self._open -= 1
            if self._open == 0:
                self._done = True
                self._request.finished = True
        return event

    async def collect(self) -> list[tuple[float, Delta | Finish]]:
        """The rest of the answer in one piece, once every choice has finished: each event
        with the time.perf_counter() of the step that made it. The scheduler holds a collecting
        reader's events back until then: no loop wake-up per token for a reader that answers in
        one piece. A failure raises as __anext__ does (events that came before it are returned
        first; the next call raises it)."""
        if self._done:
            raise StopAsyncIteration
        request = self._request
        inbox = request.inbox
        if request.times is None:
            request.times = collections.deque([time.perf_counter()] * len(inbox))
            request.unfinished = self._open - sum(isinstance(e, Finish) for e in inbox)
            request.failed = any(isinstance(e, BaseException) for e in inbox)
            request.last_arrival = request.loop.time()
        while request.unfinished > 0 and not request.failed:
            request.waiter = waiter = request.loop.create_future()
            try:
                await waiter
            except BaseException:  # cancelled while waiting: the client went away
                self._stop()
                raise
            finally:
                request.waiter = None
        if inbox and isinstance(inbox[0], BaseException):
            return [(request.times.popleft(), await self.__anext__())]  # __anext__ raises it
        times = request.times
        arrived = []
        while inbox and not isinstance(inbox[0], BaseException):
            event = inbox.popleft()
            arrived.append((times.popleft(), event))
            if isinstance(event, Finish):
                self._open -= 1
        if self._open == 0:
            self._done = True
            request.finished = True
        return arrived

    def last_arrival(self) -> float:
        """While collect() waits: the loop time (loop.time()) of the request's last step (its
        events may be held back until the answer finishes)."""
        request = self._request
        stepped = request.loop.time() - (time.perf_counter() - request.stepped)
        return max(request.last_arrival, stepped) if request.stepped else request.last_arrival

    async def aclose(self) -> None:
        self._stop()

    def _stop(self) -> None:
        if not self._done:
            self._done = True
            self._backend._cancel(self._request)

    def __del__(self) -> None:
        if not self._done:
            self._request.cancelled = True  # no lock here: the scheduler reads the flag


class GenerateBackend:
    """Causal LM generation behind :class:`serving.engine.backends.Backend`."""

    serve_kind = SERVE_GENERATE

    def __init__(self, spec: VersionSpec, settings: EngineSettings, loaded: Any) -> None:
        from evaluation.runtime.models import CAUSAL_LM, SEQ2SEQ

        if loaded.kind == SEQ2SEQ:
            raise ModelLoadError(
                f"{spec.label}: seq2seq models are not served yet (only causal LMs generate)."
            )
        if loaded.kind != CAUSAL_LM:
            raise ModelLoadError(
                f"{spec.label} is a {loaded.kind.replace('_', ' ')} model: it cannot generate text."
            )
        self.spec = spec
        self.settings = settings
        self.max_context = int(loaded.max_positions)
        self.batches_run = 0  # batches started (prefills), whatever joined a running one
        self.forward_passes = 0
        self._loaded = loaded
        self._tokenizer = loaded.tokenizer
        self._device = loaded.device
        self._pad = loaded.pad_id
        self._eos = self._eos_ids(loaded)
        forward = inspect.signature(loaded.model.forward).parameters
        self._pass_positions = "position_ids" in forward
        self._logits_to_keep = "logits_to_keep" in forward
        # transformers 5 renamed past_key_values to cache (the old name warns).
        self._cache_arg = "cache" if "cache" in forward else "past_key_values"
        self._joinable: bool | None = None  # known after the first prefill
        self._waiting: collections.deque[_Request] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._abort = False
        self._running_requests = 0
        self._batch: _Batch | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"generate-{spec.version_id}", daemon=True
        )
        self._thread.start()

    @staticmethod
    def _eos_ids(loaded: Any) -> frozenset[int]:
        ids: set[int] = set()
        configured = getattr(getattr(loaded.model, "generation_config", None), "eos_token_id", None)
        for value in (configured, loaded.tokenizer.eos_token_id):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list | tuple):
                ids.update(int(v) for v in value)
        return frozenset(ids)

    # --- the Backend interface ----------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=True)["input_ids"])

    def chat_prompt(self, messages: list[dict]) -> str:
        if getattr(self._tokenizer, "chat_template", None):
            return self._tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
        return default_chat_prompt(messages)

    def generate(self, params: GenerationParams):  # -> AsyncIterator[Delta | Finish]
        """Queue ``params`` now (QueueFull / BackendClosed / ValueError raised here) and return
        the async iterator of its events. Must be called from the event loop's thread."""
        self._check(params)
        loop = asyncio.get_running_loop()
        request = _Request(params, loop, time.monotonic())
        with self._cond:
            if self._closed:
                raise BackendClosed(f"{self.spec.label} is being unloaded.")
            if len(self._waiting) >= self.settings.max_queue_depth:
                raise QueueFull(retry_after=self.settings.queue_full_retry_after)
            self._waiting.append(request)
            self._cond.notify_all()
        return _EventStream(request, self)

    async def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        raise ValueError(f"{self.spec.label} generates text; it does not serve embeddings.")

    async def classify(self, texts: list[str]) -> tuple[list[Classification], int]:
        raise ValueError(f"{self.spec.label} generates text; it does not classify.")

    def queue_depth(self) -> int:
        return len(self._waiting)

    def running(self) -> int:
        return self._running_requests

    def close(self, *, drain: bool = True) -> None:
        with self._cond:
            self._closed = True
            if not drain:
                self._abort = True
                _fail(list(self._waiting), BackendClosed("The model was unloaded."))
                self._waiting.clear()
            self._cond.notify_all()

    def wait_closed(self, timeout: float | None = None) -> bool:
        """After close(): True once the scheduler thread has exited (the model is freed)."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # --- requests -------------------------------------------------------------------------------

    def _check(self, params: GenerationParams) -> None:
        problems = []
        if params.n < 1:
            problems.append("n must be at least 1.")
        if params.max_tokens < 1:
            problems.append("max_tokens must be at least 1.")
        if params.temperature < 0:
            problems.append("temperature must not be negative.")
        if not 0 < params.top_p <= 1:
            problems.append("top_p must be in (0, 1].")
        if len(params.stop) > MAX_STOP_STRINGS:
            problems.append(f"At most {MAX_STOP_STRINGS} stop strings.")
        if any(not s for s in params.stop):
            problems.append("Stop strings must not be empty.")
        if len(params.prompt_ids) + params.max_tokens > self.max_context:
            problems.append(
                f"The prompt ({len(params.prompt_ids)} tokens) plus max_tokens "
                f"({params.max_tokens}) exceed the model's context of {self.max_context} tokens."
            )
        if problems:
            raise ValueError(" ".join(problems))

    def _cancel(self, request: _Request) -> None:
        with self._cond:
            request.cancelled = True
            # Already running (dropped at the next step) or finished: not in the queue.
            with contextlib.suppress(ValueError):
                self._waiting.remove(request)
            self._cond.notify_all()

    # --- the scheduler thread -------------------------------------------------------------------

    def _run(self) -> None:
        import torch

        try:
            with torch.inference_mode():
                while True:
                    admitted = self._next_admission()
                    if admitted is None:
                        break
                    try:
                        if admitted:
                            self._admit(admitted)
                        if self._batch is not None:
                            self._step()
                    except Exception as exc:  # a failed batch must not stop the backend
                        logger.exception("Batch failed on %s", self.spec.label)
                        self._fail_running(admitted, exc)
        finally:
            self._release()

    def _next_admission(self) -> list[_Request] | None:
        """Requests to add to the batch now ([] to just go on decoding); None: exit."""
        cfg = self.settings
        with self._cond:
            while True:
                if self._abort:
                    if self._batch is not None:
                        self._fail_running([], BackendError("The model was unloaded."))
                    return None
                active = self._batch_size()
                if not self._waiting:
                    if active:
                        return []
                    if self._closed:
                        return None
                    self._cond.wait()
                    continue
                room = cfg.max_batch_size - active
                if active:
                    if self._joinable and self._waiting[0].n <= room:
                        return self._pop(room)
                    return []
                waiting_seqs = sum(r.n for r in self._waiting)
                wait = self._waiting[0].arrived + cfg.max_wait_ms / 1000 - time.monotonic()
                if waiting_seqs >= cfg.max_batch_size or wait <= 0 or self._closed:
                    return self._pop(room)
                self._cond.wait(wait)

    def _batch_size(self) -> int:
        batch = self._batch
        return len(batch) if batch is not None else 0

    def _pop(self, room: int) -> list[_Request]:
        """Waiting requests, oldest first, while their sequences fit ``room`` (an idle model
        takes the first one even when its n alone is more than a batch)."""
        taken: list[_Request] = []
        used = 0
        while self._waiting:
            n = self._waiting[0].n
            if used + n > room and (taken or self._batch_size()):
                break
            taken.append(self._waiting.popleft())
            used += n
        return taken

    def _admit(self, requests: list[_Request]) -> None:
        """Prefill ``requests`` and add their rows to the running batch."""
        import torch

        requests = [r for r in requests if not r.cancelled]
        if not requests:
            return
        seqs = [self._new_seq(r, i) for r in requests for i in range(r.n)]
        width = max(len(s.prompt) for s in seqs)
        ids = torch.full((len(seqs), width), self._pad, dtype=torch.long)
        attn = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            ids[row, width - len(seq.prompt) :] = torch.tensor(seq.prompt, dtype=torch.long)
            attn[row, width - len(seq.prompt) :] = 1
        ids, attn = ids.to(self._device), attn.to(self._device)
        positions = (attn.cumsum(-1) - 1).clamp(min=0)
        kwargs: dict = {"input_ids": ids, "attention_mask": attn, "use_cache": True}
        if self._pass_positions:
            kwargs["position_ids"] = positions
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = 1
        self.batches_run += 1
        self._running_requests += len(requests)
        out = self._loaded.model(**kwargs)
        self.forward_passes += 1
        cache = _out_cache(out)
        if self._joinable is None:
            self._joinable = _plain_layers(cache)
        lengths = attn.sum(-1)
        tokens = self._pick(out.logits[:, -1].float(), seqs)
        new = _Batch(seqs, cache, attn, lengths, tokens)
        self._batch = new if self._batch is None else _merge(self._batch, new)
        self._after_step(seqs, tokens.tolist())

    def _new_seq(self, request: _Request, index: int) -> _Seq:
        import torch

        params = request.params
        prompt = list(params.prompt_ids)
        if not prompt:
            bos = self._tokenizer.bos_token_id
            prompt = [bos if bos is not None else self._pad]
        generator = None
        if params.temperature > 0:
            generator = torch.Generator()  # CPU: one uniform draw per token (see _pick)
            if params.seed is None:
                generator.seed()
            else:  # each choice its own stream, the same whatever runs beside it
                generator.manual_seed((params.seed * 1_000_003 + index) % (2**63))
        decoder = _IncrementalDecoder(self._tokenizer, prompt[-_DECODE_CONTEXT:])
        return _Seq(request, index, prompt, generator, decoder)

    def _step(self) -> None:
        """One decoding step for every running row."""
        import torch

        self._drop(self._batch, [s for s in self._batch.seqs if not s.request.cancelled])
        batch = self._batch
        if not batch:
            self._batch = None
            return
        attn = torch.cat([batch.attn, torch.ones_like(batch.attn[:, :1])], dim=-1)
        kwargs: dict = {
            "input_ids": batch.last[:, None],
            "attention_mask": attn,
            self._cache_arg: batch.cache,
            "use_cache": True,
        }
        if self._pass_positions:
            kwargs["position_ids"] = batch.pos[:, None]
        out = self._loaded.model(**kwargs)
        self.forward_passes += 1
        batch.cache, batch.attn, batch.pos = _out_cache(out), attn, batch.pos + 1
        batch.last = self._pick(out.logits[:, -1].float(), batch.seqs)
        self._after_step(batch.seqs, batch.last.tolist())

    def _pick(self, logits: Any, seqs: list[_Seq]) -> Any:
        """The next token of each row (a tensor on the device): argmax at temperature 0, else
        top-p sampling, all sampled rows at once by inverse CDF with one uniform number per row
        from the row's own CPU generator (so a seed means the same draws on any device)."""
        import torch

        tokens = logits.argmax(dim=-1)
        rows = [i for i, s in enumerate(seqs) if s.request.params.temperature > 0]
        if not rows:
            return tokens
        device = logits.device
        index = torch.tensor(rows, device=device)
        chosen = [seqs[i].request.params for i in rows]
        temperature = torch.tensor([p.temperature for p in chosen], device=device)[:, None]
        top_p = torch.tensor([p.top_p for p in chosen], device=device)[:, None]
        probs = torch.softmax(logits[index] / temperature, dim=-1)
        ordered, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest head whose mass reaches top_p (always the most likely token).
        ordered = ordered * ((ordered.cumsum(-1) - ordered) < top_p)
        cdf = ordered.cumsum(-1)
        draws = [float(torch.rand((), generator=seqs[i].generator)) for i in rows]
        target = torch.tensor(draws, device=device)[:, None] * cdf[:, -1:]
        at = torch.searchsorted(cdf, target, right=True).clamp(max=cdf.shape[-1] - 1)
        tokens[index] = order.gather(-1, at).squeeze(-1)
        return tokens

    def _after_step(self, seqs: list[_Seq], tokens: list[int]) -> None:
        """Drop the rows that finished, then hand out each row's events (in that order, so a
        consumer that saw its Finish also sees its request gone from running())."""
        per_request: dict[int, tuple[_Request, list]] = {}
        for seq, token in zip(seqs, tokens, strict=True):
            seq.advance(token, self._eos)
            entry = per_request.setdefault(id(seq.request), (seq.request, []))
            entry[1].extend(seq.events)
            seq.events.clear()
        if any(s.done for s in self._batch.seqs):
            self._drop(self._batch, [s for s in self._batch.seqs if not s.done])
            if not self._batch:
                self._batch = None
        now = time.perf_counter()
        handed = []
        for request, events in per_request.values():
            if not events or request.cancelled:
                continue
            request.stepped = now
            if request.times is not None and not any(isinstance(e, Finish) for e in events):
                # Its reader collects the whole answer: nothing to wake it for yet.
                if request.held is None:
                    request.held = []
                request.held.extend((now, e) for e in events)
                continue
            handed.append(_with_held(request, events, now))
        _hand_out(handed)

    def _drop(self, batch: _Batch, keep: list[_Seq]) -> None:
        """Keep only the rows of ``keep`` (finished or cancelled rows leave the batch)."""
        import torch

        if len(keep) == len(batch.seqs):
            return
        gone = {id(s.request) for s in batch.seqs} - {id(s.request) for s in keep}
        self._running_requests -= len(gone)
        if not keep:
            batch.seqs = []
            return
        rows = {id(s): i for i, s in enumerate(batch.seqs)}
        index = torch.tensor([rows[id(s)] for s in keep], device=batch.attn.device)
        batch.cache.batch_select_indices(index)
        batch.seqs = keep
        batch.attn, batch.pos, batch.last = batch.attn[index], batch.pos[index], batch.last[index]
        if self._joinable:
            used = batch.attn.any(dim=0).nonzero()
            first = int(used[0]) if len(used) else 0
            if first > 0:  # columns only padding uses: trim them from the cache and the mask
                for layer in batch.cache.layers:
                    layer.keys = layer.keys[..., first:, :]
                    layer.values = layer.values[..., first:, :]
                batch.attn = batch.attn[:, first:]

    def _fail_running(self, admitted: list[_Request] | None, exc: Exception) -> None:
        error = (
            exc
            if isinstance(exc, BackendError)
            else BackendError(
                f"Generation failed on {self.spec.label}: {type(exc).__name__}: {exc}"
            )
        )
        requests = {id(r): r for r in admitted or []}
        if self._batch is not None:
            requests.update({id(s.request): s.request for s in self._batch.seqs})
        _fail([r for r in requests.values() if not r.finished], error)
        self._batch = None
        self._running_requests = 0
        _empty_cuda_cache(self._device)

    def _release(self) -> None:
        with self._cond:
            self._closed = True
            leftover = list(self._waiting)
            self._waiting.clear()
        _fail(leftover, BackendClosed("The model was unloaded."))
        self._batch = None
        self._loaded = None
        self._running_requests = 0
        _empty_cuda_cache(self._device)


def _out_cache(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _plain_layers(cache: Any) -> bool:
    """True when every cache layer is a plain full-attention DynamicLayer (rows can be padded
    on the left and stacked, which continuous batching needs)."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def _merge(old: _Batch, new: _Batch) -> _Batch:
    """``new``'s rows stacked under ``old``'s, the shorter cache left-padded with masked zeros."""
    import torch
    import torch.nn.functional as F

    width = max(old.attn.shape[1], new.attn.shape[1])

    def pad(t: Any, dim_from_end: int) -> Any:
        short = width - t.shape[-dim_from_end]
        if short == 0:
            return t
        spec = [0, 0] * (dim_from_end - 1) + [short, 0]
        return F.pad(t, spec)

    for a, b in zip(old.cache.layers, new.cache.layers, strict=True):
        a.keys = torch.cat([pad(a.keys, 2), pad(b.keys, 2)], dim=0)
        a.values = torch.cat([pad(a.values, 2), pad(b.values, 2)], dim=0)
    old.attn = torch.cat([pad(old.attn, 1), pad(new.attn, 1)], dim=0)
    old.pos = torch.cat([old.pos, new.pos])
    old.last = torch.cat([old.last, new.last])
    old.seqs = old.seqs + new.seqs
    return old


def _empty_cuda_cache(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
