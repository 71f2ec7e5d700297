"""Splitting a table into named parts: by ratios (random, optionally stratified by a label, or by
position: the rows in file order, as language-model corpora are split), or by the values of an
existing column. Deterministic for a seed; one Parquet file per split."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmhub.reporting import JobInputError

DEFAULT_RATIOS = {"train": 0.8, "validation": 0.1, "test": 0.1}
MAX_SPLITS = 20
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class SplitResult:
    """One written split: its Parquet ``path``, ``rows`` and the file's ``sha256``."""

    path: Path
    rows: int
    sha256: str

    def to_dict(self) -> dict:
        """JSON-serializable (the path as a string)."""
        return {"path": str(self.path), "rows": self.rows, "sha256": self.sha256}


def _allocate(count: int, ratios: list[float]) -> list[int]:
    """Split ``count`` items by ``ratios`` with the largest-remainder method (sums exactly)."""
    raw = [count * r for r in ratios]
    sizes = [int(x) for x in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - sizes[i], reverse=True):
        if sum(sizes) >= count:
            break
        sizes[i] += 1
    return sizes


def validate_ratios(ratios: dict[str, float] | None) -> dict[str, float]:
    """The ratios, checked: 1-20 splits with plain names and positive shares summing to 1."""
    ratios = DEFAULT_RATIOS if ratios is None else ratios
    if not isinstance(ratios, dict) or not ratios:
        raise JobInputError('Give split ratios such as {"train": 0.8, "test": 0.2}.')
    if len(ratios) > MAX_SPLITS:
        raise JobInputError(f"At most {MAX_SPLITS} splits.")
    for name, share in ratios.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise JobInputError(
                f"Split name {name!r}: use letters, digits, '-', '_' or '.' (e.g. train)."
            )
        if isinstance(share, bool) or not isinstance(share, int | float) or not share > 0:
            raise JobInputError(f"The ratio of split {name!r} must be a positive number.")
    total = sum(ratios.values())
    if abs(total - 1) > 1e-6:
        raise JobInputError(f"Split ratios must add up to 1; these add up to {total:g}: {ratios}.")
    return {name: float(share) for name, share in ratios.items()}


def _stratified(labels: list, shares: list[float], rng: np.random.Generator) -> list[list[int]]:
    """Row indices per split, keeping each class's proportions.

    Each class gives each split the whole part of its share (so a class with at least
    1/share rows appears in every split); the remaining rows (fewer than the number of
    splits per class) go where the totals fall short of an unstratified split, largest
    fractional share first, so the split sizes match the ratios exactly."""
    groups: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        groups.setdefault(repr(label), []).append(index)
    count = len(shares)
    parts: list[list[int]] = [[] for _ in range(count)]
    leftovers: list[tuple[np.ndarray, np.ndarray]] = []  # (rows, fractional shares)
    for key in sorted(groups):
        members = np.array(groups[key], dtype=np.int64)
        rng.shuffle(members)
        exact = np.array(shares) * len(members)
        base = np.floor(exact + 1e-9).astype(int)
        start = 0
        for split, size in enumerate(base):
            parts[split].extend(members[start : start + size].tolist())
            start += size
        leftovers.append((members[start:], exact - base))
    short = np.array(_allocate(len(labels), shares)) - np.array([len(p) for p in parts])
    for rows, fractions in leftovers:
        for row in rows:
            # Prefer splits still short, then the class's largest fractional share.
            order = sorted(range(count), key=lambda s: (short[s] <= 0, -fractions[s]))
            split = order[0]
            parts[split].append(int(row))
            short[split] -= 1
            fractions[split] = -1.0  # one extra row per split per class, where possible
    return parts


