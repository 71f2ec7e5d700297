"""Writing and reading metric curves fast.

Writes: PostgreSQL gets the points through binary COPY (one round trip per batch, far faster
than INSERT); other databases through ``bulk_create``. Each batch also updates the curve's
rollups: per block of steps, at block sizes of 64, 512, 4,096 and 32,768 steps, the number of
points and the first, last, lowest and highest point (``MetricRollup``).

Checks: every writer goes through :func:`write_points`, which checks each point once: a step
within the column's range (0 to 2**31 - 1), a name of 1 to 60 characters without NUL, a finite
value and epoch. Strictly (the API, :func:`rows_from_dicts`): the first bad point is a
ValidationError naming it, ``points[3].value: must be a finite number``, and nothing is
stored. Leniently (points our own runtime reports): a NaN or infinite value (a diverged run) is
dropped with a logged warning, since no chart or JSON reader can show it; the runtime logs the
divergence in the job's own log as well.

Reads: a chart needs at most ~2,000 points. A short curve comes back whole. A long one is
downsampled into buckets that keep each bucket's first, lowest, highest and last point, so
spikes and the overall shape survive; the buckets are built from the finest rollup level with
at most ``ROLLUP_READ_BLOCKS`` blocks, so a read costs the same for a curve of 100,000 points
as for one of 100 million.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from training.models import MetricPoint, MetricRollup, TrainingJob

logger = logging.getLogger(__name__)

# The range of the step columns (PositiveIntegerField: int4 on PostgreSQL), checked here on
# every backend so that SQLite, which has no such limit, refuses the same steps.
MAX_STEP = 2**31 - 1
MAX_NAME_LENGTH = 60

# A point: (step, name, value, epoch).
Row = tuple[int, str, float, float | None]

MAX_CHART_POINTS = 2000
# Block sizes of the rollup levels, finest first. Each level has 1/8 of the rows of the one
# before. A batch of 10,000 dense points merges ~180 blocks, most of them 64-step ones: finer
# blocks would cost the ingest more than the reads gain.
ROLLUP_BLOCK_STEPS = (64, 512, 4096, 32768)
# A read takes the finest level with at most this many blocks in the curve's span.
ROLLUP_READ_BLOCKS = 2000
# Where even the finest blocks would give a chart fewer buckets than it can show, a curve of up
# to this many points is downsampled from the points themselves.
RAW_DOWNSAMPLE_LIMIT = 16_000

# A block: (points, first_step, first_value, last_step, last_value, min_step, min_value,
# max_step, max_value).
Block = tuple[int, int, float, int, float, int, float, int, float]


def _merge(a: Block, b: Block) -> Block:
    first = a[1:3] if a[1] <= b[1] else b[1:3]
    last = b[3:5] if b[3] >= a[3] else a[3:5]
    low = a[5:7] if a[6] <= b[6] else b[5:7]
    high = a[7:9] if a[8] >= b[8] else b[7:9]
    return (a[0] + b[0], *first, *last, *low, *high)


def _fold(groups: dict, key, block: Block) -> None:
    held = groups.get(key)
    groups[key] = block if held is None else _merge(held, block)


def _by_value(point: tuple[int, float]) -> float:
    return point[1]


def _summaries(groups: dict) -> None:
    """Replace each group's list of (step, value) points by its block summary, in place."""
    for key, points in groups.items():
        first, last = min(points), max(points)
        low, high = min(points, key=_by_value), max(points, key=_by_value)
        groups[key] = (len(points), *first, *last, *low, *high)


