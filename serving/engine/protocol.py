"""The OpenAI request and response shapes the inference process speaks, and its error.

Requests are parsed and validated here into dataclasses, before any model is touched: a
parameter this server does not implement is a 400 naming it (never silently ignored), a wrong
type or range a 400 naming the parameter. What needs the model (the context length) is checked
by :func:`fit_max_tokens` once the backend is known. Responses and stream chunks are built by
the small functions at the end, shaped like OpenAI's so the unmodified ``openai`` client reads
them.

Routes: ``/v1/completions``, ``/v1/chat/completions``, ``/v1/embeddings`` (OpenAI's), and two of
LLMHub's own, ``/v1/predict`` (see :class:`PredictRequest`) and ``/v1/feedback`` (see
:class:`FeedbackRequest`).

A ``null`` value is read as "absent" for every key (some clients send every parameter, unset ones
as ``null``), unsupported ones included: ``null`` asks for the default.
"""

from __future__ import annotations

import base64
import json
import math
import struct
import time
import uuid
from dataclasses import dataclass
from typing import Any

ROUTE_COMPLETIONS = "completions"
ROUTE_CHAT = "chat"
ROUTE_EMBEDDINGS = "embeddings"
ROUTE_PREDICT = "predict"
ROUTE_PATHS = {
    ROUTE_COMPLETIONS: "/v1/completions",
    ROUTE_CHAT: "/v1/chat/completions",
    ROUTE_EMBEDDINGS: "/v1/embeddings",
    ROUTE_PREDICT: "/v1/predict",
}
# Response id prefixes (the id is also the x-request-id header and what /v1/feedback takes).
ID_PREFIXES = {
    ROUTE_COMPLETIONS: "cmpl-",
    ROUTE_CHAT: "chatcmpl-",
    ROUTE_EMBEDDINGS: "embd-",
    ROUTE_PREDICT: "pred-",
}

MAX_N = 8
MAX_STOP = 4
MAX_INPUTS = 256  # texts per embeddings / predict request
COMPLETION_DEFAULT_MAX_TOKENS = 16  # as OpenAI's legacy completions
CHAT_DEFAULT_MAX_TOKENS_CAP = 256  # chat's default is what fits in the context, capped here
MAX_SEED = 2**63 - 1
MAX_COMMENT = 4000
MAX_DEPTH = 64  # JSON nesting refused past this (deep bodies are a RecursionError otherwise)

CHAT_ROLES = ("system", "user", "assistant", "developer")

_DEFAULT_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_exceeded",
}


class OpenAIError(Exception):
    """An answer in OpenAI's error envelope: ``{"error": {"message", "type", "param", "code"}}``.

    ``headers`` go on the HTTP answer (Retry-After, x-should-retry, x-ratelimit-*).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,  # OpenAI's field name
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _DEFAULT_TYPES.get(status, "server_error")
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def invalid(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    """A 400 invalid_request_error."""
    return OpenAIError(400, message, param=param, code=code)


def unsupported(param: str, detail: str = "") -> OpenAIError:
    message = f"`{param}` is not supported by this server."
    if detail:
        message = f"{message} {detail}"
    return OpenAIError(400, message, param=param, code="unsupported_parameter")


def new_response_id(route: str) -> str:
    return ID_PREFIXES[route] + uuid.uuid4().hex


# --- JSON bodies ---------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _depth_ok(raw: bytes) -> bool:
    """Cheap pre-check: a body with fewer brackets than the limit cannot nest past it."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return True
    depth = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > MAX_DEPTH:
                return False
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return True


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def read_json(raw: bytes) -> dict:
    """The request body as a JSON object, or a 400 saying what is wrong with it."""
    if not raw.strip():
        raise invalid("The request body is empty; send a JSON object.")
    if not _depth_ok(raw):
        raise invalid(f"The JSON body nests deeper than {MAX_DEPTH} levels.")
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, huge ints
        raise invalid(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise invalid("The request body must be a JSON object.")
    if b"\\u0000" in raw and _has_nul(data):
        raise invalid("The request body holds a NUL character (\\u0000), which is not allowed.")
    return data


# --- field readers -------------------------------------------------------------------------


def _present(data: dict, name: str) -> bool:
    return data.get(name) is not None


def _int(data: dict, name: str, low: int, high: int | None = None) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"`{name}` must be an integer (got {json.dumps(value)[:80]}).", name)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise invalid(f"`{name}` must be {bound} (got {value}).", name)
    return value


