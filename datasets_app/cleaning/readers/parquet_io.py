"""Parquet: the Arrow schema of parsed rows, copying an uploaded Parquet file, and writing our
tables atomically with deterministic bytes (zstd, no file metadata), so the same rows always
give the same SHA-256."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datasets_app.cleaning.readers.findings import Findings
from datasets_app.cleaning.readers.streams import RATIO_FLOOR_BYTES, READ_BYTES
from llmhub.reporting import JobInputError

ROW_GROUP_ROWS = 50_000


@dataclass
class IngestResult:
    """What was written: ``row_count``, ``columns`` (``[{"name", "type"}]`` with type one of
    string, integer, float, boolean, list, struct, map, binary, date, timestamp, null...),
    ``content_sha256`` and ``size_bytes`` of the Parquet file at ``path``, and ``warnings``
    worth showing the user (NUL removed, NaN, very long lines, no text column...)."""

    path: Path
    row_count: int
    columns: list[dict[str, str]]
    content_sha256: str
    size_bytes: int
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable, without the local path (it means nothing to other machines)."""
        data = asdict(self)
        del data["path"]
        return data


def type_name(arrow_type) -> str:
    """A simple name for an Arrow type: string, integer, float, boolean, list, struct, map,
    binary, date, timestamp, time, duration, null (dictionaries: their value type)."""
    import pyarrow as pa

    t = pa.types
    if t.is_dictionary(arrow_type):
        return type_name(arrow_type.value_type)
    checks = (
        (t.is_string, "string"),
        (t.is_large_string, "string"),
        (t.is_boolean, "boolean"),
        (t.is_integer, "integer"),
        (t.is_floating, "float"),
        (t.is_decimal, "float"),
        (t.is_list, "list"),
        (t.is_large_list, "list"),
        (t.is_fixed_size_list, "list"),
        (t.is_struct, "struct"),
        (t.is_map, "map"),
        (t.is_binary, "binary"),
        (t.is_large_binary, "binary"),
        (t.is_fixed_size_binary, "binary"),
        (t.is_date, "date"),
        (t.is_timestamp, "timestamp"),
        (t.is_time, "time"),
        (t.is_duration, "duration"),
        (t.is_null, "null"),
    )
    for check, name in checks:
        if check(arrow_type):
            return name
    return str(arrow_type)


def batch_schema(batch: list[dict], first_row: int):
    """The Arrow schema of a batch of JSON rows; a row Arrow cannot store is named."""
    import pyarrow as pa

    problems = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError)
    # Every key of the batch: from_pylist alone only looks at the first row's keys.
    names = dict.fromkeys(key for row in batch for key in row)
    try:
        return pa.Table.from_pydict({n: [row.get(n) for row in batch] for n in names}).schema
    except problems:
        pass
    # Find the first row at fault (only on this error path: row by row).
    unified = None
    for offset, row in enumerate(batch):
        try:
            schema = pa.Table.from_pylist([row]).schema
        except problems as exc:
            lines = getattr(batch, "lines", None)  # JSON rows know their line
            where = f"Line {lines[offset]}" if lines else f"Row {first_row + offset}"
            if isinstance(exc, OverflowError) or "too large" in str(exc):
                raise JobInputError(
                    f"{where} holds an integer too large for a 64-bit column ({exc}): write "
                    'it as a string ("...") if it is an identifier, or as a float.'
                ) from None
            raise JobInputError(
                f"{where} cannot be stored: {exc}. A list must hold values of one kind, and "
                "integers must fit in 64 bits."
            ) from None
        where = f"row {first_row + offset}"
        unified = schema if unified is None else unify([unified, schema], where)
    return unified


def unify(schemas: list, where: str):
    import pyarrow as pa

    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise JobInputError(
            f"A column holds values of different kinds ({where}): {exc}. Make each column hold "
            "one kind of value (all text, all numbers, all lists...)."
        ) from None


def partial_path(output: Path) -> Path:
    """Where ``output`` is written before it is renamed into place."""
    return output.with_name(f".{output.name}.{os.getpid()}.partial")


