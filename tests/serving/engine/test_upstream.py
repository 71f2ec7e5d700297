"""External engines: an endpoint forwarding to an OpenAI-compatible upstream, tested with a
second LLMHub inference process (a real tiny model under uvicorn) as the upstream."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from serving.engine.app import create_app
from serving.engine.config import EngineSettings
from serving.engine.state import EngineState
from serving.engine.types import (
    SERVE_EMBED,
    SERVE_GENERATE,
    EndpointSpec,
    KeySpec,
    ListSink,
    Snapshot,
    UpstreamSpec,
    VersionSpec,
)
from serving.engine.upstream import UpstreamClient
from tests.serving.engine.app_helpers import LiveServer, record_for, requests_of, sha
from tests.serving.engine.models import tiny_causal_lm_dir, tiny_encoder_dir

UPSTREAM_KEY = "sk-upstream-service-key"
KEY = "sk-front-door-key"


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


async def _slow(request):
    await asyncio.sleep(3)
    return JSONResponse({})


class Upstreams:
    def __init__(self, root) -> None:
        causal = VersionSpec(21, "upstream lm", str(tiny_causal_lm_dir(root)), SERVE_GENERATE)
        encoder = VersionSpec(22, "upstream enc", str(tiny_encoder_dir(root)), SERVE_EMBED)
        self.up_sink = ListSink()
        self.up_state = EngineState(settings=EngineSettings(), sink=self.up_sink)
        self.up_state.apply(
            Snapshot(
                endpoints=(
                    EndpointSpec(50, 9, "up-model", revision=1, primary=causal),
                    EndpointSpec(51, 9, "up-embed", revision=1, primary=encoder),
                ),
                keys=(KeySpec(90, sha(UPSTREAM_KEY), 9),),
            )
        )
        self.upstream = LiveServer(create_app(self.up_state))
        self.slow = LiveServer(
            Starlette(routes=[Route("/v1/completions", _slow, methods=["POST"])])
        )
        self.sink = ListSink()
        self.state = EngineState(settings=EngineSettings(), sink=self.sink)
        self.client = UpstreamClient(read_timeout=1.0, connect_timeout=1.0)
        self.front = LiveServer(create_app(self.state, upstream=self.client))

    def apply(self) -> None:
        v1 = self.upstream.v1
        self.state.apply(
            Snapshot(
                endpoints=(
                    EndpointSpec(
                        1,
                        1,
                        "gateway",
                        revision=1,
                        upstream=UpstreamSpec(v1, "up-model", UPSTREAM_KEY),
                    ),
                    EndpointSpec(
                        2,
                        1,
                        "gateway-embed",
                        revision=1,
                        upstream=UpstreamSpec(v1, "up-embed", UPSTREAM_KEY),
                    ),
                    EndpointSpec(
                        3,
                        1,
                        "wrong-key",
                        revision=1,
                        upstream=UpstreamSpec(v1, "up-model", "sk-bad"),
                    ),
                    EndpointSpec(
                        4,
                        1,
                        "dead",
                        revision=1,
                        upstream=UpstreamSpec(f"http://127.0.0.1:{closed_port()}/v1", "x"),
                    ),
                    EndpointSpec(
                        5, 1, "slow", revision=1, upstream=UpstreamSpec(self.slow.v1, "x")
                    ),
                ),
                keys=(KeySpec(1, sha(KEY), 1),),
            )
        )

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.front.v1, api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def ups(tmp_path_factory):
    world = Upstreams(tmp_path_factory.mktemp("upstream"))
    with world.upstream, world.slow, world.front:
        world.apply()
        yield world
    world.state.close()
    world.up_state.close()


@pytest.fixture
def up(ups: Upstreams) -> Upstreams:
    ups.sink.records.clear()
    ups.up_sink.records.clear()
    ups.state.cache.clear()
    return ups


def test_completion_through_the_upstream(up: Upstreams) -> None:
    raw = up.openai().completions.with_raw_response.create(
        model="gateway", prompt="Hello", max_tokens=4, seed=1
    )
    completion = raw.parse()
    assert completion.model == "gateway" and completion.id == raw.headers["x-request-id"]
    assert raw.headers["x-llmhub-version"] == "upstream"
    [upstream_record] = requests_of(up.up_sink)
    assert upstream_record.key_id == 90 and upstream_record.endpoint_id == 50
    assert upstream_record.status_code == 200
    record = record_for(up.sink, completion.id)
    assert (record.endpoint_id, record.version_id, record.key_id) == (1, None, 1)
    assert record.prompt_tokens == upstream_record.prompt_tokens == completion.usage.prompt_tokens
    assert record.completion_tokens == upstream_record.completion_tokens
    assert record.completion_text == completion.choices[0].text


def test_chat_stream_passes_through_with_usage(up: Upstreams) -> None:
    stream = up.openai().chat.completions.create(
        model="gateway",
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
        temperature=1.0,
    )
    chunks = list(stream)
    assert {c.model for c in chunks} == {"gateway"} and len({c.id for c in chunks}) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
    record = record_for(up.sink, chunks[0].id)
    assert record.stream and record.completion_text == text
    assert record.completion_tokens == chunks[-1].usage.completion_tokens


def test_stream_without_usage_strips_the_upstream_usage(up: Upstreams) -> None:
    with httpx.stream(
        "POST",
        up.front.url + "/v1/completions",
        json={"model": "gateway", "prompt": "Once", "max_tokens": 5, "stream": True},
        headers={"authorization": f"Bearer {KEY}"},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        text = response.read().decode()
    assert text.endswith("data: [DONE]\n\n")
    events = [json.loads(b[6:]) for b in text.split("\n\n") if b.startswith("data: {")]
    assert events and all("usage" not in e and e["choices"] for e in events)
    [upstream_record] = requests_of(up.up_sink)
    assert upstream_record.stream  # the upstream was asked for usage all the same:
    record = record_for(up.sink, events[0]["id"])
    assert record.completion_tokens == upstream_record.completion_tokens >= 1
    assert record.prompt_tokens == upstream_record.prompt_tokens


def test_upstream_errors_pass_on(up: Upstreams) -> None:
    too_long = up.openai()
    with pytest.raises(openai.BadRequestError) as info:
        too_long.completions.create(model="gateway", prompt="x", max_tokens=500)
    assert info.value.code == "context_length_exceeded" and info.value.param == "max_tokens"
    assert requests_of(up.sink)[-1].status_code == 400
    bad_key = httpx.post(
        up.front.url + "/v1/completions",
        json={"model": "wrong-key", "prompt": "x"},
        headers={"authorization": f"Bearer {KEY}"},
    )
    assert bad_key.status_code == 502 and bad_key.json()["error"]["code"] == "upstream_auth"


def test_unreachable_and_slow_upstreams(up: Upstreams) -> None:
    for model, status, code in (
        ("dead", 502, "upstream_unreachable"),
        ("slow", 504, "upstream_timeout"),
    ):
        for stream in (False, True):
            response = httpx.post(
                up.front.url + "/v1/completions",
                json={"model": model, "prompt": "x", "stream": stream},
                headers={"authorization": f"Bearer {KEY}"},
                timeout=30,
            )
            assert response.status_code == status, response.text
            assert response.json()["error"]["code"] == code
    assert [r.status_code for r in requests_of(up.sink)] == [502, 502, 504, 504]


def test_cache_in_front_of_the_upstream(up: Upstreams) -> None:
    client = up.openai()
    first = client.completions.create(model="gateway", prompt="Same", max_tokens=3, temperature=0)
    second = client.completions.create(model="gateway", prompt="Same", max_tokens=3, temperature=0)
    assert first.choices[0].text == second.choices[0].text
    assert len(requests_of(up.up_sink)) == 1
    assert record_for(up.sink, second.id).cache_hit


def test_embeddings_through_the_upstream(up: Upstreams) -> None:
    result = up.openai().embeddings.create(model="gateway-embed", input=["one", "two"])
    assert result.model == "gateway-embed" and len(result.data) == 2
    assert len(result.data[0].embedding) == 32
    [upstream_record] = requests_of(up.up_sink)
    record = requests_of(up.sink)[-1]
    assert record.prompt_tokens == upstream_record.prompt_tokens == result.usage.prompt_tokens
