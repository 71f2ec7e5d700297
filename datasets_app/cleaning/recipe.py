"""Running a cleaning recipe over a Parquet table with the ``datasets`` library (Arrow).

How it runs:

1. One batched ``Dataset.map`` (over ``num_proc`` processes) does all row-local work of every
   step at once: maps change the text, filters mark the first step a row fails, and each
   dedupe step gets the row's exact key or MinHash signature of its text at that point. Per
   row it records a bitmask of the map steps that changed it.
2. One pass over those per-row results walks the steps in order, in the parent process:
   filters drop the rows they marked, dedupe steps find duplicates among the rows still alive
   (exact keys by sorting, near duplicates by LSH banding over all signatures, so duplicates
   in different workers' shards are found), and each step's counts and examples are taken.
3. The kept rows are written once, atomically, to a new Parquet file. The source is never
   modified; when anything fails, no output file is left.

Large tables are mapped in chunks so progress is reported and cancellation honoured between
them. A step that raises fails the run with :class:`StepFailed` naming the step and the row.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from datasets_app.cleaning.steps import (
    DEFAULT_RECIPE,
    StepFailed,
    make_filter,
    make_map,
    step_catalog,
    step_kind,
    validate_recipe,
)
from llmhub.reporting import JobCancelled, JobInputError, NullReporter, Reporter

logger = logging.getLogger(__name__)
EXAMPLES = 5
EXAMPLE_CHARS = 600
CHUNK_ROWS = 250_000  # rows per map call: progress and cancellation checks between chunks
_INTERNAL = "__llmhub_"  # prefix of the per-row result columns, dropped before writing

__all__ = [
    "DEFAULT_RECIPE",
    "RecipeReport",
    "StepFailed",
    "StepReport",
    "run_recipe",
    "step_catalog",
    "validate_recipe",
]


@dataclass
class StepReport:
    """What one step did. ``removed_examples``: up to 5 removed rows' original primary text;
    ``changed_examples``: up to 5 ``{"before", "after"}`` pairs of text this step changed."""

    index: int
    step: str
    rows_in: int
    rows_out: int
    removed: int = 0
    changed: int = 0
    removed_examples: list[str] = field(default_factory=list)
    changed_examples: list[dict[str, str]] = field(default_factory=list)


@dataclass
class RecipeReport:
    """The result of :func:`run_recipe`: row counts, one :class:`StepReport` per step, and the
    written table's columns (``[{name, type}]``), SHA-256, size and path."""

    rows_in: int
    rows_out: int
    steps: list[StepReport]
    columns: list[dict[str, str]]
    content_sha256: str
    size_bytes: int
    seconds: float
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable, without the local path (it means nothing to other machines)."""
        data = asdict(self)
        del data["path"]
        return data


def _clip(text: str | None) -> str:
    text = text or ""
    return text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS] + "…"


@lru_cache(maxsize=16)
def _compiled(steps_key: str) -> list[tuple[str, Any]]:
    """The recipe's row functions, built once per process. Dedupe steps get ``None``: the row
    pass only computes their key. A step whose function cannot be built (a missing tokenizer,
    an unknown language) raises StepFailed."""
    compiled: list[tuple[str, Any]] = []
    for index, step in enumerate(json.loads(steps_key)):
        kind = step_kind(step)
        try:
            if kind == "map":
                compiled.append((kind, make_map(step["step"], step["params"])))
            elif kind == "filter":
                compiled.append((kind, make_filter(step["step"], step["params"])))
            else:
                compiled.append((kind, None))
        except JobInputError as exc:
            raise StepFailed(index, step["step"], str(exc)) from None
    return compiled


def _row_pass(*args, steps_key: str, text_columns: list[str], offset: int) -> dict[str, Any]:
    """Every row-local decision of the recipe over one batch (see the module docstring).

    Called by ``Dataset.map`` with the text columns and the batch's row indices. Returns the
    final texts and, under the ``_INTERNAL`` prefix: ``drop``, the index of the first filter
    a row fails (-1: none); ``changed``, a bitmask of the map steps that changed it; and per
    dedupe step ``i`` the exact key ``key{i}``, or the MinHash signature ``sig{i}`` and LSH
    band keys ``bands{i}`` of its text at that point.
    """
    from datasets_app.cleaning.dedupe import band_keys, exact_key, signatures

    *column_values, indices = args
    steps = json.loads(steps_key)
    compiled = _compiled(steps_key)
    size = len(indices)
    drops = np.full(size, -1, dtype=np.int32)
    changed = np.zeros(size, dtype=np.int64)
    columns = [list(values) for values in column_values]
    dedupe_texts: dict[int, list[str]] = {
        i: [""] * size for i, (kind, _fn) in enumerate(compiled) if kind == "dedupe"
    }
    current = 0
    row = 0
    try:
        for row in range(size):
            originals = [values[row] for values in columns]
            texts = [t if isinstance(t, str) else "" for t in originals]
            for current, (kind, fn) in enumerate(compiled):
                if kind == "map":
                    new = [fn(t) for t in texts]
                    if new != texts:
                        changed[row] |= 1 << current
                        texts = new
                elif kind == "filter":
                    if not fn(texts):
                        drops[row] = current
                        break
                else:
                    dedupe_texts[current][row] = "\n".join(texts)
            for values, original, text in zip(columns, originals, texts, strict=True):
                # A null stays null unless a step gave it text.
                values[row] = None if (original is None and text == "") else text
        out: dict[str, Any] = dict(zip(text_columns, columns, strict=True))
        out[f"{_INTERNAL}drop"] = drops
        out[f"{_INTERNAL}changed"] = changed
        for current, joined in dedupe_texts.items():
            params = steps[current]["params"]
            if steps[current]["step"] == "exact_dedupe":
                out[f"{_INTERNAL}key{current}"] = np.fromiter(
                    map(exact_key, joined), dtype=np.int64, count=size
                )
            else:
                sigs = signatures(
                    joined, num_perm=params["num_perm"], shingle_size=params["shingle_size"]
                )
                out[f"{_INTERNAL}sig{current}"] = sigs
                out[f"{_INTERNAL}bands{current}"] = band_keys(sigs, threshold=params["threshold"])
    except StepFailed:
        raise
    except Exception as exc:
        where = f"row {offset + int(indices[row]) + 1}: " if size else ""
        what = str(exc) if isinstance(exc, JobInputError) else f"{type(exc).__name__}: {exc}"
        raise StepFailed(current, steps[current]["step"], where + what) from exc
    return out


def _replay(row_texts: list[str], steps: list[dict], upto: int) -> tuple[list[str], list[str]]:
    """Texts before and after map step ``upto``, for a changed-row example."""
    compiled = _compiled(json.dumps(steps))
    texts = list(row_texts)
    for kind, fn in compiled[:upto]:
        if kind == "map":
            texts = [fn(t) for t in texts]
    return texts, [compiled[upto][1](t) for t in texts]


def _arrow_dataset(source: Path, cache: Path):
    """The Parquet table as a memory-mapped ``datasets.Dataset``, converted a batch at a time
    to an Arrow file in ``cache`` (``Dataset.from_parquet`` holds far more in memory)."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = cache / "source.arrow"
    try:
        parquet = pq.ParquetFile(source)
        with (
            pa.OSFile(str(path), "wb") as sink,
            pa.ipc.new_stream(sink, parquet.schema_arrow) as writer,
        ):
            for batch in parquet.iter_batches(batch_size=10_000):
                writer.write_batch(batch)
    except (pa.ArrowInvalid, OSError) as exc:
        raise JobInputError(f"The table cannot be read: {exc}.") from None
    return datasets.Dataset.from_file(str(path))


