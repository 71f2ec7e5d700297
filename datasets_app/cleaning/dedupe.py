"""Duplicate detection: exact keys and MinHash signatures with LSH banding.

Signatures are computed batch-wise with numpy (one matrix operation per batch of documents
rather than per document), from word shingles hashed with CRC32, which is stable across
processes so parallel workers agree. Candidate pairs come from LSH bands and are verified on
the full signature before a row is dropped; the first row of each group is kept.

What "near duplicate" means at a threshold (the Jaccard similarity of 3-word shingles): on real
~50-word texts, the share of words a copy may have replaced, deleted or inserted while 9 in 10
such copies are still found (``bench/cleaning.py``). One edit changes up to 3 shingles whatever
the text's length, so it is the share of edited words, not their count, that matters:

    threshold   copies found up to        note
    0.8         ~3% of words edited
    0.7         ~5%                       misses most copies edited at 8% or more
    0.6         ~8%
    0.5         ~11%                      the default (steps.NEAR_DEDUPE_THRESHOLD)
    0.4         ~15%

So 5 edits in 50 words (10%) leave a true Jaccard of about 0.55-0.65. No two distinct pieces
of that text were merged at any threshold from 0.3 to 0.8; texts built from a shared template
(forms, listings) merge sooner at low thresholds.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Callable
from functools import lru_cache

import numpy as np

from datasets_app.cleaning.steps import dedupe_key

_WORD = re.compile(r"\w+", re.UNICODE)


def exact_key(text: str) -> int:
    """A stable 63-bit key of the text's normalized form (casefolded, no punctuation/space)."""
    digest = hashlib.blake2b(dedupe_key(text).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


@lru_cache(maxsize=8)
def _permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    # x -> (a * x) ^ b over uint32 with a odd is a bijection of 32-bit values, so each (a, b)
    # is a permutation; it needs no modulo, which keeps the (shingles x permutations) matrix
    # cheap. Checked: unbiased Jaccard estimates with the textbook variance.
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**32, num_perm, dtype=np.uint64).astype(np.uint32) | np.uint32(1)
    b = rng.integers(0, 2**32, num_perm, dtype=np.uint64).astype(np.uint32)
    return a, b


_MIX = np.uint32(0x9E3779B1)
_KEY_MIX = np.uint64(0x9E3779B97F4A7C15)


def _finalize(x: np.ndarray) -> np.ndarray:
    """lowbias32: spreads the bits of combined word hashes."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


# ASCII text is split into words with a byte translation (5x faster than a regex): every
# ASCII character that is not a word character becomes a space. Same words as ``\w+``.
_ASCII_WORDS = bytes.maketrans(
    bytes(range(128)),
    bytes(i if chr(i).isalnum() or chr(i) == "_" else 32 for i in range(128)),
)


def _words(text: str) -> list[bytes]:
    """The casefolded words of a text, UTF-8 encoded (CRC32 hashes bytes)."""
    folded = text.casefold()
    if folded.isascii():
        return folded.encode().translate(_ASCII_WORDS).split()
    return [word.encode() for word in _WORD.findall(folded)]


def _group_shingles(texts: list[str], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes of several documents, flat, with each document's shingle count."""
    words: list[bytes] = []
    counts = np.empty(len(texts), dtype=np.int64)
    for index, text in enumerate(texts):
        found = _words(text or "") or [b""]
        words.extend(found)
        counts[index] = len(found)
    hashes = np.fromiter(map(zlib.crc32, words), dtype=np.uint32, count=len(words))
    ends = np.cumsum(counts)
    starts = ends - counts
    # A document shorter than a shingle is one shingle of all its words.
    width = np.minimum(counts, size)
    shingle_counts = counts - width + 1
    total = int(shingle_counts.sum())
    first = np.repeat(starts, shingle_counts) + (
        np.arange(total) - np.repeat(np.cumsum(shingle_counts) - shingle_counts, shingle_counts)
    )
    widths = np.repeat(width, shingle_counts)
    combined = np.zeros(total, dtype=np.uint32)
    for position in range(size):
        take = widths > position
        combined[take] = combined[take] * _MIX + hashes[first[take] + position]
    return _finalize(combined), shingle_counts


