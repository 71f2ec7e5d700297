"""The OpenAI-compatible app end to end: real tiny models behind uvicorn, the official ``openai``
client and raw HTTP as the callers, records and metrics checked."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.engine.app import create_app
from serving.engine.config import EngineSettings
from serving.engine.limits import RateLimiter
from serving.engine.protocol import OpenAIError
from serving.engine.state import EngineState
from serving.engine.types import (
    SERVE_CLASSIFY,
    SERVE_EMBED,
    SERVE_GENERATE,
    EndpointSpec,
    KeySpec,
    ListSink,
    Snapshot,
    VersionSpec,
)
from tests.serving.engine.app_helpers import (
    LiveServer,
    counting_loader,
    feedback_of,
    record_for,
    requests_of,
    sha,
    wait_for,
)
from tests.serving.engine.models import (
    LABELS,
    tiny_causal_lm_dir,
    tiny_classifier_dir,
    tiny_encoder_dir,
)

KEY = "sk-project-one-key"
SCOPED = "sk-scoped-to-chat-bot"
REVOKED = "sk-revoked-key-000"
EXPIRED = "sk-expired-key-000"
OTHER = "sk-project-two-key"
BUDGET = "sk-budget-spent-00"
RPM = "sk-one-per-minute-0"
TPM = "sk-tokens-counted-0"
INTERNAL = "internal-playground-token"


class Clock:
    """The limiter's clock, moved by the tests (a minute passes in no time)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class World:
    def __init__(self, root: Path) -> None:
        causal = tiny_causal_lm_dir(root)  # 128 positions
        long = tiny_causal_lm_dir(root, n_positions=512)
        self.v11 = VersionSpec(11, "chat v1", str(causal), SERVE_GENERATE)
        self.v15 = VersionSpec(15, "chat v2", str(long), SERVE_GENERATE)
        self.v12 = VersionSpec(12, "sentiment v1", str(tiny_classifier_dir(root)), SERVE_CLASSIFY)
        self.v13 = VersionSpec(13, "embedder v1", str(tiny_encoder_dir(root)), SERVE_EMBED)
        self.v14 = VersionSpec(14, "broken v1", str(root / "no-such-dir"), SERVE_GENERATE)
        self.chat = EndpointSpec(1, 1, "chat-bot", revision=1, primary=self.v11)
        self.long = EndpointSpec(7, 1, "long-bot", revision=1, primary=self.v15)
        endpoints = (
            self.chat,
            EndpointSpec(2, 1, "sentiment", revision=1, primary=self.v12),
            EndpointSpec(3, 1, "embedder", revision=1, primary=self.v13),
            EndpointSpec(4, 1, "broken", revision=1, primary=self.v14),
            EndpointSpec(5, 1, "private-notes", revision=1, primary=self.v11, store_text=False),
            EndpointSpec(6, 2, "secret", revision=1, primary=self.v11),
            self.long,
        )
        self.clock = Clock()
        keys = (
            KeySpec(1, sha(KEY), 1),
            KeySpec(2, sha(SCOPED), 1, endpoint_id=1),
            KeySpec(3, sha(REVOKED), 1, revoked=True),
            KeySpec(4, sha(EXPIRED), 1, expires_at=time.time() - 60),
            KeySpec(5, sha(OTHER), 2),
            KeySpec(
                6,
                sha(BUDGET),
                1,
                token_budget=50,
                budget_used=50,
                budget_resets_at=self.clock.now + 7 * 86400,
            ),
            KeySpec(7, sha(RPM), 1, requests_per_minute=1),
            KeySpec(8, sha(TPM), 1, tokens_per_minute=100_000),
        )
        self.base = Snapshot(endpoints=endpoints, keys=keys, internal_token_hash=sha(INTERNAL))
        self.sink = ListSink()
        self.calls: list = []
        self.loads: list = []
        self.state = EngineState(
            settings=EngineSettings(max_batch_size=8, max_wait_ms=2),
            sink=self.sink,
            loader=counting_loader(self.calls, self.loads),
            limiter=RateLimiter(clock=self.clock),
        )
        self.state.apply(self.base)
        self.app = create_app(self.state)
        self.server = LiveServer(self.app)

    def with_endpoint(self, endpoint: EndpointSpec) -> Snapshot:
        endpoints = tuple(
            endpoint if e.endpoint_id == endpoint.endpoint_id else e for e in self.base.endpoints
        )
        return replace(self.base, endpoints=endpoints)

    def client(self, key: str = KEY, **kwargs) -> openai.OpenAI:
        kwargs.setdefault("max_retries", 0)
        return openai.OpenAI(base_url=self.server.v1, api_key=key, **kwargs)

    def post(self, path: str, body: object, key: str | None = KEY, **kwargs) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["authorization"] = f"Bearer {key}"
        if isinstance(body, bytes):
            return httpx.post(self.server.url + path, content=body, headers=headers, timeout=30)
        return httpx.post(self.server.url + path, json=body, headers=headers, timeout=30)

    def backend(self, version_id: int):
        return self.state._table.backends[version_id]


@pytest.fixture(scope="module")
def world_module(tmp_path_factory: pytest.TempPathFactory):
    world = World(tmp_path_factory.mktemp("serving-app"))
    with world.server:
        yield world
    world.state.close()


@pytest.fixture
def world(world_module: World) -> World:
    world_module.state.apply(world_module.base)
    world_module.state.cache.clear()
    world_module.sink.records.clear()
    world_module.calls.clear()
    return world_module


