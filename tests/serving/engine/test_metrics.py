"""The inference process's Prometheus metrics, read back through prometheus_client's parser."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.engine.metrics import UPSTREAM_VERSION, EngineMetrics


def samples(metrics: EngineMetrics) -> dict[tuple[str, frozenset], float]:
    """(sample name, labels) -> value, from the rendered text."""
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def labels(endpoint="bot", version="3", **extra) -> frozenset:
    return frozenset({"endpoint": endpoint, "version": version, **extra}.items())


def test_requests_tokens_and_latencies_are_counted_by_endpoint_and_version():
    metrics = EngineMetrics()
    metrics.request_done(
        endpoint="bot",
        version="3",
        status=200,
        finish_reason="stop",
        prompt_tokens=12,
        completion_tokens=5,
        e2e_seconds=0.3,
        ttft_seconds=0.05,
        inter_token_seconds=[0.002, 0.003, 0.004, 0.05],
    )
    metrics.request_done(
        endpoint="bot",
        version="3",
        status=200,
        finish_reason="length",
        prompt_tokens=8,
        completion_tokens=32,
        e2e_seconds=1.5,
        ttft_seconds=0.2,
    )
    metrics.request_done(
        endpoint="bot",
        version="3",
        status=200,
        finish_reason="stop",
        prompt_tokens=12,
        completion_tokens=5,
        e2e_seconds=0.0008,
        cache_hit=True,
    )
    metrics.request_done(endpoint="bot", version="4", status=400, e2e_seconds=0.001)
    got = samples(metrics)

    assert got[("llmhub:requests_total", labels(status="200"))] == 3
    assert got[("llmhub:requests_total", labels(version="4", status="400"))] == 1
    assert got[("llmhub:request_success_total", labels(finished_reason="stop"))] == 2
    assert got[("llmhub:request_success_total", labels(finished_reason="length"))] == 1
    assert got[("llmhub:prompt_tokens_total", labels())] == 32
    assert got[("llmhub:generation_tokens_total", labels())] == 42
    assert got[("llmhub:cache_hits_total", labels())] == 1

    assert got[("llmhub:e2e_request_latency_seconds_count", labels())] == 3
    assert got[("llmhub:e2e_request_latency_seconds_sum", labels())] == pytest.approx(1.8008)
    assert got[("llmhub:e2e_request_latency_seconds_bucket", labels(le="0.001"))] == 1
    assert got[("llmhub:e2e_request_latency_seconds_bucket", labels(le="0.5"))] == 2
    assert got[("llmhub:e2e_request_latency_seconds_bucket", labels(le="60.0"))] == 3
    assert got[("llmhub:time_to_first_token_seconds_count", labels())] == 2
    assert got[("llmhub:time_to_first_token_seconds_bucket", labels(le="0.1"))] == 1
    assert got[("llmhub:inter_token_latency_seconds_count", labels())] == 4
    assert got[("llmhub:inter_token_latency_seconds_bucket", labels(le="0.005"))] == 3

    # A refused request is counted by status, but is no success and has no latency sample.
    assert ("llmhub:request_success_total", labels(version="4", finished_reason="none")) not in got
    assert ("llmhub:e2e_request_latency_seconds_count", labels(version="4")) not in got


def test_rate_limits_queues_and_upstream_endpoints():
    metrics = EngineMetrics()
    metrics.rate_limited(endpoint="bot", version="3", kind="requests")
    metrics.rate_limited(endpoint="bot", version="3", kind="requests")
    metrics.rate_limited(endpoint="bot", version="3", kind="budget")
    metrics.set_queue(endpoint="bot", version="3", running=4, waiting=9)
    metrics.set_queue(endpoint="bot", version="3", running=2, waiting=0)
    metrics.request_done(
        endpoint="ext", version=UPSTREAM_VERSION, status=200, e2e_seconds=0.1, completion_tokens=7
    )
    got = samples(metrics)
    assert got[("llmhub:rate_limited_total", labels(kind="requests"))] == 2
    assert got[("llmhub:rate_limited_total", labels(kind="budget"))] == 1
    assert got[("llmhub:num_requests_running", labels())] == 2
    assert got[("llmhub:num_requests_waiting", labels())] == 0
    upstream = labels(endpoint="ext", version="upstream")
    assert got[("llmhub:generation_tokens_total", upstream)] == 7
    assert got[("llmhub:request_success_total", labels("ext", "upstream", finished_reason="none"))]

    metrics.forget_version(endpoint="bot", version="3")
    metrics.forget_version(endpoint="bot", version="3")  # twice is fine
    got = samples(metrics)
    assert ("llmhub:num_requests_running", labels()) not in got
    assert got[("llmhub:rate_limited_total", labels(kind="requests"))] == 2


def test_every_family_is_exposed_with_help_and_type():
    metrics = EngineMetrics()
    body, _ = metrics.render()
    families = {f.name: f.type for f in text_string_to_metric_families(body.decode())}
    assert families == {
        "llmhub:requests": "counter",
        "llmhub:request_success": "counter",
        "llmhub:prompt_tokens": "counter",
        "llmhub:generation_tokens": "counter",
        "llmhub:cache_hits": "counter",
        "llmhub:rate_limited": "counter",
        "llmhub:time_to_first_token_seconds": "histogram",
        "llmhub:inter_token_latency_seconds": "histogram",
        "llmhub:e2e_request_latency_seconds": "histogram",
        "llmhub:num_requests_running": "gauge",
        "llmhub:num_requests_waiting": "gauge",
    }


def test_two_instances_in_one_process_do_not_clash():
    first, second = EngineMetrics(), EngineMetrics()
    first.request_done(endpoint="bot", version="3", status=200, e2e_seconds=0.1)
    assert samples(first)[("llmhub:requests_total", labels(status="200"))] == 1
    assert ("llmhub:requests_total", labels(status="200")) not in samples(second)
