"""The endpoint dashboard's data: series per version (the canary's beside the main one) over a
time range, read from the request rollups only, never the raw log.

A range of millions of requests therefore costs what an empty one does: two queries (the
rollup rows of the range at one resolution, and the labels of the versions they name), whatever
the range. The resolution is the finest whose rows are still kept for the range's start
(``ROLLUP_RETENTION_DAYS``) and that gives at most :data:`MAX_POINTS` points. Every bucket of the
range is a point, also one with no rows (zero counts, null percentiles), so charts show a gap
as a gap. Percentiles come from the rows' merged log-histograms (``rollups.percentile``: within
one histogram bucket, 19%, of the raw value).

Figures of a point (and of the totals):

- ``requests_per_minute``: requests / the bucket's minutes (the elapsed minutes for the bucket
  still in progress; for the totals, the range's minutes up to now);
- ``errors``: answers with status >= 500; ``rate_limited``: 429; ``rejected``: other 4xx;
- ``cache_hit_rate``: cache hits / requests (null without requests);
- ``tokens_per_second``: generated tokens / the summed latency of the answers that generated
  them (successful, not from the cache), null when none did;
- ``feedback_score``: thumbs up / (up + down), null without thumbs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.utils import timezone

from projects.selectors import visible_to
from serving.models import Endpoint, EngineKind
from serving.monitoring import rollups
from serving.monitoring.models import (
    RESOLUTION_SECONDS,
    ROLLUP_RETENTION_DAYS,
    RequestRollup,
    Resolution,
)
from training.models import ModelVersion

RANGES: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
}
DEFAULT_RANGE = "24h"
MAX_POINTS = 1500
# A chosen start/end may span a little more than the longest named range (whole days).
MAX_SPAN = timedelta(days=92)
MIN_SPAN = timedelta(minutes=1)
EMPTY_MESSAGE = "No requests in this range."

# The rollup columns the dashboard reads (one query, no model instances).
_COUNTERS = (
    "requests",
    "errors",
    "rate_limited",
    "rejected",
    "cache_hits",
    "generated_tokens",
    "generated_ms",
    "thumbs_up",
    "thumbs_down",
)
_HISTOGRAMS = ("by_status", "latency_hist", "ttft_hist")
_FIELDS = ("version_id", "canary", "start", *_COUNTERS, *_HISTOGRAMS)
_ORDER = (Resolution.MINUTE, Resolution.HOUR, Resolution.DAY)


@dataclass(frozen=True)
class TimeRange:
    """A range widened to whole buckets of ``resolution``: points start at ``start`` and step
    by ``bucket_seconds`` while before ``end``."""

    start: datetime
    end: datetime
    resolution: str
    bucket_seconds: int

    @property
    def points(self) -> int:
        return math.ceil((self.end - self.start).total_seconds() / self.bucket_seconds)

    def starts(self) -> list[datetime]:
        step = timedelta(seconds=self.bucket_seconds)
        return [self.start + i * step for i in range(self.points)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "resolution": self.resolution,
            "bucket_seconds": self.bucket_seconds,
        }


def _ceil_time(when: datetime, resolution: str) -> datetime:
    floor = rollups.floor_time(when, resolution)
    return floor if floor == when else floor + timedelta(seconds=RESOLUTION_SECONDS[resolution])


def _aware(when: datetime) -> datetime:
    # Rollup buckets are UTC; a naive time from a caller is read as UTC too.
    if timezone.is_naive(when):
        return when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def resolve_range(
    *,
    range_name: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    now: datetime | None = None,
) -> TimeRange:
    """The range to draw: a named one (``RANGES``, ending now; ``DEFAULT_RANGE`` when nothing is
    given) or ``start`` to ``end`` (``end`` defaults to now). The resolution is the finest whose
    rollup rows are still kept at ``start`` and that gives at most ``MAX_POINTS`` points.
    Raises ``ValidationError({"range" | "start" | "end": message})``."""
    now = _aware(now or timezone.now())
    if range_name and (start is not None or end is not None):
        raise ValidationError({"range": "Give a range or a start and end, not both."})
    if start is None and end is not None:
        raise ValidationError({"start": "Give a start with the end."})
    if start is None:
        name = range_name or DEFAULT_RANGE
        if name not in RANGES:
            raise ValidationError(
                {"range": f"Unknown range '{name[:40]}': choose one of {', '.join(RANGES)}."}
            )
        end = now
        start = now - RANGES[name]
    else:
        start, end = _aware(start), _aware(end) if end is not None else now
        if end <= start:
            raise ValidationError({"end": "The end must be after the start."})
        if end - start < MIN_SPAN:
            raise ValidationError({"end": "Give a range of at least one minute."})
        if end - start > MAX_SPAN:
            raise ValidationError({"end": f"Give a range of at most {MAX_SPAN.days} days."})
    for resolution in _ORDER:
        kept = ROLLUP_RETENTION_DAYS[resolution]
        if kept is not None and start < now - timedelta(days=kept):
            continue  # rows of this resolution are purged before the start
        candidate = TimeRange(
            start=rollups.floor_time(start, resolution),
            end=_ceil_time(end, resolution),
            resolution=str(resolution),
            bucket_seconds=RESOLUTION_SECONDS[resolution],
        )
        if candidate.points <= MAX_POINTS or resolution == Resolution.DAY:
            return candidate
    raise AssertionError("day rows are always kept")  # pragma: no cover


def endpoints_for_user(user) -> QuerySet[Endpoint]:
    """The user's endpoints, with their versions' names, for the dashboard (none of the list's
    annotations, which count the raw log)."""
    return visible_to(
        Endpoint.objects.select_related(
            "project__team", "version__registered_model", "canary_version__registered_model"
        ),
        user,
    )


# --- figures ----------------------------------------------------------------------------------


class _Sum:
    """Counters and histograms of some rollup rows added together."""

    __slots__ = ("counts", "hists")

    def __init__(self) -> None:
        self.counts = dict.fromkeys(_COUNTERS, 0)
        self.hists: dict[str, dict[str, int]] = {name: {} for name in _HISTOGRAMS}

    def add(self, row: Mapping[str, Any]) -> None:
        counts = self.counts
        for name in _COUNTERS:
            counts[name] += row[name]
        for name in _HISTOGRAMS:
            if row[name]:
                rollups.merge_histogram(self.hists[name], row[name])

    def merge(self, other: _Sum) -> None:
        for name in _COUNTERS:
            self.counts[name] += other.counts[name]
        for name in _HISTOGRAMS:
            rollups.merge_histogram(self.hists[name], other.hists[name])

    def figures(self, minutes: float) -> dict[str, Any]:
        c, h = self.counts, self.hists
        requests = c["requests"]
        thumbs = c["thumbs_up"] + c["thumbs_down"]
        latency, ttft = h["latency_hist"], h["ttft_hist"]
        return {
            "requests": requests,
            "requests_per_minute": requests / minutes if minutes > 0 else None,
            "errors": c["errors"],
            "rate_limited": c["rate_limited"],
            "rejected": c["rejected"],
            "by_status": dict(sorted(h["by_status"].items())),
            "cache_hit_rate": c["cache_hits"] / requests if requests else None,
            "latency_p50": rollups.percentile(latency, 0.50) if latency else None,
            "latency_p95": rollups.percentile(latency, 0.95) if latency else None,
            "latency_p99": rollups.percentile(latency, 0.99) if latency else None,
            "ttft_p50": rollups.percentile(ttft, 0.50) if ttft else None,
            "ttft_p95": rollups.percentile(ttft, 0.95) if ttft else None,
            "tokens_per_second": (
                c["generated_tokens"] / (c["generated_ms"] / 1000) if c["generated_ms"] else None
            ),
            "thumbs_up": c["thumbs_up"],
            "thumbs_down": c["thumbs_down"],
            "feedback_score": c["thumbs_up"] / thumbs if thumbs else None,
        }


def _minutes(start: datetime, end: datetime, now: datetime) -> float:
    """Minutes of [start, end) that have passed: a bucket still in progress counts so far."""
    return max((min(end, now) - start).total_seconds(), 0.0) / 60


def _null_label(endpoint: Endpoint) -> str:
    if endpoint.engine == EngineKind.EXTERNAL:
        return "upstream"
    return "no version (refused before routing)"


def endpoint_dashboard(
    endpoint: Endpoint, *, time_range: TimeRange, version_id: int | None = None
) -> dict[str, Any]:
    """The dashboard of ``endpoint`` over ``time_range`` (see the module docstring): one series
    per version and canary flag that has rows in the range, plus the endpoint's current main and
    canary versions even without traffic (only ``version_id``'s when given), main first, then
    canary, then the rest. Two queries whatever the range and the traffic."""
    now = timezone.now()
    rows = RequestRollup.objects.filter(
        endpoint=endpoint,
        resolution=time_range.resolution,
        start__gte=time_range.start,
        start__lt=time_range.end,
    )
    if version_id is not None:
        rows = rows.filter(version_id=version_id)
    wanted = [(endpoint.version_id, False), (endpoint.canary_version_id, True)]
    wanted = [
        (v, canary)
        for v, canary in wanted
        if v is not None and (version_id is None or v == version_id)
    ]
    # Query 1: the range's rows. Query 2: names of the versions they or the endpoint name
    # (only versions of this endpoint's rows or its own: no other team's name can leak).
    buckets: dict[tuple[int | None, bool], dict[int, _Sum]] = {key: {} for key in wanted}
    for row in rows.order_by().values(*_FIELDS):
        key = (row["version_id"], row["canary"])
        series = buckets.setdefault(key, {})
        stamp = int(row["start"].timestamp())
        point = series.get(stamp)
        if point is None:
            point = series[stamp] = _Sum()
        point.add(row)
    ids = [v for v, _ in buckets if v is not None]
    labels = {
        v.pk: str(v)
        for v in ModelVersion.objects.filter(
            Q(pk__in=ids) | Q(pk=endpoint.version_id) | Q(pk=endpoint.canary_version_id)
        ).select_related("registered_model")
    }

    starts = time_range.starts()
    step = timedelta(seconds=time_range.bucket_seconds)
    minutes = [_minutes(t, t + step, now) for t in starts]
    empty_point = _Sum()
    overall = _Sum()
    series_out = []
    for key in _series_order(buckets, endpoint):
        version, canary = key
        by_start = buckets[key]
        total = _Sum()
        points = []
        for t, span in zip(starts, minutes, strict=True):
            point = by_start.get(int(t.timestamp()))
            if point is not None:
                total.merge(point)
            points.append({"t": t.isoformat(), **(point or empty_point).figures(span)})
        overall.merge(total)
        series_out.append(
            {
                "version_id": version,
                "version_label": (
                    labels.get(version, "deleted version")
                    if version is not None
                    else _null_label(endpoint)
                ),
                "canary": canary,
                "points": points,
                "totals": total.figures(_minutes(time_range.start, time_range.end, now)),
            }
        )
    totals = overall.figures(_minutes(time_range.start, time_range.end, now))
    empty = totals["requests"] == 0
    return {
        "range": time_range.as_dict(),
        "empty": empty,
        "message": EMPTY_MESSAGE if empty else "",
        "series": series_out,
        "totals": totals,
    }


def _series_order(
    buckets: Mapping[tuple[int | None, bool], Any], endpoint: Endpoint
) -> list[tuple[int | None, bool]]:
    def rank(key: tuple[int | None, bool]) -> tuple:
        version, canary = key
        if (version, canary) == (endpoint.version_id, False) and version is not None:
            return (0,)
        if canary and version is not None and version == endpoint.canary_version_id:
            return (1,)
        return (2, version is None, -(version or 0), canary)

    return sorted(buckets, key=rank)


# --- many endpoints at once -----------------------------------------------------------------


def _tile(low: datetime, high: datetime, resolutions: tuple[str, ...]) -> list[tuple]:
    """(resolution, from, to) pieces whose buckets exactly tile [low, high): the coarsest
    whole buckets in the middle, finer ones at the edges (``low`` on a minute)."""
    if low >= high:
        return []
    resolution, finer = resolutions[0], resolutions[1:]
    if not finer:
        return [(resolution, low, high)]
    inner_low, inner_high = _ceil_time(low, resolution), rollups.floor_time(high, resolution)
    if inner_low >= inner_high:
        return _tile(low, high, finer)
    return [
        *_tile(low, inner_low, finer),
        (resolution, inner_low, inner_high),
        *_tile(inner_high, high, finer),
    ]


def _cover(since: datetime, now: datetime) -> list[tuple[str, datetime, datetime]]:
    """The pieces of rollup rows that hold [since (to the minute), now); a piece whose rows
    are purged this far back is read from the next coarser bucket that holds it."""
    pieces = []
    coarser = {Resolution.MINUTE: Resolution.HOUR, Resolution.HOUR: Resolution.DAY}
    low = rollups.floor_time(since, Resolution.MINUTE)
    for resolution, a, b in _tile(low, now, tuple(reversed(_ORDER))):
        while (kept := ROLLUP_RETENTION_DAYS[resolution]) is not None and a < now - timedelta(
            days=kept
        ):
            resolution = coarser[resolution]
            a, b = rollups.floor_time(a, resolution), _ceil_time(b, resolution)
        pieces.append((str(resolution), a, b))
    return pieces


def endpoints_overview(
    endpoints: Iterable[Endpoint], *, since: datetime, now: datetime | None = None
) -> dict[int, dict[str, Any]]:
    """Totals per endpoint id since ``since`` (to the minute; the dashboard's figures, all
    versions together), in one query whatever the number of endpoints: whole days, hours and
    minutes of the rollups tile the range."""
    now = _aware(now or timezone.now())
    since = _aware(since)
    ids = [e.pk for e in endpoints]
    sums = {pk: _Sum() for pk in ids}
    if ids and since < now:
        pieces = Q()
        for resolution, low, high in _cover(since, now):
            pieces |= Q(resolution=resolution, start__gte=low, start__lt=high)
        rows = RequestRollup.objects.filter(pieces, endpoint_id__in=ids).order_by()
        for row in rows.values("endpoint_id", *_FIELDS):
            sums[row["endpoint_id"]].add(row)
    minutes = _minutes(rollups.floor_time(since, Resolution.MINUTE), now, now)
    return {pk: total.figures(minutes) for pk, total in sums.items()}