def sse_events(text: str) -> list:
    """The data payloads of a server-sent event stream ("[DONE]" kept as the string)."""
    out = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            payload = block[len("data: ") :]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def metric(world: World, name: str, **labels: str) -> float:
    """One sample of GET /metrics (0 when absent)."""
    text = httpx.get(world.server.url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


# --- the main paths with the official client --------------------------------------------------


def test_completion_with_the_openai_client(world: World) -> None:
    raw = world.client().completions.with_raw_response.create(
        model="chat-bot", prompt="Hello there", max_tokens=5, temperature=0
    )
    completion = raw.parse()
    assert completion.id.startswith("cmpl-") and raw.headers["x-request-id"] == completion.id
    assert completion.model == "chat-bot" and completion.object == "text_completion"
    assert completion.system_fingerprint == "llmhub-v11"
    assert raw.headers["x-llmhub-version"] == "11" and raw.headers["x-llmhub-canary"] == "false"
    choice = completion.choices[0]
    assert choice.finish_reason in ("stop", "length")
    prompt_tokens = len(world.backend(11).encode("Hello there"))
    assert completion.usage.prompt_tokens == prompt_tokens
    assert 1 <= completion.usage.completion_tokens <= 5
    assert completion.usage.total_tokens == prompt_tokens + completion.usage.completion_tokens
    record = record_for(world.sink, completion.id)
    assert (record.status_code, record.route, record.endpoint_id, record.version_id) == (
        200,
        "completions",
        1,
        11,
    )
    assert record.key_id == 1 and record.source == "api" and not record.cache_hit
    assert record.prompt_text == "Hello there" and record.completion_text == choice.text
    assert record.completion_tokens == completion.usage.completion_tokens
    assert record.ttft_ms is None or record.ttft_ms <= record.latency_ms


def test_chat_applies_the_default_template(world: World) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hi"},
    ]
    chat = world.client().chat.completions.create(
        model="chat-bot", messages=messages, max_completion_tokens=4, seed=3
    )
    assert chat.id.startswith("chatcmpl-") and chat.object == "chat.completion"
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].finish_reason in ("stop", "length")
    backend = world.backend(11)
    prompt = backend.chat_prompt(messages)
    assert "terse" in prompt and "Say hi" in prompt
    assert chat.usage.prompt_tokens == len(backend.encode(prompt))
    record = record_for(world.sink, chat.id)
    assert json.loads(record.prompt_text) == messages and record.route == "chat"


