"""The inference process's HTTP layer: an OpenAI-compatible Starlette app.

``create_app(state)`` serves ``GET /health``, ``GET /metrics`` (no key), ``GET /v1/models`` and
``POST /v1/completions``, ``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/predict``,
``/v1/feedback`` (a serving key as ``Authorization: Bearer <key>``).

A generation goes: body size -> key -> parse -> endpoint -> version (canary split) -> prompt
checked against the model's context -> rate limits (prompt + max_tokens * n reserved) -> response
cache -> concurrency cap -> the backend's queue -> answer (JSON, or server-sent events) ->
limits settled with what was used -> metrics -> one :class:`RequestRecord` into the sink. Every
refusal on the way answers OpenAI's error envelope and is recorded too. Every wait on a model is
bounded (``event_timeout_s`` between two events), so nothing hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _json_string
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from serving.engine import protocol as p
from serving.engine.backends import (
    BackendClosed,
    Delta,
    Finish,
    GenerationParams,
    QueueFull,
)
from serving.engine.protocol import OpenAIError
from serving.engine.state import EngineState, Principal
from serving.engine.types import (
    SERVE_CLASSIFY,
    SERVE_EMBED,
    SERVE_GENERATE,
    EndpointSpec,
    FeedbackRecord,
    RequestRecord,
    VersionSpec,
)
from serving.engine.upstream import UpstreamClient

log = logging.getLogger("llmhub.serving.engine")

EVENT_TIMEOUT_S = 120.0  # the longest a request waits for the model's next event
LONG_TEXT_CHARS = 20_000  # prompts longer than this are tokenised off the event loop
ROUTE_ATTEMPTS = 3  # a backend closed by a swap between route and submit: route again
UPSTREAM_VERSION = "upstream"  # the version label of external engines (metrics, headers)

# What each route needs the model to serve, and the route that fits each serve kind.
ROUTE_KIND = {
    p.ROUTE_COMPLETIONS: SERVE_GENERATE,
    p.ROUTE_CHAT: SERVE_GENERATE,
    p.ROUTE_EMBEDDINGS: SERVE_EMBED,
    p.ROUTE_PREDICT: SERVE_CLASSIFY,
}
KIND_ROUTES = {
    SERVE_GENERATE: "POST /v1/completions or /v1/chat/completions",
    SERVE_EMBED: "POST /v1/embeddings",
    SERVE_CLASSIFY: "POST /v1/predict",
}
KIND_WORDS = {
    SERVE_GENERATE: "generates text",
    SERVE_EMBED: "is an encoder (it answers embeddings)",
    SERVE_CLASSIFY: "is a classifier",
}


def _backend_error_types() -> tuple[type[BaseException], ...]:
    from serving.engine import backends

    found = getattr(backends, "BackendError", None)
    return (found,) if isinstance(found, type) else ()


BACKEND_ERRORS = _backend_error_types()


@dataclass
class _Call:
    """One request as it goes through the app: what the record and the headers are made of."""

    route: str
    response_id: str
    created_at: float
    started: float
    principal: Principal | None = None
    endpoint: EndpointSpec | None = None
    version: VersionSpec | None = None
    canary: bool = False
    upstream: bool = False
    admission: Any = None
    stream: bool = False
    ran: bool = False  # the model (or the cache) answered: usage counts
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft: float | None = None
    inter_token: list[float] = field(default_factory=list)
    finish_reason: str = ""
    cache_hit: bool = False
    aborted: bool = False
    prompt_text: str | None = None
    completion_text: str | None = None
    counted: bool = False  # holds a slot of max_concurrency
    done: bool = False

    @property
    def version_label(self) -> str:
        if self.upstream:
            return UPSTREAM_VERSION
        return str(self.version.version_id) if self.version is not None else ""

    @property
    def version_id(self) -> int | None:
        return self.version.version_id if self.version is not None else None


def _retry_headers(seconds: float) -> dict[str, str]:
    seconds = max(0.001, min(seconds, 120.0))
    return {
        "retry-after": str(max(1, math.ceil(seconds))),
        "retry-after-ms": str(int(seconds * 1000)),
    }


async def _aclose(iterator: Any) -> None:
    """Close a backend's event iterator (frees its batch slot), even inside a cancelled scope."""
    close = getattr(iterator, "aclose", None)
    if close is None:
        return
    with anyio.CancelScope(shield=True):
        try:
            await close()
        except Exception:
            log.exception("closing a generation failed")


def _timed_out(seconds: float) -> OpenAIError:
    return OpenAIError(
        503, f"The model produced nothing for {seconds:g} s; retry later.", code="model_timeout"
    )


