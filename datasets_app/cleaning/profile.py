"""Profiling a Parquet table: per-column types, nulls, distinct values, text lengths, token
lengths, class balance, duplicates, languages and PII, plus sample rows. JSON-serializable.

The table is read in record batches, so memory holds a batch plus a few numbers per row
(lengths and hashes), not the table. Counts over whole columns are exact, except distinct
values of a column with more than 10,000 of them, counted by 64-bit hashes (the result says
``"distinct_method": "hash"``). The expensive parts look at a random sample of rows
(``sample_size``, said in the result): language detection, PII scanning and token counts with
a trained tokenizer.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from llmhub.reporting import JobCancelled, JobInputError, NullReporter, Reporter

SAMPLE_SIZE = 2000
TOP_VALUES = 30
HISTOGRAM_BINS = 30
EXACT_DISTINCT = 10_000  # distinct values counted exactly (and top values kept) up to this
BATCH_ROWS = 20_000
TEXT_ROLES = ("text", "target", "prompt", "chosen", "rejected", "context", "question")


def _histogram(values: np.ndarray) -> dict[str, Any]:
    if values.size == 0:
        return {"edges": [], "counts": []}
    low, high = float(values.min()), float(values.max())
    if low == high:
        high = low + 1
    counts, edges = np.histogram(values, bins=HISTOGRAM_BINS, range=(low, high))
    return {"edges": [round(float(e), 2) for e in edges], "counts": [int(c) for c in counts]}


def _summary(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    return {
        "min": float(values.min()),
        "mean": round(float(values.mean()), 2),
        "median": float(np.median(values)),
        "p95": float(np.percentile(values, 95)),
        "max": float(values.max()),
        "std": round(float(values.std()), 2),
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN and infinities are not JSON
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, str) and len(value) > 500:
        return value[:500] + "…"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


class _Column:
    """Accumulates one column's statistics batch by batch."""

    def __init__(self, name: str, kind: str, role: str | None) -> None:
        self.name, self.kind, self.role = name, kind, role
        self.nulls = 0
        self.non_finite = 0
        self.counts: Counter | None = Counter()  # exact value counts while few distinct
        self.hashes: list[np.ndarray] = []  # value hashes once there are many
        self.numbers: list[np.ndarray] = []
        self.lengths: list[np.ndarray] = []
        self.words: list[np.ndarray] = []
        self.key_hashes: list[np.ndarray] = []
        self.sample: list[str | None] = []

    def update(self, array, sample_positions: np.ndarray) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        self.nulls += array.null_count
        if self.kind in ("string", "integer", "float", "boolean"):
            self._count_values(array)
        if self.kind in ("integer", "float"):
            values = array.drop_null().to_numpy(zero_copy_only=False).astype(float)
            finite = np.isfinite(values)
            # NaN and infinities are counted, not summarized: a mean of inf is no statistic,
            # and JSON (PostgreSQL's jsonb) cannot hold it.
            self.non_finite += int(values.size - finite.sum())
            self.numbers.append(values[finite])
        elif self.kind == "list":
            self.lengths.append(pc.list_value_length(array).drop_null().to_numpy())
        elif self.kind == "string":
            from datasets_app.cleaning.steps import dedupe_key

            present = array.drop_null()
            self.lengths.append(pc.utf8_length(present).to_numpy().astype(np.int32))
            texts = present.to_pylist()
            self.words.append(np.fromiter((len(t.split()) for t in texts), np.int32, len(texts)))
            self.key_hashes.append(
                np.fromiter((hash(dedupe_key(t)) for t in texts), np.int64, len(texts))
            )
            if len(sample_positions):
                taken = array.take(pa.array(sample_positions, type=pa.int64()))
                self.sample.extend(taken.to_pylist())

    def _count_values(self, array) -> None:
        import pyarrow.compute as pc

        if self.counts is not None:
            for item in pc.value_counts(array.drop_null()).to_pylist():
                self.counts[item["values"]] += item["counts"]
            if len(self.counts) <= EXACT_DISTINCT:
                return
            # Too many to keep: from now on, hashes of every value (numbers keep theirs).
            if self.kind == "string":
                self.hashes.append(np.array([hash(v) for v in self.counts], dtype=np.int64))
            self.counts = None
            return
        if self.kind != "string":
            return
        values = array.drop_null().to_pylist()
        self.hashes.append(np.fromiter(map(hash, values), np.int64, len(values)))

    def result(self, rows: int, identifier, tokenizer, sample_limit: int) -> dict[str, Any]:
        info: dict[str, Any] = {"type": self.kind, "role": self.role, "nulls": self.nulls}
        present = rows - self.nulls
        if self.kind in ("string", "integer", "float", "boolean"):
            if self.counts is not None:
                info["distinct"] = len(self.counts)
                info["distinct_exact"] = True
                info["distinct_method"] = "exact"
            elif self.kind in ("integer", "float"):
                numbers = np.concatenate(self.numbers) if self.numbers else np.array([])
                info["distinct"] = int(np.unique(numbers).size)
                info["distinct_exact"] = True
                info["distinct_method"] = "exact"
            else:
                info["distinct"] = int(np.unique(np.concatenate(self.hashes)).size)
                info["distinct_exact"] = False
                info["distinct_method"] = "hash"
        if self.kind in ("integer", "float") and self.numbers:
            info["summary"] = _summary(np.concatenate(self.numbers))
        if self.non_finite:
            info["non_finite"] = self.non_finite
        if self.kind == "list" and self.lengths:
            info["list_length"] = _summary(np.concatenate(self.lengths))
        if self.kind == "string":
            self._text_result(info, present, identifier, tokenizer, sample_limit)
        label_like = self.role == "label" or (
            info.get("distinct") is not None and info["distinct"] <= min(50, max(present // 2, 1))
        )
        if self.counts is not None and self.kind != "float" and label_like and self.counts:
            top = self.counts.most_common(TOP_VALUES)
            info["top_values"] = [{"value": _jsonable(v), "count": c} for v, c in top]
            info["class_balance"] = {
                str(_jsonable(v)): round(c / max(present, 1), 4) for v, c in top
            }
            info["top_values_complete"] = len(self.counts) <= TOP_VALUES
        return info

    def _text_result(self, info, present, identifier, tokenizer, sample_limit) -> None:
        from datasets_app.cleaning import pii

        lengths = np.concatenate(self.lengths) if self.lengths else np.array([], np.int32)
        words = np.concatenate(self.words) if self.words else np.array([], np.int32)
        keys = np.concatenate(self.key_hashes) if self.key_hashes else np.array([], np.int64)
        info["char_length"] = _summary(lengths)
        info["char_length_histogram"] = _histogram(lengths)
        info["whitespace_tokens"] = _summary(words)
        info["empty"] = int((words == 0).sum())
        distinct_keys = np.unique(keys).size
        info["duplicate_rate"] = round(1 - distinct_keys / present, 4) if present else 0.0
        info["duplicate_rows"] = int(present - distinct_keys)
        texts = [t for t in self.sample if isinstance(t, str)]
        sampled = len(self.sample) < present
        unit = "tokenizer" if tokenizer is not None and texts else "whitespace"
        info["token_unit"] = unit
        if unit == "tokenizer":
            counts = np.array(
                [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
            )
            info["token_length"] = _summary(counts)
            info["token_length_histogram"] = _histogram(counts)
            info["token_length_sampled"] = sampled
        else:
            info["token_length"] = info["whitespace_tokens"]
            info["token_length_histogram"] = _histogram(words)
            info["token_length_sampled"] = False
        long_text = bool(lengths.size) and float(np.median(lengths)) > 30
        if long_text or self.role in TEXT_ROLES:
            nonempty = [t for t in texts if t.strip()]
            languages = Counter(identifier().classify(t[:1000])[0] for t in nonempty)
            total = sum(languages.values()) or 1
            info["languages"] = [
                {"language": lang, "share": round(count / total, 4)}
                for lang, count in languages.most_common(8)
            ]
            hits: Counter = Counter()
            with_pii = 0
            for text in nonempty:
                found = pii.find_pii(text)
                with_pii += bool(found)
                hits.update(kind for kind, _start, _end in found)
            info["pii"] = {kind: hits.get(kind, 0) for kind in pii.KINDS}
            info["pii_row_share"] = round(with_pii / len(nonempty), 4) if nonempty else 0.0
            info["sampled_rows"] = len(texts)
            info["sampled"] = sampled


def profile_table(
    source: Path,
    *,
    column_roles: dict[str, str] | None = None,
    tokenizer_dir: Path | None = None,
    sample_rows: int = 5,
    max_rows: int | None = None,
    reporter: Reporter | None = None,
    sample_size: int = SAMPLE_SIZE,
) -> dict[str, Any]:
    """The profile of the Parquet table at ``source`` (JSON-serializable).

    ``column_roles`` (``{role: column}``) marks text and label columns; ``tokenizer_dir`` (a
    tokenizer directory) adds token lengths on the sample; ``sample_rows`` rows are returned
    as examples; ``max_rows`` profiles only the first rows (``truncated`` says so);
    ``sample_size`` rows, chosen at random with a fixed seed, feed the expensive parts.

    Shape: ``{row_count, rows_profiled, truncated, column_count, sample_size, sampled,
    tokenizer, seconds, sample_rows: [...], columns: {name: {type, role, nulls, distinct,
    distinct_exact, distinct_method, ...}}}``; numeric columns add ``summary``; list columns
    ``list_length``; text columns ``char_length`` (min/mean/median/p95/max/std),
    ``char_length_histogram`` ({edges, counts}), ``whitespace_tokens``, ``token_length`` and
    ``token_length_histogram`` (``token_unit``: tokenizer or whitespace), ``empty``,
    ``duplicate_rate`` (rows equal to an earlier one after casefolding and removing
    punctuation), ``languages`` ([{language, share}] on the sample), ``pii`` ({kind: hits} on
    the sample), ``pii_row_share``; label-like columns (role label, or few distinct values)
    ``top_values`` ([{value, count}]) and ``class_balance`` ({value: share}).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from datasets_app.cleaning.readers import type_name
    from datasets_app.cleaning.steps import language_identifier

    reporter = reporter or NullReporter()
    started = time.perf_counter()
    try:
        parquet = pq.ParquetFile(source)
    except (pa.ArrowInvalid, OSError) as exc:
        raise JobInputError(f"The table cannot be read: {exc}.") from None
    total = parquet.metadata.num_rows
    rows = total if max_rows is None else min(total, max(0, int(max_rows)))
    roles_by_column = {column: role for role, column in (column_roles or {}).items()}
    rng = random.Random(0)
    sample_index = np.array(sorted(rng.sample(range(rows), min(sample_size, rows))), np.int64)
    example_index = set(sample_index[:sample_rows].tolist())
    tokenizer = None
    if tokenizer_dir is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    identifier_cache: list = []

    def identifier():
        if not identifier_cache:
            identifier_cache.append(language_identifier())
        return identifier_cache[0]

    columns = [
        _Column(f.name, type_name(f.type), roles_by_column.get(f.name))
        for f in parquet.schema_arrow
    ]
    examples: list[dict] = []
    offset = 0
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
        if offset >= rows:
            break
        if reporter.should_stop():
            raise JobCancelled
        batch = batch.slice(0, rows - offset)
        end = offset + batch.num_rows
        lo, hi = np.searchsorted(sample_index, [offset, end])
        local = sample_index[lo:hi] - offset
        for column, array in zip(columns, batch.columns, strict=True):
            column.update(array, local)
        wanted = [int(i) for i in local if int(i) + offset in example_index]
        if wanted:
            examples.extend(batch.take(wanted).to_pylist())
        offset = end
        reporter.progress(0.05 + 0.75 * offset / max(rows, 1), f"Read {offset:,} of {rows:,}")
    reporter.progress(0.85, "Languages, PII and tokens on the sample")
    profiled = {c.name: c.result(rows, identifier, tokenizer, len(sample_index)) for c in columns}
    reporter.progress(1.0, "Profiled")
    return _jsonable(
        {
            "row_count": total,
            "rows_profiled": rows,
            "truncated": rows < total,
            "column_count": len(columns),
            "columns": profiled,
            "sample_rows": examples,
            "sample_size": len(sample_index),
            "sampled": len(sample_index) < rows,
            "tokenizer": Path(tokenizer_dir).name if tokenizer_dir else None,
            "seconds": round(time.perf_counter() - started, 3),
        }
    )
