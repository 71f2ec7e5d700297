"""The parameter estimate reads a tokenizer's vocabulary from its record; the worker sizes the
model's embedding from the tokenizer it loads. Both come from ``model_vocab_size``, so for
every tokenizer algorithm (special tokens of either naming, extra ones added) the estimate is
the count of the model the runtime builds."""

from __future__ import annotations

import pytest

from datasets_app import services as data_services
from datasets_app.models import Tokenizer
from llmhub import storage
from tests.datasets_app.test_data_api import run_queued
from training.runtime.config import TrainingConfig
from training.runtime.presets import ModelSpec

# (name, algorithm, target vocab_size, special tokens): with extra specials and BERT names too.
TOKENIZERS = [
    ("bard-char", "char", 200, None),
    ("bard-char-bert", "char", 200, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]),
    ("bard-wordpiece", "wordpiece", 300, None),
    ("bard-unigram", "unigram", 300, None),
    (
        "bard-bpe-chat",
        "bpe",
        400,
        ["<pad>", "<unk>", "<s>", "</s>", "<mask>", "<|user|>", "<|assistant|>"],
    ),
]


def runtime_model(tokenizer: Tokenizer, tmp_path, family: str, kind: str):
    """The model (and tokenizer) the training runtime builds for a job on ``tokenizer``."""
    from training.runtime.run import _build_model, _load_tokenizer

    train = tmp_path / "train.parquet"
    train.write_bytes(b"")  # the builder never reads it; the config checks it exists
    config = TrainingConfig(
        kind=kind,
        train_path=train,
        output_dir=tmp_path / "out",
        model_spec=ModelSpec(family=family, size="tiny"),
        tokenizer_dir=storage.local_directory(tokenizer.files_prefix, tokenizer.files),
        max_seq_length=32,
    )
    loaded = _load_tokenizer(config)
    return _build_model(config, loaded, None), loaded


@pytest.mark.parametrize(("family", "kind"), [("gpt2", "pretrain_clm"), ("bert", "pretrain_mlm")])
def test_the_estimate_is_the_built_model_for_every_tokenizer_algorithm(
    world, api, prepared, tmp_path, family, kind
) -> None:
    engineer = world.users["engineer"]
    for name, algorithm, vocab_size, specials in TOKENIZERS:
        data_services.tokenizer_launch(
            actor=engineer,
            version=prepared.corpus,
            name=name,
            algorithm=algorithm,
            vocab_size=vocab_size,
            special_tokens=specials,
        )
    jobs = run_queued()
    assert [job.status for job in jobs] == ["succeeded"] * len(TOKENIZERS), [j.error for j in jobs]
    client = api(engineer)
    tokenizers = [
        prepared.tokenizer,
        *Tokenizer.objects.filter(name__in=[t[0] for t in TOKENIZERS]),
    ]
    assert {t.algorithm for t in tokenizers} == {"bpe", "wordpiece", "unigram", "char"}
    for tokenizer in tokenizers:
        estimate = client.post(
            "/api/v1/training-jobs/estimate/",
            {
                "model_spec": {"family": family, "size": "tiny"},
                "kind": kind,
                "max_seq_length": 32,
                "tokenizer": tokenizer.pk,
            },
            format="json",
        )
        assert estimate.status_code == 200, estimate.content
        model, loaded = runtime_model(tokenizer, tmp_path, family, kind)
        embeddings = model.get_input_embeddings().num_embeddings
        assert tokenizer.vocab_size == len(loaded) == embeddings, tokenizer.name
        assert estimate.json()["vocab_size"] == embeddings
        real = sum(p.numel() for p in model.parameters())
        assert estimate.json()["parameters"] == real, tokenizer.name
