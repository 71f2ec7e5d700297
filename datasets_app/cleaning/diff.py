"""What changed between two tables (two versions of a dataset): columns added, removed or of
another type, and rows added, removed and changed, with a page of examples of each. Plain
Python (pyarrow, numpy, pandas), no Django.

Rows are compared on the columns both tables have (a column added to every row is a schema
change, not a million changed rows); a column whose type changed is compared as text.

- With a ``key`` column (in both tables, unique in each), rows are matched by key: keys only in
  the new table are added, keys only in the old one removed, and keys in both whose other
  columns differ are changed (with the columns that differ).
- Without one, rows are matched by a hash of their content, as multisets: a row edited in place
  shows as one removed and one added (nothing says they are the same row), so ``changed`` is
  None. Identical duplicates count: a table with a row twice has one more of it than a table
  with it once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datasets_app.cleaning.browse import cell
from datasets_app.cleaning.options import OptionError

EXAMPLES_DEFAULT = 20
EXAMPLES_MAX = 100
MAX_CHANGED_COLUMNS = 20  # per changed example


def _schema(table) -> dict[str, str]:
    return {field.name: str(field.type) for field in table.schema}


def schema_changes(old: dict[str, str], new: dict[str, str]) -> dict[str, list[dict]]:
    """Columns ``added`` and ``removed`` ({name, type}) and ``type_changed`` ({name, old,
    new}), in the tables' column order."""
    return {
        "added": [{"name": n, "type": t} for n, t in new.items() if n not in old],
        "removed": [{"name": n, "type": t} for n, t in old.items() if n not in new],
        "type_changed": [
            {"name": n, "old": t, "new": new[n]} for n, t in old.items() if n in new and new[n] != t
        ],
    }