def signatures(texts: list[str], *, num_perm: int = 128, shingle_size: int = 3) -> np.ndarray:
    """MinHash signatures of word shingles, shape (len(texts), num_perm), dtype uint32."""
    a, b = _permutations(num_perm)
    out = np.empty((len(texts), num_perm), dtype=np.uint32)
    group = 128  # documents per matrix, so the (permutations x shingles) block stays in cache
    for start in range(0, len(texts), group):
        flat, counts = _group_shingles(texts[start : start + group], shingle_size)
        # Permutations along rows, shingles along columns: the per-document minimum is then a
        # reduction over contiguous memory (7x faster than the transposed layout).
        values = np.multiply(a[:, None], flat[None, :])
        np.bitwise_xor(values, b[:, None], out=values)
        offsets = np.cumsum(counts) - counts
        out[start : start + len(counts)] = np.minimum.reduceat(values, offsets, axis=1).T
    return out


def lsh_parameters(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) minimizing weighted false positives and false negatives around
    ``threshold`` (datasketch's criterion). Missing a duplicate weighs more than a spurious
    candidate, because every candidate pair is verified on the full signature anyway."""
    grid = np.linspace(0, 1, 201)
    best, best_error = (1, num_perm), float("inf")
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        probability = 1 - (1 - grid**rows) ** bands
        false_positive = np.trapezoid(probability[grid < threshold], grid[grid < threshold])
        false_negative = np.trapezoid(1 - probability[grid >= threshold], grid[grid >= threshold])
        error = 0.1 * false_positive + 0.9 * false_negative
        if error < best_error:
            best, best_error = (bands, rows), error
    return best


def band_keys(sigs: np.ndarray, *, threshold: float) -> np.ndarray:
    """One 64-bit key per LSH band of each signature, shape (rows, bands): rows sharing a
    key in some band are candidate duplicates. Bands and rows per band follow from the
    threshold (``lsh_parameters``)."""
    bands, rows = lsh_parameters(threshold, sigs.shape[1])
    keys = np.zeros((len(sigs), bands), dtype=np.uint64)
    for band in range(bands):
        block = sigs[:, band * rows : (band + 1) * rows].astype(np.uint64)
        key = keys[:, band]
        for column in range(rows):
            key ^= block[:, column]
            key *= _KEY_MIX
    return keys


def near_duplicate_mask(sigs: np.ndarray, *, threshold: float) -> np.ndarray:
    """``keep[i]`` is False for rows that duplicate an earlier row (estimated Jaccard >=
    threshold), True for the first row of each group."""
    return near_duplicate_mask_banded(
        band_keys(sigs, threshold=threshold), lambda rows: sigs[rows], threshold=threshold
    )


def near_duplicate_mask_banded(
    keys: np.ndarray, signatures_of: Callable[[np.ndarray], np.ndarray], *, threshold: float
) -> np.ndarray:
    """``near_duplicate_mask`` from the rows' band keys (``band_keys``), fetching full
    signatures only for candidate rows (``signatures_of(sorted row indices)``), so the
    signatures of all rows never need to be in memory at once.

    All vectorized: per band, rows are sorted by key; every row in a bucket becomes a
    candidate pair with the bucket's first (lowest) row; candidate pairs from all bands are
    verified on the full signature; verified pairs are merged into groups (connected
    components) and each group keeps its lowest row.
    """
    n = len(keys)
    keep = np.ones(n, dtype=bool)
    if n < 2:
        return keep
    pairs = []
    for band in range(keys.shape[1]):
        key = keys[:, band]
        order = np.argsort(key, kind="stable")  # equal keys stay in row order
        sorted_key = key[order]
        starts = np.ones(n, dtype=bool)
        starts[1:] = sorted_key[1:] != sorted_key[:-1]
        if starts.all():
            continue
        # The first row of each bucket, broadcast to every member of that bucket.
        first = order[np.flatnonzero(starts)[np.cumsum(starts) - 1]]
        member = order != first
        pairs.append(np.stack([first[member], order[member]], axis=1))
    if not pairs:
        return keep
    candidates = np.unique(np.concatenate(pairs), axis=0)
    similar = np.empty(len(candidates), dtype=bool)
    step = 65536  # candidate pairs verified at a time: bounded memory
    for start in range(0, len(candidates), step):
        chunk = candidates[start : start + step]
        involved = np.unique(chunk)
        sigs = signatures_of(involved)
        a = sigs[np.searchsorted(involved, chunk[:, 0])]
        b = sigs[np.searchsorted(involved, chunk[:, 1])]
        similar[start : start + step] = (a == b).mean(axis=1) >= threshold
    verified = candidates[similar]
    if not len(verified):
        return keep
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix(
        (np.ones(len(verified), dtype=np.int8), (verified[:, 0], verified[:, 1])), shape=(n, n)
    )
    _count, labels = connected_components(graph, directed=False)
    lowest = np.full(labels.max() + 1, n, dtype=np.int64)
    np.minimum.at(lowest, labels, np.arange(n, dtype=np.int64))
    return lowest[labels] == np.arange(n)
