"""The training runtime on tiny models from random weights: every kind learns, LoRA trains only
adapters, cancel keeps a checkpoint, resume reaches the same step, bad configs are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig

from llmhub.reporting import JobCancelled, JobInputError, RecordingReporter
from training.runtime.config import TrainingConfig, validate_hyperparameters
from training.runtime.presets import ModelSpec, build_config, count_parameters, estimate
from training.runtime.run import train

torch.set_num_threads(1)


def _losses(reporter: RecordingReporter) -> list[float]:
    return [values["loss"] for _step, values, _epoch in reporter.metric_points if "loss" in values]


def _config(data_dir: Path, tmp_path: Path, **kwargs) -> TrainingConfig:
    defaults = {
        "train_path": data_dir / "corpus.parquet",
        "output_dir": tmp_path / "out",
        "column_roles": {"text": "text"},
        "tokenizer_dir": data_dir / "tokenizer",
        "max_seq_length": 32,
        "batch_size": 8,
        "learning_rate": 3e-3,
        "max_steps": 30,
        "logging_steps": 1,
    }
    return TrainingConfig(**{**defaults, **kwargs})


def _learns(reporter: RecordingReporter, by: float = 0.1) -> None:
    """The mean of the last five logged losses is at least ``by`` below the first five's."""
    losses = _losses(reporter)
    head, tail = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert tail < head * (1 - by), losses


