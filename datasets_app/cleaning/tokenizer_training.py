"""Training tokenizers on a table with the ``tokenizers`` library, saved for transformers.

The result is a ``PreTrainedTokenizerFast`` directory (``AutoTokenizer.from_pretrained``
loads it) with every special token a model family needs registered in the tokenizer's
attributes: pad, unk, bos, eos, mask, cls and sep. By default they are RoBERTa's: ``<pad>``,
``<unk>``, ``<s>`` (bos and cls), ``</s>`` (eos and sep), ``<mask>``; so causal LMs get
``bos_token``/``eos_token``, masked LMs ``mask_token``, classifiers and encoders ``cls``/
``sep`` wrapping, seq2seq models ``eos`` and ``pad``. Giving BERT-style names instead
(``[PAD] [UNK] [CLS] [SEP] [MASK]``) makes those the tokens of their roles.

A post-processor wraps every encoded text as ``<cls> text <sep>`` (pairs:
``<cls> a <sep> <sep> b <sep>``, RoBERTa's template); ``add_special_tokens=False`` turns it off.

Algorithms: ``bpe`` (byte-level BPE as GPT-2/RoBERTa: no unknown tokens), ``wordpiece``
(BERT's), ``unigram`` (SentencePiece's, with Metaspace pre-tokenization), ``char`` (for small
corpora, as nanoGPT's Shakespeare: every distinct character of the text is a token, a word-level
model over single characters, unseen characters are the unknown token; no normalization, so it
decodes back to the exact text, spaces and newlines included). Training reads the text columns
batch by batch from the Parquet file.

The smallest vocabulary depends on the algorithm (``min_vocab_size``): byte-level BPE needs its
256-byte alphabet plus the special tokens; the others the special tokens plus one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmhub.reporting import JobCancelled, JobInputError, NullReporter, Reporter

ALGORITHMS = ("bpe", "wordpiece", "unigram", "char")
ROLE_DEFAULTS = {"pad": "<pad>", "unk": "<unk>", "bos": "<s>", "eos": "</s>", "mask": "<mask>"}
DEFAULT_SPECIAL_TOKENS = list(ROLE_DEFAULTS.values())
# Well-known spellings of each role, so a user's list of special tokens maps onto roles.
_ROLE_NAMES = {
    "pad": ("<pad>", "[PAD]", "<|pad|>"),
    "unk": ("<unk>", "[UNK]", "<|unk|>"),
    "bos": ("<s>", "<bos>", "[BOS]", "<|startoftext|>", "<|begin_of_text|>"),
    "eos": ("</s>", "<eos>", "[EOS]", "<|endoftext|>", "<|end_of_text|>"),
    "mask": ("<mask>", "[MASK]", "<|mask|>"),
    "cls": ("<cls>", "[CLS]"),
    "sep": ("<sep>", "[SEP]"),
}
MAX_VOCAB = 1_000_000
BYTE_ALPHABET = 256  # byte-level BPE always holds every byte


def min_vocab_size(algorithm: str, special_tokens: int = len(DEFAULT_SPECIAL_TOKENS)) -> int:
    """The smallest ``vocab_size`` ``algorithm`` can train to with ``special_tokens`` special
    tokens: byte-level BPE its 256 bytes beyond them, the others one token beyond them."""
    return special_tokens + (BYTE_ALPHABET if algorithm == "bpe" else 1)


def vocab_size_error(algorithm: str, special_tokens: int = len(DEFAULT_SPECIAL_TOKENS)) -> str:
    """Why a vocab_size is refused, with ``algorithm``'s own range."""
    smallest = min_vocab_size(algorithm, special_tokens)
    why = (
        f"its 256-byte alphabet and the {special_tokens} special tokens"
        if algorithm == "bpe"
        else f"the {special_tokens} special tokens and at least one more"
    )
    return (
        f"vocab_size must be between {smallest} ({why}) and {MAX_VOCAB:,} for a {algorithm} "
        "tokenizer."
    )


def _char_vocab(counts: dict[str, int], specials: list[str], vocab_size: int) -> dict[str, int]:
    """Special tokens first, then the characters in code-point order (nanoGPT's
    ``sorted(set(text))``); past ``vocab_size``, the rarest characters are left out (unknown),
    the newline last of all."""
    room = vocab_size - len(specials)
    chars = [c for c in counts if c not in specials]
    if len(chars) > room:
        chars = sorted(chars, key=lambda c: (c != "\n", -counts[c], c))[:room]
    ordered = specials + sorted(chars)
    return {token: i for i, token in enumerate(ordered)}