def test_chat_stream_with_usage_and_two_choices(world: World) -> None:
    stream = world.client().chat.completions.create(
        model="chat-bot",
        messages=[{"role": "user", "content": "Count"}],
        max_tokens=6,
        n=2,
        seed=1,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.usage is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.choices == [] and last.usage.completion_tokens >= 2
    body = [c for c in chunks[:-1]]
    assert {c.object for c in body} == {"chat.completion.chunk"}
    for index in (0, 1):
        mine = [c.choices[0] for c in body if c.choices[0].index == index]
        assert mine[0].delta.role == "assistant" and mine[0].delta.content == ""
        assert mine[-1].finish_reason in ("stop", "length")
        assert all(c.finish_reason is None for c in mine[:-1])
    assert len({c.id for c in chunks}) == 1
    record = record_for(world.sink, chunks[0].id)
    assert record.stream and not record.aborted
    assert record.completion_tokens == last.usage.completion_tokens


def test_completion_stream_raw_events(world: World) -> None:
    with httpx.stream(
        "POST",
        world.server.url + "/v1/completions",
        json={"model": "chat-bot", "prompt": "Once", "max_tokens": 5, "stream": True, "seed": 2},
        headers={"authorization": f"Bearer {KEY}"},
        timeout=30,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-llmhub-version"] == "11"
        text = response.read().decode()
    events = sse_events(text)
    assert text.endswith("data: [DONE]\n\n") and events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "text_completion" and "usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    record = record_for(world.sink, chunks[0]["id"])
    streamed = "".join(c["choices"][0]["text"] for c in chunks)
    assert record.completion_text == streamed and record.completion_tokens >= 1


def test_stop_sequence_cuts_the_answer(world: World) -> None:
    client = world.client()
    full = client.completions.create(
        model="chat-bot", prompt="The quick brown", max_tokens=24, temperature=0
    )
    text = full.choices[0].text
    stop = next((text[i : i + 2] for i in range(1, len(text) - 2) if text[i : i + 2].strip()), None)
    if stop is None:
        pytest.skip("the tiny model's greedy answer has no two visible characters")
    cut = client.completions.create(
        model="chat-bot", prompt="The quick brown", max_tokens=24, temperature=0, stop=[stop]
    )
    assert cut.choices[0].text == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_seed_gives_the_same_answer(world: World) -> None:
    client = world.client()
    kwargs = {"model": "chat-bot", "prompt": "Seeded", "max_tokens": 10, "temperature": 1.0}
    first = client.completions.create(seed=7, **kwargs).choices[0].text
    world.state.cache.clear()  # the second must run the model, not the cache
    second = client.completions.create(seed=7, **kwargs).choices[0].text
    assert first == second
    assert [r.cache_hit for r in requests_of(world.sink)] == [False, False]
    assert [c for c in world.calls if c[0] == "generate"] == [("generate", 11)] * 2


def test_embeddings_and_predict(world: World) -> None:
    result = world.client().embeddings.create(model="embedder", input=["hello world", "good day"])
    assert [d.index for d in result.data] == [0, 1] and result.model == "embedder"
    assert len(result.data[0].embedding) == 32 and result.usage.prompt_tokens > 0
    floats = world.post("/v1/embeddings", {"model": "embedder", "input": ["hello world"]}).json()
    assert floats["data"][0]["embedding"] == pytest.approx(result.data[0].embedding, abs=1e-6)
    response = world.post(
        "/v1/predict", {"model": "sentiment", "input": ["great", "awful"], "top_k": 2}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["x-request-id"] == body["id"] and body["id"].startswith("pred-")
    assert [d["index"] for d in body["data"]] == [0, 1]
    for item in body["data"]:
        assert item["label"] in LABELS and len(item["scores"]) == 2
        assert item["scores"][0] == {"label": item["label"], "score": item["score"]}
        assert item["scores"][0]["score"] >= item["scores"][1]["score"]
    full = world.post("/v1/predict", {"model": "sentiment", "input": "fine"}).json()
    assert abs(sum(s["score"] for s in full["data"][0]["scores"]) - 1.0) < 1e-4
    routes = [(r.route, r.status_code) for r in requests_of(world.sink)]
    assert routes == [("embeddings", 200)] * 2 + [("predict", 200)] * 2


# --- bad input: every one an envelope with the right status, recorded -------------------------

LONG_PROMPT = " ".join(["word"] * 300)

BAD_INPUTS = [
    # (path, body, key, status, code, param)
    ("/v1/completions", {"model": "nope", "prompt": "x"}, KEY, 404, "model_not_found", "model"),
    ("/v1/completions", {"model": "chat-bot", "prompt": "x"}, None, 401, "missing_api_key", None),
    (
        "/v1/completions",
        {"model": "chat-bot", "prompt": "x"},
        "sk-wrong-wrong",
        401,
        "invalid_api_key",
        None,
    ),
    (
        "/v1/completions",
        {"model": "chat-bot", "prompt": "x"},
        EXPIRED,
        401,
        "api_key_expired",
        None,
    ),
    (
        "/v1/completions",
        {"model": "chat-bot", "prompt": "x"},
        REVOKED,
        401,
        "api_key_revoked",
        None,
    ),
    (
        "/v1/completions",
        {"model": "chat-bot", "prompt": "x"},
        OTHER,
        404,
        "model_not_found",
        "model",
    ),
    (
        "/v1/predict",
        {"model": "sentiment", "input": "x"},
        SCOPED,
        403,
        "endpoint_not_allowed",
        "model",
    ),
    (
        "/v1/completions",
        {"model": "chat-bot", "prompt": "x", "max_tokens": 500},
        KEY,
        400,
        "context_length_exceeded",
        "max_tokens",
    ),
    (
        "/v1/completions",
        {"model": "chat-bot", "prompt": LONG_PROMPT},
        KEY,
        400,
        "context_length_exceeded",
        "prompt",
    ),
    (
        "/v1/chat/completions",
        {"model": "chat-bot", "messages": [{"role": "user", "content": LONG_PROMPT}]},
        KEY,
        400,
        "context_length_exceeded",
        "messages",
    ),
    ("/v1/completions", {"model": "chat-bot", "prompt": "x", "n": 9}, KEY, 400, None, "n"),
    (
        "/v1/completions",
        {"model": "chat-bot", "prompt": "x", "stop": list("abcde")},
        KEY,
        400,
        None,
        "stop",
    ),
    ("/v1/completions", b'{"model": "chat-bot", "prompt": ', KEY, 400, None, None),
    (
        "/v1/completions",
        {"model": "chat-bot", "prompt": "x", "logprobs": 1},
        KEY,
        400,
        "unsupported_parameter",
        "logprobs",
    ),
    ("/v1/completions", {"model": "broken", "prompt": "x"}, KEY, 503, "model_unavailable", None),
    ("/v1/completions", {"model": "sentiment", "prompt": "x"}, KEY, 400, "wrong_route", "model"),
    ("/v1/embeddings", {"model": "chat-bot", "input": "x"}, KEY, 400, "wrong_route", "model"),
    (
        "/v1/embeddings",
        {"model": "embedder", "input": "x", "encoding_format": "int8"},
        KEY,
        400,
        "unsupported_parameter",
        "encoding_format",
    ),
]


@pytest.mark.parametrize("path, body, key, status, code, param", BAD_INPUTS)
def test_bad_input_gets_the_envelope(world: World, path, body, key, status, code, param) -> None:
    response = world.post(path, body, key=key)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    rid = response.headers["x-request-id"]
    record = record_for(world.sink, rid)
    assert record.status_code == status and record.error_code
    assert record.key_id == (None if status == 401 else record.key_id)
    if status == 503:
        assert response.headers["x-should-retry"] == "false"
        assert "no-such-dir" in error["message"] or "broken" in error["message"]
    if status in (401,) or code == "model_not_found":
        assert record.endpoint_id is None
    if error["code"] == "wrong_route":
        assert ("/v1/predict" if "sentiment" in str(body) else "/v1/completions") in error[
            "message"
        ]
    if key == KEY:
        assert "x-ratelimit-limit-requests" not in response.headers  # unlimited key


def test_body_too_large_unknown_routes_and_methods(world: World) -> None:
    big = {"model": "chat-bot", "prompt": "x" * 1_100_000}
    response = world.post("/v1/completions", big)
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    long = world.post("/v1/completions", {"model": "chat-bot", "prompt": "big words " * 30_000})
    assert long.status_code == 400  # tokenised off the loop, then refused for the context
    assert long.json()["error"]["code"] == "context_length_exceeded"
    missing = httpx.post(world.server.url + "/v1/edits", json={}, timeout=10)
    assert missing.status_code == 404 and set(missing.json()["error"]) == {
        "message",
        "type",
        "param",
        "code",
    }
    wrong = httpx.get(world.server.url + "/v1/completions", timeout=10)
    assert wrong.status_code == 405 and "error" in wrong.json()


def test_openai_client_errors(world: World) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        world.client("sk-not-a-key").completions.create(model="chat-bot", prompt="x")
    assert info.value.code == "invalid_api_key"
    with pytest.raises(openai.NotFoundError):
        world.client().completions.create(model="nope", prompt="x")
    with pytest.raises(openai.PermissionDeniedError):
        world.client(SCOPED).embeddings.create(model="embedder", input="x")
    with pytest.raises(openai.BadRequestError) as info:
        world.client().completions.create(model="chat-bot", prompt="x", best_of=2)
    assert info.value.param == "best_of"


# --- limits, queue, retries --------------------------------------------------------------------


def test_openai_client_retries_after_a_rate_limit(world: World) -> None:
    seen: list[int] = []

    def on_response(response) -> None:
        seen.append(response.status_code)
        if response.status_code == 429:
            # the client waits Retry-After (real seconds); the limiter's minute passes with it
            world.clock.now += float(response.headers["retry-after"]) + 0.5

    http = openai.DefaultHttpxClient(event_hooks={"response": [on_response]})
    client = world.client(RPM, max_retries=2, http_client=http)
    first = client.completions.create(model="chat-bot", prompt="one", max_tokens=2)
    world.clock.now += 59.0  # one second of the window left
    started = time.monotonic()
    second = client.completions.create(model="chat-bot", prompt="two", max_tokens=2)
    assert first.id != second.id and seen == [200, 429, 200]
    assert time.monotonic() - started < 10
    statuses = [(r.key_id, r.status_code) for r in requests_of(world.sink)]
    assert statuses == [(7, 200), (7, 429), (7, 200)]
    refused = requests_of(world.sink)[1]
    assert refused.error_code == "rate_limit_exceeded" and refused.endpoint_id == 1


def test_budget_error_is_not_retried(world: World) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        world.client(BUDGET, max_retries=3).completions.create(model="chat-bot", prompt="x")
    assert info.value.code == "insufficient_quota"
    assert info.value.response.headers["x-should-retry"] == "false"
    assert [r.status_code for r in requests_of(world.sink)] == [429]  # one try, no retries
    assert world.calls == []


def test_rate_limit_headers_on_every_answer(world: World) -> None:
    ok = world.post(
        "/v1/completions", {"model": "chat-bot", "prompt": "x", "max_tokens": 2}, key=TPM
    )
    assert ok.status_code == 200 and ok.headers["x-ratelimit-limit-tokens"] == "100000"
    bad = world.post("/v1/completions", {"model": "chat-bot", "prompt": "x", "n": 0}, key=TPM)
    assert bad.status_code == 400 and bad.headers["x-ratelimit-limit-tokens"] == "100000"
    models = httpx.get(world.server.v1 + "/models", headers={"authorization": f"Bearer {TPM}"})
    assert models.headers["x-ratelimit-limit-tokens"] == "100000"
    fb = world.post("/v1/feedback", {"response_id": "cmpl-x", "score": 1}, key=TPM)
    assert fb.status_code == 404 and fb.headers["x-ratelimit-limit-tokens"] == "100000"


def test_full_queue_answers_429_at_once(tmp_path: Path, world: World) -> None:
    sink = ListSink()
    state = EngineState(
        settings=EngineSettings(max_batch_size=1, max_queue_depth=1, max_wait_ms=0),
        sink=sink,
    )
    state.apply(world.with_endpoint(replace(world.long, revision=2)))
    try:
        with LiveServer(create_app(state)) as server:

            async def one(client: httpx.AsyncClient) -> tuple[int, float, httpx.Response]:
                started = time.monotonic()
                response = await client.post(
                    "/v1/completions",
                    json={"model": "long-bot", "prompt": "Go", "max_tokens": 150},
                    headers={"authorization": f"Bearer {KEY}"},
                )
                return response.status_code, time.monotonic() - started, response

            async def burst() -> list:
                async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                    return await asyncio.gather(*(one(client) for _ in range(6)))

            results = asyncio.run(burst())
    finally:
        state.close()
    full = [r for r in results if r[0] == 429]
    assert full and any(r[0] == 200 for r in results), [r[0] for r in results]
    assert {r[0] for r in results} <= {200, 429}
    for _status, elapsed, response in full:
        assert response.json()["error"]["code"] == "queue_full"
        assert int(response.headers["retry-after"]) >= 1
        assert elapsed < 1.0  # refused at once, not after waiting
    assert len(requests_of(sink)) == 6


# --- canary, swaps, cache -----------------------------------------------------------------------


def test_canary_split_and_headers(world: World) -> None:
    world.state.apply(
        world.with_endpoint(replace(world.chat, canary=world.v15, canary_percent=25, revision=2))
    )
    random.seed(1234)
    endpoint = world.state._table.by_id[1]
    picks = [world.state.route(endpoint)[2] for _ in range(400)]
    share = sum(picks) / len(picks)
    assert 0.18 <= share <= 0.32, share
    versions = set()
    for _ in range(12):
        response = world.post(
            "/v1/completions", {"model": "chat-bot", "prompt": "hi", "max_tokens": 2, "seed": 1}
        )
        assert response.status_code == 200
        version, canary = response.headers["x-llmhub-version"], response.headers["x-llmhub-canary"]
        assert (version == "15") == (canary == "true")
        assert response.json()["system_fingerprint"] == f"llmhub-v{version}"
        record = record_for(world.sink, response.headers["x-request-id"])
        assert record.canary == (canary == "true") and record.version_id == int(version)
        versions.add(version)
    assert versions <= {"11", "15"}


def test_swap_under_concurrent_traffic_fails_nothing(world: World) -> None:
    # Versions only chat-bot serves, so each swap loads one backend and closes the other.
    a = replace(world.v11, version_id=31, label="chat a")
    b = replace(world.v11, version_id=32, label="chat b")
    snapshots = [
        world.with_endpoint(replace(world.chat, primary=a, revision=2)),
        world.with_endpoint(replace(world.chat, primary=b, revision=3)),
    ]
    world.state.apply(snapshots[1])
    loads_before = len(world.loads)
    stop = threading.Event()
    swaps: list[int] = []

    def swapper() -> None:
        i = 0
        while not stop.is_set() and i < 4:
            world.state.apply(snapshots[i % 2])
            swaps.append(i)
            i += 1
            time.sleep(0.05)

    async def one(client: httpx.AsyncClient, i: int) -> tuple[int, str, bool]:
        body = {
            "model": "chat-bot",
            "prompt": f"Request {i}",
            "max_tokens": 10,
            "stream": i % 2 == 0,
        }
        headers = {"authorization": f"Bearer {KEY}"}
        if body["stream"]:
            async with client.stream("POST", "/v1/completions", json=body, headers=headers) as r:
                text = (await r.aread()).decode()
                return (
                    r.status_code,
                    r.headers.get("x-llmhub-version", ""),
                    text.endswith("data: [DONE]\n\n") and '"error"' not in text,
                )
        r = await client.post("/v1/completions", json=body, headers=headers)
        return r.status_code, r.headers.get("x-llmhub-version", ""), "choices" in r.json()

    async def traffic() -> list:
        async with httpx.AsyncClient(base_url=world.server.url, timeout=60) as client:
            sem = asyncio.Semaphore(8)

            async def limited(i: int):
                async with sem:
                    return await one(client, i)

            return await asyncio.gather(*(limited(i) for i in range(48)))

    thread = threading.Thread(target=swapper)
    thread.start()
    try:
        results = asyncio.run(traffic())
    finally:
        stop.set()
        thread.join(60)
    failures = [r for r in results if r[0] != 200 or not r[2]]
    assert failures == [] and len(swaps) >= 2
    assert {r[1] for r in results} <= {"31", "32"} and len({r[1] for r in results}) == 2
    assert len([v for v in world.loads[loads_before:] if v in (31, 32)]) == len(swaps)
    assert len(requests_of(world.sink)) == 48


def test_a_backend_closed_between_route_and_submit_is_routed_again(world: World) -> None:
    from serving.engine import protocol as p

    a = replace(world.v11, version_id=41, label="chat a")
    b = replace(world.v11, version_id=42, label="chat b")
    world.state.apply(world.with_endpoint(replace(world.chat, primary=a, revision=4)))
    engine = world.app.state.engine
    before = engine.reroutes
    call = engine._new_call(p.ROUTE_COMPLETIONS)
    call.endpoint = world.chat  # the copy the request resolved before the swap
    _version, old = engine.route(call, p.ROUTE_COMPLETIONS)
    req = p.parse_generation({"model": "chat-bot", "prompt": "hi", "max_tokens": 3}, call.route)
    ids, max_tokens = asyncio.run(engine._prompt(old, req))
    world.state.apply(world.with_endpoint(replace(world.chat, primary=b, revision=5)))  # closes a

    async def submit() -> list:
        iterator, first = await engine._start(call, req, old, ids, max_tokens)
        events = [first]
        async for event in iterator:
            events.append(event)
        return events

    events = asyncio.run(submit())
    assert engine.reroutes == before + 1 and call.version.version_id == 42
    assert events[-1].finish_reason in ("stop", "length")


def test_cache_hit_runs_no_model_and_replays_streams(world: World) -> None:
    hits_before = metric(world, "llmhub:cache_hits_total", endpoint="chat-bot", version="11")
    body = {"model": "chat-bot", "prompt": "Cache me", "max_tokens": 6, "temperature": 0}
    first = world.post("/v1/completions", body).json()
    second = world.post("/v1/completions", body).json()
    assert [c for c in world.calls if c[0] == "generate"] == [("generate", 11)]
    assert second["choices"] == first["choices"] and second["usage"] == first["usage"]
    assert second["id"] != first["id"]
    hit = record_for(world.sink, second["id"])
    assert hit.cache_hit and hit.completion_tokens == first["usage"]["completion_tokens"]
    streamed = world.post(
        "/v1/completions", {**body, "stream": True, "stream_options": {"include_usage": True}}
    )
    events = sse_events(streamed.text)
    assert events[-1] == "[DONE]" and events[-2]["usage"] == first["usage"]
    text = "".join(e["choices"][0]["text"] for e in events[:-2])
    assert text == first["choices"][0]["text"]
    assert len(world.calls) == 1
    hits = metric(world, "llmhub:cache_hits_total", endpoint="chat-bot", version="11")
    assert hits - hits_before == 2


def test_cache_cleared_when_the_revision_changes(world: World) -> None:
    body = {"model": "chat-bot", "prompt": "Cache me too", "max_tokens": 4, "seed": 5}
    world.post("/v1/completions", body)
    world.post("/v1/completions", body)
    assert len(world.calls) == 1
    world.state.apply(world.with_endpoint(replace(world.chat, revision=9)))  # same version
    again = world.post("/v1/completions", body).json()
    assert len(world.calls) == 2 and not record_for(world.sink, again["id"]).cache_hit


# --- streams the client drops, records, metrics, models, feedback, playground ------------------


def test_aborted_stream_is_recorded_and_settled(world: World) -> None:
    before = world.state.limiter.headers(world.state.key_for(TPM))
    body = {
        "model": "long-bot",
        "prompt": "Tell",
        "max_tokens": 400,
        "stream": True,
        "temperature": 1,
    }
    with (
        httpx.Client(base_url=world.server.url, timeout=30) as client,
        client.stream(
            "POST", "/v1/completions", json=body, headers={"authorization": f"Bearer {TPM}"}
        ) as response,
    ):
        rid = response.headers["x-request-id"]
        lines = 0
        for line in response.iter_lines():
            if line.startswith("data: "):
                lines += 1
            if lines >= 3:
                break
    record = record_for(world.sink, rid)
    assert record is not None and record.aborted and record.stream
    assert 0 < record.completion_tokens < 400
    assert wait_for(lambda: world.backend(15).running() == 0, 5)
    used = record.prompt_tokens + record.completion_tokens
    after = world.state.limiter.headers(world.state.key_for(TPM))
    assert int(before["x-ratelimit-remaining-tokens"]) - used == int(
        after["x-ratelimit-remaining-tokens"]
    )


def test_every_request_is_recorded(world: World) -> None:
    world.post("/v1/completions", {"model": "chat-bot", "prompt": "a", "max_tokens": 1})
    world.post("/v1/completions", {"model": "chat-bot", "prompt": "a"}, key=None)
    world.post("/v1/completions", {"model": "ghost", "prompt": "a"})
    world.post("/v1/chat/completions", {"model": "chat-bot", "messages": [], "max_tokens": 1})
    records = requests_of(world.sink)
    assert [(r.status_code, r.endpoint_id, r.key_id) for r in records] == [
        (200, 1, 1),
        (401, None, None),
        (404, None, 1),
        (400, None, 1),
    ]
    assert len({r.response_id for r in records}) == 4


def test_store_text_off_keeps_no_text(world: World) -> None:
    response = world.post(
        "/v1/completions", {"model": "private-notes", "prompt": "secret", "max_tokens": 2}
    )
    record = record_for(world.sink, response.headers["x-request-id"])
    assert (
        record.status_code == 200 and record.prompt_text is None and record.completion_text is None
    )


def test_metrics_endpoint(world: World) -> None:
    world.post("/v1/completions", {"model": "chat-bot", "prompt": "m", "max_tokens": 3})
    world.post("/v1/completions", {"model": "chat-bot", "prompt": "m", "n": 20})
    response = httpx.get(world.server.url + "/metrics")
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    ok = ("llmhub:requests_total", (("endpoint", "chat-bot"), ("status", "200"), ("version", "11")))
    assert samples.get(ok, 0) >= 1
    assert any(
        name == "llmhub:requests_total" and ("status", "400") in labels for name, labels in samples
    )
    assert any(name == "llmhub:num_requests_running" for name, _ in samples)
    assert any(name.startswith("llmhub:e2e_request_latency_seconds") for name, _ in samples)
    running = ("llmhub:num_requests_running", (("endpoint", "chat-bot"), ("version", "11")))
    assert samples[running] == 0
    v42 = replace(world.v11, version_id=42, label="chat c")
    world.state.apply(world.with_endpoint(replace(world.chat, primary=v42, revision=7)))
    after = httpx.get(world.server.url + "/metrics").text
    assert 'llmhub:num_requests_running{endpoint="chat-bot",version="42"}' in after
    assert 'llmhub:num_requests_running{endpoint="chat-bot",version="11"}' not in after
    assert 'llmhub:requests_total{endpoint="chat-bot",status="200",version="11"}' in after


def test_models_list_follows_the_key(world: World) -> None:
    assert [m.id for m in world.client().models.list()] == [
        "broken",
        "chat-bot",
        "embedder",
        "long-bot",
        "private-notes",
        "sentiment",
    ]
    assert [m.id for m in world.client(SCOPED).models.list()] == ["chat-bot"]
    assert [m.id for m in world.client(OTHER).models.list()] == ["secret"]
    with pytest.raises(openai.AuthenticationError):
        world.client(REVOKED).models.list()


def test_feedback_by_response_id(world: World) -> None:
    answer = world.post(
        "/v1/completions", {"model": "chat-bot", "prompt": "rate me", "max_tokens": 2}
    ).json()
    ok = world.post("/v1/feedback", {"response_id": answer["id"], "score": "up", "comment": "nice"})
    assert ok.status_code == 200 and ok.json() == {"ok": True}
    [fb] = feedback_of(world.sink)
    assert (fb.response_id, fb.endpoint_id, fb.key_id, fb.score, fb.comment) == (
        answer["id"],
        1,
        1,
        1,
        "nice",
    )
    unknown = world.post("/v1/feedback", {"response_id": "cmpl-nope", "score": 1})
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "response_id"
    other = world.post("/v1/feedback", {"response_id": answer["id"], "score": -1}, key=OTHER)
    assert other.status_code == 404
    bad = world.post("/v1/feedback", {"response_id": answer["id"], "score": 3})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "score"
    assert len(feedback_of(world.sink)) == 1


def test_playground_token(world: World) -> None:
    body = {"model": "chat-bot", "prompt": "play", "max_tokens": 2}
    response = world.post("/v1/completions", body, key=INTERNAL, headers={"x-llmhub-project": "1"})
    assert response.status_code == 200
    assert not any(h.startswith("x-ratelimit") for h in response.headers)
    record = record_for(world.sink, response.headers["x-request-id"])
    assert record.source == "playground" and record.key_id is None and record.endpoint_id == 1
    other = world.post(
        "/v1/completions",
        {**body, "model": "secret"},
        key=INTERNAL,
        headers={"x-llmhub-project": "1"},
    )
    assert other.status_code == 404
    no_project = world.post("/v1/completions", body, key=INTERNAL)
    assert no_project.status_code == 400


def test_health_lists_loaded_and_broken_versions(world: World) -> None:
    health = httpx.get(world.server.url + "/health").json()
    by_version = {m["version_id"]: m for m in health["models"]}
    assert by_version[11]["state"] == "loaded" and "chat-bot" in by_version[11]["endpoints"]
    assert by_version[14]["state"] == "unavailable" and by_version[14]["error"]


class FailsMidStream:
    """A real backend whose generations fail after two events (as a batch that crashed)."""

    def __init__(self, inner) -> None:
        self._inner = inner

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    def generate(self, params):
        from serving.engine.backends import BackendError

        inner = self._inner.generate(params)

        async def events():
            try:
                for _ in range(2):
                    yield await anext(inner)
                raise BackendError("the batch ran out of memory")
            finally:
                await inner.aclose()

        return events()


def one_off_state(world: World, sink: ListSink, **settings) -> EngineState:
    from serving.engine.backends import load_backend

    wrap = settings.pop("wrap", None)

    def loader(spec, engine_settings):
        backend = load_backend(spec, engine_settings)
        return wrap(backend) if wrap else backend

    state = EngineState(settings=EngineSettings(**settings), sink=sink, loader=loader)
    state.apply(world.with_endpoint(replace(world.long, revision=3)))
    return state


def test_an_error_mid_stream_is_an_error_event(world: World) -> None:
    sink = ListSink()
    state = one_off_state(world, sink, wrap=FailsMidStream)
    try:
        with LiveServer(create_app(state)) as server:
            body = {"model": "long-bot", "prompt": "Go", "max_tokens": 50, "stream": True}
            response = httpx.post(
                server.url + "/v1/completions",
                json=body,
                headers={"authorization": f"Bearer {KEY}"},
                timeout=30,
            )
            assert response.status_code == 200  # the stream had started
            events = sse_events(response.text)
            assert "[DONE]" not in events
            assert events[-1]["error"]["code"] == "model_error"
            assert "out of memory" in events[-1]["error"]["message"]
            client = openai.OpenAI(base_url=server.v1, api_key=KEY, max_retries=0)
            with pytest.raises(openai.APIError, match="out of memory"):
                list(client.completions.create(**body))
    finally:
        state.close()
    record = requests_of(sink)[0]
    assert (record.status_code, record.error_code, record.aborted) == (503, "model_error", False)
    assert record.completion_tokens >= 1


class SlowEvents(FailsMidStream):
    """A real backend whose events arrive 20 ms apart (a slow model, so a slot stays held)."""

    def generate(self, params):
        inner = self._inner.generate(params)

        async def events():
            try:
                async for event in inner:
                    await asyncio.sleep(0.02)
                    yield event
            finally:
                await inner.aclose()

        return events()


def test_concurrency_cap_answers_429_at_once(world: World) -> None:
    sink = ListSink()
    state = one_off_state(world, sink, max_concurrency=1, wrap=SlowEvents)
    try:
        with LiveServer(create_app(state)) as server:

            async def both() -> tuple[str, httpx.Response]:
                async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                    body = {"model": "long-bot", "prompt": "Go", "max_tokens": 30}
                    headers = {"authorization": f"Bearer {KEY}"}
                    async with client.stream(
                        "POST", "/v1/completions", json={**body, "stream": True}, headers=headers
                    ) as slow:
                        lines = slow.aiter_lines()
                        await anext(lines)  # the first holds the only slot now
                        started = time.monotonic()
                        busy = await client.post("/v1/completions", json=body, headers=headers)
                        assert time.monotonic() - started < 1.0
                        rest = [line async for line in lines]
                    return "\n".join(rest), busy

            rest, busy = asyncio.run(both())
    finally:
        state.close()
    assert rest.rstrip().endswith("data: [DONE]")
    assert busy.status_code == 429 and busy.json()["error"]["code"] == "server_busy"
    assert int(busy.headers["retry-after"]) >= 1
    assert [r.status_code for r in requests_of(sink)] == [429, 200]
    assert state.in_flight == 0


def test_a_version_whose_files_are_missing(world: World, tmp_path: Path, monkeypatch) -> None:
    import shutil

    from serving.engine import state as state_module

    class Limiter(RateLimiter):
        def sync_keys(self, keys, *, usage_flushed_before=None):
            flushed.append(usage_flushed_before)
            return super().sync_keys(keys, usage_flushed_before=usage_flushed_before)

    flushed: list = []
    loads: list = []
    late = tmp_path / "arrives-later"
    version = VersionSpec(61, "late v1", str(late), SERVE_GENERATE)
    state = EngineState(
        settings=EngineSettings(),
        sink=ListSink(),
        loader=counting_loader([], loads),
        limiter=Limiter(),
    )
    endpoints = (
        EndpointSpec(1, 1, "late", revision=1, primary=version),
        EndpointSpec(2, 1, "fine", revision=1, primary=world.v11),
    )
    try:
        state.apply(Snapshot(endpoints=endpoints, keys=world.base.keys, usage_flushed_before=5.0))
        with pytest.raises(OpenAIError) as info:
            state.route(endpoints[0])
        assert info.value.status == 503 and info.value.headers["x-should-retry"] == "false"
        assert state.route(endpoints[1])[0] == world.v11  # the other endpoint serves
        shutil.copytree(world.v11.model_dir, late)
        state.apply(Snapshot(endpoints=endpoints, keys=world.base.keys, usage_flushed_before=6.0))
        assert sorted(loads) == [11, 61]  # a failure is not retried at every refresh
        monkeypatch.setattr(state_module, "LOAD_RETRY_SECONDS", 0.0)
        state.apply(Snapshot(endpoints=endpoints, keys=world.base.keys, usage_flushed_before=7.0))
        state.apply(Snapshot(endpoints=endpoints, keys=world.base.keys, usage_flushed_before=8.0))
        assert sorted(loads) == [11, 61, 61]
        assert state.route(endpoints[0])[0] == version
        assert [m["state"] for m in state.loaded()] == ["loaded", "loaded"]
        assert flushed == [5.0, 6.0, 7.0, 8.0]  # the limiter learns what the database holds
    finally:
        state.close()


def test_a_client_gone_while_sending_its_body(world: World) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", world.server.port)) as sock:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Length: 1000\r\n\r\n"
            b'{"model": "chat'
        )
        time.sleep(0.2)
    record = wait_for(lambda: requests_of(world.sink), 5)
    assert [(r.status_code, r.error_code, r.aborted) for r in record] == [
        (499, "client_disconnected", True)
    ]


def test_a_chat_template_that_refuses_the_messages(world: World, tmp_path: Path) -> None:
    import shutil

    model_dir = tmp_path / "templated"
    shutil.copytree(world.v11.model_dir, model_dir)
    config_path = model_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = (
        "{% for m in messages %}{% if m.role == 'system' %}"
        "{{ raise_exception('System messages are not supported') }}{% endif %}"
        "{{ m.role }}: {{ m.content }}\n{% endfor %}assistant:"
    )
    config_path.write_text(json.dumps(config))
    version = VersionSpec(71, "templated v1", str(model_dir), SERVE_GENERATE)
    world.state.apply(world.with_endpoint(replace(world.chat, primary=version, revision=11)))
    ok = world.post(
        "/v1/chat/completions",
        {"model": "chat-bot", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    )
    assert ok.status_code == 200, ok.text
    refused = world.post(
        "/v1/chat/completions",
        {"model": "chat-bot", "messages": [{"role": "system", "content": "x"}], "max_tokens": 2},
    )
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "messages"
    assert "System messages are not supported" in refused.json()["error"]["message"]


class StallingBackend:
    """A generate backend whose model answers ``before`` events ``gap`` seconds apart, then
    stalls until the request goes away (its aclose is recorded)."""

    serve_kind = SERVE_GENERATE
    max_context = 128

    def __init__(self, spec: VersionSpec, settings: EngineSettings) -> None:
        self.spec = spec
        self.before = 1
        self.gap = 0.0
        self.closed: list[bool] = []

    def encode(self, text: str) -> list[int]:
        return [1] * len(text.split())

    def chat_prompt(self, messages: list[dict]) -> str:
        return "prompt"

    def generate(self, params):
        from serving.engine.backends import Delta

        backend = self

        class Events:
            def __init__(self) -> None:
                self.sent = 0

            def __aiter__(self):
                return self

            async def __anext__(self):
                if self.sent < backend.before:
                    if self.sent:
                        await asyncio.sleep(backend.gap)
                    self.sent += 1
                    return Delta(0, "a", 1)
                await asyncio.Event().wait()  # the model never answers again

            async def aclose(self) -> None:
                backend.closed.append(True)

        return Events()

    def queue_depth(self) -> int:
        return 0

    def running(self) -> int:
        return 0

    def close(self, *, drain: bool = True) -> None:
        pass


def test_a_stalled_model_answers_model_timeout_and_a_slow_one_does_not(tmp_path) -> None:
    spec = VersionSpec(91, "stalling", str(tmp_path), SERVE_GENERATE)
    backends: list[StallingBackend] = []

    def loader(version: VersionSpec, settings: EngineSettings) -> StallingBackend:
        backends.append(StallingBackend(version, settings))
        return backends[-1]

    sink = ListSink()
    state = EngineState(settings=EngineSettings(), sink=sink, loader=loader)
    state.apply(
        Snapshot(
            endpoints=(EndpointSpec(1, 1, "stall", revision=1, primary=spec),),
            keys=(KeySpec(1, sha(KEY), 1),),
        )
    )
    body = {"model": "stall", "prompt": "one two", "max_tokens": 50}
    headers = {"Authorization": f"Bearer {KEY}"}
    with LiveServer(create_app(state, event_timeout_s=0.4)) as server:
        url = server.url + "/v1/completions"
        started = time.monotonic()
        plain = httpx.post(url, json=body, headers=headers, timeout=30)
        assert plain.status_code == 503 and plain.json()["error"]["code"] == "model_timeout"
        assert 0.35 < time.monotonic() - started < 5
        streamed = httpx.post(url, json={**body, "stream": True}, headers=headers, timeout=30)
        events = sse_events(streamed.text)
        assert events[0]["choices"][0]["text"] == "a"
        assert events[-1]["error"]["code"] == "model_timeout"
        # Events 0.25 s apart (each gap under the timeout, the whole answer far over it): not a
        # timeout; then the stall after the fifth one is.
        backends[0].before, backends[0].gap = 5, 0.25
        started = time.monotonic()
        streamed = httpx.post(url, json={**body, "stream": True}, headers=headers, timeout=30)
        events = sse_events(streamed.text)
        assert [e["choices"][0]["text"] for e in events[:-1]] == ["a"] * 5
        assert events[-1]["error"]["code"] == "model_timeout"
        assert time.monotonic() - started > 1.2
    assert len(backends[0].closed) == 3  # every stalled generation was closed (its slot freed)
    records = requests_of(sink)
    assert [r.error_code for r in records] == ["model_timeout"] * 3
    state.close()
