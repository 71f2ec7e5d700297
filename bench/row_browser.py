"""Benchmark: the row browser on a 1,000,000-row dataset version.

Builds a 1M-row table (an id, a ticket text of 8-32 words drawn from a 5,000-word vocabulary,
a title, a label of 6 classes, a score, a flag) in a scratch folder, written by the product's
own Parquet writer (``datasets_app.cleaning.readers.write_table``: zstd, 50,000-row groups),
then times :func:`datasets_app.cleaning.browse.browse`, the data work behind both the rows
API and the browser page, for:

- unfiltered pages: the first, one in the middle, the last;
- filters: a label equals, a score >=, a text contains;
- searches (case-insensitive, over every text column): a common word, a rare word;
- the same searches and filter on a table whose columns an earlier query read;
- the next page of a search already made (its match positions cached for the table).

"Cold" queries clear both caches first (the match positions and the decoded columns), so each
pays its full read and scan of the columns it looks at: the first search of a table in a web
process. The others clear only the match positions: a new search or filter on a table that an
earlier one read. The operating system's file cache stays warm in both, as on a server that
has read the file once. One warm-up round, then ``--rounds`` rounds; figures are medians of the
rounds that were not contended (``bench/helpers/contention.py``: others took more than 15% of
a core), flagged when every round was; each figure also has its CPU time (``*_cpu_ms``, all
of the process's threads), which contention does not inflate. No database and no web server:
this is data time.

    .venv/bin/python bench/row_browser.py
    .venv/bin/python bench/row_browser.py --rows 200000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.helpers import stop_on_sigterm  # noqa: E402
from bench.helpers.contention import Round, split_rounds  # noqa: E402

TARGET_MS = 300


def build_table(rows: int, path: Path) -> dict:
    """Write the bench's table to ``path``; return what it holds."""
    import numpy as np
    import pyarrow as pa

    from datasets_app.cleaning.readers import write_table

    rng = np.random.default_rng(7)
    syllables = np.array(
        ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "xe", "zu", "bra", "cle", "dro", "fin"]
    )
    vocabulary = np.array(["".join(rng.choice(syllables, rng.integers(2, 5))) for _ in range(5000)])
    # Zipf-like word frequencies, as in real text: a few words are very common.
    weights = 1 / np.arange(1, len(vocabulary) + 1)
    weights /= weights.sum()
    lengths = rng.integers(8, 33, rows)
    words = rng.choice(len(vocabulary), size=int(lengths.sum()), p=weights)
    texts, start = [], 0
    for length in lengths:
        texts.append(" ".join(vocabulary[words[start : start + length]]))
        start += length
    titles = [" ".join(vocabulary[rng.integers(0, 5000, 3)]).title() for _ in range(rows)]
    labels = np.array(["billing", "bug", "feature", "account", "shipping", "other"])
    table = pa.table(
        {
            "id": pa.array(np.arange(rows, dtype=np.int64)),
            "title": titles,
            "text": texts,
            "label": labels[rng.integers(0, len(labels), rows)],
            "score": rng.random(rows),
            "urgent": rng.random(rows) < 0.1,
        }
    )
    write_table(table, path)
    common, rare = vocabulary[0], vocabulary[4321]
    return {
        "rows": rows,
        "mean_text_chars": round(sum(map(len, texts)) / rows, 1),
        "common_word": str(common),
        "rare_word": str(rare),
    }


def cases(info: dict, rows: int) -> list[tuple[str, dict, str]]:
    """(figure name, RowQuery arguments, what to clear first) for every timed request:
    "all" (a table nothing was read from yet), "matches" (a new query on a table whose
    columns an earlier query read), "" (nothing: the next page of a query made)."""
    last = (rows + 49) // 50
    rare = info["rare_word"]
    return [
        ("unfiltered_first_page_ms", {}, ""),
        ("unfiltered_middle_page_ms", {"page": last // 2}, ""),
        ("unfiltered_last_page_ms", {"page": last}, ""),
        ("filter_label_equals_cold_ms", {"column": "label", "value": "bug"}, "all"),
        ("filter_score_gte_cold_ms", {"column": "score", "op": "gte", "value": "0.999"}, "all"),
        (
            "filter_text_contains_cold_ms",
            {"column": "text", "op": "contains", "value": rare},
            "all",
        ),
        ("search_common_word_cold_ms", {"search": info["common_word"].upper()}, "all"),
        ("search_rare_word_cold_ms", {"search": rare}, "all"),
        ("filter_text_contains_ms", {"column": "text", "op": "contains", "value": rare}, "matches"),
        ("search_common_word_ms", {"search": info["common_word"].upper()}, "matches"),
        ("search_rare_word_ms", {"search": rare}, "matches"),
        ("search_next_page_ms", {"search": rare, "page": 2}, ""),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    stop_on_sigterm()
    from datasets_app.cleaning.browse import COLUMNS, MATCHES, RowQuery, browse

    scratch = Path(tempfile.mkdtemp(prefix="llmhub-bench-rows-"))
    try:
        path = scratch / "table.parquet"
        started = time.perf_counter()
        info = build_table(args.rows, path)
        print(
            f"table: {info['rows']:,} rows, text {info['mean_text_chars']} chars on average, "
            f"{path.stat().st_size / 2**20:.1f} MiB Parquet, built in "
            f"{time.perf_counter() - started:.1f} s"
        )
        timed = cases(info, args.rows)
        matched: dict[str, int] = {}
        rounds: list[dict] = []
        for number in range(args.rounds + 1):  # round 0 warms up
            result: dict = {"times": {}, "meters": []}
            for name, params, clear in timed:
                if clear:
                    MATCHES.clear()
                if clear == "all":
                    COLUMNS.clear()
                query = RowQuery(**params)
                with Round() as meter:
                    page = browse(path, query, cache_key="bench")
                result["times"][name] = meter.wall * 1000
                # CPU time of this process (all its threads): what the request costs whatever
                # else runs on the machine.
                result.setdefault("cpu", {})[name] = meter.own_cores * meter.wall * 1000
                result["meters"].append(meter)
                matched[name] = page["matched"]
                assert len(page["rows"]) == min(50, max(0, page["matched"] - query.offset))
            if number:
                rounds.append(result)
        clean, discarded = split_rounds(rounds, lambda r: r["meters"])
        contended = discarded == len(rounds)
        print(f"\n{'request':<30} {'matched':>10} {'median ms':>10} {'max ms':>9} {'cpu ms':>8}")
        figures: dict = {"rows": args.rows, "mean_text_chars": info["mean_text_chars"]}
        for name, _params, _clear in timed:
            values = [r["times"][name] for r in clean]
            figures[name] = round(statistics.median(values), 1)
            cpu = statistics.median(r["cpu"][name] for r in clean)
            figures[name.replace("_ms", "_cpu_ms")] = round(cpu, 1)
            print(
                f"{name:<30} {matched[name]:>10,} {figures[name]:>10.1f} {max(values):>9.1f} "
                f"{cpu:>8.1f}"
            )
        others = [m.other_cores for r in rounds for m in r["meters"]]
        figures.update(
            rounds=len(rounds),
            contended_rounds_discarded=discarded,
            all_rounds_contended=contended,
            max_other_cores=round(max(others), 3),
        )
        print(
            f"\n{len(rounds)} rounds, {discarded} discarded as contended"
            + (" (ALL contended: figures are not the product's)" if contended else "")
        )
        targets = {
            name: {"max": TARGET_MS} for name, _params, _clear in timed if name.endswith("_ms")
        }
        print(json.dumps({"figures": figures, "targets": targets}))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