def split_table(
    source: Path,
    *,
    output_dir: Path,
    ratios: dict[str, float] | None = None,
    seed: int = 42,
    stratify_column: str | None = None,
    by_column: str | None = None,
    strategy: str = "random",
) -> dict[str, SplitResult]:
    """Write one Parquet file per split, ``output_dir/<name>.parquet``; return
    ``{name: SplitResult}`` in split order.

    - ``ratios`` (default train 0.8 / validation 0.1 / test 0.1): a random split, sizes by
      the largest-remainder method; with ``stratify_column``, each class keeps its
      proportions in every split (within one row), and a class with enough rows (at least
      1/ratio) appears in each split.
    - ``strategy="position"``: no shuffle; the ratios take the rows in file order, the first
      split the first rows (train 0.9 / validation 0.1: the first 90% and the last 10%), so
      no validation text lies between training rows.
    - ``by_column``: the column's values (e.g. train/dev in a column ``split``) name the
      splits, in order of first appearance; ``ratios`` and ``stratify_column`` must be unset.

    Rows keep their original order within a split. The same input and seed give the same
    files. JobInputError for bad ratios, an unknown column, a null split value, or a split
    that would be empty.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from datasets_app.cleaning.readers import write_rows

    table = pq.read_table(source)
    rows = table.num_rows
    if rows == 0:
        raise JobInputError("The table has no rows to split.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise JobInputError("The seed must be a whole number.")
    if strategy not in ("random", "position"):
        raise JobInputError(f"Unknown split strategy {strategy!r}; use random or position.")
    if strategy == "position" and (by_column is not None or stratify_column is not None):
        raise JobInputError("A split by position takes ratios only, no column.")
    output_dir = Path(output_dir)
    parts: dict[str, np.ndarray] = {}
    if strategy == "position":
        ratios = validate_ratios(ratios)
        start = 0
        for name, size in zip(ratios, _allocate(rows, list(ratios.values())), strict=True):
            parts[name] = np.arange(start, start + size, dtype=np.int64)
            start += size
    elif by_column is not None:
        if ratios is not None or stratify_column is not None:
            raise JobInputError("Split either by a column or by ratios, not both.")
        if by_column not in table.column_names:
            raise JobInputError(
                f"No column named {by_column!r} to split by; the table has "
                f"{', '.join(table.column_names)}."
            )
        column = table.column(by_column)
        if column.null_count:
            raise JobInputError(
                f"{column.null_count:,} rows have no value in {by_column!r}: every row needs a "
                "split name."
            )
        values = np.array([str(v) for v in column.to_pylist()], dtype=object)
        names = list(dict.fromkeys(values.tolist()))
        if len(names) > MAX_SPLITS:
            raise JobInputError(
                f"{by_column!r} has {len(names)} distinct values; a split column should hold a "
                "few names such as train/validation/test."
            )
        bad = [name for name in names if not _NAME.match(name)]
        if bad:
            raise JobInputError(
                f"{by_column!r} holds {bad[0]!r}, which cannot name a split: use letters, "
                "digits, '-', '_' or '.'."
            )
        for name in names:
            parts[name] = np.flatnonzero(values == name)
    else:
        ratios = validate_ratios(ratios)
        names, shares = list(ratios), list(ratios.values())
        rng = np.random.default_rng(seed)
        if stratify_column is not None:
            if stratify_column not in table.column_names:
                raise JobInputError(
                    f"No column named {stratify_column!r} to stratify by; the table has "
                    f"{', '.join(table.column_names)}."
                )
            labels = pc.cast(table.column(stratify_column), "string").to_pylist()
            indices = _stratified(labels, shares, rng)
            parts = {
                n: np.sort(np.array(i, dtype=np.int64)) for n, i in zip(names, indices, strict=True)
            }
        else:
            order = rng.permutation(rows)
            start = 0
            for name, size in zip(names, _allocate(rows, shares), strict=True):
                parts[name] = np.sort(order[start : start + size])
                start += size
    empty = [name for name, indices in parts.items() if len(indices) == 0]
    if empty:
        raise JobInputError(
            f"The {', '.join(map(repr, empty))} split would be empty ({rows:,} rows): use more "
            "rows or larger ratios."
        )
    results: dict[str, SplitResult] = {}
    for name, indices in parts.items():
        written = write_rows(table, indices, output_dir / f"{name}.parquet")
        results[name] = SplitResult(
            path=written.path, rows=written.row_count, sha256=written.content_sha256
        )
    return results
