"""The contract between the inference engine and whoever runs it (``serving/runner.py``).

The runner builds a :class:`Snapshot` from the database (endpoints, the local directories of
the versions they serve, key hashes and limits) and hands it to the engine whenever something
changed; the engine hands back :class:`RequestRecord` and :class:`FeedbackRecord` objects
through a :class:`RecordSink`, which the runner writes to the request log in batches.

All plain data: no Django, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

# What a model version can answer (the engine picks the backend from it).
SERVE_GENERATE = "generate"  # causal LMs and seq2seq: /v1/completions, /v1/chat/completions
SERVE_EMBED = "embed"  # encoders (masked LMs, sentence encoders): /v1/embeddings
SERVE_CLASSIFY = "classify"  # sequence classifiers: /v1/predict
SERVE_KINDS = (SERVE_GENERATE, SERVE_EMBED, SERVE_CLASSIFY)


@dataclass(frozen=True)
class VersionSpec:
    """A model version to load: its id, a label for people ("sentiment v3"), its local files."""

    version_id: int
    label: str
    model_dir: str
    serve_kind: str  # one of SERVE_KINDS


@dataclass(frozen=True)
class UpstreamSpec:
    """An external OpenAI-compatible engine: base URL ending in /v1, its model name, its key."""

    base_url: str
    model: str
    api_key: str = ""


@dataclass(frozen=True)
class EndpointSpec:
    endpoint_id: int
    project_id: int
    slug: str  # what clients pass as `model`
    revision: int  # grows on every change; the engine clears the endpoint's cache when it moves
    primary: VersionSpec | None = None
    canary: VersionSpec | None = None
    canary_percent: int = 0  # 0..100 of requests go to `canary`
    upstream: UpstreamSpec | None = None  # set for external engines (then primary is None)
    store_text: bool = True  # False: records carry no prompt or completion text


@dataclass(frozen=True)
class KeySpec:
    """A serving key as the engine checks it. Revoked and expired keys are included, so the
    engine can say which (401 with a reason) instead of "unknown key"."""

    key_id: int
    key_hash: str  # sha256 hex of the plaintext
    project_id: int
    endpoint_id: int | None = None  # None: every endpoint of the project
    expires_at: float | None = None  # epoch seconds
    revoked: bool = False
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    token_budget: int | None = None  # tokens per budget period
    budget_used: int = 0  # tokens used in the current period when the snapshot was built
    budget_resets_at: float | None = None  # epoch seconds when the current period ends


@dataclass(frozen=True)
class Snapshot:
    endpoints: tuple[EndpointSpec, ...] = ()
    keys: tuple[KeySpec, ...] = ()
    # sha256 of the token the web process sends for the playground (all endpoints, no limits).
    internal_token_hash: str = ""
    # Epoch seconds: every record the engine handed to the sink before this time had been
    # written when the snapshot was read, so the keys' budget_used includes its tokens (the
    # limiter stops counting that usage locally: RateLimiter.sync_keys(usage_flushed_before=)).
    # None: the snapshot includes everything (tests, benches without a log).
    usage_flushed_before: float | None = None


@dataclass
class RequestRecord:
    """One answered or refused request, for the request log."""

    response_id: str
    created_at: float  # epoch seconds when the request arrived
    endpoint_id: int | None  # None when the request named no endpoint the key may call
    version_id: int | None
    key_id: int | None
    route: str  # completions | chat | embeddings | predict
    status_code: int
    latency_ms: float
    source: str = "api"  # api | playground
    error_code: str = ""
    ttft_ms: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hit: bool = False
    stream: bool = False
    canary: bool = False
    aborted: bool = False
    finish_reason: str = ""
    prompt_text: str | None = None
    completion_text: str | None = None


@dataclass
class FeedbackRecord:
    """A thumbs up (+1) or down (-1) an application sent for one of its responses."""

    response_id: str
    endpoint_id: int
    key_id: int | None
    score: int
    comment: str = ""
    created_at: float = 0.0


class RecordSink(Protocol):
    def put(self, record: RequestRecord | FeedbackRecord) -> None:
        """Take a record; must not block (the runner queues it and writes in batches)."""


@dataclass
class ListSink:
    """Keeps records in memory (tests, benches without a database)."""

    records: list = field(default_factory=list)

    def put(self, record: RequestRecord | FeedbackRecord) -> None:
        self.records.append(record)
