"""The bare baseline loop (``bench/training_overhead.py``) builds the model the job builds,
architecture settings included."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llmhub.reporting import JobInputError
from tests.tiny_tokenizers import byte_level_tokenizer
from training.runtime.bare_loop import bare_train
from training.runtime.config import TrainingConfig
from training.runtime.presets import ModelSpec

TEXTS = ["To be, or not to be, that is the question.", "Whether 'tis nobler in the mind."] * 8
SETTINGS = {"dropout": 0.0, "tie_word_embeddings": False, "activation": "relu"}


@pytest.fixture
def files(tmp_path):
    tok = tmp_path / "tok"
    byte_level_tokenizer(TEXTS, vocab_size=300).save_pretrained(str(tok))
    train = tmp_path / "train.parquet"
    pq.write_table(pa.table({"text": TEXTS}), train)
    return tok, train


def test_the_bare_loop_builds_the_jobs_model_with_its_settings(files, tmp_path) -> None:
    from training.runtime.run import _build_model, _load_tokenizer

    tok, train = files
    spec = ModelSpec("gpt2", "tiny")
    out = tmp_path / "bare"
    bare_train(
        spec=spec,
        tokenizer_dir=tok,
        train_path=train,
        text_column="text",
        steps=1,
        batch_size=2,
        seq_len=16,
        learning_rate=1e-3,
        output_dir=out,
        hyperparameters=SETTINGS,
    )
    bare = json.loads((out / "config.json").read_text())
    config = TrainingConfig(
        kind="pretrain_clm",
        train_path=train,
        output_dir=tmp_path / "job",
        model_spec=spec,
        tokenizer_dir=tok,
        max_seq_length=16,
        **SETTINGS,
    )
    job = _build_model(config, _load_tokenizer(config), None).config.to_dict()
    keys = ("vocab_size", "resid_pdrop", "embd_pdrop", "attn_pdrop", "activation_function")
    assert {k: bare[k] for k in keys} == {k: job[k] for k in keys}
    assert bare["tie_word_embeddings"] is job["tie_word_embeddings"] is False
    assert bare["activation_function"] == "relu" and bare["resid_pdrop"] == 0.0


def test_the_bare_loop_refuses_a_setting_its_family_lacks(files) -> None:
    tok, train = files
    with pytest.raises(JobInputError, match="no setting rope_theta"):
        bare_train(
            spec=ModelSpec("gpt2", "tiny"),
            tokenizer_dir=tok,
            train_path=train,
            text_column="text",
            steps=1,
            batch_size=2,
            seq_len=16,
            learning_rate=1e-3,
            hyperparameters={"rope_theta": 1e4},
        )