def _number(
    data: dict, name: str, low: float, high: float, *, low_open: bool = False
) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise invalid(f"`{name}` must be a number (got {json.dumps(value)[:80]}).", name)
    if value > high or value < low or (low_open and value == low):
        left = "(" if low_open else "["
        raise invalid(f"`{name}` must be in {left}{low:g}, {high:g}] (got {value}).", name)
    return float(value)


def _bool(data: dict, name: str) -> bool | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise invalid(f"`{name}` must be true or false (got {json.dumps(value)[:80]}).", name)
    return value


def _string(data: dict, name: str, *, required: bool = False) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise invalid(f"`{name}` is required.", name, code="missing_required_parameter")
        return None
    if not isinstance(value, str):
        raise invalid(f"`{name}` must be a string.", name)
    if required and not value.strip():
        raise invalid(f"`{name}` must not be empty.", name)
    return value


def _check_keys(data: dict, allowed: frozenset[str]) -> None:
    for name, value in data.items():
        if name not in allowed and value is not None:
            raise unsupported(name)


def _texts(data: dict, name: str) -> tuple[list[str], bool]:
    """``name`` as a list of non-empty strings, and whether it was one string."""
    value = data.get(name)
    if value is None:
        raise invalid(f"`{name}` is required.", name, code="missing_required_parameter")
    single = isinstance(value, str)
    items = [value] if single else value
    if not isinstance(items, list) or not items:
        raise invalid(f"`{name}` must be a string or a non-empty list of strings.", name)
    if len(items) > MAX_INPUTS:
        raise invalid(f"`{name}` holds {len(items)} items; at most {MAX_INPUTS}.", name)
    for i, item in enumerate(items):
        if isinstance(item, int | list) and not isinstance(item, bool):
            raise unsupported(name, "Token-id inputs are not supported; send text.")
        if not isinstance(item, str):
            raise invalid(f"`{name}[{i}]` must be a string.", name)
        if not item.strip():
            raise invalid(f"`{name}[{i}]` must not be empty.", name)
    return items, single


# --- generation requests -------------------------------------------------------------------

_GENERATION_KEYS = frozenset(
    {
        "model",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "n",
        "stop",
        "seed",
        "stream",
        "stream_options",
        "user",
        "presence_penalty",
        "frequency_penalty",
    }
)
COMPLETION_KEYS = _GENERATION_KEYS | {"prompt"}
CHAT_KEYS = _GENERATION_KEYS | {"messages"}


@dataclass(frozen=True)
class GenerationRequest:
    """A validated /v1/completions (``prompt``) or /v1/chat/completions (``messages``) request.

    ``max_tokens`` is None when the client left it to the default (see :func:`fit_max_tokens`).
    """

    route: str
    model: str
    prompt: str | None = None
    messages: tuple[dict, ...] | None = None  # [{"role", "content": str}]
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    stop: tuple[str, ...] = ()
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False

    @property
    def prompt_param(self) -> str:
        return "messages" if self.route == ROUTE_CHAT else "prompt"

    def cache_params(self, max_tokens: int) -> dict:
        """Everything that shapes the answer (for the response cache's key)."""
        return {
            "prompt": self.prompt,
            "messages": [dict(m) for m in self.messages] if self.messages is not None else None,
            "max_tokens": max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "n": self.n,
            "stop": list(self.stop),
            "seed": self.seed,
        }

    def record_text(self) -> str:
        """The prompt as the request log stores it: the prompt, or the chat messages as JSON."""
        if self.prompt is not None:
            return self.prompt
        return json.dumps(list(self.messages or ()), ensure_ascii=False)


