"""Text helpers shared by the metrics: SQuAD answer normalization, exact match and token F1.

Standard library only, so the web process may import it (for example to show a normalized answer).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """The official SQuAD normalization: lower case, drop punctuation and articles, fix spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, references: Iterable[str]) -> float:
    """1.0 if the normalized prediction equals any normalized reference, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(ref) for ref in references))


def _token_f1(pred_tokens: list[str], ref_tokens: list[str]) -> float:
    # Both empty counts as a match (the SQuAD v2 rule); v1.1 gave 0 there, which made an empty
    # answer to an empty reference an exact match with F1 0.
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)
    common = Counter(pred_tokens) & Counter(ref_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, references: Iterable[str]) -> float:
    """SQuAD token-overlap F1 of the prediction against its best reference."""
    pred_tokens = normalize_answer(prediction).split()
    scores = [_token_f1(pred_tokens, normalize_answer(ref).split()) for ref in references]
    return max(scores, default=0.0)