def test_causal_pretraining_lowers_the_loss_and_saves_safetensors(data_dir, tmp_path) -> None:
    reporter = RecordingReporter()
    result = train(
        _config(
            data_dir,
            tmp_path,
            kind="pretrain_clm",
            model_spec=ModelSpec("gpt2", "tiny"),
            max_steps=40,
        ),
        reporter=reporter,
    )
    _learns(reporter)
    assert result.global_step == 40 and result.device == "cpu"
    files = {p.name for p in result.model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    assert result.metrics["tokens_per_second"] > 0
    assert any("tokens_per_second" in v for _s, v, _e in reporter.metric_points)
    assert reporter.progress_calls[-1][0] == 1.0
    assert result.parameters == count_parameters(
        ModelSpec("gpt2", "tiny"), vocab_size=400, kind="pretrain_clm"
    )


def test_masked_pretraining_lowers_the_loss(data_dir, tmp_path) -> None:
    reporter = RecordingReporter()
    train(
        _config(
            data_dir,
            tmp_path,
            kind="pretrain_mlm",
            model_spec=ModelSpec("bert", "tiny"),
            max_steps=40,
        ),
        reporter=reporter,
    )
    _learns(reporter)


def test_instruction_tuning_learns_to_answer(data_dir, tmp_path) -> None:
    reporter = RecordingReporter()
    train(
        _config(
            data_dir,
            tmp_path,
            kind="sft_causal",
            model_spec=ModelSpec("llama", "tiny"),
            train_path=data_dir / "instructions.parquet",
            max_seq_length=64,
            column_roles={"prompt": "prompt", "target": "target"},
        ),
        reporter=reporter,
    )
    _learns(reporter)


def test_seq2seq_summarization_learns(data_dir, tmp_path) -> None:
    reporter = RecordingReporter()
    result = train(
        _config(
            data_dir,
            tmp_path,
            kind="seq2seq",
            model_spec=ModelSpec("bart", "tiny"),
            train_path=data_dir / "papers.parquet",
            max_seq_length=64,
            column_roles={"text": "document", "target": "summary"},
        ),
        reporter=reporter,
    )
    _learns(reporter)
    assert AutoConfig.from_pretrained(result.model_dir).model_type == "bart"


def test_classification_learns_and_keeps_label_names(data_dir, tmp_path) -> None:
    reporter = RecordingReporter()
    result = train(
        _config(
            data_dir,
            tmp_path,
            kind="classification",
            model_spec=ModelSpec("bert", "tiny"),
            train_path=data_dir / "poems" / "train.parquet",
            eval_path=data_dir / "poems" / "test.parquet",
            max_steps=40,
            column_roles={"text": "verse_text", "label": "label"},
        ),
        reporter=reporter,
    )
    _learns(reporter)
    config = AutoConfig.from_pretrained(result.model_dir)
    assert set(config.id2label.values()) == {"negative", "no_impact", "positive", "mixed"}
    assert 0 <= result.metrics["eval_accuracy"] <= 1 and "eval_loss" in result.metrics


def test_extractive_qa_trains(data_dir, tmp_path) -> None:
    reporter = RecordingReporter()
    train(
        _config(
            data_dir,
            tmp_path,
            kind="qa",
            model_spec=ModelSpec("bert", "tiny"),
            train_path=data_dir / "squad.parquet",
            max_seq_length=128,
            max_steps=30,
            column_roles={"context": "context", "question": "question", "answers": "answers"},
        ),
        reporter=reporter,
    )
    _learns(reporter)


def test_lora_trains_only_adapters_and_the_head_on_a_base_model(data_dir, tmp_path) -> None:
    base = train(
        _config(
            data_dir,
            tmp_path / "base",
            kind="pretrain_mlm",
            model_spec=ModelSpec("bert", "tiny"),
            max_steps=10,
        ),
        reporter=RecordingReporter(),
    )
    reporter = RecordingReporter()
    result = train(
        _config(
            data_dir,
            tmp_path / "lora",
            kind="classification",
            method="lora",
            base_model_dir=base.model_dir,
            tokenizer_dir=None,
            max_steps=40,
            learning_rate=1e-2,
            train_path=data_dir / "poems" / "train.parquet",
            column_roles={"text": "verse_text", "label": "label"},
        ),
        reporter=reporter,
    )
    _learns(reporter)
    assert result.trainable_parameters < result.parameters * 0.2
    adapter = tmp_path / "lora" / "out" / "adapter"
    assert (adapter / "adapter_model.safetensors").exists()
    config = AutoConfig.from_pretrained(result.model_dir)  # merged: a plain model directory
    assert config.model_type == "bert" and len(config.id2label) == 4


def test_cancel_keeps_a_checkpoint_and_resume_reaches_the_same_step(data_dir, tmp_path) -> None:
    saved: list[tuple[Path, int]] = []
    reporter = RecordingReporter(stop_after_metric_points=12)
    config = _config(
        data_dir,
        tmp_path / "first",
        kind="pretrain_clm",
        model_spec=ModelSpec("gpt2", "tiny"),
        max_steps=30,
        save_steps=5,
    )
    with pytest.raises(JobCancelled):
        train(config, reporter=reporter, checkpoint_callback=lambda p, s: saved.append((p, s)))
    path, step = saved[-1]
    assert 10 <= step < 30
    state = json.loads((path / "llmhub_checkpoint.json").read_text())
    assert state["step"] == step and state["kind"] == "pretrain_clm"
    assert (path / "model.safetensors").exists()

    resumed = train(
        _config(
            data_dir,
            tmp_path / "second",
            kind="pretrain_clm",
            model_spec=ModelSpec("gpt2", "tiny"),
            max_steps=30,
            save_steps=5,
            resume_from_checkpoint=path,
        ),
        reporter=RecordingReporter(),
    )
    assert resumed.global_step == 30


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"learning_rate": -0.1}, "learning_rate must be positive"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"max_seq_length": 4096}, "above the model's maximum of 256 positions"),
        ({"kind": "seq2seq"}, "cannot do seq2seq"),
        ({"model_spec": None}, "exactly one model source"),
        ({"model_spec": None, "base_model_dir": Path("/nonexistent/model")}, "does not exist"),
        ({"method": "lora"}, "LoRA adapts a trained model"),
        ({"lr_scheduler": "sawtooth"}, "lr_scheduler must be one of"),
    ],
)
def test_bad_configs_are_refused_before_training(data_dir, tmp_path, overrides, message) -> None:
    settings = {"kind": "pretrain_clm", "model_spec": ModelSpec("gpt2", "tiny"), **overrides}
    with pytest.raises(JobInputError, match=message):
        _config(data_dir, tmp_path, **settings)


