"""Request parsing and validation of the OpenAI-compatible routes (no model needed)."""

from __future__ import annotations

import base64
import json
import struct

import pytest

from serving.engine import protocol as p
from serving.engine.protocol import OpenAIError


def gen(route: str = p.ROUTE_COMPLETIONS, **fields) -> p.GenerationRequest:
    base = {"model": "m"}
    base.update({"prompt": "Hi"} if route == p.ROUTE_COMPLETIONS else {"messages": MESSAGES})
    base.update(fields)
    return p.parse_generation(base, route)


MESSAGES = [{"role": "user", "content": "Hello"}]


def refused(call, *args, **kwargs) -> OpenAIError:
    with pytest.raises(OpenAIError) as info:
        call(*args, **kwargs)
    return info.value


def test_defaults_and_accepted_fields() -> None:
    req = gen(
        max_tokens=5,
        temperature=0,
        top_p=0.5,
        n=2,
        stop=["\n", "###"],
        seed=3,
        stream=True,
        stream_options={"include_usage": True},
        user="u-1",
        presence_penalty=0,
        frequency_penalty=0.0,
        logprobs=None,  # null is "absent"
    )
    assert (req.max_tokens, req.temperature, req.top_p, req.n) == (5, 0.0, 0.5, 2)
    assert req.stop == ("\n", "###") and req.seed == 3 and req.include_usage
    plain = gen()
    assert (plain.max_tokens, plain.temperature, plain.n, plain.stop, plain.stream) == (
        None,
        1.0,
        1,
        (),
        False,
    )
    assert gen(stop="END").stop == ("END",)
    assert gen(prompt=["only one"]).prompt == "only one"
    assert gen(p.ROUTE_CHAT, max_completion_tokens=7).max_tokens == 7


@pytest.mark.parametrize(
    "name, value",
    [
        ("logprobs", 2),
        ("tools", [{"type": "function"}]),
        ("echo", True),
        ("suffix", "x"),
        ("best_of", 2),
        ("logit_bias", {"1": 5}),
        ("response_format", {"type": "json_object"}),
        ("no_such_thing", 1),
    ],
)
def test_unsupported_parameters_are_named(name: str, value: object) -> None:
    error = refused(gen, **{name: value})
    assert (error.status, error.param, error.type) == (400, name, "invalid_request_error")
    assert "not supported by this server" in error.message


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"n": 0}, "n"),
        ({"n": 9}, "n"),
        ({"n": "2"}, "n"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": [""]}, "stop"),
        ({"stop": 5}, "stop"),
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"seed": -1}, "seed"),
        ({"seed": "x"}, "seed"),
        ({"stream": "yes"}, "stream"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"stream": True, "stream_options": {"continuous_usage_stats": True}}, None),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"model": ""}, "model"),
        ({"model": 3}, "model"),
        ({"max_tokens": 3, "max_completion_tokens": 4}, "max_completion_tokens"),
    ],
)
def test_wrong_types_and_ranges_name_the_parameter(fields: dict, param: str | None) -> None:
    error = refused(gen, **fields)
    assert error.status == 400
    assert error.param == (param or "stream_options.continuous_usage_stats")


def test_missing_model_and_prompt() -> None:
    assert refused(p.parse_generation, {"prompt": "x"}, p.ROUTE_COMPLETIONS).param == "model"
    assert refused(p.parse_generation, {"model": "m"}, p.ROUTE_COMPLETIONS).param == "prompt"
    assert refused(p.parse_generation, {"model": "m"}, p.ROUTE_CHAT).param == "messages"
    # prompt belongs to completions, messages to chat
    assert refused(gen, p.ROUTE_CHAT, prompt="x").param == "prompt"


@pytest.mark.parametrize(
    "messages, param",
    [
        ([], "messages"),
        ("hi", "messages"),
        ([{"role": "robot", "content": "x"}], "messages"),
        ([{"role": "user", "content": 5}], "messages"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], None),
        ([{"role": "assistant", "content": "x", "tool_calls": [{}]}], "messages[0].tool_calls"),
    ],
)
def test_bad_messages(messages: object, param: str | None) -> None:
    error = refused(p.parse_generation, {"model": "m", "messages": messages}, p.ROUTE_CHAT)
    assert error.status == 400
    assert error.param == (param or "messages[0].content[0]")


def test_messages_normalised() -> None:
    req = gen(
        p.ROUTE_CHAT,
        messages=[
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}],
            },
            {"role": "assistant", "content": "Hi", "refusal": None},
        ],
    )
    assert req.messages == (
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi"},
    )
    assert json.loads(req.record_text())[1]["content"] == "Hello"