def _comparable(column, as_text: bool) -> list | Any:
    """A column as values pandas can hash: nested values and changed types as JSON text."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_nested(column.type) or pa.types.is_binary(column.type):
        return [json.dumps(cell(v), sort_keys=True, default=str) for v in column.to_pylist()]
    if as_text:
        try:
            return pc.cast(column, pa.string()).to_pandas()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return [json.dumps(cell(v), sort_keys=True, default=str) for v in column.to_pylist()]
    return column.to_pandas()


def _row_hashes(table, columns: list[str], as_text: set[str]):
    """One uint64 per row: a hash of its values in ``columns``."""
    import numpy as np
    import pandas as pd

    if not columns:
        return np.zeros(table.num_rows, dtype=np.uint64)
    frame = pd.DataFrame(
        {name: _comparable(table.column(name), name in as_text) for name in columns}
    )
    return pd.util.hash_pandas_object(frame, index=False).to_numpy()


def _rows(table, positions) -> list[dict]:
    if len(positions) == 0:
        return []
    picked = table.take(positions).to_pylist()
    return [
        {"row": int(p), "values": {k: cell(v) for k, v in row.items()}}
        for p, row in zip(positions, picked, strict=True)
    ]


def _excess(hashes, other_counts: dict) -> Any:
    """Positions of the rows of one table beyond the count of identical rows in the other."""
    import pandas as pd

    series = pd.Series(hashes)
    occurrence = series.groupby(series).cumcount().to_numpy()
    allowed = series.map(other_counts).fillna(0).to_numpy()
    return (occurrence >= allowed).nonzero()[0]


def _check_key(table, key: str, which: str) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    column = table.column(key)
    if pa.types.is_nested(column.type):
        raise OptionError("key", f"'{key}' holds {column.type} values, which cannot be a key.")
    if column.null_count:
        raise OptionError(
            "key",
            f"'{key}' is empty in {column.null_count:,} rows of {which}: a key needs a value.",
        )
    distinct = pc.count_distinct(column).as_py()
    if distinct != table.num_rows:
        raise OptionError(
            "key",
            f"'{key}' is not unique in {which} ({table.num_rows - distinct:,} repeated values): "
            "pick a column that names each row once, or compare by row content.",
        )
    return pc.cast(column, pa.string()) if pa.types.is_dictionary(column.type) else column


def diff_tables(
    old_path: Path,
    new_path: Path,
    *,
    key: str | None = None,
    limit: int = EXAMPLES_DEFAULT,
    names: tuple[str, str] = ("the old version", "the new version"),
) -> dict[str, Any]:
    """Compare the Parquet tables at ``old_path`` and ``new_path`` (see the module's notes).

    Returns ``schema`` (:func:`schema_changes`), ``key``, ``compared_columns``, ``counts``
    (``old_rows``, ``new_rows``, ``added``, ``removed``, ``changed`` (None without a key),
    ``unchanged``) and ``examples``: up to ``limit`` ``added`` and ``removed`` rows
    ({row, values}) and ``changed`` ones ({key, old_row, new_row, columns: {name: [old,
    new]}}). OptionError("key") for a key missing from a table, not unique, or empty."""
    import numpy as np
    import pyarrow.parquet as pq

    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= EXAMPLES_MAX:
        raise OptionError("limit", f"limit must be a whole number from 1 to {EXAMPLES_MAX}.")
    old = pq.read_table(old_path, memory_map=True)
    new = pq.read_table(new_path, memory_map=True)
    old_schema, new_schema = _schema(old), _schema(new)
    schema = schema_changes(old_schema, new_schema)
    common = [name for name in old_schema if name in new_schema]
    as_text = {c["name"] for c in schema["type_changed"]}
    counts: dict[str, Any] = {"old_rows": old.num_rows, "new_rows": new.num_rows}
    examples: dict[str, list] = {"added": [], "removed": [], "changed": []}
    if key in ("", None):
        old_hashes = _row_hashes(old, common, as_text)
        new_hashes = _row_hashes(new, common, as_text)
        old_values, old_counts = np.unique(old_hashes, return_counts=True)
        new_values, new_counts = np.unique(new_hashes, return_counts=True)
        removed = _excess(old_hashes, dict(zip(new_values, new_counts, strict=True)))
        added = _excess(new_hashes, dict(zip(old_values, old_counts, strict=True)))
        counts.update(
            added=len(added),
            removed=len(removed),
            changed=None,
            unchanged=old.num_rows - len(removed),
        )
        examples["added"] = _rows(new, added[:limit])
        examples["removed"] = _rows(old, removed[:limit])
        key = None
    else:
        for table, which in ((old, names[0]), (new, names[1])):
            if key not in table.column_names:
                raise OptionError(
                    "key",
                    f"No column named '{key[:60]}' in {which}. Columns: "
                    f"{', '.join(table.column_names)}.",
                )
        old_keys = _check_key(old, key, names[0]).to_pandas()
        new_keys = _check_key(new, key, names[1]).to_pandas()
        compared = [c for c in common if c != key]
        old_index = {k: i for i, k in enumerate(old_keys)}
        new_in_old = np.array([old_index.get(k, -1) for k in new_keys], dtype=np.int64)
        added = np.flatnonzero(new_in_old < 0)
        matched_new = np.flatnonzero(new_in_old >= 0)
        matched_old = new_in_old[matched_new]
        kept = np.zeros(old.num_rows, dtype=bool)
        kept[matched_old] = True
        removed = np.flatnonzero(~kept)
        old_hashes = _row_hashes(old, compared, as_text)
        new_hashes = _row_hashes(new, compared, as_text)
        differs = old_hashes[matched_old] != new_hashes[matched_new]
        changed_new, changed_old = matched_new[differs], matched_old[differs]
        order = np.argsort(changed_old, kind="stable")  # in the old table's order
        changed_new, changed_old = changed_new[order], changed_old[order]
        counts.update(
            added=len(added),
            removed=len(removed),
            changed=len(changed_new),
            unchanged=len(matched_new) - len(changed_new),
        )
        examples["added"] = _rows(new, added[:limit])
        examples["removed"] = _rows(old, removed[:limit])
        for old_row, new_row in zip(
            _rows(old, changed_old[:limit]), _rows(new, changed_new[:limit]), strict=True
        ):
            columns = {
                name: [old_row["values"][name], new_row["values"][name]]
                for name in compared
                if _differ(old_row["values"][name], new_row["values"][name], name in as_text)
            }
            examples["changed"].append(
                {
                    "key": old_row["values"][key],
                    "old_row": old_row["row"],
                    "new_row": new_row["row"],
                    "columns": dict(list(columns.items())[:MAX_CHANGED_COLUMNS]),
                }
            )
    return {
        "schema": schema,
        "key": key,
        "compared_columns": [c for c in common if c != key],
        "counts": counts,
        "examples": examples,
        "limit": limit,
    }


def _differ(old: Any, new: Any, as_text: bool) -> bool:
    if as_text:
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (old, new))
        # 2 and 2.0 are the same value in a column that went from integers to floats.
        return float(old) != float(new) if numbers else str(old) != str(new)
    return json.dumps(old, sort_keys=True, default=str) != json.dumps(
        new, sort_keys=True, default=str
    )