def test_a_directory_that_is_not_a_model_is_refused(data_dir, tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(JobInputError, match=r"is not a model: it has no config\.json"):
        _config(data_dir, tmp_path, kind="pretrain_clm", base_model_dir=tmp_path / "empty")


def test_missing_columns_and_fp16_on_cpu(data_dir, tmp_path) -> None:
    with pytest.raises(JobInputError, match="no 'label' column"):
        train(
            _config(
                data_dir,
                tmp_path,
                kind="classification",
                model_spec=ModelSpec("bert", "tiny"),
                column_roles={"text": "text"},
            ),
            reporter=RecordingReporter(),
        )
    with pytest.raises(JobInputError, match="fp16 needs a CUDA GPU"):
        train(
            _config(
                data_dir,
                tmp_path,
                kind="pretrain_clm",
                model_spec=ModelSpec("gpt2", "tiny"),
                precision="fp16",
            ),
            reporter=RecordingReporter(),
        )


def test_a_tokenizer_bigger_than_the_base_model_is_refused(data_dir, tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    config = build_config(ModelSpec("gpt2", "tiny"), vocab_size=100)
    small = tmp_path / "small-model"
    AutoModelForCausalLM.from_config(config).save_pretrained(small)
    with pytest.raises(
        JobInputError, match="tokenizer has 400 tokens but the model's embedding has 100"
    ):
        train(
            _config(data_dir, tmp_path, kind="pretrain_clm", base_model_dir=small),
            reporter=RecordingReporter(),
        )


def test_hyperparameter_validation_and_estimates() -> None:
    assert validate_hyperparameters({})["learning_rate"] == 5e-4
    with pytest.raises(JobInputError, match="Unknown hyperparameter"):
        validate_hyperparameters({"lr": 0.1})
    tiny = estimate(ModelSpec("gpt2", "tiny"), vocab_size=400, seq_len=64, batch_size=8)
    base = estimate(ModelSpec("gpt2", "base"), vocab_size=50257, seq_len=1024, batch_size=8)
    assert tiny["parameters"] == 142_080
    assert abs(base["parameters"] - 124_439_808) / 124_439_808 < 0.001  # GPT-2 small
    assert base["memory_bytes"] > 16 * base["parameters"]
    assert base["flops_per_token"] > 6 * base["parameters"]
    lora = estimate(
        ModelSpec("gpt2", "base"), vocab_size=50257, seq_len=1024, batch_size=8, method="lora"
    )
    assert lora["trainable_parameters"] < base["parameters"] / 100


def test_a_model_above_the_size_limit_is_refused_before_it_is_built(data_dir, tmp_path) -> None:
    from training.runtime.config import DEFAULT_MAX_PARAMETERS, check_model_size

    spec = ModelSpec("llama", "tiny", overrides={"num_hidden_layers": 1_000_000})
    with pytest.raises(
        JobInputError,
        match=r"about [\d.]+ billion parameters \([\d,]+\), above the limit of 20\.0 billion",
    ):
        train(
            _config(data_dir, tmp_path, kind="pretrain_clm", model_spec=spec),
            reporter=RecordingReporter(),
        )
    # A lower limit refuses the tiny model itself; the message carries both numbers.
    with pytest.raises(JobInputError, match=r"above the limit of 1,000"):
        tiny = ModelSpec("gpt2", "tiny")
        train(
            _config(data_dir, tmp_path, kind="pretrain_clm", model_spec=tiny, max_parameters=1000),
            reporter=RecordingReporter(),
        )
    check_model_size(DEFAULT_MAX_PARAMETERS)  # the limit itself is allowed
