"""Reading pages of rows from a stored Parquet table for previews and the row browser (web
process, pyarrow). The work is done by the plain runtime :mod:`datasets_app.cleaning.browse`;
this module finds the stored file."""

from __future__ import annotations

from typing import Any

from datasets_app.cleaning.browse import RowQuery, browse, cell
from llmhub import storage

_cell = cell  # the name older callers used


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
            rows.append({key: cell(value) for key, value in row.items()})
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


def browse_rows(name: str, query: RowQuery) -> dict[str, Any]:
    """The page of the stored table ``name`` that ``query`` asks for (see
    :func:`datasets_app.cleaning.browse.browse`); matches are cached under the storage name,
    which is the table's content hash."""
    return browse(storage.local_copy(name), query, cache_key=name)
