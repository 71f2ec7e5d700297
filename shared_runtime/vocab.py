"""The vocabulary size a model built for a tokenizer has: one rule for the tokenizer's stored
record (``Tokenizer.vocab_size``, which the parameter estimate reads), the training runtime
and the bare baseline loop, so the estimate is the count of the model the worker builds."""

from __future__ import annotations


def model_vocab_size(tokenizer) -> int:
    """Rows of the embedding of a model built from random weights for ``tokenizer`` (a
    transformers tokenizer): ``len(tokenizer)``, its base vocabulary and every added token
    (special tokens included), not ``tokenizer.vocab_size`` (the base vocabulary alone)."""
    return len(tokenizer)
