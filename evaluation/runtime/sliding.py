"""Perplexity of long text: a window of the model's context slid over the whole token sequence.

The rule (the "perplexity of fixed-length models" recipe, counted so that no token is lost at
a window's edge): a window reads at most ``window`` ids ``ids[start:end]`` and predicts
``ids[start + 1 : end + 1]``; every position ``1 .. len(ids) - 1`` is scored by exactly one
window, with every id of that window before it as context. Windows start ``stride`` apart:
``stride == window`` gives disjoint windows (what nanoGPT's estimate and ``bench/pretrain.py``
do: a window's first target is predicted from the previous window's last id); a smaller stride
gives each scored token at least ``window - stride + 1`` ids of context, at the cost of
``window / stride`` times the forward passes (those extra ids are read, not scored). Position 0
has no context and is never scored: callers put a BOS id there when they want the first text
token scored.

Only workers import this module (torch is imported inside the functions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Window:
    """One forward pass: inputs ``ids[start:end]``, targets ``ids[start + 1 : end + 1]``, of
    which those at positions ``>= first_scored`` are scored."""

    start: int
    end: int
    first_scored: int


def plan_windows(n_ids: int, window: int, stride: int) -> list[Window]:
    """The windows over a sequence of ``n_ids`` ids that score positions 1..n_ids-1 once each."""
    if window < 1:
        raise ValueError("window must be at least 1.")
    if not 1 <= stride <= window:
        raise ValueError(f"stride must be between 1 and the window ({window}), not {stride}.")
    windows: list[Window] = []
    next_target, start = 1, 0
    while next_target < n_ids:
        end = min(start + window, n_ids - 1)
        windows.append(Window(start, end, next_target))
        next_target = end + 1
        start += stride
    return windows


def sliding_token_nll(
    model: Any,
    sequences: Sequence[Sequence[int]],
    *,
    window: int,
    stride: int,
    batch_size: int,
    device: str,
    pad_id: int,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[np.ndarray]:
    """Per sequence, the negative log-likelihood (nats) of each position given its window's
    earlier ids: an array of ``len(seq)`` floats, NaN where nothing is scored (position 0).

    Windows of all sequences are batched together (``batch_size`` windows a forward pass,
    padded on the right, which a causal model's outputs at real positions never see).
    """
    import torch

    out = [np.full(len(seq), np.nan, dtype=np.float64) for seq in sequences]
    jobs = [
        (i, w) for i, seq in enumerate(sequences) for w in plan_windows(len(seq), window, stride)
    ]
    # Windows of similar length together, so little of a batch is padding.
    jobs.sort(key=lambda job: job[1].end - job[1].start)
    batches = [jobs[i : i + batch_size] for i in range(0, len(jobs), batch_size)]
    with torch.no_grad():
        for b, batch in enumerate(batches):
            if on_batch:
                on_batch(b, len(batches))
            width = max(w.end - w.start for _, w in batch)
            inputs = torch.full((len(batch), width), pad_id, dtype=torch.long)
            targets = torch.full((len(batch), width), -100, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for r, (i, w) in enumerate(batch):
                seq = torch.as_tensor(list(sequences[i][w.start : w.end + 1]), dtype=torch.long)
                n = w.end - w.start
                inputs[r, :n] = seq[:-1]
                attention[r, :n] = 1
                # Target k (position start + 1 + k) is scored when it is at or past first_scored.
                skip = w.first_scored - (w.start + 1)
                targets[r, skip:n] = seq[1 + skip :]
            logits = model(
                input_ids=inputs.to(device), attention_mask=attention.to(device)
            ).logits.float()
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]),
                targets.to(device).reshape(-1),
                ignore_index=-100,
                reduction="none",
            ).reshape(len(batch), width)
            nll = nll.cpu().double().numpy()
            for r, (i, w) in enumerate(batch):
                n = w.end - w.start
                skip = w.first_scored - (w.start + 1)
                out[i][w.first_scored : w.end + 1] = nll[r, skip:n]
    return out


def utf8_prefix_bytes(text: str) -> np.ndarray:
    """``prefix[i]`` = UTF-8 bytes of ``text[:i]`` (length ``len(text) + 1``), vectorized."""
    codes = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)
    lengths = 1 + (codes >= 0x80) + (codes >= 0x800) + (codes >= 0x10000)
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])


def token_spans(starts: Sequence[int], n_chars: int) -> np.ndarray:
    """Boundaries partitioning a text of ``n_chars`` characters among its tokens: token ``j``
    owns ``[b[j], b[j + 1])``, from its start offset to the next token's (the first token from 0,
    the last to the end), so characters a tokenizer skips (WordPiece's spaces) belong to the
    token before them and every character to exactly one token."""
    b = np.asarray(list(starts), dtype=np.int64)
    if len(b):
        b[0] = 0
        b = np.maximum.accumulate(np.clip(b, 0, n_chars))
    return np.concatenate([b, [n_chars]])