def _check_inputs(source_ds, text_columns: list[str]) -> None:
    missing = [c for c in text_columns if c not in source_ds.column_names]
    if missing:
        raise JobInputError(
            f"No column named {', '.join(missing)}; the table has "
            f"{', '.join(source_ds.column_names)}."
        )
    for column in text_columns:
        feature = source_ds.features[column]
        if getattr(feature, "dtype", None) not in ("string", "large_string"):
            raise JobInputError(
                f"Column {column!r} does not hold text ({feature}); clean a text column."
            )


def run_recipe(
    source: Path,
    *,
    output: Path,
    steps: list[dict],
    text_columns: list[str],
    num_proc: int = 1,
    reporter: Reporter | None = None,
    batch_size: int = 1000,
) -> RecipeReport:
    """Apply the recipe ``steps`` to ``text_columns`` of the Parquet table ``source`` and
    write the kept rows, all columns, to the new Parquet file ``output``.

    ``steps`` is validated first (:func:`validate_recipe`). ``num_proc`` worker processes
    share the row-local work; the output is the same for any ``num_proc``. Raises
    JobInputError for a bad recipe or column, StepFailed when a step fails, JobCancelled when
    the reporter asks to stop; in every case no output file is left.
    """
    import datasets

    reporter = reporter or NullReporter()
    steps = validate_recipe(steps)
    if (
        not isinstance(text_columns, list | tuple)
        or not text_columns
        or not all(isinstance(c, str) for c in text_columns)
    ):
        raise JobInputError("Name at least one text column to clean.")
    text_columns = list(dict.fromkeys(text_columns))
    if isinstance(num_proc, bool) or not isinstance(num_proc, int) or num_proc < 1:
        raise JobInputError(f"num_proc must be a whole number of at least 1, not {num_proc!r}.")
    source, output = Path(source), Path(output)
    if output.exists() and output.resolve() == source.resolve():
        raise JobInputError("The output must be a new file, not the source table.")
    steps_key = json.dumps(steps)
    _compiled(steps_key)  # fail early (missing tokenizer, unknown language) before any work
    started = time.perf_counter()
    datasets.disable_progress_bars()
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".llmhub-recipe-", dir=output.parent) as cache:
        source_ds = _arrow_dataset(source, Path(cache))
        _check_inputs(source_ds, text_columns)
        rows_in = source_ds.num_rows
        if rows_in == 0:
            raise JobInputError("The table has no rows to clean.")
        reporter.progress(0.02, "Running the steps")
        processed = _map_in_chunks(
            source_ds,
            steps_key=steps_key,
            text_columns=text_columns,
            num_proc=min(num_proc, os.cpu_count() or 1),
            batch_size=batch_size,
            reporter=reporter,
        )
        reporter.progress(0.75, "Finding duplicates")
        keep, reports = _decide(processed, source_ds, steps, text_columns)
        if reporter.should_stop():
            raise JobCancelled
        reporter.progress(0.85, f"Writing {len(keep):,} rows")
        from datasets_app.cleaning.readers import write_rows

        table = processed.data.table
        table = table.drop_columns([c for c in table.column_names if c.startswith(_INTERNAL)])
        written = write_rows(table, keep, Path(output))
    reporter.progress(1.0, f"Cleaned: {rows_in:,} rows in, {written.row_count:,} out")
    elapsed = round(time.perf_counter() - started, 3)
    logger.info("Recipe: %s rows in, %s out, %.2fs", rows_in, written.row_count, elapsed)
    return RecipeReport(
        rows_in=rows_in,
        rows_out=written.row_count,
        steps=reports,
        columns=written.columns,
        content_sha256=written.content_sha256,
        size_bytes=written.size_bytes,
        seconds=elapsed,
        path=written.path,
    )


