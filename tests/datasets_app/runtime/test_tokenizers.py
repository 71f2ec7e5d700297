"""Tokenizer training for each algorithm, reloading with AutoTokenizer, special tokens, and
token statistics."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from datasets_app.cleaning.tokenizer_training import (
    special_token_roles,
    token_stats,
    train_tokenizer,
)
from llmhub.reporting import JobCancelled, JobInputError, RecordingReporter

LINE = "Now is the winter of our discontent"


@pytest.mark.parametrize("algorithm", ["bpe", "wordpiece", "unigram"])
def test_each_algorithm_trains_reloads_and_round_trips(corpus, tmp_path, algorithm) -> None:
    reporter = RecordingReporter()
    result = train_tokenizer(
        corpus,
        output_dir=tmp_path / "tok",
        text_columns=["text"],
        algorithm=algorithm,
        vocab_size=600,
        reporter=reporter,
    )
    assert result.vocab_size == 600 and result.algorithm == algorithm
    assert result.special_tokens == ["<pad>", "<unk>", "<s>", "</s>", "<mask>"]
    assert "tokenizer.json" in result.files and "tokenizer_config.json" in result.files
    assert result.texts == pq.read_metadata(corpus).num_rows
    assert reporter.progress_calls[-1][0] == 1.0
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert len(tokenizer) == 600
    assert (
        tokenizer.pad_token,
        tokenizer.unk_token,
        tokenizer.bos_token,
        tokenizer.eos_token,
        tokenizer.mask_token,
        tokenizer.cls_token,
        tokenizer.sep_token,
    ) == ("<pad>", "<unk>", "<s>", "</s>", "<mask>", "<s>", "</s>")
    assert tokenizer.pad_token_id == 0 and tokenizer.mask_token_id == 4
    encoded = tokenizer(LINE)["input_ids"]
    assert encoded[0] == tokenizer.cls_token_id and encoded[-1] == tokenizer.sep_token_id
    bare = tokenizer(LINE, add_special_tokens=False)["input_ids"]
    assert bare == encoded[1:-1] and tokenizer.unk_token_id not in bare
    decoded = tokenizer.decode(encoded, skip_special_tokens=True)
    assert decoded.replace(" ", "") == LINE.replace(" ", "")
    if algorithm == "bpe":
        assert decoded == LINE  # byte-level BPE restores the text exactly
    pair = tokenizer("first", "second")["input_ids"]
    assert pair.count(tokenizer.sep_token_id) == 3 and pair[0] == tokenizer.cls_token_id
    batch = tokenizer(["short", LINE], padding=True)["input_ids"]
    assert len(batch[0]) == len(batch[1]) and batch[0][-1] == tokenizer.pad_token_id


def test_bert_style_special_tokens_take_their_roles(corpus, tmp_path) -> None:
    result = train_tokenizer(
        corpus,
        output_dir=tmp_path / "bert",
        text_columns=["text"],
        algorithm="wordpiece",
        vocab_size=500,
        lowercase=True,
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<speaker>"],
    )
    assert result.special_token_map == {
        "pad": "[PAD]",
        "unk": "[UNK]",
        "bos": "<s>",
        "eos": "</s>",
        "mask": "[MASK]",
        "cls": "[CLS]",
        "sep": "[SEP]",
    }
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "bert"))
    assert (tokenizer.cls_token, tokenizer.sep_token, tokenizer.pad_token) == (
        "[CLS]",
        "[SEP]",
        "[PAD]",
    )
    assert "<speaker>" in tokenizer.all_special_tokens
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("NOW is")["input_ids"])
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and "now" in tokens  # lowercased
    assert tokenizer.convert_ids_to_tokens(tokenizer("<speaker> hi")["input_ids"])[1] == "<speaker>"


def test_special_token_roles() -> None:
    roles, ordered = special_token_roles(None)
    assert roles["cls"] == "<s>" and roles["sep"] == "</s>"
    assert ordered == ["<pad>", "<unk>", "<s>", "</s>", "<mask>"]
    roles, ordered = special_token_roles(["<|endoftext|>", "<extra>"])
    assert roles["eos"] == "<|endoftext|>" and ordered[-1] == "<extra>"
    with pytest.raises(JobInputError, match="distinct"):
        special_token_roles(["<a>", "<a>"])


def test_token_stats(corpus, tokenizer_dir, tmp_path) -> None:
    stats = token_stats(corpus, tokenizer_dir=tokenizer_dir, text_columns=["text"])
    rows = pq.read_metadata(corpus).num_rows
    assert stats["rows"] == rows and sum(stats["histogram"]["counts"]) == rows
    assert 1.5 < stats["chars_per_token"] < 6 and stats["mean"] > 100
    assert stats["min"] <= stats["median"] <= stats["p95"] <= stats["max"]
    assert stats["unknown_rate"] == 0.0  # byte-level BPE has no unknowns
    assert (
        stats["total_tokens"] == round(stats["mean"] * rows)
        or abs(stats["total_tokens"] - stats["mean"] * rows) < rows
    )
    json.dumps(stats)
    two = tmp_path / "two.parquet"
    pq.write_table(pa.table({"a": ["to be", None, "or"], "b": ["not", "to be", ""]}), two)
    per_row = token_stats(two, tokenizer_dir=tokenizer_dir, text_columns=["a", "b"], max_rows=2)
    assert per_row["rows"] == 2 and per_row["truncated"]
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    assert per_row["total_tokens"] == count("to be") + count("not") + count("to be")
    assert per_row["per_column"]["a"]["total_tokens"] == count("to be")


def test_unknown_rate_of_wordpiece_on_unseen_characters(corpus, tmp_path) -> None:
    train_tokenizer(
        corpus,
        output_dir=tmp_path / "wp",
        text_columns=["text"],
        algorithm="wordpiece",
        vocab_size=300,
    )
    pq.write_table(pa.table({"text": ["the king 漢字 ☃"]}), tmp_path / "odd.parquet")
    stats = token_stats(
        tmp_path / "odd.parquet", tokenizer_dir=tmp_path / "wp", text_columns=["text"]
    )
    assert 0 < stats["unknown_rate"] < 1


def test_training_refuses_bad_input(tmp_path) -> None:
    pq.write_table(pa.table({"text": ["", None], "n": [1, 2]}), tmp_path / "empty.parquet")
    source = tmp_path / "empty.parquet"

    def train(**kwargs):
        options = {"output_dir": tmp_path / "t", "text_columns": ["text"], "vocab_size": 300}
        return train_tokenizer(source, **(options | kwargs))

    with pytest.raises(JobInputError, match="no text in the chosen columns"):
        train()
    with pytest.raises(JobInputError, match="No column named body"):
        train(text_columns=["body"])
    with pytest.raises(JobInputError, match="does not hold text"):
        train(text_columns=["n"])
    with pytest.raises(JobInputError, match="Unknown algorithm"):
        train(algorithm="sentencepiece")
    with pytest.raises(JobInputError, match="vocab_size must be between"):
        train(vocab_size=10)
    with pytest.raises(JobInputError, match="min_frequency"):
        train(min_frequency=0)
    assert not (tmp_path / "t").exists()


def test_training_can_be_cancelled(corpus, tmp_path) -> None:
    reporter = RecordingReporter()
    reporter.request_stop()
    with pytest.raises(JobCancelled):
        train_tokenizer(corpus, output_dir=tmp_path / "t", text_columns=["text"], reporter=reporter)
    assert not (tmp_path / "t").exists()
