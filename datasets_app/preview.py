"""Reading a page of rows from a stored Parquet table for previews (web process, pyarrow)."""

from __future__ import annotations

import math
from typing import Any

from llmhub import storage

MAX_CELL_CHARS = 2000


def _cell(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        # Strict JSON has no NaN or Infinity: say them as text rather than fail the page.
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: _cell(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_cell(item) for item in value]
    if isinstance(value, str) and len(value) > MAX_CELL_CHARS:
        return value[:MAX_CELL_CHARS] + "…"
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return value


def read_rows(name: str, *, offset: int, limit: int) -> dict:
    """Rows ``offset .. offset+limit`` of the stored table, reading only the row groups needed."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(storage.local_copy(name))
    total = parquet.metadata.num_rows
    rows: list[dict] = []
    position = 0
    for group in range(parquet.num_row_groups):
        group_rows = parquet.metadata.row_group(group).num_rows
        if position + group_rows <= offset:
            position += group_rows
            continue
        table = parquet.read_row_group(group)
        start = max(offset - position, 0)
        for row in table.slice(start, limit - len(rows)).to_pylist():
            rows.append({key: _cell(value) for key, value in row.items()})
        position += group_rows
        if len(rows) >= limit:
            break
    return {
        "total": total,
        "offset": offset,
        "limit": limit,
        "columns": parquet.schema_arrow.names,
        "rows": rows,
    }