def _ended_early() -> OpenAIError:
    return OpenAIError(500, "The model ended without an answer.", code="server_error")


class _Events:
    """A backend's event iterator with at most ``seconds`` of waiting for each event (then 503
    model_timeout) and the backend's failures as OpenAI errors; it ends when the backend's does.

    One timer per request, re-armed only when it comes due, instead of a timeout scope per
    event: under batched load a scope (a timer handle made and cancelled) per token per request
    was a measurable share of the event loop's time, which the scheduler thread's GIL shares.
    The timer cancels the waiting task only while it waits on the model (a slow client reading
    a stream is not the model being slow).
    """

    __slots__ = (
        "_before",
        "_fired",
        "_inner",
        "_loop",
        "_progress",
        "_seconds",
        "_since",
        "_task",
        "_timer",
    )

    def __init__(self, inner: Any, seconds: float) -> None:
        self._inner = inner
        self._seconds = seconds
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task | None = None
        self._since: float | None = None  # loop time the current wait began; None: not waiting
        self._timer: asyncio.TimerHandle | None = None
        self._fired = False
        self._before = 0  # the task's pending cancellations when the timer cancelled it
        self._progress: Any = None  # while collecting: the backend's last arrival (loop time)

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> Delta | Finish:
        return await self._wait(self._inner.__anext__())

    async def collect(self) -> list[tuple[float, Delta | Finish]]:
        """The rest of the answer at once where the backend can collect it (one wake-up per
        answer, not one per token), else the next event; each with the time.perf_counter() it
        arrived. The wait limit still counts from the last event that arrived."""
        collect = getattr(self._inner, "collect", None)
        if collect is None:
            event = await self.__anext__()
            return [(time.perf_counter(), event)]
        self._progress = getattr(self._inner, "last_arrival", None)
        try:
            return await self._wait(collect())
        finally:
            self._progress = None

    async def _wait(self, awaitable: Any) -> Any:
        self._task = asyncio.current_task()
        self._since = self._loop.time()
        if self._timer is None:
            self._timer = self._loop.call_at(self._since + self._seconds, self._check)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if not self._fired:
                raise
            self._fired = False
            if self._task.uncancel() > self._before:  # cancelled by someone else too
                raise
            raise _timed_out(self._seconds) from None
        except StopAsyncIteration:
            self._disarm()
            raise
        except ValueError as exc:  # the backend's own parameter check
            raise p.invalid(str(exc)) from None
        except BACKEND_ERRORS as exc:
            raise OpenAIError(503, f"The model failed: {exc}", code="model_error") from None
        finally:
            self._since = None

    def _check(self) -> None:
        self._timer = None
        since = self._since
        if since is None or self._task is None:  # not waiting: the next wait arms it again
            return
        if self._progress is not None:  # collecting: the last event that arrived counts
            since = max(since, self._progress())
        due = since + self._seconds
        # A loop may run a timer a little early (uvloop counts in milliseconds).
        if self._loop.time() >= due - 0.01:
            self._fired = True
            self._before = self._task.cancelling()
            self._task.cancel()
        else:
            self._timer = self._loop.call_at(due, self._check)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def aclose(self) -> None:
        self._disarm()
        close = getattr(self._inner, "aclose", None)
        if close is not None:
            await close()


class _TextChunks:
    """The server-sent event of a text delta, from bytes made once per stream: only the text is
    encoded per token (the same bytes as ``p.sse(p.chunk(..., text=text))``)."""

    _MARK = "\u0001text\u0001"

    def __init__(self, meta: dict, include_usage: bool) -> None:
        self._meta, self._include_usage = meta, include_usage
        self._parts: dict[int, tuple[bytes, bytes]] = {}

    def __call__(self, index: int, text: str) -> bytes:
        parts = self._parts.get(index)
        if parts is None:
            whole = p.sse(
                p.chunk(
                    **self._meta, index=index, text=self._MARK, include_usage=self._include_usage
                )
            )
            head, _, tail = whole.partition(json.dumps(self._MARK).encode())
            parts = self._parts[index] = (head, tail)
        return parts[0] + _json_string(text).encode() + parts[1]


class _EventStreamResponse(StreamingResponse):
    """A StreamingResponse that always closes its body iterator, so the generator's cleanup
    (freeing the batch slot, settling limits, the record) runs when the client goes away."""

    async def stream_response(self, send: Any) -> None:
        try:
            await super().stream_response(send)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await close()


