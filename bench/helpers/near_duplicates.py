"""A realistic near-duplicate set from real text, and the near_dedupe step's quality on it.

Documents are ~50-word pieces of real text from ``../shared/datasets/``: the public-domain
fiction corpus cut into consecutive 50-word pieces, and SciTLDR abstracts cut into 50-word
pieces (an abstract's last piece is kept when it has at least 40 words). Pieces that already
nearly duplicate an earlier piece (true 3-word-shingle Jaccard >= 0.2: SciTLDR holds a few
papers twice) are left out, so every negative is really distinct.

A random sample of the pieces gets one edited copy each. The copy's edit rate is drawn
uniformly from 2% to 15% of its words; each edit replaces a word by another word of the corpus,
deletes a word, or inserts a corpus word (one of the three at random). Each pair carries its
true Jaccard of 3-word shingles (casefolded ``\\w+`` words, as the step shingles them).

Negatives are all the other pieces. Among them, consecutive pieces of the same abstract or the
same stretch of a book share topic words (the same names, the same technical terms): those
with at least 20% of their distinct words in common are the hard negatives, reported apart.

``evaluate`` runs the real recipe runner with a near_dedupe step at each threshold and counts,
per threshold: recall (planted pairs with exactly one member removed), precision (those over
every removed row), false drops, hard-negative pairs merged, and recall by edit-rate band.
"""

from __future__ import annotations

import json
import random
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"
FICTION = DATASETS / "corpus_public_domain_fiction.txt"
SCITLDR = DATASETS / "summarization_scitldr.jsonl"
WORDS_PER_DOC = 50
MIN_EDIT_RATE, MAX_EDIT_RATE = 0.02, 0.15
SOURCE_DUPLICATE_JACCARD = 0.2  # pieces this similar to an earlier one are not negatives
HARD_NEGATIVE_WORD_OVERLAP = 0.2
RATE_BANDS = ((0.02, 0.05), (0.05, 0.08), (0.08, 0.11), (0.11, 0.15))

_WORD = re.compile(r"\w+", re.UNICODE)