def _messages(data: dict) -> tuple[dict, ...]:
    value = data.get("messages")
    if value is None:
        raise invalid("`messages` is required.", "messages", code="missing_required_parameter")
    if not isinstance(value, list) or not value:
        raise invalid("`messages` must be a non-empty list of messages.", "messages")
    out = []
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise invalid(f"`{where}` must be an object with `role` and `content`.", "messages")
        for key, item in message.items():
            if key not in ("role", "content") and item is not None:
                raise unsupported(f"{where}.{key}")
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise invalid(
                f"`{where}.role` must be one of system, user, assistant (got {role!r}).",
                "messages",
            )
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for j, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") != "text":
                    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                    raise unsupported(
                        f"{where}.content[{j}]", f"Only text parts are supported (got {kind!r})."
                    )
                text = part.get("text")
                if not isinstance(text, str):
                    raise invalid(f"`{where}.content[{j}].text` must be a string.", "messages")
                parts.append(text)
            content = "".join(parts)
        if not isinstance(content, str):
            raise invalid(
                f"`{where}.content` must be a string or a list of text parts.", "messages"
            )
        out.append({"role": "system" if role == "developer" else role, "content": content})
    return tuple(out)


def _prompt(data: dict) -> str:
    value = data.get("prompt")
    if value is None:
        raise invalid("`prompt` is required.", "prompt", code="missing_required_parameter")
    if isinstance(value, list):
        if value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise unsupported("prompt", "Token-id prompts are not supported; send text.")
        if any(isinstance(v, list) for v in value):
            raise unsupported("prompt", "Token-id prompts are not supported; send text.")
        if len(value) != 1 or not isinstance(value[0], str):
            raise invalid(
                "`prompt` must be a string or a list of exactly one string (batched prompts are "
                "not supported; send one request per prompt).",
                "prompt",
            )
        value = value[0]
    if not isinstance(value, str):
        raise invalid("`prompt` must be a string.", "prompt")
    return value


def _stop(data: dict) -> tuple[str, ...]:
    value = data.get("stop")
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise invalid("`stop` must be a string or a list of strings.", "stop")
    if len(items) > MAX_STOP:
        raise invalid(f"`stop` holds {len(items)} sequences; at most {MAX_STOP}.", "stop")
    for item in items:
        if not isinstance(item, str) or not item:
            raise invalid("`stop` sequences must be non-empty strings.", "stop")
    return tuple(items)


def parse_generation(data: dict, route: str) -> GenerationRequest:
    """A validated completions or chat request, or a 400 naming the parameter."""
    _check_keys(data, CHAT_KEYS if route == ROUTE_CHAT else COMPLETION_KEYS)
    model = _string(data, "model", required=True)
    text = _prompt(data) if route == ROUTE_COMPLETIONS else None
    messages = _messages(data) if route == ROUTE_CHAT else None
    max_tokens = _int(data, "max_tokens", 1)
    max_completion = _int(data, "max_completion_tokens", 1)
    if max_tokens is not None and max_completion is not None and max_tokens != max_completion:
        raise invalid(
            "`max_tokens` and `max_completion_tokens` disagree; send one of them.",
            "max_completion_tokens",
        )
    temperature = _number(data, "temperature", 0.0, 2.0)
    top_p = _number(data, "top_p", 0.0, 1.0, low_open=True)
    n = _int(data, "n", 1, MAX_N)
    seed = _int(data, "seed", 0, MAX_SEED)
    stream = _bool(data, "stream") or False
    include_usage = False
    options = data.get("stream_options")
    if options is not None:
        if not stream:
            raise invalid("`stream_options` is only allowed with `stream: true`.", "stream_options")
        if not isinstance(options, dict):
            raise invalid("`stream_options` must be an object.", "stream_options")
        for key, value in options.items():
            if key != "include_usage" and value is not None:
                raise unsupported(f"stream_options.{key}")
        include_usage = _bool(options, "include_usage") or False
    for name in ("presence_penalty", "frequency_penalty"):
        value = _number(data, name, -2.0, 2.0)
        if value:
            raise unsupported(name, "Only 0 is accepted.")
    _string(data, "user")  # accepted (OpenAI's end-user id), logged nowhere
    return GenerationRequest(
        route=route,
        model=model,
        prompt=text,
        messages=messages,
        max_tokens=max_tokens if max_tokens is not None else max_completion,
        temperature=1.0 if temperature is None else temperature,
        top_p=1.0 if top_p is None else top_p,
        n=n or 1,
        stop=_stop(data),
        seed=seed,
        stream=stream,
        include_usage=include_usage,
    )


