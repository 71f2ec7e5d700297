"""The response cache: deterministic requests (temperature 0, or a seed) answered from memory.

An entry is keyed by the endpoint, the version that answered and every parameter that shapes
the answer, so a new version never serves an old answer; the engine also clears an endpoint's
entries when its version changes (:meth:`ResponseCache.clear_endpoint`), which frees them at
once. Least recently used entries go first when the cache is full.

What does not shape the answer is left out of the key: ``stream`` and ``stream_options`` (a
streamed request may be answered from a non-streamed one's entry and the other way round; the
app re-chunks it) and ``user`` (an end-user id for abuse tracking). Numbers are compared by
value (``temperature: 0`` and ``0.0`` are one key); absent and explicit-default parameters are
not (the app passes the parameters it validated, defaults filled in, for the best hit rate).

Plain Python, thread-safe (one lock).
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass

# Request fields that do not change what the model answers.
IGNORED_PARAMS = frozenset({"stream", "stream_options", "user"})


@dataclass(frozen=True)
class CachedAnswer:
    """What a cached request answers: its choices (``[{"text", "finish_reason"}]`` or what the
    app stores) and its usage."""

    choices: list[dict]
    prompt_tokens: int
    completion_tokens: int


def _canonical(value: object) -> object:
    """Floats that are whole numbers become ints, so 0 and 0.0 give one key (bools stay)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


class ResponseCache:
    """An LRU map from request keys to answers; ``max_entries=0`` turns it off."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 0:
            raise ValueError(f"max_entries must be 0 or more (got {max_entries}).")
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[int, CachedAnswer]] = OrderedDict()
        self._by_endpoint: dict[int, set[str]] = {}
        self._hits = 0
        self._misses = 0
        self._evictions = 0

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0

    @staticmethod
    def is_deterministic(params: dict) -> bool:
        """True when the same request always gets the same answer: temperature 0, or a seed."""
        if params.get("seed") is not None:
            return True
        temperature = params.get("temperature")
        return (
            isinstance(temperature, int | float)
            and not isinstance(temperature, bool)
            and temperature == 0
        )

    def key(self, *, endpoint_id: int, version_id: int, route: str, params: dict) -> str:
        """The sha256 (hex) of everything that shapes the answer, as canonical JSON."""
        shaping = {k: v for k, v in params.items() if k not in IGNORED_PARAMS}
        document = {
            "endpoint": endpoint_id,
            "version": version_id,
            "route": route,
            "params": _canonical(shaping),
        }
        text = json.dumps(
            document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
        )
        return hashlib.sha256(text.encode()).hexdigest()

    def get(self, key: str) -> CachedAnswer | None:
        """The answer stored under ``key`` (a copy the caller may change), counted as a hit,
        or None, counted as a miss."""
        if not self.enabled:
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self._misses += 1
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            answer = entry[1]
        return CachedAnswer(
            choices=copy.deepcopy(answer.choices),
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
        )

    def put(self, key: str, answer: CachedAnswer, *, endpoint_id: int) -> None:
        """Store ``answer`` (copied: later changes to it do not reach the cache); the least
        recently used entries go when the cache is full."""
        if not self.enabled:
            return
        stored = CachedAnswer(
            choices=copy.deepcopy(answer.choices),
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
        )
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._forget_key(old[0], key)
            self._entries[key] = (endpoint_id, stored)
            self._by_endpoint.setdefault(endpoint_id, set()).add(key)
            while len(self._entries) > self.max_entries:
                evicted, (evicted_endpoint, _) = self._entries.popitem(last=False)
                self._forget_key(evicted_endpoint, evicted)
                self._evictions += 1

    def clear_endpoint(self, endpoint_id: int) -> int:
        """Drop every entry of one endpoint (its version changed); returns how many."""
        with self._lock:
            keys = self._by_endpoint.pop(endpoint_id, set())
            for key in keys:
                del self._entries[key]
            return len(keys)

    def clear(self) -> int:
        """Drop every entry; returns how many."""
        with self._lock:
            count = len(self._entries)
            self._entries.clear()
            self._by_endpoint.clear()
            return count

    def stats(self) -> dict:
        """Hits, misses, entries, evictions and the size limit."""
        with self._lock:
            return {
                "hits": self._hits,
                "misses": self._misses,
                "entries": len(self._entries),
                "evictions": self._evictions,
                "max_entries": self.max_entries,
            }

    def _forget_key(self, endpoint_id: int, key: str) -> None:
        keys = self._by_endpoint.get(endpoint_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_endpoint[endpoint_id]