def _map_in_chunks(
    source_ds,
    *,
    steps_key: str,
    text_columns: list[str],
    num_proc: int,
    batch_size: int,
    reporter: Reporter,
):
    import datasets

    rows = source_ds.num_rows
    parts = []
    for start in range(0, rows, CHUNK_ROWS):
        if reporter.should_stop():
            raise JobCancelled
        end = min(rows, start + CHUNK_ROWS)
        part = source_ds if (start, end) == (0, rows) else source_ds.select(range(start, end))
        # Fewer processes than batches would leave some idle; one process needs no pool.
        procs = max(1, min(num_proc, (end - start) // batch_size))
        parts.append(
            part.map(
                _row_pass,
                batched=True,
                batch_size=batch_size,
                with_indices=True,
                input_columns=text_columns,
                num_proc=procs if procs > 1 else None,
                fn_kwargs={"steps_key": steps_key, "text_columns": text_columns, "offset": start},
                desc="cleaning",
            )
        )
        reporter.progress(0.02 + 0.7 * end / rows, f"Cleaned {end:,} of {rows:,} rows")
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def _decide(processed, source_ds, steps: list[dict], text_columns: list[str]):
    """Walk the steps in order over the per-row results: filters drop the rows that failed
    them, dedupe steps drop duplicates among the rows still alive. Returns the kept row
    indices and the per-step reports."""
    from datasets_app.cleaning.dedupe import near_duplicate_mask_banded

    table = processed.data  # Arrow, read directly: far faster than row-wise formatting

    def column(name: str) -> np.ndarray:
        return table.column(f"{_INTERNAL}{name}").to_numpy()

    def matrix(name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """A list column as a 2-D array, of the given rows only (the rest stays on disk)."""
        values = table.column(f"{_INTERNAL}{name}")
        if rows is not None:
            values = values.take(rows)
        values = values.combine_chunks()
        width = len(values[0]) if len(values) else 0
        return values.flatten().to_numpy().reshape(-1, width)

    drops = column("drop")
    changed = column("changed")
    alive = np.ones(len(drops), dtype=bool)
    reports: list[StepReport] = []
    for index, step in enumerate(steps):
        kind = step_kind(step)
        report = StepReport(index=index, step=step["step"], rows_in=int(alive.sum()), rows_out=0)
        removed = np.zeros(len(drops), dtype=bool)
        if kind == "filter":
            removed = alive & (drops == index)
        elif kind == "dedupe":
            rows = np.flatnonzero(alive)
            if step["step"] == "exact_dedupe":
                keys = column(f"key{index}")[rows]
                _, first = np.unique(keys, return_index=True)
                duplicate = np.ones(len(rows), dtype=bool)
                duplicate[first] = False
            else:
                duplicate = ~near_duplicate_mask_banded(
                    matrix(f"bands{index}", rows),
                    lambda positions, rows=rows, index=index: matrix(
                        f"sig{index}", rows[positions]
                    ),
                    threshold=step["params"]["threshold"],
                )
            removed[rows[duplicate]] = True
        else:
            touched = np.flatnonzero(alive & ((changed >> index) & 1).astype(bool))
            report.changed = len(touched)
            for row in touched[:EXAMPLES]:
                originals = [source_ds[int(row)][c] or "" for c in text_columns]
                before, after = _replay(originals, steps, index)
                for old, new in zip(before, after, strict=True):
                    if old != new:
                        report.changed_examples.append({"before": _clip(old), "after": _clip(new)})
                        break
        removed_rows = np.flatnonzero(removed)
        report.removed = len(removed_rows)
        report.removed_examples = [
            _clip(source_ds[int(r)][text_columns[0]]) for r in removed_rows[:EXAMPLES]
        ]
        alive &= ~removed
        report.rows_out = int(alive.sum())
        reports.append(report)
    return np.flatnonzero(alive), reports