def rollup_blocks(
    rows: Iterable[tuple[int, str, float, float | None]],
) -> dict[tuple[str, int, int], Block]:
    """The rollup blocks of ``(step, name, value, epoch)`` points, keyed by (name, level,
    block). Pure: the write path and the migration that filled the table both use it."""
    size = ROLLUP_BLOCK_STEPS[0]
    level_blocks: dict = {}
    for step, name, value, _epoch in rows:
        key = (name, step // size)
        group = level_blocks.get(key)
        if group is None:
            level_blocks[key] = [(step, value)]
        else:
            group.append((step, value))
    _summaries(level_blocks)
    blocks = {(name, 0, block): b for (name, block), b in level_blocks.items()}
    for level in range(1, len(ROLLUP_BLOCK_STEPS)):
        ratio = ROLLUP_BLOCK_STEPS[level] // ROLLUP_BLOCK_STEPS[level - 1]
        coarser: dict[tuple[str, int], Block] = {}
        for (name, block), b in level_blocks.items():
            _fold(coarser, (name, block // ratio), b)
        blocks.update({(name, level, block): b for (name, block), b in coarser.items()})
        level_blocks = coarser
    return blocks


_ROLLUP_COLUMNS = (
    "job_id, name, level, block, points, first_step, first_value, last_step, last_value, "
    "min_step, min_value, max_step, max_value"
)


_ROLLUP_POSTGRESQL_TYPES = (
    "int8",
    "varchar",
    "int2",
    "int4",
    "int4",
    "int4",
    "float8",
    "int4",
    "float8",
    "int4",
    "float8",
    "int4",
    "float8",
)


def _upsert_rollups(job_id: int, blocks: dict[tuple[str, int, int], Block]) -> None:
    """Merge blocks into the stored ones, in key order so that concurrent writers to the same
    curve lock rows in the same order."""
    table = MetricRollup._meta.db_table
    current = f"{table}."
    merge = f"""
        ON CONFLICT (job_id, name, level, block) DO UPDATE SET
        points = {current}points + excluded.points,
        first_step = CASE WHEN excluded.first_step < {current}first_step
            THEN excluded.first_step ELSE {current}first_step END,
        first_value = CASE WHEN excluded.first_step < {current}first_step
            THEN excluded.first_value ELSE {current}first_value END,
        last_step = CASE WHEN excluded.last_step >= {current}last_step
            THEN excluded.last_step ELSE {current}last_step END,
        last_value = CASE WHEN excluded.last_step >= {current}last_step
            THEN excluded.last_value ELSE {current}last_value END,
        min_step = CASE WHEN excluded.min_value < {current}min_value
            THEN excluded.min_step ELSE {current}min_step END,
        min_value = CASE WHEN excluded.min_value < {current}min_value
            THEN excluded.min_value ELSE {current}min_value END,
        max_step = CASE WHEN excluded.max_value > {current}max_value
            THEN excluded.max_step ELSE {current}max_step END,
        max_value = CASE WHEN excluded.max_value > {current}max_value
            THEN excluded.max_value ELSE {current}max_value END
    """
    rows = [(job_id, *key, *blocks[key]) for key in sorted(blocks)]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # One array per column: half the time of as many VALUES rows, whatever the count.
            columns = ", ".join(f"%s::{kind}[]" for kind in _ROLLUP_POSTGRESQL_TYPES)
            cursor.execute(
                f"INSERT INTO {table} ({_ROLLUP_COLUMNS}) SELECT * FROM unnest({columns}) {merge}",  # noqa: S608
                [list(column) for column in zip(*rows, strict=True)],
            )
            return
        for start in range(0, len(rows), 1000):
            chunk = rows[start : start + 1000]
            values = ", ".join(
                ["(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(chunk)
            )
            cursor.execute(
                f"INSERT INTO {table} ({_ROLLUP_COLUMNS}) VALUES {values} {merge}",  # noqa: S608
                [item for row in chunk for item in row],
            )


class _BadPoint(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool):
        raise _BadPoint(field, f"must be a finite number, not {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise _BadPoint(field, f"must be a finite number, not {value!r}"[:120]) from None
    if not math.isfinite(number):
        raise _BadPoint(field, "must be a finite number")
    return number


def _checked(point: Sequence) -> Row:
    """One point with its types fixed and its ranges checked; _BadPoint names the field."""
    step, name, value, epoch = point
    if isinstance(step, bool) or not isinstance(step, int):
        if isinstance(step, float) and step.is_integer():
            step = int(step)
        else:
            raise _BadPoint("step", f"must be a whole number, not {step!r}"[:120])
    if not 0 <= step <= MAX_STEP:
        raise _BadPoint("step", f"must be between 0 and {MAX_STEP}, not {step}")
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_LENGTH or "\x00" in name:
        raise _BadPoint(
            "name", f"must be text of 1 to {MAX_NAME_LENGTH} characters without NUL bytes"
        )
    return (
        step,
        name,
        _number(value, "value"),
        None if epoch is None else _number(epoch, "epoch"),
    )


def check_points(points: Iterable[Sequence], *, strict: bool = True) -> list[Row]:
    """``(step, name, value, epoch)`` points, checked. Strict: ValidationError naming the first
    bad point. Lenient: bad points are dropped with one logged warning (a diverged run reports
    NaN losses: they are information in the job's log, not points a chart can draw)."""
    rows: list[Row] = []
    dropped: list[str] = []
    for index, point in enumerate(points):
        try:
            rows.append(_checked(point))
        except _BadPoint as exc:
            if strict:
                raise ValidationError({"points": f"points[{index}].{exc.field}: {exc}."}) from None
            dropped.append(f"{point[1]!r:.80} at step {point[0]!r:.30} ({exc.field} {exc})")
    if dropped:
        logger.warning(
            "%d metric point(s) not stored: %s%s",
            len(dropped),
            "; ".join(dropped[:5]),
            " ..." if len(dropped) > 5 else "",
        )
    return rows


def rows_from_dicts(points: Sequence[dict]) -> list[tuple]:
    """API points ``{"step", "name", "value", "epoch"?}`` as tuples for :func:`write_points`
    (which checks them); ValidationError naming a point that is not an object with those keys."""
    try:
        return [(p["step"], p["name"], p["value"], p.get("epoch")) for p in points]
    except (KeyError, TypeError, AttributeError):
        for index, point in enumerate(points):
            if not isinstance(point, dict) or not {"step", "name", "value"} <= set(point):
                raise ValidationError(
                    {"points": f"points[{index}]: give an object with a step, a name and a value."}
                ) from None
        raise


def rows_from_reports(points: Iterable[tuple[int, dict, float | None]]) -> list[tuple]:
    """What a ``Reporter`` buffered, ``(step, {name: value}, epoch)``, as points."""
    return [
        (step, name, value, epoch)
        for step, values, epoch in points
        for name, value in values.items()
    ]


def write_points(job_id: int, points: Iterable[Sequence], *, strict: bool = True) -> int:
    """Store ``(step, name, value, epoch)`` points of one job and update the curve's rollups;
    returns how many were stored. Each point is checked first (:func:`check_points`), so a
    strict batch with one bad point stores nothing. Call it inside a transaction to keep the
    points and the rollups in step."""
    return _store(job_id, check_points(points, strict=strict))


def _store(job_id: int, rows: list[Row]) -> int:
    if not rows:
        return 0
    now = timezone.now()
    if connection.vendor == "postgresql":
        table = MetricPoint._meta.db_table
        with (
            connection.cursor() as cursor,
            cursor.connection.cursor().copy(
                f"COPY {table} (job_id, step, name, value, epoch, created_at) "
                "FROM STDIN (FORMAT BINARY)"
            ) as copy,
        ):
            # Binary rows skip formatting here and parsing in the server: ~15% faster.
            copy.set_types(["int8", "int4", "varchar", "float8", "float8", "timestamptz"])
            for step, name, value, epoch in rows:
                copy.write_row((job_id, step, name, value, epoch, now))
    else:
        MetricPoint.objects.bulk_create(
            [
                MetricPoint(job_id=job_id, step=s, name=n, value=v, epoch=e, created_at=now)
                for s, n, v, e in rows
            ],
            batch_size=2000,
        )
    _upsert_rollups(job_id, rollup_blocks(rows))
    return len(rows)


def record_points(job_id: int, points: Iterable[Sequence], *, strict: bool = True) -> int:
    """Store a batch of points and move the job's ``global_step`` up to the latest step, in one
    transaction; returns how many were stored. The one write of metric points: the API's
    service and the job machinery (points the runtime reports) both call it."""
    rows = check_points(points, strict=strict)
    if not rows:
        return 0
    with transaction.atomic():
        stored = _store(job_id, rows)
        latest = max(row[0] for row in rows)
        TrainingJob.objects.filter(pk=job_id, global_step__lt=latest).update(global_step=latest)
    return stored


def record_reported_points(job_id: int, points: list[tuple[int, dict, float | None]]) -> int:
    """Points a runtime reported through the job's ``Reporter`` (the ``write_metric_points``
    hook of ``TrainingJob``, bound in ``training.apps``): checked leniently."""
    return record_points(job_id, rows_from_reports(points), strict=False)


def discard_after(job_id: int, step: int) -> int:
    """Delete the job's points after ``step`` and rebuild the rollup blocks they were in;
    returns how many points were deleted. An attempt that resumes from the checkpoint at
    ``step`` logs those steps again, so each step keeps one point: the latest attempt's.
    Runs once per attempt, off the ingest path, so ingest stays one COPY per batch."""
    with transaction.atomic():
        deleted, _ = MetricPoint.objects.filter(job_id=job_id, step__gt=step).delete()
        if deleted:
            rebuild_rollups(job_id, from_step=step + 1)
        TrainingJob.objects.filter(pk=job_id, global_step__gt=max(step, 0)).update(
            global_step=max(step, 0)
        )
    return deleted


def rebuild_rollups(job_id: int, *, from_step: int = 0) -> None:
    """Recompute the job's rollup blocks that hold steps from ``from_step`` on, from its
    points. Blocks at every level are rebuilt from the start of the coarsest block holding
    ``from_step``, so each rebuilt block sees all of its points."""
    from_step = max(from_step, 0)
    first_blocks = [from_step // size for size in ROLLUP_BLOCK_STEPS]
    for level, block in enumerate(first_blocks):
        MetricRollup.objects.filter(job_id=job_id, level=level, block__gte=block).delete()
    start = first_blocks[-1] * ROLLUP_BLOCK_STEPS[-1]
    rows = [
        row
        for row in MetricPoint.objects.filter(job_id=job_id, step__gte=start).values_list(
            "step", "name", "value", "epoch"
        )
        if row[2] is not None and math.isfinite(row[2])  # what older versions let through
    ]
    blocks = {
        key: block for key, block in rollup_blocks(rows).items() if key[2] >= first_blocks[key[1]]
    }
    if blocks:
        _upsert_rollups(job_id, blocks)


def metric_names(job_ids: list[int]) -> dict[int, list[str]]:
    names: dict[int, set[str]] = {job_id: set() for job_id in job_ids}
    # The coarsest rollup level has a row or two per curve, where the points have thousands.
    pairs = (
        MetricRollup.objects.filter(job_id__in=job_ids, level=len(ROLLUP_BLOCK_STEPS) - 1)
        .order_by()
        .values_list("job_id", "name")
        .distinct()
    )
    for job_id, name in pairs:
        names[job_id].add(name)
    return {job_id: sorted(values) for job_id, values in names.items()}


BLOCK_FIELDS = (
    "points",
    "first_step",
    "first_value",
    "last_step",
    "last_value",
    "min_step",
    "min_value",
    "max_step",
    "max_value",
)


def _rollups(job_id: int, name: str, level: int) -> list[Block]:
    return list(
        MetricRollup.objects.filter(job_id=job_id, name=name, level=level)
        .order_by("block")
        .values_list(*BLOCK_FIELDS)
    )


def _raw_points(job_id: int, name: str) -> Iterable[tuple[int, float]]:
    return (
        MetricPoint.objects.filter(job_id=job_id, name=name)
        .order_by("step")
        .values_list("step", "value")
    )


def finite(value: float | None) -> float | None:
    """``value``, or None where it is not a finite number: what JSON (and a chart) can carry.
    Readers pass stored values through it, since older versions stored infinities (and
    PostgreSQL keeps NaN)."""
    return value if value is not None and math.isfinite(value) else None


def _chart_points(buckets: Iterable[Block]) -> dict:
    """Each bucket's first, lowest, highest and last point, in step order."""
    chosen = {p for b in buckets for p in (b[1:3], b[3:5], b[5:7], b[7:9])}
    ordered = sorted(chosen, key=lambda p: (p[0], p[1] if math.isfinite(p[1]) else math.inf))
    return {"steps": [p[0] for p in ordered], "values": [finite(p[1]) for p in ordered]}


def curve(job_id: int, name: str, *, max_points: int = MAX_CHART_POINTS) -> dict:
    """The curve of one metric: ``{"steps": [...], "values": [...], "total": n}``, downsampled
    to at most ``max_points`` points that keep the extremes."""
    coarsest = _rollups(job_id, name, len(ROLLUP_BLOCK_STEPS) - 1)
    if not coarsest:
        return {"steps": [], "values": [], "total": 0}
    total = sum(b[0] for b in coarsest)
    if total <= max_points:
        steps, values = [], []
        for step, value in _raw_points(job_id, name):
            steps.append(step)
            values.append(finite(value))
        return {"steps": steps, "values": values, "total": total}
    first = min(b[1] for b in coarsest)
    span = max(b[3] for b in coarsest) - first + 1
    # Four points per bucket (first, min, max, last) -> max_points // 4 buckets of equal steps.
    buckets = max(max_points // 4, 1)
    merged: dict = {}
    if total <= RAW_DOWNSAMPLE_LIMIT and span / ROLLUP_BLOCK_STEPS[0] < buckets:
        for step, value in _raw_points(job_id, name):
            merged.setdefault(((step - first) * buckets) // span, []).append((step, value))
        _summaries(merged)
    else:
        level = next(
            (
                level
                for level, size in enumerate(ROLLUP_BLOCK_STEPS)
                if span / size <= ROLLUP_READ_BLOCKS
            ),
            len(ROLLUP_BLOCK_STEPS) - 1,
        )
        for b in _rollups(job_id, name, level):
            _fold(merged, ((b[1] - first) * buckets) // span, b)
    return {**_chart_points(merged.values()), "total": total}


SUMMARY_POINTS = 500


def summarize(job_id: int, *, max_points: int = SUMMARY_POINTS) -> dict[str, dict]:
    """Every curve of a job, downsampled for overlays (stored on the job when it ends)."""
    names = metric_names([job_id])[job_id]
    return {name: curve(job_id, name, max_points=max_points) for name in names}
