"""The response cache: keys, hits and misses, LRU eviction, clearing one endpoint."""

from __future__ import annotations

import pytest

from serving.engine.cache import CachedAnswer, ResponseCache

PARAMS = {
    "model": "support-bot",
    "messages": [{"role": "user", "content": "Hello"}],
    "max_tokens": 32,
    "temperature": 0,
    "top_p": 1.0,
    "n": 1,
    "stop": ["\n"],
    "seed": None,
}


def answer(text: str = "Hi there.") -> CachedAnswer:
    return CachedAnswer(
        choices=[{"text": text, "finish_reason": "stop"}], prompt_tokens=5, completion_tokens=3
    )


def key_of(cache: ResponseCache, params: dict, *, endpoint_id=1, version_id=10, route="chat"):
    return cache.key(endpoint_id=endpoint_id, version_id=version_id, route=route, params=params)


def test_a_miss_then_a_hit_are_counted():
    cache = ResponseCache(8)
    key = key_of(cache, PARAMS)
    assert cache.get(key) is None
    cache.put(key, answer(), endpoint_id=1)
    assert cache.get(key) == answer()
    assert cache.get(key) == answer()
    assert cache.stats() == {
        "hits": 2,
        "misses": 1,
        "entries": 1,
        "evictions": 0,
        "max_entries": 8,
    }


@pytest.mark.parametrize(
    "change",
    [
        {"messages": [{"role": "user", "content": "Hello!"}]},
        {"messages": [{"role": "system", "content": "Hello"}]},
        {"max_tokens": 33},
        {"temperature": 0.5},
        {"top_p": 0.9},
        {"n": 2},
        {"stop": ["\n", "."]},
        {"seed": 7},
        {"logit_bias": {"50": 1}},
        {"prompt": "Hello"},
    ],
    ids=lambda change: next(iter(change)),
)
def test_the_key_differs_by_any_parameter(change):
    cache = ResponseCache(8)
    assert key_of(cache, {**PARAMS, **change}) != key_of(cache, PARAMS)


def test_the_key_differs_by_version_endpoint_and_route():
    cache = ResponseCache(8)
    base = key_of(cache, PARAMS)
    assert key_of(cache, PARAMS, version_id=11) != base
    assert key_of(cache, PARAMS, endpoint_id=2) != base
    assert key_of(cache, PARAMS, route="completions") != base


def test_streaming_and_the_user_id_do_not_change_the_key():
    cache = ResponseCache(8)
    base = key_of(cache, PARAMS)
    assert key_of(cache, {**PARAMS, "stream": True}) == base
    assert key_of(cache, {**PARAMS, "stream": False}) == base
    streamed = {**PARAMS, "stream": True, "stream_options": {"include_usage": True}}
    assert key_of(cache, streamed) == base
    assert key_of(cache, {**PARAMS, "user": "customer-42"}) == base


def test_the_key_ignores_dict_order_and_how_a_number_is_written():
    cache = ResponseCache(8)
    reordered = dict(reversed(list(PARAMS.items())))
    assert key_of(cache, reordered) == key_of(cache, PARAMS)
    assert key_of(cache, {**PARAMS, "temperature": 0.0}) == key_of(cache, PARAMS)
    # ...but a bool is not a number: seed True is not seed 1.
    assert key_of(cache, {**PARAMS, "seed": True}) != key_of(cache, {**PARAMS, "seed": 1})


def test_least_recently_used_entries_go_first():
    cache = ResponseCache(2)
    a, b, c = (key_of(cache, {**PARAMS, "max_tokens": n}) for n in (1, 2, 3))
    cache.put(a, answer("a"), endpoint_id=1)
    cache.put(b, answer("b"), endpoint_id=1)
    assert cache.get(a) is not None  # a is now the most recently used
    cache.put(c, answer("c"), endpoint_id=1)
    assert cache.get(b) is None
    assert cache.get(a).choices[0]["text"] == "a"
    assert cache.get(c).choices[0]["text"] == "c"
    assert cache.stats()["entries"] == 2 and cache.stats()["evictions"] == 1


def test_putting_a_key_again_replaces_its_answer():
    cache = ResponseCache(2)
    key = key_of(cache, PARAMS)
    cache.put(key, answer("old"), endpoint_id=1)
    cache.put(key, answer("new"), endpoint_id=1)
    assert cache.get(key).choices[0]["text"] == "new"
    assert cache.stats()["entries"] == 1
    assert cache.clear_endpoint(1) == 1


def test_clear_endpoint_clears_only_that_endpoint():
    cache = ResponseCache(8)
    one = [key_of(cache, {**PARAMS, "n": n}, endpoint_id=1) for n in (1, 2, 3)]
    two = key_of(cache, PARAMS, endpoint_id=2)
    for key in one:
        cache.put(key, answer(), endpoint_id=1)
    cache.put(two, answer("two"), endpoint_id=2)
    assert cache.clear_endpoint(1) == 3
    assert all(cache.get(key) is None for key in one)
    assert cache.get(two).choices[0]["text"] == "two"
    assert cache.clear_endpoint(1) == 0
    assert cache.stats()["entries"] == 1


def test_callers_cannot_change_what_is_stored():
    cache = ResponseCache(8)
    key = key_of(cache, PARAMS)
    stored = answer()
    cache.put(key, stored, endpoint_id=1)
    stored.choices[0]["text"] = "changed after put"
    got = cache.get(key)
    got.choices[0]["index"] = 0  # the app adds fields to what it answers
    assert cache.get(key).choices == [{"text": "Hi there.", "finish_reason": "stop"}]


def test_a_disabled_cache_stores_nothing():
    cache = ResponseCache(0)
    key = key_of(cache, PARAMS)
    cache.put(key, answer(), endpoint_id=1)
    assert cache.get(key) is None
    assert cache.stats()["entries"] == 0 and cache.clear_endpoint(1) == 0
    with pytest.raises(ValueError, match="max_entries"):
        ResponseCache(-1)


@pytest.mark.parametrize(
    "params, deterministic",
    [
        ({"temperature": 0}, True),
        ({"temperature": 0.0}, True),
        ({"temperature": 0.7, "seed": 3}, True),
        ({"seed": 0}, True),
        ({"temperature": 0.7}, False),
        ({}, False),  # the default temperature is 1
        ({"temperature": 1, "seed": None}, False),
        ({"temperature": False}, False),
    ],
)
def test_deterministic_requests(params, deterministic):
    assert ResponseCache.is_deterministic(params) is deterministic