def fit_max_tokens(request: GenerationRequest, prompt_tokens: int, max_context: int) -> int:
    """The max_tokens to run with, checked against the model's context (400s otherwise)."""
    if prompt_tokens >= max_context:
        raise invalid(
            f"This model's maximum context length is {max_context} tokens, and the prompt has "
            f"{prompt_tokens} tokens, leaving no room for a completion. Shorten the "
            f"{request.prompt_param}.",
            request.prompt_param,
            code="context_length_exceeded",
        )
    room = max_context - prompt_tokens
    if request.max_tokens is None:
        default = (
            COMPLETION_DEFAULT_MAX_TOKENS
            if request.route == ROUTE_COMPLETIONS
            else CHAT_DEFAULT_MAX_TOKENS_CAP
        )
        return min(default, room)
    if request.max_tokens > room:
        raise invalid(
            f"`max_tokens` is {request.max_tokens}, but the prompt has {prompt_tokens} tokens and "
            f"this model's maximum context length is {max_context} tokens: at most {room} "
            "completion tokens fit.",
            "max_tokens",
            code="context_length_exceeded",
        )
    return request.max_tokens


# --- embeddings, predict, feedback ---------------------------------------------------------

EMBEDDING_KEYS = frozenset({"model", "input", "encoding_format", "dimensions", "user"})
PREDICT_KEYS = frozenset({"model", "input", "top_k", "user"})
FEEDBACK_KEYS = frozenset({"response_id", "score", "comment"})


@dataclass(frozen=True)
class EmbeddingRequest:
    model: str
    inputs: tuple[str, ...]
    # "float" (lists of numbers) or "base64" (little-endian float32 bytes, what the openai
    # client asks for by default and decodes itself).
    encoding_format: str = "float"


def parse_embeddings(data: dict) -> EmbeddingRequest:
    _check_keys(data, EMBEDDING_KEYS)
    model = _string(data, "model", required=True)
    fmt = data.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise unsupported("encoding_format", 'Use "float" or "base64".')
    if _present(data, "dimensions"):
        raise unsupported("dimensions", "Vectors come at the model's own size.")
    _string(data, "user")
    items, _single = _texts(data, "input")
    return EmbeddingRequest(model=model, inputs=tuple(items), encoding_format=fmt or "float")


@dataclass(frozen=True)
class PredictRequest:
    """``POST /v1/predict``: LLMHub's route for classifiers (OpenAI has none).

    Request: ``{"model": "<endpoint slug>", "input": "text" | ["text", ...] (at most 256),
    "top_k": k (optional: how many labels to list per text; all of them when absent)}``.

    Answer: ``{"object": "list", "model": "<slug>", "data": [{"index": 0, "label": "positive",
    "score": 0.91, "scores": [{"label": "positive", "score": 0.91}, {"label": "negative",
    "score": 0.09}]}, ...], "usage": {"prompt_tokens": n, "total_tokens": n}}``: one item per
    input text in order, ``label``/``score`` the best label, ``scores`` best first.
    """

    model: str
    inputs: tuple[str, ...]
    top_k: int | None = None


def parse_predict(data: dict) -> PredictRequest:
    _check_keys(data, PREDICT_KEYS)
    model = _string(data, "model", required=True)
    _string(data, "user")
    items, _single = _texts(data, "input")
    return PredictRequest(model=model, inputs=tuple(items), top_k=_int(data, "top_k", 1, 100_000))


@dataclass(frozen=True)
class FeedbackRequest:
    """``POST /v1/feedback``: an application's user rated one of its answers.

    ``{"response_id": "chatcmpl-...", "score": 1 | -1 | "up" | "down", "comment": "..."?}`` ->
    ``{"ok": true}``. The response id is the ``id`` of an answer (also its ``x-request-id``
    header) this key's project received from this process recently; others are 404.
    """

    response_id: str
    score: int
    comment: str = ""


def parse_feedback(data: dict) -> FeedbackRequest:
    _check_keys(data, FEEDBACK_KEYS)
    response_id = _string(data, "response_id", required=True)
    raw = data.get("score")
    scores = {1: 1, -1: -1, "up": 1, "down": -1}
    if isinstance(raw, bool) or raw not in scores:
        raise invalid('`score` must be 1, -1, "up" or "down".', "score")
    comment = _string(data, "comment") or ""
    if len(comment) > MAX_COMMENT:
        raise invalid(f"`comment` is {len(comment)} characters; at most {MAX_COMMENT}.", "comment")
    return FeedbackRequest(response_id=response_id.strip(), score=scores[raw], comment=comment)


