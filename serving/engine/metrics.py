"""Prometheus metrics of the inference process, named as vLLM names its own (``llmhub:``
instead of ``vllm:``) so dashboards built for vLLM need only the prefix changed.

Every metric is labelled ``endpoint`` (the slug) and ``version`` (the version id as a string,
``"upstream"`` for an external engine). Counters: ``llmhub:requests_total`` (label ``status``,
the HTTP status, every answered or refused request), ``llmhub:request_success_total`` (label
``finished_reason``: stop, length, abort..., ``none`` where a route has none),
``llmhub:prompt_tokens_total``, ``llmhub:generation_tokens_total``, ``llmhub:cache_hits_total``,
``llmhub:rate_limited_total`` (label ``kind``: requests, tokens, budget, or the app's own,
such as queue). Histograms, of successful requests only (a refusal's few microseconds would
hide real latency): ``llmhub:time_to_first_token_seconds``, ``llmhub:inter_token_latency_seconds``,
``llmhub:e2e_request_latency_seconds``. Gauges: ``llmhub:num_requests_running``,
``llmhub:num_requests_waiting``.

Each :class:`EngineMetrics` has its own registry (not prometheus_client's global one), so tests
and several apps in one process do not clash. Plain Python: no Django.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

UPSTREAM_VERSION = "upstream"  # the version label of an endpoint served by an external engine

# 1 ms to 60 s: a cache hit answers in about a millisecond, a long CPU generation in tens of
# seconds; finer at the low end, where tiny models' inter-token latencies are.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    60.0,
)

LABELS = ("endpoint", "version")


class EngineMetrics:
    """The inference process's metrics; :meth:`render` is the body of ``GET /metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # prometheus_client adds the _total suffix to counters itself.
        self.requests = Counter(
            "llmhub:requests",
            "Requests answered or refused, by HTTP status.",
            (*LABELS, "status"),
            registry=r,
        )
        self.success = Counter(
            "llmhub:request_success",
            "Requests that finished successfully, by finish reason.",
            (*LABELS, "finished_reason"),
            registry=r,
        )
        self.prompt_tokens = Counter(
            "llmhub:prompt_tokens", "Prompt tokens processed.", LABELS, registry=r
        )
        self.generation_tokens = Counter(
            "llmhub:generation_tokens", "Tokens generated.", LABELS, registry=r
        )
        self.cache_hits = Counter(
            "llmhub:cache_hits", "Requests answered from the response cache.", LABELS, registry=r
        )
        self.limited = Counter(
            "llmhub:rate_limited",
            "Requests refused by a key's limits, by limit.",
            (*LABELS, "kind"),
            registry=r,
        )
        self.ttft = Histogram(
            "llmhub:time_to_first_token_seconds",
            "Time to first token in seconds.",
            LABELS,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inter_token = Histogram(
            "llmhub:inter_token_latency_seconds",
            "Time between consecutive tokens of a stream in seconds.",
            LABELS,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "llmhub:e2e_request_latency_seconds",
            "End-to-end request latency in seconds.",
            LABELS,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.running = Gauge(
            "llmhub:num_requests_running", "Requests running now.", LABELS, registry=r
        )
        self.waiting = Gauge(
            "llmhub:num_requests_waiting", "Requests admitted, waiting to run.", LABELS, registry=r
        )

    def request_done(
        self,
        *,
        endpoint: str,
        version: str,
        status: int,
        finish_reason: str = "",
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        e2e_seconds: float,
        ttft_seconds: float | None = None,
        inter_token_seconds: Sequence[float] = (),
        cache_hit: bool = False,
    ) -> None:
        """Count one answered or refused request (tokens count also for a failed stream)."""
        labels = (endpoint, str(version))
        self.requests.labels(*labels, str(status)).inc()
        if prompt_tokens:
            self.prompt_tokens.labels(*labels).inc(prompt_tokens)
        if completion_tokens:
            self.generation_tokens.labels(*labels).inc(completion_tokens)
        if cache_hit:
            self.cache_hits.labels(*labels).inc()
        if status >= 400:
            return
        self.success.labels(*labels, finish_reason or "none").inc()
        self.e2e.labels(*labels).observe(e2e_seconds)
        if ttft_seconds is not None:
            self.ttft.labels(*labels).observe(ttft_seconds)
        if inter_token_seconds:
            histogram = self.inter_token.labels(*labels)
            for seconds in inter_token_seconds:
                histogram.observe(seconds)

    def rate_limited(self, *, endpoint: str, version: str, kind: str) -> None:
        """Count one request refused by a limit (``kind``: a key's requests, tokens, budget;
        the app's queue).
        The refusal's own answer is counted by :meth:`request_done` (status 429)."""
        self.limited.labels(endpoint, str(version), kind).inc()

    def set_queue(self, *, endpoint: str, version: str, running: int, waiting: int) -> None:
        """Set the running and waiting requests of one loaded version."""
        labels = (endpoint, str(version))
        self.running.labels(*labels).set(running)
        self.waiting.labels(*labels).set(waiting)

    def forget_version(self, *, endpoint: str, version: str) -> None:
        """Drop the queue gauges of a version no longer loaded (they would stay at their last
        value); its counters stay, as Prometheus expects of counters."""
        for gauge in (self.running, self.waiting):
            with contextlib.suppress(KeyError):  # not set, or forgotten already
                gauge.remove(endpoint, str(version))

    def render(self) -> tuple[bytes, str]:
        """The text exposition of every metric, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