@dataclass
class TokenizerResult:
    """The trained tokenizer: its actual ``vocab_size`` (that of a model built for it, as the
    runtime loads it: ``shared_runtime.vocab.model_vocab_size``), ``algorithm``, all
    ``special_tokens``, the role of each (``special_token_map``: pad, unk, bos, eos, mask,
    cls, sep), the ``files`` written to the output directory and the ``texts`` trained on."""

    vocab_size: int
    algorithm: str
    special_tokens: list[str]
    files: list[str]
    special_token_map: dict[str, str] = field(default_factory=dict)
    texts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def special_token_roles(special_tokens: list[str] | None) -> tuple[dict[str, str], list[str]]:
    """(role -> token for pad, unk, bos, eos, mask, cls, sep; every special token in vocab
    order). Roles a user's tokens do not name get the defaults; cls is bos and sep is eos
    unless given."""
    given = [t for t in dict.fromkeys(special_tokens or []) if isinstance(t, str) and t.strip()]
    if special_tokens is not None and len(given) != len(special_tokens):
        raise JobInputError("Special tokens must be distinct, non-empty strings.")
    roles: dict[str, str] = {}
    for role, names in _ROLE_NAMES.items():
        for token in given:
            if token in names or token.lower() in names:
                roles[role] = token
                break
    for role, default in ROLE_DEFAULTS.items():
        roles.setdefault(role, default)
    roles.setdefault("cls", roles["bos"])
    roles.setdefault("sep", roles["eos"])
    ordered = list(dict.fromkeys([roles[r] for r in ("pad", "unk", "bos", "eos", "mask")]))
    ordered += [roles[r] for r in ("cls", "sep") if roles[r] not in ordered]
    ordered += [t for t in given if t not in ordered]
    return roles, ordered


def _open_text_table(source: Path, columns: list[str]):
    """The Parquet file, after checking that ``columns`` exist and hold text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(source)
    except (pa.ArrowInvalid, OSError) as exc:
        raise JobInputError(f"The table cannot be read: {exc}.") from None
    names = parquet.schema_arrow.names
    missing = [c for c in columns if c not in names]
    if missing:
        raise JobInputError(
            f"No column named {', '.join(missing)} in the table; it has {', '.join(names)}."
        )
    for column in columns:
        kind = parquet.schema_arrow.field(column).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise JobInputError(f"Column {column!r} does not hold text ({kind}).")
    return parquet


def _row_batches(
    parquet, columns: list[str], batch_rows: int = 5000
) -> Iterator[list[list[str | None]]]:
    """Per batch of rows, each text column's values (None where null)."""
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
        yield [batch.column(c).to_pylist() for c in columns]


def train_tokenizer(
    source: Path,
    *,
    output_dir: Path,
    text_columns: list[str],
    algorithm: str = "bpe",
    vocab_size: int = 8000,
    min_frequency: int = 2,
    special_tokens: list[str] | None = None,
    lowercase: bool = False,
    reporter: Reporter | None = None,
) -> TokenizerResult:
    """Train a tokenizer on ``text_columns`` of the Parquet table ``source`` and save it to
    ``output_dir`` as a transformers tokenizer directory (see the module docstring).

    ``vocab_size`` is the target (the result says the actual size, smaller on little
    text); ``min_frequency``: merges (BPE, WordPiece) seen fewer times are not learned;
    ``special_tokens``: extra tokens, or BERT-style names for the roles; ``lowercase``
    lowercases before tokenizing. JobInputError for a bad parameter, a missing or non-text
    column, or too little text; JobCancelled when the reporter asks to stop.
    """
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from shared_runtime.vocab import model_vocab_size

    reporter = reporter or NullReporter()
    if algorithm not in ALGORITHMS:
        raise JobInputError(f"Unknown algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}.")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise JobInputError("vocab_size must be a whole number.")
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 1:
        raise JobInputError("min_frequency must be a whole number of at least 1.")
    if not text_columns or not all(isinstance(c, str) for c in text_columns):
        raise JobInputError("Name at least one text column to train on.")
    roles, specials = special_token_roles(special_tokens)
    smallest = min_vocab_size(algorithm, len(specials))
    if not smallest <= vocab_size <= MAX_VOCAB:
        raise JobInputError(vocab_size_error(algorithm, len(specials)))
    unk = roles["unk"]
    normalizer_steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    trainer = None
    if algorithm == "char":
        # Exact round trips: no NFKC (it would rewrite characters the text holds).
        normalizer_steps = [normalizers.Lowercase()] if lowercase else []
        tokenizer = Tokenizer(models.WordLevel({unk: 0}, unk_token=unk))
        # Every character (code point) its own piece, newlines included.
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        tokenizer.decoder = decoders.Fuse()
    elif algorithm == "bpe":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    elif algorithm == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token=unk))
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials,
            show_progress=False,
        )
    else:
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            unk_token=unk,
            show_progress=False,
        )
    if normalizer_steps:
        tokenizer.normalizer = normalizers.Sequence(normalizer_steps)

    parquet = _open_text_table(Path(source), text_columns)
    total_rows = parquet.metadata.num_rows
    texts_seen = 0
    rows_seen = 0

    def texts() -> Iterator[list[str]]:
        nonlocal texts_seen, rows_seen
        for columns in _row_batches(parquet, text_columns):
            if reporter.should_stop():
                raise JobCancelled  # propagates out of train_from_iterator
            rows_seen += len(columns[0])
            batch = [t for values in columns for t in values if isinstance(t, str) and t]
            texts_seen += len(batch)
            reporter.progress(
                0.05 + 0.75 * rows_seen / max(total_rows, 1), f"Read {rows_seen:,} rows"
            )
            yield batch

    if trainer is None:  # char: count the characters (after lowercasing, when asked)
        counts: dict[str, int] = {}
        for batch in texts():
            for text in batch:
                for char, n in Counter(text.lower() if lowercase else text).items():
                    counts[char] = counts.get(char, 0) + n
        # The newline is always a token: a text uploaded as lines has it between its rows, which
        # pre-training joins back into the text (one stream).
        counts.setdefault("\n", 0)
        vocab = _char_vocab(counts, specials, vocab_size)
        tokenizer.model = models.WordLevel(vocab, unk_token=unk)
    else:
        try:
            tokenizer.train_from_iterator(texts(), trainer=trainer)
        except JobCancelled:
            raise
        except Exception as exc:  # the tokenizers trainers' own refusals (Rust panics)
            raise JobInputError(f"The {algorithm} tokenizer cannot be trained: {exc}") from None
    if texts_seen == 0:
        raise JobInputError("There is no text in the chosen columns to train a tokenizer on.")
    if tokenizer.get_vocab_size() <= len(specials):
        raise JobInputError("The data has too little text to train a tokenizer.")
    reporter.progress(0.85, "Saving")
    cls, sep = roles["cls"], roles["sep"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} {sep} $B {sep}",
        special_tokens=[(cls, tokenizer.token_to_id(cls)), (sep, tokenizer.token_to_id(sep))],
    )
    extra = [t for t in specials if t not in roles.values()]
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=roles["pad"],
        unk_token=roles["unk"],
        bos_token=roles["bos"],
        eos_token=roles["eos"],
        mask_token=roles["mask"],
        cls_token=cls,
        sep_token=sep,
        extra_special_tokens=extra or None,
        # Decoding gives back the text as tokenized: no spaces removed before punctuation.
        clean_up_tokenization_spaces=False,
    )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    files = [Path(f).name for f in wrapped.save_pretrained(str(output_dir))]
    reporter.progress(1.0, "Trained")
    return TokenizerResult(
        # As the worker loads it and sizes the model's embedding (added tokens counted): the
        # figure the parameter estimate reads from the tokenizer's record.
        vocab_size=model_vocab_size(AutoTokenizer.from_pretrained(str(output_dir))),
        algorithm=algorithm,
        special_tokens=specials,
        files=sorted(set(files)),
        special_token_map=dict(roles),
        texts=texts_seen,
    )


