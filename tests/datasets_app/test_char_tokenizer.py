"""The character tokenizer (issue 17): every distinct character a token, exact round trips,
unseen characters -> unk, and each algorithm's own smallest vocabulary."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datasets_app.cleaning.options import OptionError, TokenizerParams
from datasets_app.cleaning.tokenizer_training import (
    DEFAULT_SPECIAL_TOKENS,
    min_vocab_size,
    train_tokenizer,
)
from llmhub.reporting import JobInputError

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "corpus_tinyshakespeare.txt"


def _table(tmp_path: Path, texts: list[str]) -> Path:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": texts}), path)
    return path


def test_char_tokenizer_round_trips_text_with_spaces_newlines_and_unicode(tmp_path) -> None:
    from transformers import AutoTokenizer

    text = "  Hello,  world!\n\nNaïve café — 😀 tabs\tend .\n"
    result = train_tokenizer(
        _table(tmp_path, [text]),
        output_dir=tmp_path / "tok",
        text_columns=["text"],
        algorithm="char",
    )
    assert result.vocab_size == len(DEFAULT_SPECIAL_TOKENS) + len(set(text))
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)  # one token per character
    assert tokenizer.decode(ids) == text
    assert tokenizer.unk_token_id not in ids
    unseen = tokenizer("aZq", add_special_tokens=False)["input_ids"]
    assert unseen[1] == tokenizer.unk_token_id and unseen[0] != tokenizer.unk_token_id
    assert tokenizer.eos_token == "</s>" and tokenizer.bos_token == "<s>"


def test_the_shakespeare_vocabulary_is_its_distinct_characters(tmp_path) -> None:
    from transformers import AutoTokenizer

    if not CORPUS.is_file():
        pytest.skip("the shared Shakespeare corpus is not beside this checkout")
    text = CORPUS.read_text(encoding="utf-8")
    result = train_tokenizer(
        _table(tmp_path, text.split("\n")),
        output_dir=tmp_path / "tok",
        text_columns=["text"],
        algorithm="char",
    )
    chars = set(text)  # 65, as nanoGPT's; the newline too, though rows are lines
    assert result.vocab_size == len(DEFAULT_SPECIAL_TOKENS) + len(chars)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    vocab = tokenizer.get_vocab()
    assert chars <= set(vocab)
    sample = text[:2000]
    assert tokenizer.decode(tokenizer(sample, add_special_tokens=False)["input_ids"]) == sample


def test_a_small_vocab_keeps_the_most_frequent_characters(tmp_path) -> None:
    result = train_tokenizer(
        _table(tmp_path, ["aaaabbbc"]),
        output_dir=tmp_path / "tok",
        text_columns=["text"],
        algorithm="char",
        vocab_size=len(DEFAULT_SPECIAL_TOKENS) + 2,
    )
    assert result.vocab_size == len(DEFAULT_SPECIAL_TOKENS) + 2


@pytest.mark.parametrize(("algorithm", "smallest"), [("bpe", 261), ("char", 6), ("wordpiece", 6)])
def test_each_algorithm_has_its_own_smallest_vocabulary(tmp_path, algorithm, smallest) -> None:
    assert min_vocab_size(algorithm) == smallest
    TokenizerParams(name="t", algorithm=algorithm, vocab_size=smallest)
    with pytest.raises(OptionError) as error:
        TokenizerParams(name="t", algorithm=algorithm, vocab_size=smallest - 1)
    assert error.value.field == "vocab_size" and f"between {smallest}" in str(error.value)
    with pytest.raises(JobInputError, match=f"between {smallest}"):
        train_tokenizer(
            _table(tmp_path, ["some text"]),
            output_dir=tmp_path / "tok",
            text_columns=["text"],
            algorithm=algorithm,
            vocab_size=smallest - 1,
        )


def test_byte_level_bpe_trains_at_its_minimum(tmp_path) -> None:
    result = train_tokenizer(
        _table(tmp_path, ["the cat sat on the mat"] * 20),
        output_dir=tmp_path / "tok",
        text_columns=["text"],
        algorithm="bpe",
        vocab_size=261,
    )
    assert result.vocab_size == 261
