"""Browsing a stored table: pages of rows, a case-insensitive search over the text columns and a
filter on any column (plain Python and pyarrow, no Django).

:class:`RowQuery` is the one validator of the browser's parameters: the rows API, the row
browser page and the benchmark build one, and :func:`browse` checks it again against the
table's own schema (a column that does not exist, a value that is not a number for a number
column), raising :class:`~datasets_app.cleaning.options.OptionError` naming the parameter.

A page without a search or filter reads only the row groups that hold it. A search or filter
reads only the columns it looks at, once, and keeps the positions of the matching rows in a
small in-process cache keyed by the table's storage name (tables are stored under their
content hash and never change, so an entry can never go stale); turning pages then reads only
the row groups holding the page's rows.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets_app.cleaning.options import OptionError

PAGE_SIZE_DEFAULT = 50
PAGE_SIZE_MAX = 200
MAX_PAGE = 10_000_000  # 2 billion rows at the largest page size: beyond any stored table
MAX_TEXT = 200  # characters of a search or filter value
MAX_CELL_CHARS = 2000
# The operators a filter may use: name -> what the page shows. ">=" and "<=" are accepted too.
OPERATORS = {"equals": "=", "contains": "contains", "gte": "≥", "lte": "≤"}
OPERATOR_ALIASES = {"=": "equals", "==": "equals", ">=": "gte", "<=": "lte"}
# Cached match positions: at most this many queries and this many positions in all (8 bytes
# each: 64 MB), per process.
CACHE_ENTRIES = 64
CACHE_POSITIONS = 8_000_000
# Decoded columns that searches and filters read, per process: 1,000,000 rows of 160-character
# texts take about 170 MB.
COLUMN_CACHE_BYTES = 512 * 2**20
BATCH_ROWS = 2048  # rows decoded at a time when reading a page from a row group
SCAN_THREADS = 8  # threads matching a column's chunks (at most the machine's cores)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class RowQuery:
    """One page of a table: ``page`` (from 1) of ``page_size`` rows (1-200), keeping the rows
    whose text columns contain ``search`` (any case) and whose ``column`` compares with
    ``value`` by ``op`` (equals, contains, gte, lte). Empty strings mean "not given"."""

    page: int = 1
    page_size: int = PAGE_SIZE_DEFAULT
    search: str = ""
    column: str | None = None
    op: str = "equals"
    value: str | None = None

    def __post_init__(self) -> None:
        if not _is_int(self.page) or not 1 <= self.page <= MAX_PAGE:
            raise OptionError("page", f"page must be a whole number from 1 to {MAX_PAGE:,}.")
        if not _is_int(self.page_size) or not 1 <= self.page_size <= PAGE_SIZE_MAX:
            raise OptionError(
                "page_size", f"page_size must be a whole number from 1 to {PAGE_SIZE_MAX}."
            )
        if self.search is None:
            self.search = ""
        if not isinstance(self.search, str) or len(self.search) > MAX_TEXT:
            raise OptionError("search", f"Search for at most {MAX_TEXT} characters.")
        self.search = self.search.strip()
        if self.column in ("", None):
            self.column = None
        elif not isinstance(self.column, str):
            raise OptionError("column", "Give a column name.")
        op = OPERATOR_ALIASES.get(self.op, self.op) if isinstance(self.op, str) else self.op
        if op in ("", None):
            op = "equals"
        if op not in OPERATORS:
            raise OptionError("op", f"op must be one of {', '.join(OPERATORS)}.")
        self.op = op
        if self.value == "":
            self.value = None
        if self.value is not None and (
            not isinstance(self.value, str) or len(self.value) > MAX_TEXT
        ):
            raise OptionError("value", f"Give a value of at most {MAX_TEXT} characters.")
        if self.column is not None and self.value is None:
            raise OptionError("value", f"Give a value to filter '{self.column}' by.")
        if self.value is not None and self.column is None:
            raise OptionError("column", "Choose the column to filter by.")

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size

    @property
    def filtered(self) -> bool:
        """Whether the query keeps only some rows (a search or a filter)."""
        return bool(self.search) or self.column is not None

    def key(self) -> tuple:
        """What decides which rows match (not the page): the match cache's key."""
        return (self.search.casefold(), self.column, self.op, self.value)


# --- reading ------------------------------------------------------------------------------------


