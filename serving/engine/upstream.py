"""Endpoints served by an external OpenAI-compatible engine (vLLM, Text Generation Inference).

LLMHub stays in front: the client's key, limits, cache, request record and metrics are handled
as for a local model (``app.py``); only the model run is forwarded, with ``model`` replaced by
the upstream's model name and ``Authorization`` by the upstream's key. Streams pass through
chunk by chunk (``id`` and ``model`` rewritten to this answer's id and the endpoint slug); the
upstream is always asked for ``stream_options.include_usage`` so the tokens are counted, and its
usage chunk is dropped when the client did not ask for one.

Errors: the upstream's own 4xx/5xx pass on with its status and message in the envelope (except
401/403, which are about LLMHub's credentials for the upstream, not the client's: 502);
unreachable -> 502 ``upstream_unreachable``; no answer in time -> 504 ``upstream_timeout``.

Limits need a token count before the upstream answers: the prompt is estimated at one token per
4 characters for the reservation, and settled with the upstream's usage. A stream the client
aborts has no usage from the upstream: its completion counts one token per content chunk.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
from starlette.responses import JSONResponse, Response

from serving.engine import protocol as p
from serving.engine.protocol import OpenAIError
from serving.engine.types import UpstreamSpec

if TYPE_CHECKING:
    from serving.engine.app import Engine, _Call

UPSTREAM_CACHE_VERSION = 0  # the response cache's version id for external engines
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 120.0  # between two reads (a stream's chunks), so a stuck upstream ends


class UpstreamClient:
    """One shared httpx.AsyncClient for every external engine (made on first use, in the loop)."""

    def __init__(
        self,
        *,
        max_connections: int = 256,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        read_timeout: float = READ_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        self.limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=32)
        self.transport = transport
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.timeout, limits=self.limits, transport=self.transport
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @staticmethod
    def url(spec: UpstreamSpec, path: str) -> str:
        return spec.base_url.rstrip("/") + path

    @staticmethod
    def request_headers(spec: UpstreamSpec) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "application/json"}
        if spec.api_key:
            headers["authorization"] = f"Bearer {spec.api_key}"
        return headers

    async def post_json(self, spec: UpstreamSpec, path: str, body: dict) -> dict:
        """POST ``body`` and return the upstream's JSON answer (its errors as OpenAIError)."""
        try:
            response = await self.client.post(
                self.url(spec, path), json=body, headers=self.request_headers(spec)
            )
        except httpx.TimeoutException as exc:
            raise _timeout(spec, exc) from None
        except httpx.HTTPError as exc:
            raise _unreachable(spec, exc) from None
        if response.status_code != 200:
            raise upstream_error(response.status_code, response.content, response.headers)
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise OpenAIError(
                502,
                "The upstream engine answered something that is not a JSON object.",
                code="upstream_bad_answer",
            )
        return data

    async def open_stream(self, spec: UpstreamSpec, path: str, body: dict) -> AsyncIterator[dict]:
        """Send a streaming request; an error status is raised here, before anything is sent
        to the client. Returns the stream's JSON events up to ``[DONE]``."""
        request = self.client.build_request(
            "POST", self.url(spec, path), json=body, headers=self.request_headers(spec)
        )
        try:
            response = await self.client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise _timeout(spec, exc) from None
        except httpx.HTTPError as exc:
            raise _unreachable(spec, exc) from None
        if response.status_code != 200:
            try:
                content = await response.aread()
            except httpx.HTTPError:
                content = b""
            finally:
                await response.aclose()
            raise upstream_error(response.status_code, content, response.headers)
        return _sse_events(spec, response)


async def _sse_events(spec: UpstreamSpec, response: httpx.Response) -> AsyncIterator[dict]:
    try:
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                return
            try:
                data = json.loads(payload)
            except ValueError:
                continue
            if isinstance(data, dict):
                yield data
    except httpx.TimeoutException as exc:
        raise _timeout(spec, exc) from None
    except httpx.HTTPError as exc:
        raise _unreachable(spec, exc) from None
    finally:
        await response.aclose()


