"""torch_compile (issue 17): the hyperparameter reaches the Trainer, the steps run compiled
(inductor; on a CPU it builds C++ kernels with gcc), the saved model is the plain one, and a
worker without a C++ compiler refuses the job with the reason before training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM, TrainerCallback

from llmhub.reporting import JobInputError, RecordingReporter
from tests.training.runtime.conftest import data_dir  # noqa: F401 - the session fixture
from training.runtime.config import TrainingConfig, validate_hyperparameters
from training.runtime.presets import ModelSpec
from training.runtime.run import train


def _config(data: Path, out: Path, **extra) -> TrainingConfig:
    settings = {"max_seq_length": 32, "batch_size": 4, "max_steps": 6, "logging_steps": 2}
    return TrainingConfig(
        kind="pretrain_clm",
        train_path=data / "corpus.parquet",
        output_dir=out,
        column_roles={"text": "text"},
        model_spec=ModelSpec("gpt2", "tiny", {"n_positions": 32}),
        tokenizer_dir=data / "tokenizer",
        **{**settings, **extra},
    )


class _Seen(TrainerCallback):
    """What the Trainer trains with: its arguments and whether the step ran a compiled graph."""

    def __init__(self) -> None:
        self.torch_compile = None
        self.compiled_model = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.torch_compile = args.torch_compile

    def on_step_end(self, args, state, control, **kwargs):
        self.compiled_model = kwargs["model"] is not None and bool(
            torch._dynamo.utils.counters["stats"]["unique_graphs"]
        )


def _watch(monkeypatch: pytest.MonkeyPatch) -> _Seen:
    seen = _Seen()
    original = transformers.Trainer.__init__

    def trainer_init(self, *args, **kwargs):
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), seen]
        original(self, *args, **kwargs)

    monkeypatch.setattr(transformers.Trainer, "__init__", trainer_init)
    return seen


def test_the_setting_is_off_by_default_and_a_boolean() -> None:
    assert validate_hyperparameters({})["torch_compile"] is False
    with pytest.raises(JobInputError, match="torch_compile"):
        validate_hyperparameters({"torch_compile": "yes"})


@pytest.mark.slow  # the first compile on a CPU takes ~40 s (later ones read its cache)
def test_a_compiled_job_trains_and_saves_the_plain_model(
    data_dir: Path,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    seen = _watch(monkeypatch)
    reporter = RecordingReporter()
    result = train(_config(data_dir, tmp_path / "out", torch_compile=True), reporter=reporter)
    assert seen.torch_compile is True
    assert seen.compiled_model is True  # dynamo captured the model's forward and backward
    # In one graph: GPT-2's loss is named (ForCausalLM), not looked up through a warning.
    assert not torch._dynamo.utils.counters["graph_break"]
    assert result.global_step == 6
    losses = [v["loss"] for _, v, _ in reporter.metric_points if "loss" in v]
    assert losses and all(0 < loss < 20 for loss in losses)
    # The saved weights are the model's own (no torch.compile "_orig_mod." prefix).
    model = AutoModelForCausalLM.from_pretrained(str(result.model_dir))
    assert sum(p.numel() for p in model.parameters()) == result.parameters


def test_uncompiled_by_default(
    data_dir: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    seen = _watch(monkeypatch)
    train(_config(data_dir, tmp_path / "out", max_steps=2), reporter=RecordingReporter())
    assert seen.torch_compile is False and seen.compiled_model is False


def test_without_a_cpp_compiler_the_job_fails_with_the_reason(
    data_dir: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from torch._inductor import config as inductor_config

    # The compiler inductor searches for: one that does not exist on this machine.
    monkeypatch.setattr(inductor_config.cpp, "cxx", (None, str(tmp_path / "no-such-g++")))
    with pytest.raises(JobInputError, match=r"needs a C\+\+ compiler"):
        train(_config(data_dir, tmp_path / "out", torch_compile=True), reporter=RecordingReporter())
    assert not (tmp_path / "out" / "model").exists()
