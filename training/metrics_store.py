"""Writing and reading metric curves fast.

Writes: PostgreSQL gets the points through binary COPY (one round trip per batch, far faster
than INSERT); other databases through ``bulk_create``. Each batch also updates the curve's
rollups: per block of steps, at block sizes of 64, 512, 4,096 and 32,768 steps, the number of
points and the first, last, lowest and highest point (``MetricRollup``).

Reads: a chart needs at most ~2,000 points. A short curve comes back whole. A long one is
downsampled into buckets that keep each bucket's first, lowest, highest and last point, so
spikes and the overall shape survive; the buckets are built from the finest rollup level with
at most ``ROLLUP_READ_BLOCKS`` blocks, so a read costs the same for a curve of 100,000 points
as for one of 100 million.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection
from django.utils import timezone

from training.models import MetricPoint, MetricRollup

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


def write_points(job_id: int, points: Iterable[tuple[int, str, float, float | None]]) -> int:
    """Store ``(step, name, value, epoch)`` points of one job and update the curve's rollups;
    returns how many were stored. Call it inside a transaction to keep the two in step."""
    rows = [
        (int(step), str(name)[:60], float(value), epoch)
        for step, name, value, epoch in points
        if value is not None and value == value
    ]  # drop NaN: it cannot be charted
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


def _chart_points(buckets: Iterable[Block]) -> dict:
    """Each bucket's first, lowest, highest and last point, in step order."""
    chosen = {p for b in buckets for p in (b[1:3], b[3:5], b[5:7], b[7:9])}
    ordered = sorted(chosen)
    return {"steps": [p[0] for p in ordered], "values": [p[1] for p in ordered]}


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
            values.append(value)
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