def _timeout(spec: UpstreamSpec, exc: Exception) -> OpenAIError:
    return OpenAIError(
        504,
        f"The upstream engine at {spec.base_url} did not answer in time ({type(exc).__name__}).",
        code="upstream_timeout",
    )


def _unreachable(spec: UpstreamSpec, exc: Exception) -> OpenAIError:
    return OpenAIError(
        502,
        f"The upstream engine at {spec.base_url} cannot be reached: {exc or type(exc).__name__}.",
        code="upstream_unreachable",
    )


def upstream_error(status: int, content: bytes, headers: Any = None) -> OpenAIError:
    """The upstream's error answer, in the envelope, with its status."""
    message, kind, param, code = "", None, None, None
    try:
        data = json.loads(content or b"null")
    except ValueError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or "")
        kind = error.get("type") if isinstance(error.get("type"), str) else None
        param = error.get("param") if isinstance(error.get("param"), str) else None
        code = error.get("code")
        code = str(code) if code is not None else None
    elif isinstance(data, dict) and isinstance(data.get("message"), str):  # TGI, vLLM's older
        message = data["message"]
    if not message:
        message = content.decode("utf-8", "replace")[:500] or f"HTTP {status}"
    if status in (401, 403):
        return OpenAIError(
            502,
            f"The upstream engine refused LLMHub's credentials ({status}): {message}",
            code="upstream_auth",
        )
    if not 400 <= status <= 599:
        return OpenAIError(
            502,
            f"The upstream engine answered HTTP {status}: {message}",
            code="upstream_bad_answer",
        )
    forwarded = {}
    if headers is not None:
        for name in ("retry-after", "retry-after-ms", "x-should-retry"):
            if headers.get(name) is not None:
                forwarded[name] = headers.get(name)
    return OpenAIError(status, message, type=kind, param=param, code=code, headers=forwarded)


def estimate_tokens(text: str) -> int:
    return len(text) // 4 + 1


def _choice_text(choice: dict) -> str:
    if isinstance(choice.get("text"), str):
        return choice["text"]
    holder = choice.get("delta") or choice.get("message") or {}
    content = holder.get("content") if isinstance(holder, dict) else None
    return content if isinstance(content, str) else ""


def _count_usage(call: _Call, usage: Any) -> bool:
    if not isinstance(usage, dict):
        return False
    call.prompt_tokens = int(usage.get("prompt_tokens") or 0)
    call.completion_tokens = int(usage.get("completion_tokens") or 0)
    return True


async def forward_generation(
    engine: Engine, call: _Call, req: p.GenerationRequest, data: dict
) -> Response:
    """Answer a completions or chat request through the endpoint's upstream engine."""
    from serving.engine.app import _EventStreamResponse

    endpoint = call.endpoint
    spec = endpoint.upstream
    call.upstream = True
    estimate = estimate_tokens(req.record_text())
    default = (
        p.COMPLETION_DEFAULT_MAX_TOKENS
        if req.route == p.ROUTE_COMPLETIONS
        else p.CHAT_DEFAULT_MAX_TOKENS_CAP
    )
    engine.admit(call, estimate + (req.max_tokens or default) * req.n)
    cache = engine.state.cache
    params = req.cache_params(req.max_tokens or 0)
    cache_key = None
    if cache.is_deterministic(params):
        cache_key = cache.key(
            endpoint_id=endpoint.endpoint_id,
            version_id=UPSTREAM_CACHE_VERSION,
            route=call.route,
            params=params,
        )
        hit = cache.get(cache_key)
        if hit is not None:
            return engine.cached_answer(call, req, hit)
    engine.hold_slot(call)
    body = {k: v for k, v in data.items() if v is not None}
    body["model"] = spec.model
    path = "/completions" if req.route == p.ROUTE_COMPLETIONS else "/chat/completions"
    if not req.stream:
        answer = await engine.upstream.post_json(spec, path, body)
        call.ran = True
        if not _count_usage(call, answer.get("usage")):
            call.prompt_tokens = estimate
        choices = [
            {"text": _choice_text(c), "finish_reason": c.get("finish_reason") or "stop"}
            for c in answer.get("choices") or []
            if isinstance(c, dict)
        ]
        engine.remember(call, choices, cache_key)
        answer["id"] = call.response_id
        answer["model"] = endpoint.slug
        engine.finish(call, status=200)
        return JSONResponse(answer, headers=engine.headers(call))
    body["stream_options"] = {"include_usage": True}
    events = await engine.upstream.open_stream(spec, path, body)
    call.ran = True
    call.prompt_tokens = estimate
    return _EventStreamResponse(
        _relay(engine, call, req, events, cache_key),
        media_type="text/event-stream",
        headers={**engine.headers(call), "cache-control": "no-cache"},
    )