def shingles(text: str, size: int = 3) -> set[tuple[str, ...]]:
    """The word shingles of ``text`` as the near_dedupe step forms them."""
    words = _WORD.findall(text.casefold())
    if len(words) <= size:
        return {tuple(words)}
    return {tuple(words[i : i + size]) for i in range(len(words) - size + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def real_pieces() -> list[tuple[str, str]]:
    """(text, passage) pieces of ~50 words; ``passage`` names the abstract or book stretch."""
    if not FICTION.exists() or not SCITLDR.exists():
        raise SystemExit(f"The shared data sets are missing under {DATASETS}.")
    pieces = []
    words = FICTION.read_text(encoding="utf-8").split()
    for start in range(0, len(words) - WORDS_PER_DOC + 1, WORDS_PER_DOC):
        # A "passage" is 4 consecutive pieces: neighbours on the same page share topic words.
        passage = f"fiction-{start // (4 * WORDS_PER_DOC)}"
        pieces.append((" ".join(words[start : start + WORDS_PER_DOC]), passage))
    with SCITLDR.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            words = json.loads(line)["document"].split()
            for start in range(0, len(words), WORDS_PER_DOC):
                piece = words[start : start + WORDS_PER_DOC]
                if len(piece) >= 40:
                    pieces.append((" ".join(piece), f"scitldr-{number}"))
    return pieces


def drop_source_duplicates(pieces: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The pieces with no earlier piece at true Jaccard >= SOURCE_DUPLICATE_JACCARD. Exact,
    through an index of shingles: two pieces that similar share many shingles, most of them
    rare, so very common shingles ("one of the") need not be indexed."""
    sets = [shingles(text) for text, _ in pieces]
    frequency: dict[tuple, int] = defaultdict(int)
    for s in sets:
        for shingle in s:
            frequency[shingle] += 1
    index: dict[tuple, list[int]] = defaultdict(list)
    kept = []
    for i, s in enumerate(sets):
        shared: dict[int, int] = defaultdict(int)
        for shingle in s:
            if frequency[shingle] <= 50:
                for j in index[shingle]:
                    shared[j] += 1
        if any(
            jaccard(s, sets[j]) >= SOURCE_DUPLICATE_JACCARD for j, n in shared.items() if n >= 3
        ):
            continue
        kept.append(i)
        for shingle in s:
            if frequency[shingle] <= 50:
                index[shingle].append(i)
    return [pieces[i] for i in kept]


def edit(rng: random.Random, text: str, rate: float, vocabulary: list[str]) -> str:
    """``text`` with ``round(rate * words)`` (at least one) random replacements, deletions
    and insertions of corpus words."""
    words = text.split()
    for _ in range(max(1, round(rate * len(words)))):
        operation, position = rng.randrange(3), rng.randrange(len(words))
        if operation == 0:
            words[position] = rng.choice(vocabulary)
        elif operation == 1 and len(words) > 10:
            del words[position]
        else:
            words.insert(position, rng.choice(vocabulary))
    return " ".join(words)


@dataclass
class NearDuplicateSet:
    texts: list[str]  # row i has id i
    pairs: list[tuple[int, int, float, float]]  # (original id, copy id, edit rate, Jaccard)
    hard_negatives: list[tuple[int, int, float]]  # (id, id, true Jaccard)
    negatives: int = 0
    stats: dict = field(default_factory=dict)


def build(copies: int = 1500, seed: int = 0) -> NearDuplicateSet:
    """The shuffled set: every distinct piece once, plus one edited copy of ``copies`` of
    them (fewer when there are not enough pieces)."""
    rng = random.Random(seed)
    pieces = drop_source_duplicates(real_pieces())
    vocabulary = [w for text, _ in pieces for w in text.split()]
    chosen = set(rng.sample(range(len(pieces)), min(copies, len(pieces) // 3)))
    rows: list[tuple[str, int, str, float]] = []  # (text, piece, role, rate)
    for i, (text, _passage) in enumerate(pieces):
        rows.append((text, i, "original", 0.0))
        if i in chosen:
            rate = rng.uniform(MIN_EDIT_RATE, MAX_EDIT_RATE)
            rows.append((edit(rng, text, rate, vocabulary), i, "copy", rate))
    rng.shuffle(rows)
    position = {(piece, role): n for n, (_t, piece, role, _r) in enumerate(rows)}
    texts = [text for text, *_ in rows]
    pairs = []
    for n, (text, piece, role, rate) in enumerate(rows):
        if role == "copy":
            original = position[(piece, "original")]
            pairs.append((original, n, rate, jaccard(shingles(texts[original]), shingles(text))))
    hard = []
    for i in range(len(pieces) - 1):
        (text_a, passage_a), (text_b, passage_b) = pieces[i], pieces[i + 1]
        if passage_a != passage_b:
            continue
        words_a = set(_WORD.findall(text_a.casefold()))
        words_b = set(_WORD.findall(text_b.casefold()))
        if jaccard(words_a, words_b) >= HARD_NEGATIVE_WORD_OVERLAP:
            hard.append(
                (
                    position[(i, "original")],
                    position[(i + 1, "original")],
                    jaccard(shingles(text_a), shingles(text_b)),
                )
            )
    pair_jaccard = [j for *_x, j in pairs]
    return NearDuplicateSet(
        texts=texts,
        pairs=pairs,
        hard_negatives=hard,
        negatives=len(pieces) - len(pairs),
        stats={
            "pieces": len(pieces),
            "pairs": len(pairs),
            "median_pair_jaccard": statistics.median(pair_jaccard),
            "min_pair_jaccard": min(pair_jaccard),
            "hard_negative_pairs": len(hard),
            "max_hard_negative_jaccard": max((j for *_x, j in hard), default=0.0),
        },
    )


def score(data: NearDuplicateSet, kept: set[int]) -> dict:
    """Quality of one run from the ids it kept."""
    removed = set(range(len(data.texts))) - kept
    caught = caught_pairs(data, removed)
    true_removals = len(caught)
    rightly_removed = {o if o in removed else c for o, c, _r, _j in caught}
    by_band = {}
    for low, high in RATE_BANDS:
        band = [p for p in data.pairs if low <= p[2] < high]
        hits = sum(1 for p in caught if low <= p[2] < high)
        by_band[f"{low:.0%}-{high:.0%}"] = hits / len(band) if band else 1.0
    return {
        "recall": true_removals / len(data.pairs) if data.pairs else 1.0,
        "precision": true_removals / len(removed) if removed else 1.0,
        "removed": len(removed),
        "false_drops": len(removed) - true_removals,
        # A hard-negative piece may rightly go as the later twin of its own planted copy;
        # merged means one of the two went for no such reason.
        "hard_negatives_merged": sum(
            1 for a, b, _j in data.hard_negatives if {a, b} & (removed - rightly_removed)
        ),
        "recall_by_edit_rate": by_band,
        "max_rate_caught_90": max_rate_caught(data, removed),
    }


def caught_pairs(data: NearDuplicateSet, removed: set[int]) -> list[tuple[int, int, float, float]]:
    """The planted pairs with exactly one member removed (a pair both of whose members went
    was merged with something else: that is not a correct removal)."""
    return [p for p in data.pairs if (p[0] in removed) != (p[1] in removed)]


def max_rate_caught(data: NearDuplicateSet, removed: set[int], share: float = 0.9) -> float:
    """The highest edit rate (in 1-point bands from 2%) up to which at least ``share`` of the
    copies in every band are caught: "what near duplicate means" at this threshold."""
    caught = {p[1] for p in caught_pairs(data, removed)}
    best = 0.0
    for low in range(2, 15):
        band = [p for p in data.pairs if low / 100 <= p[2] < (low + 1) / 100]
        if not band or sum(p[1] in caught for p in band) / len(band) < share:
            break
        best = (low + 1) / 100
    return best


def evaluate(data: NearDuplicateSet, work: Path, thresholds: list[float]) -> dict[float, dict]:
    """Run the recipe runner's near_dedupe at each threshold on ``data``; quality per
    threshold (``score``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from datasets_app.cleaning.recipe import run_recipe

    source = work / "near-duplicates.parquet"
    pq.write_table(pa.table({"id": list(range(len(data.texts))), "text": data.texts}), source)
    results = {}
    for threshold in thresholds:
        output = work / f"near-{threshold:.2f}.parquet"
        run_recipe(
            source,
            output=output,
            steps=[{"step": "near_dedupe", "params": {"threshold": threshold}}],
            text_columns=["text"],
        )
        kept = set(pq.read_table(output, columns=["id"]).column("id").to_pylist())
        output.unlink()
        results[threshold] = score(data, kept)
    return results


def choose_threshold(
    results: dict[float, dict], *, min_recall: float = 0.9, min_precision: float = 0.95
) -> float | None:
    """The highest threshold (the most conservative) meeting both targets."""
    good = [
        t
        for t, r in results.items()
        if r["recall"] >= min_recall and r["precision"] >= min_precision
    ]
    return max(good) if good else None