def cell(value: Any) -> Any:
    """A cell as strict JSON: NaN and infinities as text, long text cut, bytes as their size."""
    if isinstance(value, float) and not math.isfinite(value):
        # Strict JSON has no NaN or Infinity: say them as text rather than fail the page.
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: cell(item) for key, item in value.items()}
    if isinstance(value, list):
        return [cell(item) for item in value]
    if isinstance(value, str) and len(value) > MAX_CELL_CHARS:
        return value[:MAX_CELL_CHARS] + "…"
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _is_text(field_type) -> bool:
    import pyarrow as pa

    return pa.types.is_string(field_type) or pa.types.is_large_string(field_type)


def _is_nested(field_type) -> bool:
    import pyarrow as pa

    return pa.types.is_nested(field_type) or pa.types.is_dictionary(field_type)


def _filter_mask(column, schema, query: RowQuery):
    """The filter's boolean mask over ``column`` (the values of the filter column)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    field = schema.field(query.column)
    if _is_text(field.type):
        if query.op == "contains":
            return _per_chunk(column, pc.match_substring, query.value, ignore_case=True)
        compare = {"equals": pc.equal, "gte": pc.greater_equal, "lte": pc.less_equal}[query.op]
        return compare(column, pa.scalar(query.value, field.type))
    if query.op == "contains":
        return pc.match_substring(pc.cast(column, pa.string()), query.value, ignore_case=True)
    try:
        value = pc.cast(pa.scalar(query.value.strip()), field.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        kind = "true or false" if pa.types.is_boolean(field.type) else f"a {field.type} value"
        raise OptionError(
            "value", f"'{query.value[:40]}' is not {kind}, which '{query.column}' holds."
        ) from None
    compare = {"equals": pc.equal, "gte": pc.greater_equal, "lte": pc.less_equal}[query.op]
    return compare(column, value)


def _check(schema, query: RowQuery) -> list[str]:
    """The columns a query reads (checked against the table's schema)."""
    import pyarrow as pa

    needed: list[str] = []
    if query.search:
        text = [f.name for f in schema if _is_text(f.type)]
        if not text:
            raise OptionError("search", "This table has no text column to search.")
        needed.extend(text)
    if query.column is not None:
        if query.column not in schema.names:
            raise OptionError(
                "column",
                f"No column named '{query.column[:60]}'. Columns: {', '.join(schema.names)}.",
            )
        field_type = schema.field(query.column).type
        if _is_nested(field_type):
            raise OptionError(
                "column",
                f"'{query.column}' holds {field_type} values: filter a text, number, boolean "
                "or date column.",
            )
        if pa.types.is_boolean(field_type) and query.op in ("gte", "lte"):
            raise OptionError("op", f"'{query.column}' holds true/false: use equals.")
        needed.append(query.column)
    return list(dict.fromkeys(needed))


def _positions(path: Path, schema, query: RowQuery, columns: dict):
    """Positions (int64 numpy array) of the rows matching ``query`` in ``columns`` (name ->
    the column's values, as :func:`_read_columns` gives them)."""
    import pyarrow.compute as pc

    mask = None
    if query.search:
        for name, values in columns.items():
            if _is_text(schema.field(name).type):
                hit = _per_chunk(values, pc.match_substring, query.search, ignore_case=True)
                mask = hit if mask is None else pc.or_kleene(mask, hit)
    if query.column is not None:
        kept = _filter_mask(columns[query.column], schema, query)
        mask = kept if mask is None else pc.and_kleene(mask, kept)
    mask = pc.fill_null(mask, False)
    return pc.indices_nonzero(mask).to_numpy()


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _per_chunk(values, kernel, *args, **kwargs):
    """``kernel`` over each chunk of ``values`` in threads (pyarrow's kernels release the
    GIL, and one call over a chunked array runs on one core): a substring scan of 1,000,000
    texts is the slowest thing a page asks for."""
    import pyarrow as pa

    global _POOL
    chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
    if len(chunks) < 2:
        return kernel(values, *args, **kwargs)
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(
                max_workers=min(SCAN_THREADS, os.cpu_count() or 1),
                thread_name_prefix="row-scan",
            )
    results = list(_POOL.map(lambda chunk: kernel(chunk, *args, **kwargs), chunks))
    return pa.chunked_array(results, type=results[0].type)


class _ColumnCache:
    """Decoded columns per (table, column name), least recently used dropped first beyond
    ``limit`` bytes: most of a cold search's time is decompressing and decoding the text
    columns, not matching them. Tables never change under a name, so entries never go stale."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: tuple):
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: tuple, column) -> None:
        size = column.nbytes
        if size > self.limit:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = column
            self._size += size
            while self._size > self.limit:
                _old, dropped = self._items.popitem(last=False)
                self._size -= dropped.nbytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._size = 0


COLUMNS = _ColumnCache(COLUMN_CACHE_BYTES)


def _read_columns(path: Path, names: list[str], cache_key: str | None) -> dict:
    """name -> the column's values, from the column cache or read (only those missing)."""
    import pyarrow.parquet as pq

    found = {name: COLUMNS.get((cache_key, name)) for name in names} if cache_key else {}
    missing = [name for name in names if found.get(name) is None]
    if missing:
        table = pq.read_table(path, columns=missing, memory_map=True)
        for name in missing:
            found[name] = table.column(name)
            if cache_key:
                COLUMNS.put((cache_key, name), found[name])
    return {name: found[name] for name in names}


class _MatchCache:
    """A small LRU of match positions per (table, query); tables never change under a name."""

    def __init__(self) -> None:
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: tuple):
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: tuple, positions) -> None:
        if len(positions) > CACHE_POSITIONS:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = positions
            self._size += len(positions)
            while len(self._items) > CACHE_ENTRIES or self._size > CACHE_POSITIONS:
                _old, dropped = self._items.popitem(last=False)
                self._size -= len(dropped)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._size = 0


