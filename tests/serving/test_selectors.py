"""The deploy stage's reads: scoping, the serve kinds, what a rollback restores, key usage by
budget period, the figures the endpoint page compares (version_stats) and the runner's read."""

from __future__ import annotations

import time
from datetime import date, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from serving import selectors, services
from serving.engine.types import FeedbackRecord
from serving.models import KeyUsage
from tests.serving.builders import request_record, stored_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def manager(world):
    return world.users["manager"]


@pytest.fixture
def endpoint(world, manager):
    return services.endpoint_create(actor=manager, project=world.project, name="Bot")


def test_serve_kinds() -> None:
    class V:
        def __init__(self, kind: str) -> None:
            self.task_kind = kind

    assert [
        selectors.serve_kind_for(V(k))
        for k in ("pretrain_clm", "sft_causal", "seq2seq", "classification", "pretrain_mlm", "qa")
    ] == ["generate", "generate", None, "classify", "embed", None]


def test_scoping_by_team_and_role(world, manager, endpoint) -> None:
    services.serving_key_create(actor=manager, project=world.project, name="k")
    services.request_logs_ingest(records=[request_record(endpoint)])
    for read in (
        selectors.endpoints_for_user,
        selectors.serving_keys_for_user,
        selectors.request_logs_for_user,
    ):
        assert read(world.users["viewer"]).count() == 1
        assert read(world.users["rater"]).count() == 0  # raters do not see the team's work
        assert read(world.outsider).count() == 0


def test_previous_primary_and_the_runners_read(world, manager, endpoint, tmp_path) -> None:
    assert selectors.previous_primary(endpoint) is None
    first, second = (stored_version(world.project, tmp_path) for _ in range(2))
    assert not selectors.active_endpoints_for_serving().exists()  # nothing to serve yet
    services.endpoint_promote(actor=manager, endpoint=endpoint, version=first)
    services.endpoint_promote(actor=manager, endpoint=endpoint, version=second)
    endpoint.refresh_from_db()
    assert selectors.previous_primary(endpoint) == first
    external = services.endpoint_create(
        actor=manager,
        project=world.project,
        name="vllm",
        engine="external",
        upstream_url="http://127.0.0.1:9000/v1",
        upstream_model="m",
    )
    assert list(selectors.active_endpoints_for_serving()) == [endpoint, external]
    services.endpoint_archive(actor=manager, endpoint=external)
    assert list(selectors.active_endpoints_for_serving()) == [endpoint]


def test_budget_windows() -> None:
    assert selectors.budget_window("day", today=date(2026, 12, 2)) == (
        date(2026, 12, 2),
        date(2026, 12, 3),
    )
    start, end = selectors.budget_window("week", today=date(2026, 12, 2))  # a Wednesday
    assert start == date(2026, 11, 30) and start.weekday() == 0 and end - start == timedelta(7)
    start, end = selectors.budget_window("month", today=date(2026, 12, 2))
    assert start <= date(2026, 12, 2) < end and end - start == timedelta(30)
    assert selectors.budget_window("month", today=end) == (end, end + timedelta(30))
    assert selectors.budget_resets_at("day", today=date(2026, 12, 2)).isoformat() == (
        "2026-12-03T00:00:00+00:00"
    )


def test_key_usage_by_period_and_all_time_in_one_query(world, manager) -> None:
    daily, _ = services.serving_key_create(
        actor=manager, project=world.project, name="d", budget_period="day"
    )
    monthly, _ = services.serving_key_create(actor=manager, project=world.project, name="m")
    today = timezone.now().date()
    for key in (daily, monthly):
        KeyUsage.objects.create(
            key=key, day=today, requests=2, prompt_tokens=10, completion_tokens=5
        )
        KeyUsage.objects.create(
            key=key,
            day=today - timedelta(days=1),
            requests=1,
            prompt_tokens=100,
            completion_tokens=0,
        )
    with CaptureQueriesContext(connection) as queries:
        rows = {k.name: k for k in selectors.serving_keys_for_user(manager)}
    assert len(queries) == 1
    assert (rows["d"].period_tokens, rows["d"].period_requests) == (15, 2)
    assert (rows["d"].total_tokens, rows["d"].total_requests) == (115, 3)
    start, _ = selectors.budget_window("month")
    in_month = 115 if start <= today - timedelta(days=1) else 15
    assert rows["m"].period_tokens == in_month and rows["m"].total_tokens == 115
    usage = selectors.key_usage(daily)
    assert [u["day"] for u in usage] == [today, today - timedelta(days=1)]
    assert usage[0]["total_tokens"] == 15


def test_version_stats_compares_primary_and_canary(world, manager, endpoint, tmp_path) -> None:
    primary, canary = (stored_version(world.project, tmp_path) for _ in range(2))
    services.endpoint_promote(actor=manager, endpoint=endpoint, version=primary)
    services.endpoint_set_canary(actor=manager, endpoint=endpoint, version=canary, percent=20)
    endpoint.refresh_from_db()
    now = time.time()
    records = [
        request_record(endpoint, latency_ms=float(ms), ttft_ms=ms / 10, created_at=now)
        for ms in range(10, 110, 10)  # 10..100 ms on the primary
    ]
    records += [
        request_record(endpoint, status_code=500, latency_ms=1.0, completion_tokens=0),
        request_record(
            endpoint, version_id=canary.pk, canary=True, latency_ms=40.0, cache_hit=True
        ),
        request_record(
            endpoint, version_id=canary.pk, canary=True, latency_ms=60.0, response_id="cmpl-canary"
        ),
        request_record(endpoint, created_at=now - 3 * 86400, latency_ms=9999.0),  # outside
    ]
    records.append(
        FeedbackRecord(response_id="cmpl-canary", endpoint_id=endpoint.pk, key_id=None, score=1)
    )
    services.request_logs_ingest(records=records)
    since = timezone.now() - timedelta(hours=24)
    with CaptureQueriesContext(connection) as queries:
        stats = selectors.version_stats(endpoint, since=since)
    assert len(queries) <= 6
    first, second = stats
    assert (first["version_id"], first["role"]) == (primary.pk, "primary")
    assert (second["version_id"], second["role"]) == (canary.pk, "canary")
    assert first["requests"] == 11 and first["errors"] == 1
    assert first["error_rate"] == pytest.approx(1 / 11)
    # Nearest rank over [1, 10, 20, ..., 100]: p50 is the 6th value, p95 the 11th.
    assert (first["p50_latency_ms"], first["p95_latency_ms"]) == (50.0, 100.0)
    assert first["mean_ttft_ms"] == pytest.approx(5.5)
    assert first["completion_tokens"] == 70 and first["prompt_tokens"] == 55
    assert (second["requests"], second["cache_hits"], second["thumbs_up"]) == (2, 1, 1)
    assert (second["p50_latency_ms"], second["p95_latency_ms"]) == (40.0, 60.0)
    assert second["thumbs_down"] == 0 and second["label"] == str(canary)

    summary = selectors.endpoint_summaries([endpoint], since=since)[endpoint.pk]
    assert summary["requests"] == 13 and summary["errors"] == 1
    assert summary["p95_latency_ms"] == 100.0


def test_version_stats_of_an_idle_endpoint_still_lists_its_versions(
    world, manager, endpoint, tmp_path
) -> None:
    version = stored_version(world.project, tmp_path)
    services.endpoint_promote(actor=manager, endpoint=endpoint, version=version)
    endpoint.refresh_from_db()
    [row] = selectors.version_stats(endpoint, since=timezone.now() - timedelta(hours=1))
    assert row["requests"] == 0 and row["p95_latency_ms"] is None and row["error_rate"] is None
