"""The endpoint dashboard, read from the rollups, against figures computed from the raw log:
requests, errors by status, percentiles (within one histogram bucket), tokens/s, cache hit rate,
feedback score, the canary's series beside the main one; the range and resolution chosen; an
empty range; bad parameters over the API; a fixed number of queries; other teams' endpoints."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db.models import Sum
from django.utils import timezone

from serving import services
from serving.engine.types import FeedbackRecord
from serving.models import RequestLog
from serving.monitoring import dashboard, rollups
from serving.monitoring.models import HISTOGRAM_BUCKETS_PER_DOUBLING
from tests.api.conftest import assert_json_error
from tests.serving.builders import request_record, stored_version

BUCKET_RATIO = 2 ** (1 / HISTOGRAM_BUCKETS_PER_DOUBLING)


@pytest.fixture
def manager(world):
    return world.users["manager"]


@pytest.fixture
def served(world, manager, tmp_path):
    """An endpoint serving ``main`` with ``canary`` taking 20% of the traffic."""
    endpoint = services.endpoint_create(actor=manager, project=world.project, name="bot")
    main = stored_version(world.project, tmp_path / "a")
    canary = stored_version(world.project, tmp_path / "b")
    services.endpoint_promote(actor=manager, endpoint=endpoint, version=main)
    endpoint.refresh_from_db()
    services.endpoint_set_canary(actor=manager, endpoint=endpoint, version=canary, percent=20)
    endpoint.refresh_from_db()
    return endpoint, main, canary


def _hour_ago() -> datetime:
    # A whole hour well inside the minute rows' retention, ending before now.
    return rollups.floor_time(timezone.now(), "hour") - timedelta(hours=2)


def _traffic(endpoint, main, canary, *, count: int, start: datetime, seed: int = 0):
    """``count`` requests over the hour from ``start``, 20% on the canary, mixed statuses, and
    thumbs on some answers. Returns the records."""
    rng = random.Random(seed)
    records = []
    for i in range(count):
        is_canary = rng.random() < 0.2
        status = rng.choice([200] * 14 + [429, 400, 401, 500, 503])
        records.append(
            request_record(
                endpoint,
                created_at=(start + timedelta(seconds=rng.uniform(0, 3599))).timestamp(),
                version_id=(canary if is_canary else main).pk,
                canary=is_canary,
                status_code=status,
                latency_ms=rng.lognormvariate(4 + is_canary, 0.8),
                ttft_ms=rng.uniform(1, 50) if i % 3 else None,
                prompt_tokens=rng.randint(1, 60),
                completion_tokens=rng.randint(1, 40) if status == 200 else 0,
                cache_hit=status == 200 and rng.random() < 0.1,
                stream=bool(i % 2),
            )
        )
    thumbs = [
        FeedbackRecord(
            response_id=r.response_id,
            endpoint_id=endpoint.pk,
            key_id=None,
            score=rng.choice([1, 1, -1]),
            created_at=r.created_at,
        )
        for r in records[::7]
    ]
    for start_at in range(0, len(records), 200):
        services.request_logs_ingest(records=records[start_at : start_at + 200])
    services.request_logs_ingest(records=thumbs)
    return records, thumbs


def _exact_percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(int(fraction * len(ordered) + 0.999999) - 1, 0)]


def _within_a_bucket(estimate: float | None, exact: float) -> bool:
    return estimate is not None and exact / BUCKET_RATIO <= estimate <= exact * BUCKET_RATIO


def test_the_dashboard_agrees_with_the_raw_log(served) -> None:
    endpoint, main, canary = served
    start = _hour_ago()
    records, thumbs = _traffic(endpoint, main, canary, count=900, start=start)
    time_range = dashboard.resolve_range(start=start, end=start + timedelta(hours=1))
    assert (time_range.resolution, time_range.points) == ("minute", 60)

    data = dashboard.endpoint_dashboard(endpoint, time_range=time_range)
    assert data["empty"] is False and data["message"] == ""
    # The main version first, the canary beside it; nothing else served.
    assert [(s["version_id"], s["canary"]) for s in data["series"]] == [
        (main.pk, False),
        (canary.pk, True),
    ]
    assert data["series"][0]["version_label"] == str(main)
    scores = {t.response_id: t.score for t in thumbs}
    for series in data["series"]:
        logs = RequestLog.objects.filter(
            endpoint=endpoint, version_id=series["version_id"], canary=series["canary"]
        )
        totals = series["totals"]
        count = logs.count()
        assert totals["requests"] == count > 0
        assert totals["errors"] == logs.filter(status_code__gte=500).count()
        assert totals["rate_limited"] == logs.filter(status_code=429).count()
        assert totals["rejected"] == logs.filter(status_code__in=[400, 401]).count()
        assert totals["by_status"] == {
            str(code): logs.filter(status_code=code).count()
            for code in sorted(set(logs.values_list("status_code", flat=True)))
        }
        assert totals["cache_hit_rate"] == pytest.approx(
            logs.filter(cache_hit=True).count() / count, abs=1e-4
        )
        generated = logs.filter(status_code__lt=400, cache_hit=False).aggregate(
            tokens=Sum("completion_tokens"), ms=Sum("latency_ms")
        )
        assert totals["tokens_per_second"] == pytest.approx(
            generated["tokens"] / (generated["ms"] / 1000), abs=0.01
        )
        assert totals["requests_per_minute"] == pytest.approx(count / 60, abs=1e-3)
        latencies = list(logs.values_list("latency_ms", flat=True))
        for name, fraction in (("latency_p50", 0.5), ("latency_p95", 0.95), ("latency_p99", 0.99)):
            assert _within_a_bucket(totals[name], _exact_percentile(latencies, fraction)), name
        ttfts = list(logs.exclude(ttft_ms=None).values_list("ttft_ms", flat=True))
        assert _within_a_bucket(totals["ttft_p95"], _exact_percentile(ttfts, 0.95))
        rated = [scores[r] for r in logs.values_list("response_id", flat=True) if r in scores]
        up = sum(1 for s in rated if s > 0)
        assert (totals["thumbs_up"], totals["thumbs_down"]) == (up, len(rated) - up)
        assert totals["feedback_score"] == pytest.approx(up / len(rated), abs=1e-4)

        # Point by point: each minute's requests and errors are the log's in that minute.
        assert len(series["points"]) == 60
        for point in series["points"]:
            t = datetime.fromisoformat(point["t"])
            in_minute = logs.filter(created_at__gte=t, created_at__lt=t + timedelta(minutes=1))
            assert point["requests"] == in_minute.count()
            assert point["requests_per_minute"] == point["requests"]
            assert point["errors"] == in_minute.filter(status_code__gte=500).count()
            if not point["requests"]:
                assert point["latency_p95"] is None and point["cache_hit_rate"] is None
    # The canary is slower (planted): its p95 reads so.
    assert data["series"][1]["totals"]["latency_p95"] > data["series"][0]["totals"]["latency_p95"]
    assert data["totals"]["requests"] == len(records)
    assert data["totals"]["thumbs_up"] + data["totals"]["thumbs_down"] == len(thumbs)

    # One version only.
    only = dashboard.endpoint_dashboard(endpoint, time_range=time_range, version_id=canary.pk)
    assert [s["version_id"] for s in only["series"]] == [canary.pk]
    assert only["totals"]["requests"] == data["series"][1]["totals"]["requests"]


def test_points_without_rows_are_zero_with_null_percentiles(served) -> None:
    endpoint = served[0]
    start = _hour_ago()
    services.request_logs_ingest(
        records=[
            request_record(
                endpoint, created_at=(start + timedelta(minutes=10, seconds=5)).timestamp()
            )
        ]
    )
    time_range = dashboard.resolve_range(start=start, end=start + timedelta(minutes=30))
    data = dashboard.endpoint_dashboard(endpoint, time_range=time_range)
    points = data["series"][0]["points"]
    assert len(points) == 30
    assert [p["requests"] for p in points] == [0] * 10 + [1] + [0] * 19
    gap = points[0]
    assert gap["requests_per_minute"] == 0 and gap["by_status"] == {}
    assert gap["latency_p50"] is gap["tokens_per_second"] is gap["feedback_score"] is None
    assert points[10]["latency_p50"] == pytest.approx(12.5, rel=BUCKET_RATIO - 1)
    # The canary serves but had no traffic: its series is there, every point empty.
    assert data["series"][1]["canary"] is True
    assert sum(p["requests"] for p in data["series"][1]["points"]) == 0


def test_an_empty_range_says_so(served) -> None:
    endpoint, main, canary = served
    data = dashboard.endpoint_dashboard(endpoint, time_range=dashboard.resolve_range())
    assert data["empty"] is True
    assert data["message"] == "No requests in this range."
    assert data["totals"]["requests"] == 0 and data["totals"]["latency_p95"] is None
    assert [s["version_id"] for s in data["series"]] == [main.pk, canary.pk]
    assert data["range"]["resolution"] == "minute"


NOW = datetime(2026, 12, 2, 15, 30, 20, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "resolution", "points"),
    [
        ("1h", "minute", 61),
        ("6h", "minute", 361),
        ("24h", "minute", 1441),
        ("7d", "hour", 169),
        ("30d", "hour", 721),
        ("90d", "day", 91),
    ],
)
def test_the_finest_resolution_within_the_point_limit(name, resolution, points) -> None:
    time_range = dashboard.resolve_range(range_name=name, now=NOW)
    assert (time_range.resolution, time_range.points) == (resolution, points)
    assert time_range.points <= dashboard.MAX_POINTS
    # Whole buckets: from the one holding the start to the one holding now.
    assert (
        time_range.start
        <= NOW - dashboard.RANGES[name]
        < time_range.start + timedelta(seconds=time_range.bucket_seconds)
    )
    assert time_range.end - timedelta(seconds=time_range.bucket_seconds) <= NOW < time_range.end


def test_a_chosen_range_and_its_refusals() -> None:
    start = NOW - timedelta(hours=3)
    assert dashboard.resolve_range(start=start, now=NOW).resolution == "minute"
    # Minute rows are purged after three days: an hour a week ago is drawn by hours.
    old = dashboard.resolve_range(
        start=NOW - timedelta(days=7), end=NOW - timedelta(days=7, hours=-1), now=NOW
    )
    assert (old.resolution, old.points) == ("hour", 2)
    # A naive time is UTC.
    naive = dashboard.resolve_range(start=datetime(2026, 12, 2, 10), now=NOW)
    assert naive.start == datetime(2026, 12, 2, 10, tzinfo=UTC)

    refusals = [
        ({"range_name": "5y"}, "range"),
        ({"range_name": "1h", "start": start}, "range"),
        ({"end": NOW}, "start"),
        ({"start": NOW, "end": start}, "end"),
        ({"start": start, "end": start + timedelta(seconds=10)}, "end"),
        ({"start": NOW - timedelta(days=200), "end": NOW}, "end"),
    ]
    for kwargs, field in refusals:
        with pytest.raises(ValidationError) as caught:
            dashboard.resolve_range(now=NOW, **kwargs)
        assert list(caught.value.message_dict) == [field], kwargs


def test_a_fixed_number_of_queries_whatever_the_rows(
    served, django_assert_num_queries, api, world
) -> None:
    endpoint, main, canary = served
    start = _hour_ago()
    time_range = dashboard.resolve_range(start=start, end=start + timedelta(hours=1))
    client = api(world.users["viewer"])
    url = f"/api/v1/endpoints/{endpoint.pk}/dashboard/?start={start.isoformat()}".replace(
        "+", "%2B"
    )

    def count_api_queries() -> int:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as captured:
            response = client.get(url)
        assert response.status_code == 200, response.content[:300]
        return len(captured)

    count_api_queries()  # the token's first use is recorded once
    empty_api = count_api_queries()
    services.request_logs_ingest(
        records=[request_record(endpoint, created_at=(start + timedelta(minutes=1)).timestamp())]
    )
    with django_assert_num_queries(2):
        one = dashboard.endpoint_dashboard(endpoint, time_range=time_range)
    one_api = count_api_queries()
    _traffic(endpoint, main, canary, count=400, start=start)
    with django_assert_num_queries(2):
        many = dashboard.endpoint_dashboard(endpoint, time_range=time_range)
    assert one["totals"]["requests"] == 1 and many["totals"]["requests"] == 401
    assert empty_api == one_api == count_api_queries()
    # The longest range, by days: the same two queries.
    with django_assert_num_queries(2):
        dashboard.endpoint_dashboard(endpoint, time_range=dashboard.resolve_range(range_name="90d"))


def test_the_api_answers_the_dashboard_and_refuses_bad_parameters(served, api, world) -> None:
    endpoint, main, canary = served
    start = _hour_ago()
    _traffic(endpoint, main, canary, count=50, start=start)
    client = api(world.users["viewer"])
    base = f"/api/v1/endpoints/{endpoint.pk}/dashboard/"

    response = client.get(base, {"range": "6h"})
    assert response.status_code == 200, response.content[:300]
    body = response.json()
    assert body["endpoint"] == endpoint.pk
    assert body["range"]["resolution"] == "minute" and len(body["series"][0]["points"]) == 361
    assert body["totals"]["requests"] == 50

    chosen = client.get(
        base,
        {
            "start": start.isoformat(),
            "end": (start + timedelta(hours=1)).isoformat(),
            "version": canary.pk,
        },
    ).json()
    assert [s["version_id"] for s in chosen["series"]] == [canary.pk]
    assert chosen["range"]["start"] == start.isoformat()

    bad = [
        ({"range": "5y"}, "range", "choose one of"),
        ({"range": "1h", "start": start.isoformat()}, "range", "not both"),
        ({"start": "yesterday"}, "start", "format"),
        ({"end": start.isoformat()}, "start", "start"),
        ({"start": start.isoformat(), "end": (start - timedelta(hours=1)).isoformat()}, "end", ""),
        ({"version": "abc"}, "version", "integer"),
        ({"version": "0"}, "version", ""),
    ]
    for params, field, words in bad:
        error = assert_json_error(client.get(base, params), 400)
        assert field in error["fields"], (params, error)
        assert words in error["message"].lower() + " ".join(error["fields"][field]).lower()

    # Another team's endpoint: not found, as on every route.
    outsider = api(world.outsider)
    assert_json_error(outsider.get(base), 404)


def test_a_point_links_to_its_requests_in_the_log(served, api, world) -> None:
    endpoint, main, canary = served
    start = _hour_ago()
    _traffic(endpoint, main, canary, count=200, start=start)
    client = api(world.users["viewer"])
    until = start + timedelta(minutes=30)
    logs = RequestLog.objects.filter(endpoint=endpoint, created_at__gte=start, created_at__lt=until)

    def listed(**params) -> int:
        response = client.get(
            "/api/v1/request-logs/",
            {
                "endpoint": endpoint.pk,
                "since": start.isoformat(),
                "until": until.isoformat(),
                "page_size": 1,
                **params,
            },
        )
        assert response.status_code == 200, response.content[:300]
        return response.json()["count"]

    assert listed(status_class="5xx") == logs.filter(status_code__gte=500).count() > 0
    assert listed(status_class="4xx") == logs.filter(status_code__range=(400, 499)).count() > 0
    assert listed(status_class="2xx", canary="true", version=canary.pk) == (
        logs.filter(status_code=200, canary=True).count()
    )
    assert listed(min_latency_ms=60, max_latency_ms=120) == (
        logs.filter(latency_ms__gte=60, latency_ms__lte=120).count()
    )
    assert_json_error(client.get("/api/v1/request-logs/", {"status_class": "6xx"}), 400)


def test_endpoints_overview_totals_since_a_time_in_one_query(
    served, world, manager, django_assert_num_queries
) -> None:
    endpoint = served[0]
    quiet = services.endpoint_create(actor=manager, project=world.project, name="quiet")
    now = timezone.now()
    rng = random.Random(3)
    records = [
        request_record(
            endpoint,
            created_at=(now - timedelta(seconds=rng.uniform(0, 50 * 3600))).timestamp(),
            status_code=rng.choice([200, 200, 500]),
            latency_ms=rng.uniform(5, 200),
        )
        for _ in range(500)
    ]
    services.request_logs_ingest(records=records)
    since = now - timedelta(hours=30, minutes=17, seconds=40)
    with django_assert_num_queries(1):
        overview = dashboard.endpoints_overview([endpoint, quiet], since=since, now=now)
    counted = RequestLog.objects.filter(
        endpoint=endpoint, created_at__gte=rollups.floor_time(since, "minute")
    )
    assert overview[endpoint.pk]["requests"] == counted.count()
    assert overview[endpoint.pk]["errors"] == counted.filter(status_code=500).count()
    latencies = list(counted.values_list("latency_ms", flat=True))
    assert _within_a_bucket(
        overview[endpoint.pk]["latency_p95"], _exact_percentile(latencies, 0.95)
    )
    assert overview[quiet.pk]["requests"] == 0 and overview[quiet.pk]["latency_p95"] is None


def test_the_percentiles_read_as_the_rollups_read_them() -> None:
    rng = random.Random(5)
    for _ in range(200):
        hist = {str(rng.randint(-5, 60)): rng.randint(0, 9) for _ in range(rng.randint(1, 25))}
        fractions = (0.5, 0.95, 0.99)
        expected = [rollups.percentile(hist, f) for f in fractions]
        expected = [None if e is None else round(e, 2) for e in expected]
        assert dashboard._quantiles(hist, fractions) == expected, hist