async def _relay(
    engine: Engine,
    call: _Call,
    req: p.GenerationRequest,
    events: AsyncIterator[dict],
    cache_key: str | None,
) -> AsyncIterator[bytes]:
    texts: dict[int, list[str]] = {}
    finish: dict[int, str] = {}
    chunks = 0
    counted = False
    status, error_code, completed = 200, "", False
    last: float | None = None
    try:
        async for data in events:
            if isinstance(data.get("error"), dict) and not data.get("choices"):
                error = upstream_error(502, json.dumps(data).encode())
                status, error_code, completed = error.status, error.code or error.type, True
                yield p.sse(error.body())
                return
            usage = data.get("usage")
            counted = _count_usage(call, usage) or counted
            choices = data.get("choices")
            if not choices and usage is not None:  # the usage chunk we asked for
                if req.include_usage:
                    data["id"], data["model"] = call.response_id, call.endpoint.slug
                    yield p.sse(data)
                continue
            for choice in choices or []:
                if not isinstance(choice, dict):
                    continue
                index = int(choice.get("index") or 0)
                text = _choice_text(choice)
                if text:
                    texts.setdefault(index, []).append(text)
                    chunks += 1
                    now = time.perf_counter()
                    if call.ttft is None:
                        call.ttft = now - call.started
                    if index == 0:
                        if last is not None:
                            call.inter_token.append(now - last)
                        last = now
                if choice.get("finish_reason"):
                    finish[index] = choice["finish_reason"]
            data["id"], data["model"] = call.response_id, call.endpoint.slug
            if not req.include_usage:
                data.pop("usage", None)
            yield p.sse(data)
        completed = True
        if not counted:
            call.completion_tokens = chunks
        choices_out = [
            {"text": "".join(texts.get(i, [])), "finish_reason": finish.get(i, "stop")}
            for i in range(max([req.n - 1, *texts.keys(), *finish.keys()]) + 1)
        ]
        engine.remember(call, choices_out, cache_key if counted else None)
        yield p.SSE_DONE
    except OpenAIError as exc:
        status, error_code, completed = exc.status, exc.code or exc.type, True
        yield p.sse(exc.body())
    finally:
        from serving.engine.app import _aclose

        await _aclose(events)
        if not completed:
            call.aborted = True
            if not counted:
                call.completion_tokens = chunks
            call.completion_text = "\n\n".join("".join(t) for _, t in sorted(texts.items()))
        engine.finish(call, status=status, error_code=error_code)


async def forward_embeddings(engine: Engine, call: _Call, req: Any, data: dict) -> Response:
    endpoint = call.endpoint
    spec = endpoint.upstream
    call.upstream = True
    estimate = sum(estimate_tokens(t) for t in req.inputs)
    engine.admit(call, estimate)
    engine.hold_slot(call)
    body = {k: v for k, v in data.items() if v is not None}
    body["model"] = spec.model
    answer = await engine.upstream.post_json(spec, "/embeddings", body)
    call.ran = True
    if not _count_usage(call, answer.get("usage")):
        call.prompt_tokens = estimate
    call.completion_tokens = 0
    answer["model"] = endpoint.slug
    engine.finish(call, status=200)
    return JSONResponse(answer, headers=engine.headers(call))
