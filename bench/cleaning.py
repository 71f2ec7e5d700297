"""Benchmark: the default cleaning recipe's speed, and what its near-dedupe step catches.

Speed: generates N documents of about 500 characters (sentences with numbers and dates; 10%
wrapped in HTML with cookie banners and share lines; 8% with an email, phone number, card
number, IP address or IBAN), plants 5% exact duplicates and 5% near duplicates (copies with 2%
to 15% of their words edited), shuffles them, then runs DEFAULT_RECIPE at num_proc=1 and
num_proc=2: a warm-up of each first, then the two settings interleaved for several rounds.
Each round also measures contention: the CPU other processes took during it
(``bench/helpers/contention.py``); rounds where others took more than 15% of a core are
discarded and the medians are of the clean rounds (of all rounds, flagged, when none was clean).

Figures: documents/s overall and per core (documents/s divided by num_proc; the target's
figure is the lower of the two settings), peak memory of this process plus its worker
processes sampled every 100 ms (RSS summed, an upper bound since pages a forked worker shares
with its parent count in both; and PSS, which counts shared pages once).

Quality: the near_dedupe step at thresholds 0.3 to 0.8 on real text
(``bench/helpers/near_duplicates.py``:
~8,600 distinct 50-word pieces of fiction and SciTLDR abstracts, 1,500 of them with a copy
edited at 2% to 15% of its words, hard negatives from the same passages): precision, recall,
false drops and the edit rate each threshold still catches, and the threshold these figures
choose (the highest with recall >= 0.9 at precision >= 0.95) against the step's default.

    .venv/bin/python bench/cleaning.py              # 100,000 documents, 3 rounds
    .venv/bin/python bench/cleaning.py --docs 20000 --rounds 1

The last line printed is one JSON object with the figures and the targets.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.helpers import near_duplicates as near
from bench.helpers.contention import Round, cores, split_rounds
from bench.helpers.near_duplicates import MAX_EDIT_RATE, MIN_EDIT_RATE, edit
from datasets_app.cleaning.recipe import DEFAULT_RECIPE, run_recipe
from datasets_app.cleaning.steps import STEPS

THRESHOLDS = [round(0.3 + 0.05 * i, 2) for i in range(11)]  # 0.3 .. 0.8

_WORDS = (
    "the a of and to in is was for on with as by at from that this it its be are were has "
    "have had not but or which their they we our new first after during between over under "
    "model data training evaluation token vector layer attention gradient batch loss metric "
    "river mountain city market garden window music story science history language ocean "
    "forest engine signal network protocol energy planet medicine library museum theatre "
    "harbour bridge railway festival kitchen recipe weather season animal insect flower "
    "mineral crystal circuit sensor camera pixel satellite orbit galaxy comet telescope "
    "council school hospital village island valley desert winter summer morning evening "
    "report study team company government student teacher doctor farmer artist writer "
    "builds measures describes improves reduces opens closes reaches shows finds changes "
    "supports follows covers includes announced reported found showed opened closed began "
    "large small early late local national public private ancient modern quick slow bright "
    "quiet famous popular central northern southern eastern western annual daily final "
    "water light stone paper glass metal wood cloth salt sugar bread coffee tea rice corn "
    "road street square tower castle church temple station airport port border coast hill"
)
VOCABULARY = _WORDS.split()
BOILERPLATE = (
    "We use cookies to improve your experience. Accept all cookies",
    "Share this article",
    "Follow us on social media",
    "© 2024 Example Media. All rights reserved.",
    "Skip to content",
)


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(VOCABULARY) for _ in range(rng.randint(8, 16))]
    roll = rng.random()
    if roll < 0.15:
        words.insert(rng.randrange(len(words)), str(rng.randint(1900, 2025)))
    elif roll < 0.3:
        words.insert(rng.randrange(len(words)), f"{rng.randint(2, 999)}")
    elif roll < 0.35:
        words.insert(
            rng.randrange(len(words)),
            f"{rng.randint(2000, 2024)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
        )
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice(".....!?")


def _pii(rng: random.Random) -> str:
    kind = rng.randrange(5)
    if kind == 0:
        return f"Write to {rng.choice(VOCABULARY)}.{rng.randint(1, 999)}@example.com for details."
    if kind == 1:
        return f"Call +1 555 {rng.randint(100, 999)} {rng.randint(1000, 9999)} today."
    if kind == 2:
        return "Card 4111 1111 1111 1111 was charged."
    if kind == 3:
        return f"The server at 10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.7 answered."
    return "Pay to GB82 WEST 1234 5698 7654 32 by Friday."


def _document(rng: random.Random) -> str:
    sentences = []
    while sum(len(s) + 1 for s in sentences) < 480:
        sentences.append(_sentence(rng))
    if rng.random() < 0.08:
        sentences.insert(rng.randrange(len(sentences)), _pii(rng))
    if rng.random() < 0.1:
        paragraphs = "".join(f"<p>{s}</p>" for s in sentences)
        extra = rng.choice(BOILERPLATE)
        return (
            f"<html><body><nav>Home | News | Contact</nav><article>{paragraphs}</article>"
            f"<div>{extra}</div><script>track('view');</script></body></html>"
        )
    return " ".join(sentences)


def _near_copy(rng: random.Random, text: str) -> str:
    return edit(rng, text, rng.uniform(MIN_EDIT_RATE, MAX_EDIT_RATE), VOCABULARY)


def generate(n: int, seed: int = 0) -> tuple[list[str], set[int]]:
    """``n`` shuffled documents and the positions near_dedupe should remove.

    Each original has a group: itself, its exact copies and its near copies. Exact dedupe
    keeps the earliest of the original and its exact copies; of what remains of the group,
    near dedupe should keep the earliest and remove the rest."""
    rng = random.Random(seed)
    n_exact = n_near = n // 20
    originals = [_document(rng) for _ in range(n - n_exact - n_near)]
    items = [(text, i, "original") for i, text in enumerate(originals)]
    for _ in range(n_exact):
        source = rng.randrange(len(originals))
        items.append((originals[source], source, "exact"))
    for _ in range(n_near):
        source = rng.randrange(len(originals))
        items.append((_near_copy(rng, originals[source]), source, "near"))
    rng.shuffle(items)
    groups: dict[int, list[tuple[int, str]]] = {}
    for position, (_text, source, kind) in enumerate(items):
        groups.setdefault(source, []).append((position, kind))
    expected: set[int] = set()
    for members in groups.values():
        if not any(kind == "near" for _p, kind in members):
            continue
        first_exact = min(p for p, kind in members if kind != "near")
        remaining = sorted([first_exact] + [p for p, kind in members if kind == "near"])
        expected.update(remaining[1:])
    return [text for text, _s, _k in items], expected


class PeakMemory:
    """Samples the memory of this process and its children every 100 ms: the sum of RSS (an
    upper bound: pages a forked worker shares with its parent count in both) and the sum of
    PSS (shared pages split between the processes sharing them: the real total)."""

    def __init__(self) -> None:
        self.peak_rss = 0
        self.peak_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            rss = pss = 0
            for process in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):  # a worker that just exited
                    info = process.memory_full_info()
                    rss += info.rss
                    pss += getattr(info, "pss", info.rss)
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            time.sleep(0.1)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_once(source: Path, work: Path, num_proc: int, steps: list[dict], name: str = "out") -> dict:
    output = work / f"{name}-{num_proc}.parquet"
    with PeakMemory() as memory, Round() as meter:
        report = run_recipe(
            source, output=output, steps=steps, text_columns=["text"], num_proc=num_proc
        )
    return {
        "seconds": meter.wall,
        "meter": meter,
        "report": report,
        "peak_rss": memory.peak_rss,
        "peak_pss": memory.peak_pss,
        "output": output,
    }


def default_threshold() -> float:
    """The near_dedupe step's default threshold, from the step catalog."""
    return next(p.default for p in STEPS["near_dedupe"].params if p.name == "threshold")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000, help="documents (100,000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument(
        "--copies", type=int, default=1500, help="edited copies in the quality set (1,500)"
    )
    args = parser.parse_args()

    import pyarrow as pa
    import pyarrow.parquet as pq

    docs, _expected = generate(args.docs)
    mean_chars = sum(map(len, docs)) / len(docs)
    quality_set = near.build(copies=args.copies)
    with tempfile.TemporaryDirectory(prefix="llmhub-bench-") as tmp:
        work = Path(tmp)
        thresholds = sorted(set(THRESHOLDS) | {default_threshold()})
        quality = near.evaluate(quality_set, work, thresholds)
        source = work / "docs.parquet"
        pq.write_table(pa.table({"id": list(range(len(docs))), "text": docs}), source)
        warm = work / "warm.parquet"
        warm_docs = generate(4000, seed=1)[0]
        pq.write_table(pa.table({"id": list(range(len(warm_docs))), "text": warm_docs}), warm)
        for procs in (1, 2):
            run_once(warm, work, procs, DEFAULT_RECIPE)
        rounds: list[dict[int, dict]] = []
        for _ in range(args.rounds):
            rounds.append({p: run_once(source, work, p, DEFAULT_RECIPE) for p in (1, 2)})
        same = rounds[-1][1]["report"].content_sha256 == rounds[-1][2]["report"].content_sha256
        per_step = rounds[-1][1]["report"].steps
        rows_out = rounds[-1][1]["report"].rows_out

    clean, discarded = split_rounds(rounds, lambda r: [r[1]["meter"], r[2]["meter"]])
    contended = discarded == len(rounds)
    seconds = {p: statistics.median(r[p]["seconds"] for r in clean) for p in (1, 2)}
    peak = {p: max(r[p]["peak_rss"] for r in rounds) for p in (1, 2)}
    pss = {p: max(r[p]["peak_pss"] for r in rounds) for p in (1, 2)}
    throughput = {p: args.docs / seconds[p] for p in seconds}

    print(
        f"DEFAULT_RECIPE over {args.docs:,} documents (mean {mean_chars:.0f} chars; 5% exact "
        f"and 5% near duplicates planted), {args.rounds} interleaved rounds on {cores()} cores"
    )
    print(f"{'round':>6} {'num_proc':>9} {'seconds':>9} {'docs/s':>10}  contention")
    for index, r in enumerate(rounds, start=1):
        for p in (1, 2):
            print(
                f"{index:>6} {p:>9} {r[p]['seconds']:>9.2f} {args.docs / r[p]['seconds']:>10,.0f}"
                f"  {r[p]['meter'].describe()}"
            )
    verdict = (
        "every round was contended: the medians below are of ALL rounds and are not the "
        "product's speed"
        if contended
        else f"medians of {len(clean)} clean rounds, {discarded} contended rounds discarded"
    )
    print(f"({verdict}; contended: others took more than 15% of a core)")
    print(
        f"{'num_proc':>9} {'seconds':>9} {'docs/s':>10} {'docs/s/core':>12} {'peak RSS':>11} "
        f"{'peak PSS':>11}"
    )
    for p in (1, 2):
        print(
            f"{p:>9} {seconds[p]:>9.2f} {throughput[p]:>10,.0f} {throughput[p] / p:>12,.0f} "
            f"{peak[p] / 2**20:>8.0f} MB {pss[p] / 2**20:>8.0f} MB"
        )
    print(
        "(memory of the bench process and its workers: RSS summed, and PSS, which counts "
        "pages shared by forked workers once)"
    )
    print(f"\nnum_proc=1 and num_proc=2 outputs identical: {same}; rows out: {rows_out:,}")
    print("Per step (num_proc=1, last round):")
    for step in per_step:
        print(
            f"  {step.step:<18} in {step.rows_in:>8,} out {step.rows_out:>8,} "
            f"removed {step.removed:>6,} changed {step.changed:>6,}"
        )

    stats = quality_set.stats
    default = default_threshold()
    chosen = near.choose_threshold(quality)
    print(
        f"\nnear_dedupe (3-word shingles, 128 permutations) on real text: {stats['pieces']:,} "
        f"distinct ~50-word pieces, {stats['pairs']:,} of them with a copy edited at "
        f"{MIN_EDIT_RATE:.0%}-{MAX_EDIT_RATE:.0%} of its words (true Jaccard median "
        f"{stats['median_pair_jaccard']:.2f}, lowest {stats['min_pair_jaccard']:.2f}); "
        f"{stats['hard_negative_pairs']:,} hard-negative pairs (same passage, >= 20% of their "
        f"words shared, true Jaccard at most {stats['max_hard_negative_jaccard']:.2f})"
    )
    bands = list(next(iter(quality.values()))["recall_by_edit_rate"])
    print(
        f"{'threshold':>9} {'recall':>7} {'precision':>9} {'removed':>8} {'false':>6} "
        f"{'hard neg':>8} "
        + " ".join(f"{'r ' + b:>10}" for b in bands)
        + f" {'catches >=90% up to':>20}"
    )
    for threshold, r in quality.items():
        marks = (" <- default" if threshold == default else "") + (
            " <- chosen" if threshold == chosen else ""
        )
        print(
            f"{threshold:>9.2f} {r['recall']:>7.3f} {r['precision']:>9.4f} {r['removed']:>8,} "
            f"{r['false_drops']:>6} {r['hard_negatives_merged']:>8} "
            + " ".join(f"{v:>10.3f}" for v in r["recall_by_edit_rate"].values())
            + f" {r['max_rate_caught_90']:>19.0%} edits{marks}"
        )
    print(
        "(recall: planted pairs with exactly one member removed; precision: those over all "
        "rows removed; false: other rows removed; hard neg: hard-negative pairs merged; "
        "r a-b%: recall of copies edited at a-b% of their words)"
    )
    print(
        f"The highest threshold with recall >= 0.9 at precision >= 0.95: {chosen}; the "
        f"step's default: {default}"
    )
    at_default = quality[default]
    figures = {
        "docs": args.docs,
        "docs_per_sec_num_proc_1": round(throughput[1], 1),
        "docs_per_sec_num_proc_2": round(throughput[2], 1),
        "docs_per_sec_per_core": round(min(throughput[1], throughput[2] / 2), 1),
        "peak_rss_mb_num_proc_1": round(peak[1] / 2**20, 1),
        "peak_rss_mb_num_proc_2": round(peak[2] / 2**20, 1),
        "peak_pss_mb_num_proc_1": round(pss[1] / 2**20, 1),
        "peak_pss_mb_num_proc_2": round(pss[2] / 2**20, 1),
        "outputs_identical": same,
        "rounds": len(rounds),
        "contended_rounds_discarded": discarded,
        "all_rounds_contended": contended,
        "max_other_cores": round(max(r[p]["meter"].other_cores for r in rounds for p in (1, 2)), 3),
        "near_dedupe_default_threshold": default,
        "near_dedupe_chosen_threshold": chosen,
        "near_dup_precision": round(at_default["precision"], 4),
        "near_dup_recall": round(at_default["recall"], 4),
        "near_dup_false_drops": at_default["false_drops"],
        "near_dup_median_pair_jaccard": round(stats["median_pair_jaccard"], 3),
    }
    for threshold, r in quality.items():
        figures[f"near_dup_recall_at_{threshold:.2f}"] = round(r["recall"], 4)
        figures[f"near_dup_precision_at_{threshold:.2f}"] = round(r["precision"], 4)
    targets = {
        "docs_per_sec_per_core": {"min": 5000},
        "near_dup_recall": {"min": 0.9},
        "near_dup_precision": {"min": 0.95},
    }
    print(json.dumps({"figures": figures, "targets": targets}))


if __name__ == "__main__":
    main()