class Engine:
    """The request handlers of one app around one :class:`EngineState`."""

    def __init__(
        self,
        state: EngineState,
        *,
        event_timeout_s: float = EVENT_TIMEOUT_S,
        upstream: UpstreamClient | None = None,
    ) -> None:
        self.state = state
        self.event_timeout_s = event_timeout_s
        self.reroutes = 0  # requests sent to another backend after a swap closed theirs
        self._gauged: set[tuple[str, str]] = set()  # (endpoint, version) queue gauges set
        self.upstream = upstream or UpstreamClient(max_connections=state.settings.max_concurrency)

    # --- plumbing -------------------------------------------------------------------------

    def _new_call(self, route: str) -> _Call:
        return _Call(
            route=route,
            response_id=p.new_response_id(route),
            created_at=time.time(),
            started=time.perf_counter(),
        )

    def headers(self, call: _Call) -> dict[str, str]:
        headers = {"x-request-id": call.response_id}
        principal = call.principal
        if principal is not None and principal.key is not None:
            if call.admission is not None:
                headers.update(call.admission.headers)
            else:
                headers.update(self.state.limiter.headers(principal.key))
        if call.version is not None or call.upstream:
            headers["x-llmhub-version"] = call.version_label
            headers["x-llmhub-canary"] = "true" if call.canary else "false"
        return headers

    def error_response(self, call: _Call, error: OpenAIError) -> JSONResponse:
        self.finish(call, status=error.status, error_code=error.code or error.type)
        return JSONResponse(
            error.body(), status_code=error.status, headers={**self.headers(call), **error.headers}
        )

    def finish(self, call: _Call, *, status: int, error_code: str = "") -> None:
        """Settle the limits, count the metrics, write the record: once per request."""
        if call.done:
            return
        call.done = True
        if call.counted:
            call.counted = False
            self.state.in_flight -= 1
        used = call.prompt_tokens + call.completion_tokens if call.ran else 0
        if call.admission is not None:
            try:
                self.state.limiter.settle(call.admission, used_tokens=used)
            except Exception:
                log.exception("settling a rate-limit reservation failed")
        e2e = time.perf_counter() - call.started
        endpoint = call.endpoint
        try:
            self.state.metrics.request_done(
                endpoint=endpoint.slug if endpoint is not None else "",
                version=call.version_label,
                status=status,
                finish_reason=call.finish_reason,
                prompt_tokens=call.prompt_tokens if call.ran else 0,
                completion_tokens=call.completion_tokens if call.ran else 0,
                e2e_seconds=e2e,
                ttft_seconds=call.ttft,
                inter_token_seconds=call.inter_token,
                cache_hit=call.cache_hit,
            )
        except Exception:
            log.exception("counting a request in the metrics failed")
        keep_text = endpoint is not None and endpoint.store_text
        principal = call.principal
        record = RequestRecord(
            response_id=call.response_id,
            created_at=call.created_at,
            endpoint_id=endpoint.endpoint_id if endpoint is not None else None,
            version_id=call.version_id,
            key_id=principal.key_id if principal is not None else None,
            route=call.route,
            status_code=status,
            latency_ms=e2e * 1000.0,
            source=principal.source if principal is not None else "api",
            error_code=error_code,
            ttft_ms=call.ttft * 1000.0 if call.ttft is not None else None,
            prompt_tokens=call.prompt_tokens if call.ran else 0,
            completion_tokens=call.completion_tokens if call.ran else 0,
            cache_hit=call.cache_hit,
            stream=call.stream,
            canary=call.canary,
            aborted=call.aborted,
            finish_reason=call.finish_reason,
            prompt_text=call.prompt_text if keep_text else None,
            completion_text=call.completion_text if keep_text else None,
        )
        try:
            self.state.sink.put(record)
        except Exception:
            log.exception("the record sink refused a record")
        if status == 200 and endpoint is not None and not call.aborted:
            self.state.responses.add(
                call.response_id, endpoint_id=endpoint.endpoint_id, project_id=endpoint.project_id
            )

    async def read_body(self, request: Request) -> bytes:
        """The raw body, refused with 413 past settings.max_body_bytes (header and bytes read)."""
        limit = self.state.settings.max_body_bytes
        too_large = OpenAIError(
            413,
            f"The request body is larger than this server accepts ({limit} bytes).",
            code="request_too_large",
        )
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                if int(declared) > limit:
                    raise too_large
            except ValueError:
                raise p.invalid("The Content-Length header is not a number.") from None
        chunks: list[bytes] = []
        total = 0
        async for piece in request.stream():
            total += len(piece)
            if total > limit:
                raise too_large
            chunks.append(piece)
        return b"".join(chunks)

    def authenticate(self, request: Request) -> Principal:
        return self.state.authenticate(
            request.headers.get("authorization"), request.headers.get("x-llmhub-project")
        )

    def admit(self, call: _Call, reserve_tokens: int) -> None:
        """Reserve against the key's limits (the playground has none)."""
        key = call.principal.key if call.principal is not None else None
        if key is None:
            return
        from serving.engine.limits import LimitExceeded

        try:
            call.admission = self.state.limiter.admit(key, reserve_tokens=reserve_tokens)
        except LimitExceeded as exc:
            self.state.metrics.rate_limited(
                endpoint=call.endpoint.slug if call.endpoint else "",
                version=call.version_label,
                kind=exc.kind,
            )
            budget = exc.kind == "budget"
            raise OpenAIError(
                429,
                exc.message,
                type="insufficient_quota" if budget else "rate_limit_exceeded",
                code=getattr(exc, "code", None)
                or ("insufficient_quota" if budget else "rate_limit_exceeded"),
                headers=dict(exc.headers),
            ) from None

    def hold_slot(self, call: _Call) -> None:
        """Count the request against max_concurrency, or 429 at once."""
        state = self.state
        if state.in_flight >= state.settings.max_concurrency:
            raise OpenAIError(
                429,
                f"This server is answering {state.in_flight} requests, its limit; retry shortly.",
                code="server_busy",
                headers=_retry_headers(state.settings.queue_full_retry_after),
            )
        state.in_flight += 1
        call.counted = True

    def route(self, call: _Call, route: str) -> tuple[VersionSpec, Any]:
        assert call.endpoint is not None
        version, backend, canary = self.state.route(call.endpoint)
        call.version, call.canary = version, canary
        kind = ROUTE_KIND[route]
        if backend.serve_kind != kind:
            raise p.invalid(
                f"The model `{call.endpoint.slug}` {KIND_WORDS.get(backend.serve_kind, '')}: "
                f"call {KIND_ROUTES.get(backend.serve_kind, 'another route')} instead of "
                f"{p.ROUTE_PATHS[route]}.",
                "model",
                code="wrong_route",
            )
        return version, backend

    def queue_full(self, call: _Call, exc: QueueFull) -> OpenAIError:
        self.state.metrics.rate_limited(
            endpoint=call.endpoint.slug if call.endpoint else "",
            version=call.version_label,
            kind="queue",
        )
        return OpenAIError(
            429,
            "The model's queue is full; retry shortly.",
            code="queue_full",
            headers=_retry_headers(exc.retry_after),
        )

    async def guarded(self, call: _Call, work: Any) -> Response:
        """Run a handler body: OpenAI errors become envelopes, anything else a logged 500."""
        try:
            return await work
        except OpenAIError as exc:
            return self.error_response(call, exc)
        except ClientDisconnect:  # gone while sending its body: nobody to answer
            call.aborted = True
            self.finish(call, status=499, error_code="client_disconnected")
            return Response(status_code=499)
        except Exception:
            log.exception("request %s failed", call.response_id)
            return self.error_response(
                call,
                OpenAIError(
                    500, "The server failed while answering; this is a bug.", code="server_error"
                ),
            )

    # --- info routes ----------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "models": self.state.loaded()})

    async def metrics(self, request: Request) -> Response:
        metrics = self.state.metrics
        gauged = set()
        for endpoint, version, backend in self.state.backends_by_endpoint():
            labels = (endpoint.slug, str(version.version_id))
            gauged.add(labels)
            metrics.set_queue(
                endpoint=labels[0],
                version=labels[1],
                running=backend.running(),
                waiting=backend.queue_depth(),
            )
        for slug, version in self._gauged - gauged:  # unloaded since: no stale gauges
            metrics.forget_version(endpoint=slug, version=version)
        self._gauged = gauged
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    async def models(self, request: Request) -> Response:
        try:
            principal = self.authenticate(request)
        except OpenAIError as exc:
            return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)
        return JSONResponse(
            p.models_body(self.state.models_for(principal)), headers=self.key_headers(principal)
        )

    def key_headers(self, principal: Principal | None) -> dict[str, str]:
        """The x-ratelimit-* headers of the caller's key (none for the playground)."""
        if principal is None or principal.key is None:
            return {}
        return self.state.limiter.headers(principal.key)

    async def feedback(self, request: Request) -> Response:
        principal = None
        try:
            raw = await self.read_body(request)
            principal = self.authenticate(request)
            fb = p.parse_feedback(p.read_json(raw))
            answered = self.state.responses.get(fb.response_id)
            key = principal.key
            if (
                answered is None
                or answered.project_id != principal.project_id
                or (key is not None and key.endpoint_id not in (None, answered.endpoint_id))
            ):
                raise OpenAIError(
                    404,
                    f"No answer with id {fb.response_id!r} was given to this project recently.",
                    param="response_id",
                    code="response_not_found",
                )
        except OpenAIError as exc:
            headers = {**self.key_headers(principal), **exc.headers}
            return JSONResponse(exc.body(), status_code=exc.status, headers=headers)
        except ClientDisconnect:
            return Response(status_code=499)
        self.state.sink.put(
            FeedbackRecord(
                response_id=fb.response_id,
                endpoint_id=answered.endpoint_id,
                key_id=principal.key_id,
                score=fb.score,
                comment=fb.comment,
                created_at=time.time(),
            )
        )
        return JSONResponse({"ok": True}, headers=self.key_headers(principal))

    # --- generation -----------------------------------------------------------------------

    async def completions(self, request: Request) -> Response:
        call = self._new_call(p.ROUTE_COMPLETIONS)
        return await self.guarded(call, self._generation(request, call))

    async def chat(self, request: Request) -> Response:
        call = self._new_call(p.ROUTE_CHAT)
        return await self.guarded(call, self._generation(request, call))

    async def _generation(self, request: Request, call: _Call) -> Response:
        raw = await self.read_body(request)
        call.principal = self.authenticate(request)
        data = p.read_json(raw)
        req = p.parse_generation(data, call.route)
        call.stream = req.stream
        call.endpoint = self.state.endpoint_for(
            call.principal.key, req.model, call.principal.project_id
        )
        call.prompt_text = req.record_text()
        if call.endpoint.upstream is not None:
            from serving.engine.upstream import forward_generation

            return await forward_generation(self, call, req, data)
        version, backend = self.route(call, call.route)
        ids, max_tokens = await self._prompt(backend, req)
        self.admit(call, len(ids) + max_tokens * req.n)
        params = req.cache_params(max_tokens)
        cache = self.state.cache
        cache_key = None
        if cache.is_deterministic(params):
            cache_key = cache.key(
                endpoint_id=call.endpoint.endpoint_id,
                version_id=version.version_id,
                route=call.route,
                params=params,
            )
            hit = cache.get(cache_key)
            if hit is not None:
                return self.cached_answer(call, req, hit)
        self.hold_slot(call)
        iterator, first = await self._start(call, req, backend, ids, max_tokens)
        if call.version is not None and call.version.version_id != version.version_id:
            cache_key = None  # routed again to another version: not that key's answer
        if req.stream:
            return _EventStreamResponse(
                self._stream(call, req, iterator, first, cache_key),
                media_type="text/event-stream",
                headers={**self.headers(call), "cache-control": "no-cache"},
            )
        return await self._collect(call, req, iterator, first, cache_key)

    async def _prompt(self, backend: Any, req: p.GenerationRequest) -> tuple[list[int], int]:
        """The prompt's token ids (chat: through the model's template) and the max_tokens."""
        if req.prompt is not None:
            text = req.prompt
        else:
            try:
                text = backend.chat_prompt(list(req.messages))
            except Exception as exc:  # a template that refuses these messages (jinja raises)
                raise p.invalid(
                    f"The model's chat template refused these messages: {exc}", "messages"
                ) from None
        if len(text) > LONG_TEXT_CHARS:  # tokenising it would stall every stream of the loop
            ids = await anyio.to_thread.run_sync(backend.encode, text)
        else:
            ids = backend.encode(text)
        return ids, p.fit_max_tokens(req, len(ids), backend.max_context)

    async def _start(
        self, call: _Call, req: p.GenerationRequest, backend: Any, ids: list[int], max_tokens: int
    ) -> tuple[Any, Delta | Finish]:
        """Submit to the backend and wait for its first event (so a refusal is still an HTTP
        error); a backend closed by a swap meanwhile: route again."""
        for attempt in range(ROUTE_ATTEMPTS):
            params = GenerationParams(
                prompt_ids=tuple(ids),
                max_tokens=max_tokens,
                temperature=req.temperature,
                top_p=req.top_p,
                n=req.n,
                stop=req.stop,
                seed=req.seed,
            )
            iterator = None
            try:
                iterator = _Events(backend.generate(params), self.event_timeout_s)
                try:
                    first = await iterator.__anext__()
                except StopAsyncIteration:
                    raise OpenAIError(
                        500, "The model ended without an answer.", code="server_error"
                    ) from None
                call.ran = True
                call.prompt_tokens = len(ids)
                return iterator, first
            except BackendClosed:
                self.reroutes += 1
                if iterator is not None:
                    await _aclose(iterator)
                if attempt == ROUTE_ATTEMPTS - 1:
                    raise OpenAIError(
                        503,
                        "The model was being swapped; retry.",
                        code="model_swapping",
                        headers=_retry_headers(1.0),
                    ) from None
                _version, backend = self.route(call, call.route)
                ids, max_tokens = await self._prompt(backend, req)
            except QueueFull as exc:
                raise self.queue_full(call, exc) from None
            except BaseException:
                if iterator is not None:
                    await _aclose(iterator)
                raise
        raise AssertionError("unreachable")

    def _tally(
        self, call: _Call, state: _Tally, event: Delta | Finish, now: float | None = None
    ) -> None:
        if now is None:
            now = time.perf_counter()
        if isinstance(event, Delta):
            state.texts[event.index].append(event.text)
            state.tokens[event.index] += event.tokens
            if event.text and call.ttft is None:
                call.ttft = now - call.started
            if event.index == 0 and event.tokens:
                if state.last is not None:
                    call.inter_token.append(now - state.last)
                state.last = now
        else:
            state.finish[event.index] = event.finish_reason
            state.final_tokens[event.index] = event.completion_tokens
            state.open -= 1
        call.completion_tokens = sum(
            f if f is not None else t for f, t in zip(state.final_tokens, state.tokens, strict=True)
        )

    def _choices(self, state: _Tally) -> list[dict]:
        return [
            {"text": "".join(texts), "finish_reason": reason or "length"}
            for texts, reason in zip(state.texts, state.finish, strict=True)
        ]

    def _complete(self, call: _Call, state: _Tally, cache_key: str | None) -> list[dict]:
        choices = self._choices(state)
        self.remember(call, choices, cache_key)
        return choices

    def remember(self, call: _Call, choices: list[dict], cache_key: str | None) -> None:
        """Note a finished answer on the call (for its record) and keep it in the response
        cache when the request is deterministic: local models and upstreams alike."""
        call.finish_reason = choices[0]["finish_reason"] if choices else ""
        call.completion_text = "\n\n".join(c["text"] for c in choices)
        if cache_key is not None and choices:
            from serving.engine.cache import CachedAnswer

            self.state.cache.put(
                cache_key,
                CachedAnswer(
                    choices=choices,
                    prompt_tokens=call.prompt_tokens,
                    completion_tokens=call.completion_tokens,
                ),
                endpoint_id=call.endpoint.endpoint_id,
            )

    def body(self, call: _Call, req: p.GenerationRequest, choices: list[dict]) -> dict:
        build = p.chat_body if req.route == p.ROUTE_CHAT else p.completion_body
        return build(
            response_id=call.response_id,
            created=int(call.created_at),
            model=call.endpoint.slug,
            version_id=call.version_id,
            choices=choices,
            prompt_tokens=call.prompt_tokens,
            completion_tokens=call.completion_tokens,
        )

    async def _collect(
        self,
        call: _Call,
        req: p.GenerationRequest,
        iterator: Any,
        first: Delta | Finish,
        cache_key: str | None,
    ) -> Response:
        state = _Tally.for_n(req.n)
        try:
            self._tally(call, state, first)
            while state.open:  # the rest in one piece where the backend can (no wake per token)
                try:
                    arrived = await iterator.collect()
                except StopAsyncIteration:
                    raise _ended_early() from None
                for at, event in arrived:
                    self._tally(call, state, event, at)
        finally:
            await _aclose(iterator)
        choices = self._complete(call, state, cache_key)
        self.finish(call, status=200)
        return JSONResponse(self.body(call, req, choices), headers=self.headers(call))

    async def _stream(
        self,
        call: _Call,
        req: p.GenerationRequest,
        iterator: Any,
        first: Delta | Finish,
        cache_key: str | None,
    ) -> AsyncIterator[bytes]:
        state = _Tally.for_n(req.n)
        status, error_code, completed = 200, "", False
        meta = {
            "route": req.route,
            "response_id": call.response_id,
            "created": int(call.created_at),
            "model": call.endpoint.slug,
            "version_id": call.version_id,
        }
        try:
            if req.route == p.ROUTE_CHAT:
                for i in range(req.n):
                    yield p.sse(
                        p.chunk(**meta, index=i, role=True, include_usage=req.include_usage)
                    )
            text_chunk = _TextChunks(meta, req.include_usage)
            event = first
            while True:
                self._tally(call, state, event)
                if isinstance(event, Delta):
                    if event.text:
                        yield text_chunk(event.index, event.text)
                else:
                    yield p.sse(
                        p.chunk(
                            **meta,
                            index=event.index,
                            finish_reason=event.finish_reason,
                            include_usage=req.include_usage,
                        )
                    )
                if state.open == 0:
                    break
                try:
                    event = await iterator.__anext__()
                except StopAsyncIteration:
                    raise _ended_early() from None
            self._complete(call, state, cache_key)
            if req.include_usage:
                yield p.sse(
                    p.usage_chunk(
                        **meta,
                        prompt_tokens=call.prompt_tokens,
                        completion_tokens=call.completion_tokens,
                    )
                )
            completed = True  # before the last yield: a client closing after [DONE] is no abort
            yield p.SSE_DONE
        except OpenAIError as exc:  # after the stream started: an error event, then the end
            status, error_code, completed = exc.status, exc.code or exc.type, True
            yield p.sse(exc.body())
        except Exception as exc:
            log.exception("stream %s failed", call.response_id)
            status, error_code, completed = 500, "server_error", True
            yield p.sse(OpenAIError(500, f"The server failed mid-stream: {exc}").body())
        finally:
            await _aclose(iterator)
            if not completed:  # the client went away (cancelled or closed mid-stream)
                call.aborted = True
                if call.completion_text is None:
                    choices = self._choices(state)
                    call.completion_text = "\n\n".join(c["text"] for c in choices)
                    call.finish_reason = ""
            self.finish(call, status=status, error_code=error_code)

    def cached_answer(self, call: _Call, req: p.GenerationRequest, hit: Any) -> Response:
        """Answer from the response cache: no model run; a stream replays it as chunks."""
        call.cache_hit = True
        call.ran = True
        call.prompt_tokens = hit.prompt_tokens
        call.completion_tokens = hit.completion_tokens
        choices = [dict(c) for c in hit.choices]
        call.finish_reason = choices[0]["finish_reason"] if choices else ""
        call.completion_text = "\n\n".join(c["text"] for c in choices)
        call.ttft = time.perf_counter() - call.started
        if not req.stream:
            self.finish(call, status=200)
            return JSONResponse(self.body(call, req, choices), headers=self.headers(call))
        headers = self.headers(call)
        meta = {
            "route": req.route,
            "response_id": call.response_id,
            "created": int(call.created_at),
            "model": call.endpoint.slug,
            "version_id": call.version_id,
        }
        events: list[bytes] = []
        for i, choice in enumerate(choices):
            if req.route == p.ROUTE_CHAT:
                events.append(
                    p.sse(p.chunk(**meta, index=i, role=True, include_usage=req.include_usage))
                )
            if choice["text"]:
                events.append(
                    p.sse(
                        p.chunk(
                            **meta, index=i, text=choice["text"], include_usage=req.include_usage
                        )
                    )
                )
            events.append(
                p.sse(
                    p.chunk(
                        **meta,
                        index=i,
                        finish_reason=choice["finish_reason"],
                        include_usage=req.include_usage,
                    )
                )
            )
        if req.include_usage:
            events.append(
                p.sse(
                    p.usage_chunk(
                        **meta,
                        prompt_tokens=call.prompt_tokens,
                        completion_tokens=call.completion_tokens,
                    )
                )
            )
        events.append(p.SSE_DONE)
        self.finish(call, status=200)

        async def replay() -> AsyncIterator[bytes]:
            for event in events:
                yield event

        return _EventStreamResponse(replay(), media_type="text/event-stream", headers=headers)

    # --- embeddings and predict -----------------------------------------------------------

    async def embeddings(self, request: Request) -> Response:
        call = self._new_call(p.ROUTE_EMBEDDINGS)
        return await self.guarded(call, self._encoder(request, call))

    async def predict(self, request: Request) -> Response:
        call = self._new_call(p.ROUTE_PREDICT)
        return await self.guarded(call, self._encoder(request, call))

    async def _encoder(self, request: Request, call: _Call) -> Response:
        raw = await self.read_body(request)
        call.principal = self.authenticate(request)
        data = p.read_json(raw)
        if call.route == p.ROUTE_EMBEDDINGS:
            req: Any = p.parse_embeddings(data)
        else:
            req = p.parse_predict(data)
        call.endpoint = self.state.endpoint_for(
            call.principal.key, req.model, call.principal.project_id
        )
        call.prompt_text = req.inputs[0] if len(req.inputs) == 1 else "\n".join(req.inputs)
        if call.endpoint.upstream is not None:
            if call.route != p.ROUTE_EMBEDDINGS:
                raise p.invalid(
                    f"`{call.endpoint.slug}` is served by an external engine, which has no "
                    "/v1/predict route.",
                    "model",
                    code="wrong_route",
                )
            from serving.engine.upstream import forward_embeddings

            return await forward_embeddings(self, call, req, data)
        version, backend = self.route(call, call.route)
        estimate = self._check_inputs(backend, req.inputs)
        self.admit(call, estimate)
        self.hold_slot(call)
        for attempt in range(ROUTE_ATTEMPTS):
            try:
                async with asyncio.timeout(self.event_timeout_s):
                    if call.route == p.ROUTE_EMBEDDINGS:
                        vectors, tokens = await backend.embed(list(req.inputs))
                    else:
                        results, tokens = await backend.classify(list(req.inputs))
                break
            except BackendClosed:
                self.reroutes += 1
                if attempt == ROUTE_ATTEMPTS - 1:
                    raise OpenAIError(
                        503,
                        "The model was being swapped; retry.",
                        code="model_swapping",
                        headers=_retry_headers(1.0),
                    ) from None
                version, backend = self.route(call, call.route)
            except QueueFull as exc:
                raise self.queue_full(call, exc) from None
            except TimeoutError:
                raise OpenAIError(
                    503,
                    f"The model produced nothing for {self.event_timeout_s:g} s; retry later.",
                    code="model_timeout",
                ) from None
            except ValueError as exc:
                raise p.invalid(str(exc), "input") from None
            except BACKEND_ERRORS as exc:
                raise OpenAIError(503, f"The model failed: {exc}", code="model_error") from None
        call.ran = True
        call.prompt_tokens = int(tokens)
        if call.route == p.ROUTE_EMBEDDINGS:
            body = p.embeddings_body(
                model=call.endpoint.slug,
                vectors=vectors,
                prompt_tokens=call.prompt_tokens,
                version_id=version.version_id,
                encoding_format=req.encoding_format,
            )
        else:
            body = p.predict_body(
                response_id=call.response_id,
                model=call.endpoint.slug,
                results=[list(r.labels) for r in results],
                top_k=req.top_k,
                prompt_tokens=call.prompt_tokens,
                version_id=version.version_id,
            )
            call.finish_reason = ""
            call.completion_text = "\n".join(r["label"] for r in body["data"])
        self.finish(call, status=200)
        return JSONResponse(body, headers=self.headers(call))

    def _check_inputs(self, backend: Any, inputs: tuple[str, ...]) -> int:
        """The prompt tokens of ``inputs`` (to reserve), each checked against the context."""
        total = 0
        for i, text in enumerate(inputs):
            count = len(backend.encode(text))
            if count > backend.max_context:
                raise p.invalid(
                    f"`input[{i}]` has {count} tokens; this model's maximum context length is "
                    f"{backend.max_context} tokens.",
                    "input",
                    code="context_length_exceeded",
                )
            total += count
        return total

    async def not_found(self, request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        if status == 405:
            error = OpenAIError(405, f"{request.method} is not allowed on {request.url.path}.")
        elif status == 404:
            error = OpenAIError(
                404,
                f"No route {request.method} {request.url.path} on this server.",
                code="unknown_url",
            )
        else:
            error = OpenAIError(status, getattr(exc, "detail", "") or "Error.")
        return JSONResponse(error.body(), status_code=error.status)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await self.upstream.aclose()


@dataclass
class _Tally:
    """What a generation has produced so far, per choice."""

    texts: list[list[str]]
    tokens: list[int]
    finish: list[str | None]
    final_tokens: list[int | None]
    open: int
    last: float | None = None

    @classmethod
    def for_n(cls, n: int) -> _Tally:
        return cls([[] for _ in range(n)], [0] * n, [None] * n, [None] * n, n)


def create_app(
    state: EngineState,
    *,
    event_timeout_s: float = EVENT_TIMEOUT_S,
    upstream: UpstreamClient | None = None,
) -> Starlette:
    """The OpenAI-compatible app serving ``state`` (run it under uvicorn)."""
    engine = Engine(state, event_timeout_s=event_timeout_s, upstream=upstream)
    routes = [
        Route("/health", engine.health, methods=["GET"]),
        Route("/metrics", engine.metrics, methods=["GET"]),
        Route("/v1/models", engine.models, methods=["GET"]),
        Route("/v1/completions", engine.completions, methods=["POST"]),
        Route("/v1/chat/completions", engine.chat, methods=["POST"]),
        Route("/v1/embeddings", engine.embeddings, methods=["POST"]),
        Route("/v1/predict", engine.predict, methods=["POST"]),
        Route("/v1/feedback", engine.feedback, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: engine.not_found},
        lifespan=engine.lifespan,
    )
    app.state.engine = engine
    return app