@pytest.mark.parametrize(
    "raw, fragment",
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b"", "empty"),
        (b'{"model": NaN}', "not valid JSON"),
        (b"[" * 5000 + b"]" * 5000, "deeper"),
        (b'{"prompt": "a\\u0000b"}', "NUL"),
        (b"\xff\xfe", "not valid JSON"),
        (b'{"n": ' + b"9" * 5000 + b"}", "not valid JSON"),
    ],
)
def test_bad_json_bodies(raw: bytes, fragment: str) -> None:
    error = refused(p.read_json, raw)
    assert error.status == 400 and fragment in error.message


def test_context_checks() -> None:
    req = gen()
    assert p.fit_max_tokens(req, 10, 128) == 16  # completions default, as OpenAI
    assert p.fit_max_tokens(req, 120, 128) == 8  # the default shrinks to what fits
    chat = gen(p.ROUTE_CHAT)
    assert p.fit_max_tokens(chat, 10, 128) == 118
    assert p.fit_max_tokens(chat, 10, 4096) == 256  # capped
    long = refused(p.fit_max_tokens, req, 128, 128)
    assert (long.param, long.code) == ("prompt", "context_length_exceeded")
    assert refused(p.fit_max_tokens, chat, 200, 128).param == "messages"
    over = refused(p.fit_max_tokens, gen(max_tokens=100), 40, 128)
    assert (over.param, over.code) == ("max_tokens", "context_length_exceeded")
    assert "100" in over.message and "40" in over.message and "128" in over.message
    assert p.fit_max_tokens(gen(max_tokens=88), 40, 128) == 88


def test_embeddings_predict_feedback() -> None:
    assert p.parse_embeddings({"model": "e", "input": "x"}).inputs == ("x",)
    assert p.parse_embeddings({"model": "e", "input": ["a", "b"], "encoding_format": "float"})
    assert refused(
        p.parse_embeddings, {"model": "e", "input": "x", "encoding_format": "int8"}
    ).param == ("encoding_format")
    b64 = p.parse_embeddings({"model": "e", "input": "x", "encoding_format": "base64"})
    body = p.embeddings_body(
        model="e", vectors=[[0.5, -1.0]], prompt_tokens=1, version_id=1, encoding_format="base64"
    )
    assert b64.encoding_format == "base64"
    raw = base64.b64decode(body["data"][0]["embedding"])
    assert struct.unpack("<2f", raw) == (0.5, -1.0)
    assert (
        refused(p.parse_embeddings, {"model": "e", "input": "x", "dimensions": 8}).param
        == "dimensions"
    )
    assert refused(p.parse_embeddings, {"model": "e", "input": [1, 2]}).param == "input"
    assert refused(p.parse_embeddings, {"model": "e", "input": ["x"] * 257}).param == "input"
    assert refused(p.parse_embeddings, {"model": "e", "input": [""]}).param == "input"
    assert p.parse_predict({"model": "c", "input": ["a"], "top_k": 2}).top_k == 2
    assert refused(p.parse_predict, {"model": "c", "input": "a", "top_k": 0}).param == "top_k"
    assert p.parse_feedback({"response_id": "cmpl-1", "score": "down"}).score == -1
    assert p.parse_feedback({"response_id": "cmpl-1", "score": 1, "comment": "ok"}).score == 1
    assert refused(p.parse_feedback, {"response_id": "cmpl-1", "score": True}).param == "score"
    assert refused(p.parse_feedback, {"response_id": "cmpl-1", "score": 0}).param == "score"
    assert refused(p.parse_feedback, {"score": 1}).param == "response_id"


def test_envelope_and_chunks() -> None:
    error = OpenAIError(401, "no", code="invalid_api_key")
    assert error.body() == {
        "error": {
            "message": "no",
            "type": "authentication_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    assert OpenAIError(403, "x").type == "permission_error"
    meta = {"response_id": "chatcmpl-1", "created": 1, "model": "m", "version_id": 4}
    opening = p.chunk(route=p.ROUTE_CHAT, **meta, index=0, role=True, include_usage=True)
    assert opening["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert opening["usage"] is None and opening["system_fingerprint"] == "llmhub-v4"
    last = p.chunk(route=p.ROUTE_COMPLETIONS, **meta, index=1, finish_reason="stop")
    assert last["choices"][0] == {"index": 1, "text": "", "logprobs": None, "finish_reason": "stop"}
    assert "usage" not in last
    tail = p.usage_chunk(route=p.ROUTE_CHAT, **meta, prompt_tokens=3, completion_tokens=2)
    assert tail["choices"] == [] and tail["usage"]["total_tokens"] == 5
    assert p.sse({"a": 1}) == b'data: {"a":1}\n\n'
    assert p.new_response_id(p.ROUTE_PREDICT).startswith("pred-")
