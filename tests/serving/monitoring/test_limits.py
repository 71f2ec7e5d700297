"""Traffic limits: error rate, p95 latency and feedback score read from the minute rollups that
request_logs_ingest writes, alerts opened through observe, nothing judged below
limit_min_requests, each endpoint checked once a minute across processes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from serving import services
from serving.engine.types import FeedbackRecord
from serving.monitoring import limits
from serving.monitoring.models import Alert, MonitorSettings
from serving.monitoring.rollups import bucket_index, bucket_value
from tests.serving.builders import request_record, stored_version

NOW = datetime(2026, 12, 1, 12, 30, 20, tzinfo=UTC)


@pytest.fixture
def manager(world):
    return world.users["manager"]


@pytest.fixture
def endpoint(world, manager, tmp_path):
    endpoint = services.endpoint_create(actor=manager, project=world.project, name="bot")
    services.endpoint_promote(
        actor=manager, endpoint=endpoint, version=stored_version(world.project, tmp_path)
    )
    endpoint.refresh_from_db()
    return endpoint


def _monitor(endpoint, **limits_set) -> MonitorSettings:
    values = {
        "error_rate_max": 0.1,
        "p95_latency_ms_max": 200.0,
        "feedback_score_min": 0.5,
        "limit_window_minutes": 15,
        "limit_min_requests": 20,
        **limits_set,
    }
    return MonitorSettings.objects.create(endpoint=endpoint, **values)


def _traffic(endpoint, *, ok: int, errors: int = 0, latency_ms: float = 50.0, ago_s: float = 90):
    """``ok`` 200s and ``errors`` 500s logged ``ago_s`` seconds before NOW."""
    when = (NOW - timedelta(seconds=ago_s)).timestamp()
    records = [
        request_record(endpoint, created_at=when, status_code=200, latency_ms=latency_ms)
        for _ in range(ok)
    ] + [
        request_record(endpoint, created_at=when, status_code=500, latency_ms=latency_ms)
        for _ in range(errors)
    ]
    services.request_logs_ingest(records=records)


def _thumbs(endpoint, *, up: int, down: int, ago_s: float = 60) -> None:
    when = (NOW - timedelta(seconds=ago_s)).timestamp()
    records = [
        FeedbackRecord(
            response_id=f"cmpl-{uuid.uuid4().hex[:16]}",
            endpoint_id=endpoint.pk,
            key_id=None,
            score=score,
            created_at=when,
        )
        for score in [1] * up + [-1] * down
    ]
    services.request_logs_ingest(records=records)


def _alerts(endpoint) -> dict[str, Alert]:
    return {alert.kind: alert for alert in Alert.objects.filter(endpoint=endpoint)}


def test_error_rate_and_p95_over_their_limits_open_alerts(endpoint) -> None:
    _monitor(endpoint)
    _traffic(endpoint, ok=24, errors=6, latency_ms=500.0)
    assert limits.check_limits_due(now=NOW) == 1
    found = _alerts(endpoint)
    assert set(found) == {"error_rate", "latency_p95"}
    errors = found["error_rate"]
    assert (errors.statistic, errors.value, errors.threshold) == ("error_rate", 0.2, 0.1)
    assert "6 of 30 requests" in errors.message and "20.0%" in errors.message
    latency = found["latency_p95"]
    assert latency.value == pytest.approx(bucket_value(bucket_index(500.0)))
    assert abs(latency.value - 500.0) / 500.0 < 0.1  # within one histogram bucket's middle
    assert latency.threshold == 200.0 and latency.state == "open"


def test_within_the_limits_nothing_opens(endpoint) -> None:
    _monitor(endpoint)
    _traffic(endpoint, ok=95, errors=5, latency_ms=40.0)  # 5% errors, fast
    _thumbs(endpoint, up=15, down=5)  # 75% up
    assert limits.check_limits_due(now=NOW) == 1
    assert not Alert.objects.filter(endpoint=endpoint).exists()


def test_below_limit_min_requests_nothing_is_judged(endpoint) -> None:
    _monitor(endpoint)
    _traffic(endpoint, ok=0, errors=19, latency_ms=900.0)  # every one failed and slow
    _thumbs(endpoint, up=0, down=19)
    limits.check_limits_due(now=NOW)
    assert not Alert.objects.filter(endpoint=endpoint).exists()
    _traffic(endpoint, ok=0, errors=1, latency_ms=900.0)  # the 20th request
    _thumbs(endpoint, up=0, down=1)
    limits.check_limits_due(now=NOW + timedelta(minutes=1))
    assert set(_alerts(endpoint)) == {"error_rate", "latency_p95", "feedback_score"}


def test_feedback_score_under_its_limit(endpoint) -> None:
    _monitor(endpoint, error_rate_max=None, p95_latency_ms_max=None)
    _traffic(endpoint, ok=3)  # the score counts thumbs, whatever the requests
    _thumbs(endpoint, up=5, down=15)
    limits.check_limits_due(now=NOW)
    (alert,) = Alert.objects.filter(endpoint=endpoint)
    assert (alert.kind, alert.statistic, alert.value, alert.threshold) == (
        "feedback_score",
        "feedback_score",
        0.25,
        0.5,
    )
    assert "5 thumbs up of 20" in alert.message


def test_only_the_window_counts(endpoint) -> None:
    _monitor(endpoint, limit_window_minutes=5)
    _traffic(endpoint, ok=0, errors=50, ago_s=6 * 60)  # the minute before the window
    _traffic(endpoint, ok=30, ago_s=3 * 60)
    limits.check_limits_due(now=NOW)
    assert not Alert.objects.filter(endpoint=endpoint).exists()
    _traffic(endpoint, ok=0, errors=10, ago_s=0)  # the current minute counts
    limits.check_limits_due(now=NOW + timedelta(seconds=61))
    assert _alerts(endpoint)["error_rate"].value == pytest.approx(10 / 40)


def test_once_a_minute_then_the_alert_repeats(endpoint) -> None:
    monitor = _monitor(endpoint)
    _traffic(endpoint, ok=20, errors=10)
    assert limits.check_limits_due(now=NOW) == 1
    assert limits.check_limits_due(now=NOW + timedelta(seconds=30)) == 0  # claimed
    monitor.refresh_from_db()
    assert monitor.limits_checked_at == NOW
    assert limits.check_limits_due(now=NOW + timedelta(seconds=61)) == 1
    (alert,) = Alert.objects.filter(endpoint=endpoint)
    assert alert.times_seen == 2


def test_a_limit_left_empty_is_not_checked(endpoint) -> None:
    _monitor(endpoint, error_rate_max=None, p95_latency_ms_max=None, feedback_score_min=None)
    _traffic(endpoint, ok=0, errors=40, latency_ms=900.0)
    assert limits.check_limits_due(now=NOW) == 0
    assert not Alert.objects.filter(endpoint=endpoint).exists()


def test_an_endpoint_without_settings_gets_the_default_error_limit(endpoint) -> None:
    assert not MonitorSettings.objects.filter(endpoint=endpoint).exists()
    _traffic(endpoint, ok=18, errors=2)  # 10% > the default 5%
    assert limits.check_limits_due(now=NOW) == 1
    monitor = MonitorSettings.objects.get(endpoint=endpoint)
    assert monitor.error_rate_max == 0.05 and monitor.limits_checked_at == NOW
    assert set(_alerts(endpoint)) == {"error_rate"}


def test_archived_endpoints_are_not_checked(endpoint, manager) -> None:
    _monitor(endpoint)
    _traffic(endpoint, ok=0, errors=30)
    services.endpoint_archive(actor=manager, endpoint=endpoint)
    assert limits.check_limits_due(now=NOW) == 0
    assert not Alert.objects.filter(endpoint=endpoint).exists()
