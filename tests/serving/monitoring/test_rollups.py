"""Rollups written with the request log agree with the raw log: counts, token sums, statuses,
latency percentiles (within one histogram bucket) and thumbs, at every resolution."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from django.db.models import Sum

from serving import services
from serving.engine.types import FeedbackRecord
from serving.models import RequestLog, RequestRollup
from serving.monitoring import rollups
from serving.monitoring.models import HISTOGRAM_BUCKETS_PER_DOUBLING, Resolution
from tests.serving.builders import request_record, stored_version

BUCKET_RATIO = 2 ** (1 / HISTOGRAM_BUCKETS_PER_DOUBLING)


@pytest.fixture
def manager(world):
    return world.users["manager"]


@pytest.fixture
def served(world, manager, tmp_path):
    endpoint = services.endpoint_create(actor=manager, project=world.project, name="bot")
    main = stored_version(world.project, tmp_path / "a")
    canary = stored_version(world.project, tmp_path / "b")
    services.endpoint_promote(actor=manager, endpoint=endpoint, version=main)
    endpoint.refresh_from_db()
    return endpoint, main, canary


def _records(endpoint, main, canary, *, count: int, start: datetime, seed: int = 0):
    rng = random.Random(seed)
    out = []
    for i in range(count):
        is_canary = rng.random() < 0.2
        status = rng.choice([200] * 16 + [429, 400, 500, 503])
        out.append(
            request_record(
                endpoint,
                created_at=(start + timedelta(seconds=rng.uniform(0, 3 * 3600))).timestamp(),
                version_id=(canary if is_canary else main).pk,
                canary=is_canary,
                status_code=status,
                latency_ms=rng.lognormvariate(4, 1),
                ttft_ms=rng.uniform(1, 50) if i % 3 else None,
                prompt_tokens=rng.randint(1, 60),
                completion_tokens=rng.randint(0, 40) if status == 200 else 0,
                cache_hit=rng.random() < 0.1,
                stream=bool(i % 2),
            )
        )
    return out


def _exact_percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(int(fraction * len(ordered) + 0.999999) - 1, 0)]


def test_rollups_match_the_raw_log_at_every_resolution(served) -> None:
    endpoint, main, canary = served
    start = datetime(2026, 11, 30, 22, 30, tzinfo=UTC)  # crosses an hour and a day
    records = _records(endpoint, main, canary, count=600, start=start)
    for batch in (records[:250], records[250:]):  # two batches: the second adds to rows
        services.request_logs_ingest(records=batch)

    logs = RequestLog.objects.filter(endpoint=endpoint)
    assert logs.count() == 600
    for resolution in Resolution.values:
        rows = RequestRollup.objects.filter(endpoint=endpoint, resolution=resolution)
        totals = rows.aggregate(
            requests=Sum("requests"),
            errors=Sum("errors"),
            rate_limited=Sum("rate_limited"),
            rejected=Sum("rejected"),
            cache_hits=Sum("cache_hits"),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
        )
        assert totals == {
            "requests": 600,
            "errors": logs.filter(status_code__gte=500).count(),
            "rate_limited": logs.filter(status_code=429).count(),
            "rejected": logs.filter(status_code=400).count(),
            "cache_hits": logs.filter(cache_hit=True).count(),
            "prompt_tokens": logs.aggregate(s=Sum("prompt_tokens"))["s"],
            "completion_tokens": logs.aggregate(s=Sum("completion_tokens"))["s"],
        }
        # One row per bucket, version and canary flag; the canary's rows are its version's.
        keys = list(rows.values_list("start", "version_id", "canary"))
        assert len(keys) == len(set(keys))
        assert set(rows.filter(canary=True).values_list("version_id", flat=True)) == {canary.pk}

    # Per-minute rows equal the log's own grouping by minute.
    for row in RequestRollup.objects.filter(endpoint=endpoint, resolution=Resolution.MINUTE)[:40]:
        in_minute = logs.filter(
            created_at__gte=row.start,
            created_at__lt=row.start + timedelta(minutes=1),
            version=row.version,
            canary=row.canary,
        )
        assert row.requests == in_minute.count()
        assert sum(row.by_status.values()) == row.requests
        assert row.by_status.get("200", 0) == in_minute.filter(status_code=200).count()

    # Percentiles of the whole range from the summed hourly histograms: within one bucket.
    hist: dict[str, int] = {}
    for row in RequestRollup.objects.filter(endpoint=endpoint, resolution=Resolution.HOUR):
        rollups.merge_histogram(hist, row.latency_hist)
    latencies = list(logs.values_list("latency_ms", flat=True))
    for fraction in (0.5, 0.95, 0.99):
        exact = _exact_percentile(latencies, fraction)
        estimate = rollups.percentile(hist, fraction)
        assert exact / BUCKET_RATIO <= estimate <= exact * BUCKET_RATIO, fraction


def test_thumbs_count_on_the_version_that_answered_and_a_change_of_mind_moves_them(
    served, manager
) -> None:
    endpoint, _, canary = served
    answered = request_record(endpoint, version_id=canary.pk, canary=True)
    services.request_logs_ingest(
        records=[
            answered,
            FeedbackRecord(
                response_id=answered.response_id, endpoint_id=endpoint.pk, key_id=None, score=-1
            ),
            FeedbackRecord(response_id="not-logged", endpoint_id=endpoint.pk, key_id=None, score=1),
        ]
    )
    day = RequestRollup.objects.filter(endpoint=endpoint, resolution=Resolution.DAY)
    on_canary = day.get(version=canary, canary=True)
    assert (on_canary.requests, on_canary.thumbs_up, on_canary.thumbs_down) == (1, 0, 1)
    unknown = day.get(version__isnull=True)
    assert (unknown.requests, unknown.thumbs_up) == (0, 1)

    # A person's playground rating, then their change of mind: counted once, as the last.
    for score in (1, -1, -1):
        services.feedback_record(
            actor=manager, endpoint=endpoint, response_id=answered.response_id, score=score
        )
    on_canary.refresh_from_db()
    assert (on_canary.thumbs_up, on_canary.thumbs_down) == (0, 2)


def test_rebuild_recomputes_from_the_log(served) -> None:
    endpoint, main, canary = served
    start = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    services.request_logs_ingest(
        records=_records(endpoint, main, canary, count=120, start=start, seed=3)
    )
    before = sorted(
        RequestRollup.objects.filter(endpoint=endpoint).values_list(
            "resolution", "start", "version_id", "requests", "latency_ms_sum"
        )
    )
    RequestRollup.objects.filter(endpoint=endpoint, resolution=Resolution.HOUR).delete()
    assert rollups.rebuild(endpoint=endpoint) == 120
    after = sorted(
        RequestRollup.objects.filter(endpoint=endpoint).values_list(
            "resolution", "start", "version_id", "requests", "latency_ms_sum"
        )
    )
    assert [r[:4] for r in after] == [r[:4] for r in before]
    assert [r[4] for r in after] == pytest.approx([r[4] for r in before])


def test_purge_keeps_rollups_longer_than_the_log(served) -> None:
    endpoint, _, _ = served
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    old = now - timedelta(days=40)  # past the log's 30 days and the minutes' 3, within hours'
    services.request_logs_ingest(
        records=[request_record(endpoint, created_at=old.timestamp()), request_record(endpoint)]
    )
    services.request_logs_purge(now=now)
    assert not RequestLog.objects.filter(created_at__lt=now - timedelta(days=30)).exists()
    kept = RequestRollup.objects.filter(endpoint=endpoint, start__lt=now - timedelta(days=30))
    assert set(kept.values_list("resolution", flat=True)) == {"hour", "day"}