def token_stats(
    source: Path, *, tokenizer_dir: Path, text_columns: list[str], max_rows: int | None = None
) -> dict[str, Any]:
    """Token counts of the table's text under the tokenizer in ``tokenizer_dir`` (without
    special tokens), per row (the text columns of a row together).

    ``{rows, total_tokens, mean, median, p95, max, min, histogram: {edges, counts},
    unknown_rate, chars_per_token, per_column: {column: {total_tokens, mean}}, truncated}``.
    ``max_rows`` counts only the first rows.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    unk_id = tokenizer.unk_token_id
    per_row: list[np.ndarray] = []
    per_column_tokens = dict.fromkeys(text_columns, 0)
    chars = unknown = rows = 0
    truncated = False
    for columns in _row_batches(_open_text_table(Path(source), text_columns), text_columns):
        if max_rows is not None and rows + len(columns[0]) > max_rows:
            columns = [values[: max_rows - rows] for values in columns]
            truncated = True
        counts = np.zeros(len(columns[0]), dtype=np.int64)
        for name, values in zip(text_columns, columns, strict=True):
            texts = [t if isinstance(t, str) else "" for t in values]
            encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
            lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
            counts += lengths
            per_column_tokens[name] += int(lengths.sum())
            chars += sum(map(len, texts))
            if unk_id is not None:
                unknown += sum(ids.count(unk_id) for ids in encoded)
        per_row.append(counts)
        rows += len(counts)
        if truncated:
            break
    if rows == 0:
        raise JobInputError("There is no text to count tokens in.")
    values = np.concatenate(per_row)
    total = int(values.sum())
    histogram_counts, edges = np.histogram(values, bins=30)
    return {
        "rows": rows,
        "texts": rows,
        "total_tokens": total,
        "min": int(values.min()),
        "mean": round(float(values.mean()), 2),
        "median": float(np.median(values)),
        "p95": float(np.percentile(values, 95)),
        "max": int(values.max()),
        "chars_per_token": round(chars / total, 3) if total else None,
        "unknown_rate": round(unknown / total, 5) if total else 0.0,
        "histogram": {
            "edges": [round(float(e), 2) for e in edges],
            "counts": [int(c) for c in histogram_counts],
        },
        "per_column": {
            name: {"total_tokens": tokens, "mean": round(tokens / rows, 2)}
            for name, tokens in per_column_tokens.items()
        },
        "truncated": truncated,
    }