MATCHES = _MatchCache()


def _group_starts(parquet) -> list[int]:
    starts, position = [], 0
    for group in range(parquet.num_row_groups):
        starts.append(position)
        position += parquet.metadata.row_group(group).num_rows
    return starts


def _read_positions(parquet, positions) -> list[dict]:
    """The rows at ``positions`` (sorted), reading only the row groups that hold them, and in
    each only up to its last wanted row (a page at the start of a 50,000-row group decodes a
    few thousand rows, not the group)."""
    import numpy as np
    import pyarrow as pa

    if len(positions) == 0:
        return []
    positions = np.asarray(positions, dtype=np.int64)
    starts = np.array(_group_starts(parquet), dtype=np.int64)
    groups = np.searchsorted(starts, positions, side="right") - 1
    rows: list[dict] = []
    for group in dict.fromkeys(groups.tolist()):
        local = positions[groups == group] - starts[group]
        first, last = int(local[0]), int(local[-1])
        batches, seen, kept_from = [], 0, None
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, row_groups=[group]):
            if seen + batch.num_rows > first:
                if kept_from is None:
                    kept_from = seen
                batches.append(batch)
            seen += batch.num_rows
            if seen > last:
                break
        table = pa.Table.from_batches(batches, schema=parquet.schema_arrow)
        rows.extend(table.take(local - kept_from).to_pylist())
    return rows


def browse(path: Path, query: RowQuery, *, cache_key: str | None = None) -> dict[str, Any]:
    """The page of rows ``query`` asks for from the Parquet table at ``path``.

    ``cache_key`` names the table's content (its storage name, content-addressed): the match
    positions of a search or filter are kept under it. Returns ``total`` (rows in the table),
    ``matched`` (rows the search and filter keep), ``page``, ``page_size``, ``pages``,
    ``offset``, ``limit``, ``columns``, ``rows`` and ``row_numbers`` (each row's position in
    the table, from 0). OptionError names a parameter the table cannot answer."""
    import numpy as np
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path, memory_map=True)
    schema = parquet.schema_arrow
    total = parquet.metadata.num_rows
    columns = _check(schema, query)
    offset, limit = query.offset, query.page_size
    if not query.filtered:
        matched = total
        page = np.arange(min(offset, total), min(offset + limit, total), dtype=np.int64)
    else:
        key = (cache_key, *query.key()) if cache_key else None
        positions = MATCHES.get(key) if key else None
        if positions is None:
            values = _read_columns(Path(path), columns, cache_key)
            positions = _positions(Path(path), schema, query, values)
            if key:
                MATCHES.put(key, positions)
        matched = len(positions)
        page = positions[offset : offset + limit]
    rows = _read_positions(parquet, page)
    return {
        "total": total,
        "matched": matched,
        "page": query.page,
        "page_size": limit,
        "pages": max(1, math.ceil(matched / limit)),
        "offset": offset,
        "limit": limit,
        "columns": schema.names,
        "rows": [{name: cell(value) for name, value in row.items()} for row in rows],
        "row_numbers": [int(p) for p in page],
    }
