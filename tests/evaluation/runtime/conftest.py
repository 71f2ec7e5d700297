"""Tiny random-weight models with tokenizers trained here on the fixture texts; no hub, no network.

Each model directory is what the training runtime writes with ``save_pretrained``: config.json,
model.safetensors and the tokenizer files. They are built once per test session (seconds).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from tests.tiny_tokenizers import byte_level_tokenizer, wordpiece_tokenizer

DATA = Path(__file__).parent / "data"
CROWS = DATA / "crows_pairs_sample.csv"
BOLD = DATA / "bold_sample.jsonl"
WINOBIAS = DATA / "winobias_sample.jsonl"
SQUAD = DATA / "squad_sample.jsonl"
POEMS = DATA / "sentiment_poem_sample.csv"
SCITLDR = DATA / "scitldr_sample.jsonl"

POEM_LABELS = ("negative", "no_impact", "positive", "mixed")


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def corpus() -> list[str]:
    """Every text of the fixture files, to train the tokenizers on."""
    texts: list[str] = []
    crows = pd.read_csv(CROWS)
    texts += list(crows.sent_more) + list(crows.sent_less)
    texts += [r["prompt"] for r in _jsonl(BOLD)]
    texts += [r["text"] for r in _jsonl(WINOBIAS)]
    for r in _jsonl(SQUAD):
        texts += [r["context"], r["question"]]
    texts += list(pd.read_csv(POEMS).verse_text)
    for r in _jsonl(SCITLDR):
        texts += [r["document"], r["summary"]]
    return texts


def _byte_level_tokenizer(texts: list[str], *, template: bool) -> object:
    return byte_level_tokenizer(texts, vocab_size=600, template=template, mask=True)


def _wordpiece_tokenizer(texts: list[str]) -> object:
    return wordpiece_tokenizer(texts, vocab_size=600)


@dataclass
class TinyModels:
    causal: Path
    seq2seq: Path
    classifier: Path
    masked: Path
    extractive_qa: Path
    no_tokenizer: Path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    import torch
    from transformers import (
        BartConfig,
        BartForConditionalGeneration,
        BertConfig,
        BertForMaskedLM,
        BertForQuestionAnswering,
        BertForSequenceClassification,
        GPT2Config,
        GPT2LMHeadModel,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    root = tmp_path_factory.mktemp("models")
    texts = corpus()
    torch.manual_seed(0)

    plain = _byte_level_tokenizer(texts, template=False)
    causal = root / "gpt2"
    GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(plain),
            n_positions=256,
            n_embd=32,
            n_layer=2,
            n_head=2,
            bos_token_id=plain.bos_token_id,
            eos_token_id=plain.eos_token_id,
        )
    ).save_pretrained(causal)
    plain.save_pretrained(causal)

    templated = _byte_level_tokenizer(texts, template=True)
    seq2seq = root / "bart"
    bart = BartForConditionalGeneration(
        BartConfig(
            vocab_size=len(templated),
            d_model=32,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=256,
            pad_token_id=templated.pad_token_id,
            bos_token_id=templated.bos_token_id,
            eos_token_id=templated.eos_token_id,
            decoder_start_token_id=templated.eos_token_id,
            forced_eos_token_id=None,
        )
    )
    # A random BART starts every answer with </s>; push EOS down so it writes something.
    bart.final_logits_bias[0, templated.eos_token_id] = -20.0
    bart.save_pretrained(seq2seq)
    templated.save_pretrained(seq2seq)

    wordpiece = _wordpiece_tokenizer(texts)

    def bert_config(**kw: object) -> BertConfig:
        return BertConfig(
            vocab_size=len(wordpiece),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=256,
            pad_token_id=wordpiece.pad_token_id,
            **kw,
        )

    classifier = root / "bert-cls"
    BertForSequenceClassification(
        bert_config(
            num_labels=len(POEM_LABELS),
            id2label=dict(enumerate(POEM_LABELS)),
            label2id={label: i for i, label in enumerate(POEM_LABELS)},
        )
    ).save_pretrained(classifier)
    wordpiece.save_pretrained(classifier)

    masked = root / "bert-mlm"
    BertForMaskedLM(bert_config()).save_pretrained(masked)
    wordpiece.save_pretrained(masked)

    extractive = root / "bert-qa"
    BertForQuestionAnswering(bert_config()).save_pretrained(extractive)
    wordpiece.save_pretrained(extractive)

    no_tokenizer = root / "gpt2-no-tokenizer"
    GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(plain),
            n_positions=64,
            n_embd=16,
            n_layer=1,
            n_head=2,
            bos_token_id=plain.bos_token_id,
            eos_token_id=plain.eos_token_id,
        )
    ).save_pretrained(no_tokenizer)
    return TinyModels(causal, seq2seq, classifier, masked, extractive, no_tokenizer)


@pytest.fixture(scope="session")
def data_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fixture samples as Parquet splits, as the data stage stores them."""
    root = tmp_path_factory.mktemp("splits")
    out = {}
    poems = pd.read_csv(POEMS)
    out["poems"] = root / "poems.parquet"
    poems.to_parquet(out["poems"])
    out["scitldr"] = root / "scitldr.parquet"
    pd.DataFrame(_jsonl(SCITLDR)).to_parquet(out["scitldr"])
    out["squad"] = root / "squad.parquet"
    pd.DataFrame(_jsonl(SQUAD)).to_parquet(out["squad"])
    no_refs = pd.DataFrame(_jsonl(SCITLDR))
    no_refs["summary"] = ""
    out["scitldr_no_refs"] = root / "scitldr_no_refs.parquet"
    no_refs.to_parquet(out["scitldr_no_refs"])
    return out
