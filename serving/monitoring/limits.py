"""Traffic alerts: error rate, p95 latency and feedback score against each endpoint's limits.

:func:`check_limits_due` runs every few seconds in every process (``serving/apps.py``); each
endpoint is checked once a minute across all of them: the check claims the minute with a
conditional update of ``MonitorSettings.limits_checked_at``. It reads the endpoint's minute
rollups of the last ``limit_window_minutes`` (the current minute included), all versions
together (main and canary: the traffic the endpoint's callers see), and reports to
``alerts.observe``:

- ``error_rate``: answers with status >= 500 over all requests, above ``error_rate_max``;
- ``latency_p95``: the 95th percentile of the merged latency histograms (within one histogram
  bucket of the raw value), above ``p95_latency_ms_max``;
- ``feedback_score``: the share of thumbs up among the thumbs, under ``feedback_score_min``.

Below ``limit_min_requests`` requests (thumbs, for the feedback score) in the window, nothing
is judged: a few requests say little. A limit left empty is not checked.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from serving.models import Endpoint
from serving.monitoring import rollups
from serving.monitoring.alerts import Observation, observe
from serving.monitoring.models import AlertKind, MonitorSettings, RequestRollup, Resolution

logger = logging.getLogger(__name__)

CHECK_EVERY = timedelta(minutes=1)
P95 = 0.95


def window_start(now: datetime, minutes: int) -> datetime:
    """The first minute bucket of a window of ``minutes`` ending with the current one."""
    return rollups.floor_time(now, Resolution.MINUTE) - timedelta(minutes=minutes - 1)


def measure(monitor: MonitorSettings, *, now: datetime) -> list[Observation]:
    """The observations of one endpoint's limits over its window (one query)."""
    minutes = monitor.limit_window_minutes
    rows = RequestRollup.objects.filter(
        endpoint_id=monitor.endpoint_id,
        resolution=Resolution.MINUTE,
        start__gte=window_start(now, minutes),
        start__lte=now,
    ).values_list("requests", "errors", "latency_hist", "thumbs_up", "thumbs_down")
    requests = errors = up = down = 0
    histogram: dict[str, int] = {}
    for row_requests, row_errors, hist, row_up, row_down in rows:
        requests += row_requests
        errors += row_errors
        up += row_up
        down += row_down
        rollups.merge_histogram(histogram, hist or {})
    floor = monitor.limit_min_requests
    span = f"the last {minutes} minute{'s' if minutes != 1 else ''}"
    out = []
    if monitor.error_rate_max is not None and requests and requests >= floor:
        rate = errors / requests
        limit = monitor.error_rate_max
        out.append(
            Observation(
                kind=AlertKind.ERROR_RATE,
                statistic="error_rate",
                value=rate,
                threshold=limit,
                breached=rate > limit,
                message=(
                    f"Error rate {rate:.1%} over {span} ({errors} of {requests} requests "
                    f"answered 5xx), above the limit of {limit:.1%}."
                ),
            )
        )
    if monitor.p95_latency_ms_max is not None and requests and requests >= floor:
        p95 = rollups.percentile(histogram, P95)
        limit = monitor.p95_latency_ms_max
        if p95 is not None:
            out.append(
                Observation(
                    kind=AlertKind.LATENCY,
                    statistic="latency_p95",
                    value=p95,
                    threshold=limit,
                    breached=p95 > limit,
                    message=(
                        f"p95 latency {p95:.0f} ms over {span} ({requests} requests), above "
                        f"the limit of {limit:g} ms."
                    ),
                )
            )
    thumbs = up + down
    if monitor.feedback_score_min is not None and thumbs and thumbs >= floor:
        score = up / thumbs
        limit = monitor.feedback_score_min
        out.append(
            Observation(
                kind=AlertKind.FEEDBACK,
                statistic="feedback_score",
                value=score,
                threshold=limit,
                breached=score < limit,
                message=(
                    f"Feedback score {score:.0%} over {span} ({up} thumbs up of {thumbs}), "
                    f"under the limit of {limit:.0%}."
                ),
            )
        )
    return out


def _with_limits() -> Q:
    return (
        Q(error_rate_max__isnull=False)
        | Q(p95_latency_ms_max__isnull=False)
        | Q(feedback_score_min__isnull=False)
    )


def _default_rows(now: datetime) -> None:
    """Endpoints that served in the last hour without a monitor settings row get the defaults
    row (its default error-rate limit then applies); one query when every one has its row."""
    since = now - timedelta(hours=1)
    missing = (
        Endpoint.objects.filter(
            archived_at__isnull=True,
            monitor_settings__isnull=True,
            rollups__resolution=Resolution.HOUR,
            rollups__start__gte=rollups.floor_time(since, Resolution.HOUR),
        )
        .values_list("pk", flat=True)
        .distinct()
    )
    for endpoint_id in list(missing):
        MonitorSettings.objects.get_or_create(endpoint_id=endpoint_id)


def check_limits_due(*, now: datetime | None = None) -> int:
    """Check every endpoint whose minute has come (periodic, in every process: each endpoint
    claimed by one of them). Returns the number of endpoints this call checked."""
    now = now or timezone.now()
    _default_rows(now)
    due = (
        MonitorSettings.objects.filter(_with_limits(), endpoint__archived_at__isnull=True)
        .filter(Q(limits_checked_at__isnull=True) | Q(limits_checked_at__lte=now - CHECK_EVERY))
        .select_related("endpoint")
    )
    checked = 0
    for monitor in list(due):
        previous = monitor.limits_checked_at
        same = (
            Q(limits_checked_at__isnull=True) if previous is None else Q(limits_checked_at=previous)
        )
        if not MonitorSettings.objects.filter(same, pk=monitor.pk).update(limits_checked_at=now):
            continue  # another process has this minute
        try:
            observe(endpoint=monitor.endpoint, observations=measure(monitor, now=now))
        except Exception:
            # One endpoint's failure must not stop the others' checks.
            logger.exception("The limit check of endpoint %s failed", monitor.endpoint_id)
            continue
        checked += 1
    return checked