# --- answers -------------------------------------------------------------------------------


def usage(prompt_tokens: int, completion_tokens: int | None = 0) -> dict:
    body = {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + (completion_tokens or 0),
    }
    if completion_tokens is not None:
        body["completion_tokens"] = completion_tokens
    return body


def fingerprint(version_id: int | None) -> str:
    return f"llmhub-v{version_id}" if version_id is not None else "llmhub-upstream"


def completion_body(
    *,
    response_id: str,
    created: int,
    model: str,
    version_id: int | None,
    choices: list[dict],  # [{"text", "finish_reason"}] in index order
    prompt_tokens: int,
    completion_tokens: int,
) -> dict:
    return {
        "id": response_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": fingerprint(version_id),
        "choices": [
            {
                "index": i,
                "text": c["text"],
                "logprobs": None,
                "finish_reason": c["finish_reason"],
            }
            for i, c in enumerate(choices)
        ],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def chat_body(
    *,
    response_id: str,
    created: int,
    model: str,
    version_id: int | None,
    choices: list[dict],
    prompt_tokens: int,
    completion_tokens: int,
) -> dict:
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": fingerprint(version_id),
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": c["text"]},
                "logprobs": None,
                "finish_reason": c["finish_reason"],
            }
            for i, c in enumerate(choices)
        ],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def chunk(
    *,
    route: str,
    response_id: str,
    created: int,
    model: str,
    version_id: int | None,
    index: int,
    text: str | None = None,
    finish_reason: str | None = None,
    role: bool = False,
    include_usage: bool = False,
) -> dict:
    """One streamed chunk for choice ``index`` (chat: ``role`` marks the opening delta)."""
    if route == ROUTE_CHAT:
        delta: dict = {}
        if role:
            delta = {"role": "assistant", "content": ""}
        elif text is not None:
            delta = {"content": text}
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        obj = "chat.completion.chunk"
    else:
        choice = {
            "index": index,
            "text": text or "",
            "logprobs": None,
            "finish_reason": finish_reason,
        }
        obj = "text_completion"
    body = {
        "id": response_id,
        "object": obj,
        "created": created,
        "model": model,
        "system_fingerprint": fingerprint(version_id),
        "choices": [choice],
    }
    if include_usage:
        body["usage"] = None
    return body


def usage_chunk(
    *,
    route: str,
    response_id: str,
    created: int,
    model: str,
    version_id: int | None,
    prompt_tokens: int,
    completion_tokens: int,
) -> dict:
    """The last chunk of a stream with ``include_usage``: no choices, the usage."""
    return {
        "id": response_id,
        "object": "chat.completion.chunk" if route == ROUTE_CHAT else "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": fingerprint(version_id),
        "choices": [],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def sse(data: dict | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


SSE_DONE = b"data: [DONE]\n\n"


def _base64_floats(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def embeddings_body(
    *,
    model: str,
    vectors: list[list[float]],
    prompt_tokens: int,
    version_id: int | None,
    encoding_format: str = "float",
) -> dict:
    encode = _base64_floats if encoding_format == "base64" else list
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode(vector)}
            for i, vector in enumerate(vectors)
        ],
        "model": model,
        "system_fingerprint": fingerprint(version_id),
        "usage": usage(prompt_tokens, None),
    }


def predict_body(
    *,
    response_id: str,
    model: str,
    results: list[list[tuple[str, float]]],  # per text, labels best first
    top_k: int | None,
    prompt_tokens: int,
    version_id: int | None,
) -> dict:
    data = []
    for i, labels in enumerate(results):
        best = labels[0] if labels else ("", 0.0)
        shown = labels if top_k is None else labels[:top_k]
        data.append(
            {
                "index": i,
                "label": best[0],
                "score": best[1],
                "scores": [{"label": label, "score": score} for label, score in shown],
            }
        )
    return {
        "id": response_id,
        "object": "list",
        "data": data,
        "model": model,
        "system_fingerprint": fingerprint(version_id),
        "usage": usage(prompt_tokens, None),
    }


def models_body(slugs: list[str]) -> dict:
    now = int(time.time())
    return {
        "object": "list",
        "data": [{"id": s, "object": "model", "created": now, "owned_by": "llmhub"} for s in slugs],
    }
