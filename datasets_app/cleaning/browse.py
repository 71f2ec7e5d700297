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
import threading
from collections import OrderedDict
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


def _filter_mask(table, schema, query: RowQuery):
    """The filter's boolean mask over ``table`` (which holds the filter column)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    field = schema.field(query.column)
    column = table.column(query.column)
    if _is_text(field.type):
        if query.op == "contains":
            return pc.match_substring(column, query.value, ignore_case=True)
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


def _positions(path: Path, schema, query: RowQuery, columns: list[str]):
    """Positions (int64 numpy array) of the rows matching ``query``, reading only ``columns``."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=columns, memory_map=True)
    mask = None
    if query.search:
        text = [name for name in columns if _is_text(schema.field(name).type)]
        for name in text:
            hit = pc.match_substring(table.column(name), query.search, ignore_case=True)
            mask = hit if mask is None else pc.or_kleene(mask, hit)
    if query.column is not None:
        kept = _filter_mask(table, schema, query)
        mask = kept if mask is None else pc.and_kleene(mask, kept)
    mask = pc.fill_null(mask, False)
    return pc.indices_nonzero(mask).to_numpy()


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
    """The rows at ``positions`` (sorted), reading only the row groups that hold them."""
    import numpy as np

    if len(positions) == 0:
        return []
    starts = np.array(_group_starts(parquet), dtype=np.int64)
    groups = np.searchsorted(starts, positions, side="right") - 1
    wanted = sorted(set(groups.tolist()))
    table = parquet.read_row_groups(wanted)
    base, offsets = 0, {}
    for group in wanted:
        offsets[group] = base - int(starts[group])
        base += parquet.metadata.row_group(group).num_rows
    local = [int(p) + offsets[int(g)] for p, g in zip(positions, groups, strict=True)]
    return table.take(local).to_pylist()


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
            positions = _positions(Path(path), schema, query, columns)
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
