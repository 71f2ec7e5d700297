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

Figures are rounded to what they can tell (percentiles to 0.01 ms, shares to 4 decimals): a
24-hour range is 1,441 points per series, and the digits beyond were noise in every answer.
"""

from __future__ import annotations

import bisect
import functools
import itertools
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
    """Counters and histograms of some rollup rows added together (the same keys as a row)."""

    __slots__ = ("row",)

    def __init__(self) -> None:
        self.row: dict[str, Any] = {
            **dict.fromkeys(_COUNTERS, 0),
            **{name: {} for name in _HISTOGRAMS},
        }

    def add(self, row: Mapping[str, Any]) -> None:
        mine = self.row
        for name in _COUNTERS:
            mine[name] += row[name]
        for name in _HISTOGRAMS:
            if row[name]:
                rollups.merge_histogram(mine[name], row[name])


_EMPTY = _Sum().row


def _quantiles(histogram: Mapping[str, int], fractions: tuple[float, ...]) -> list[float | None]:
    """``rollups.percentile`` of each (ascending) fraction, the histogram sorted once: a
    dashboard reads five percentiles of each of thousands of points."""
    keys = sorted(histogram, key=int)
    cumulative = list(itertools.accumulate([histogram[k] for k in keys]))
    total = cumulative[-1] if cumulative else 0
    if not total:
        return [None] * len(fractions)
    last = len(keys) - 1
    # The first bucket whose running count reaches the rank (empty buckets never do first).
    return [
        _bucket_ms(keys[min(bisect.bisect_left(cumulative, f * total), last)]) for f in fractions
    ]


@functools.cache
def _bucket_ms(key: str) -> float:
    # A bucket spans 19%: more digits than these would be noise in every answer.
    return round(rollups.bucket_value(int(key)), 2)


def _share(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


def _figures(row: Mapping[str, Any], minutes: float) -> dict[str, Any]:
    """The figures of a row (or of a sum of rows, or of none: ``_EMPTY``)."""
    requests = row["requests"]
    up, down = row["thumbs_up"], row["thumbs_down"]
    latency, ttft = row["latency_hist"], row["ttft_hist"]
    p50, p95, p99 = _quantiles(latency, (0.5, 0.95, 0.99)) if latency else (None,) * 3
    t50, t95 = _quantiles(ttft, (0.5, 0.95)) if ttft else (None, None)
    generated_ms = row["generated_ms"]
    return {
        "requests": requests,
        "requests_per_minute": round(requests / minutes, 3) if minutes > 0 else None,
        "errors": row["errors"],
        "rate_limited": row["rate_limited"],
        "rejected": row["rejected"],
        "by_status": dict(sorted(row["by_status"].items())),
        "cache_hit_rate": _share(row["cache_hits"], requests),
        "latency_p50": p50,
        "latency_p95": p95,
        "latency_p99": p99,
        "ttft_p50": t50,
        "ttft_p95": t95,
        "tokens_per_second": (
            round(row["generated_tokens"] / (generated_ms / 1000), 2) if generated_ms else None
        ),
        "thumbs_up": up,
        "thumbs_down": down,
        "feedback_score": _share(up, up + down),
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
    # One row per bucket, version and canary flag (the rollups' unique key); rows of a null
    # version, which the key does not cover, are summed should there be two.
    buckets: dict[tuple[int | None, bool], dict[int, Mapping[str, Any]]] = {
        key: {} for key in wanted
    }
    for row in rows.order_by().values(*_FIELDS):
        series = buckets.setdefault((row["version_id"], row["canary"]), {})
        stamp = int(row["start"].timestamp())
        if stamp in series:
            both = _Sum()
            both.add(series[stamp])
            both.add(row)
            row = both.row
        series[stamp] = row
    ids = [v for v, _ in buckets if v is not None]
    labels = {
        v.pk: str(v)
        for v in ModelVersion.objects.filter(
            Q(pk__in=ids) | Q(pk=endpoint.version_id) | Q(pk=endpoint.canary_version_id)
        ).select_related("registered_model")
    }

    starts = time_range.starts()
    stamps = [int(t.timestamp()) for t in starts]
    isos = [t.isoformat() for t in starts]
    step = timedelta(seconds=time_range.bucket_seconds)
    minutes = [_minutes(t, t + step, now) for t in starts]
    # A point without rows: the same figures but for its minutes (every bucket but the one
    # in progress has the same), computed once.
    empty_figures = {span: _figures(_EMPTY, span) for span in set(minutes)}
    overall = _Sum()
    whole = _minutes(time_range.start, time_range.end, now)
    series_out = []
    for key in _series_order(buckets, endpoint):
        version, canary = key
        by_start = buckets[key]
        total = _Sum()
        points = []
        for stamp, iso, span in zip(stamps, isos, minutes, strict=True):
            row = by_start.get(stamp)
            if row is None:
                points.append({"t": iso, **empty_figures[span]})
                continue
            total.add(row)
            points.append({"t": iso, **_figures(row, span)})
        overall.add(total.row)
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
                "totals": _figures(total.row, whole),
            }
        )
    totals = _figures(overall.row, whole)
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
    return {pk: _figures(total.row, minutes) for pk, total in sums.items()}