def _clean_batch(batch, first_row: int, findings: Findings | None):
    """A record batch with NUL removed from its string columns (PostgreSQL cannot store
    them), counting those and the NaN or infinite floats for the warnings."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = []
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        kind = column.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            count = pc.sum(pc.count_substring(column, "\x00")).as_py() or 0
            if count:
                if findings is not None:
                    first = pc.index(pc.greater(pc.count_substring(column, "\x00"), 0), True)
                    findings.add("nul", f"row {first_row + first.as_py()}", count)
                column = pc.replace_substring(column, "\x00", "")
        elif pa.types.is_floating(kind) and findings is not None:
            bad = pc.invert(pc.is_finite(column))
            count = pc.sum(bad).as_py() or 0
            if count:
                first = pc.index(bad, True).as_py()
                findings.add(f"non_finite:{name}", f"row {first_row + first}", count)
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)


def copy_parquet(
    source: Path,
    partial: Path,
    limit: int,
    report: Callable[[float, str], None],
    *,
    max_ratio: float | None = None,
    findings: Findings | None = None,
) -> int:
    """Copy an uploaded Parquet file as our Parquet (plain columns, no metadata), within the
    size limit and the expansion ratio. Returns the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    size = max(source.stat().st_size, 1)

    def check(expanded: int) -> None:
        if expanded > limit:
            raise JobInputError(
                f"The table holds more than {limit:,} bytes uncompressed, the limit. "
                "Split it into smaller files."
            )
        if max_ratio and expanded > RATIO_FLOOR_BYTES and expanded > max_ratio * size:
            raise JobInputError(
                f"The table expands more than {max_ratio:g} times its file size, the limit "
                f"({size:,} bytes hold more than {expanded:,}): refusing it as a compressed "
                "bomb."
            )

    try:
        parquet = pq.ParquetFile(source)
        metadata = parquet.metadata
        declared = sum(
            metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups)
        )
        if max(declared, source.stat().st_size) > limit:
            raise JobInputError(
                f"The table holds {declared:,} bytes uncompressed, more than the limit of "
                f"{limit:,}. Split it into smaller files."
            )
        check(declared)
        if metadata.num_rows == 0:
            raise JobInputError("The file has no rows.")
        if not parquet.schema_arrow.names:
            raise JobInputError("The file has no columns.")
        # Categorical (dictionary) columns become plain ones; file metadata is dropped, so the
        # same table always gives the same bytes.
        schema = pa.schema(
            [
                pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
                for f in parquet.schema_arrow
            ]
        )
        rows = expanded = 0
        with pq.ParquetWriter(partial, schema, compression="zstd") as writer:
            for batch in parquet.iter_batches(batch_size=ROW_GROUP_ROWS):
                expanded += batch.nbytes  # encodings (dictionaries) can hide the real size
                check(expanded)
                table = pa.Table.from_batches([batch]).cast(schema)
                cleaned = [_clean_batch(b, rows + 1, findings) for b in table.to_batches()]
                writer.write_table(
                    pa.Table.from_batches(cleaned, schema=schema), row_group_size=ROW_GROUP_ROWS
                )
                rows += batch.num_rows
                report(0.05 + 0.9 * rows / metadata.num_rows, f"Copied {rows:,} rows")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        raise JobInputError(f"The file is not a valid Parquet file: {exc}.") from None
    return rows


def finish(partial: Path, output: Path, rows: int, warnings: list[str]) -> IngestResult:
    """Hash the written ``partial`` file and rename it to ``output``."""
    import pyarrow.parquet as pq

    schema = pq.read_schema(partial)
    columns = [{"name": f.name, "type": type_name(f.type)} for f in schema]
    if not columns:
        raise JobInputError("The file has no columns.")
    digest = hashlib.sha256()
    with open(partial, "rb") as handle:
        while chunk := handle.read(READ_BYTES):
            digest.update(chunk)
    os.replace(partial, output)
    return IngestResult(
        path=output,
        row_count=rows,
        columns=columns,
        content_sha256=digest.hexdigest(),
        size_bytes=output.stat().st_size,
        warnings=warnings,
    )


def write_table(table, output: Path) -> IngestResult:
    """Write an Arrow table atomically as our Parquet (zstd; deterministic bytes)."""
    return write_rows(table, None, output)


def write_rows(table, indices: Iterable[int] | None, output: Path) -> IngestResult:
    """Write the rows ``indices`` (all when None) of an Arrow table atomically as Parquet,
    taking them a row group at a time, so memory stays bounded for memory-mapped tables."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(output)
    schema = table.schema.remove_metadata()
    if indices is None:
        indices = np.arange(table.num_rows)
    indices = np.asarray(indices, dtype=np.int64)
    try:
        with pq.ParquetWriter(partial, schema, compression="zstd") as writer:
            if len(indices) == 0:
                writer.write_table(pa.Table.from_batches([], schema=schema))
            for start in range(0, len(indices), ROW_GROUP_ROWS):
                part = table.take(indices[start : start + ROW_GROUP_ROWS])
                writer.write_table(part.replace_schema_metadata(None).cast(schema))
        return finish(partial, output, len(indices), [])
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
