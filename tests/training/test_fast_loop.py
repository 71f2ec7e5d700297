"""The pre-training loop's speed choices (issue 17, "a training loop as fast as a minimal GPT"):
a GPT-2 built from a spec runs PyTorch's fused attention and its fused tanh GELU (the same
function as GPT-2's own), and the training loop reads values off the device only when it
logs, not at every step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM, TrainerCallback

from llmhub.reporting import RecordingReporter
from tests.training.runtime.conftest import data_dir  # noqa: F401 - the session fixture
from training.runtime.config import TrainingConfig, validate_hyperparameters
from training.runtime.presets import ModelSpec, build_config
from training.runtime.run import train

torch.set_num_threads(1)


def _gpt2(**extra):
    spec = ModelSpec("gpt2", "tiny", {"n_positions": 32})
    return AutoModelForCausalLM.from_config(build_config(spec, vocab_size=50, **extra))


def test_a_gpt2_from_a_spec_uses_fused_attention_and_the_fused_tanh_gelu() -> None:
    model = _gpt2()
    assert model.config._attn_implementation == "sdpa"
    assert model.config.activation_function == "gelu_pytorch_tanh"
    act = model.transformer.h[0].mlp.act
    # One fused kernel, not NewGELUActivation's Python expression of the same function.
    assert type(act).__name__ == "GELUTanh"
    x = torch.linspace(-6, 6, 1001)
    gelu_new = 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x**3)))
    torch.testing.assert_close(act(x), gelu_new, atol=1e-6, rtol=1e-5)


def test_a_chosen_activation_still_wins_over_the_fast_default() -> None:
    assert _gpt2(activation_function="gelu_new").config.activation_function == "gelu_new"


class _CountItems(TrainerCallback):
    """Counts ``Tensor.item`` calls (host-device syncs on a GPU) between the first and the
    last training step."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.on, self.items, self.steps = False, 0, 0
        original = torch.Tensor.item

        def item(tensor):
            if self.on:
                self.items += 1
            return original(tensor)

        monkeypatch.setattr(torch.Tensor, "item", item)

    def on_step_begin(self, args, state, control, **kwargs):
        self.on = True

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1

    def on_train_end(self, args, state, control, **kwargs):
        self.on = False


@pytest.mark.parametrize("logging_steps", [1, 10, None])  # None: the default
def test_the_loop_reads_the_device_only_when_it_logs(
    data_dir: Path,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    logging_steps: int | None,
) -> None:
    counter = _CountItems(monkeypatch)
    original_trainer_init = transformers.Trainer.__init__

    def trainer_init(self, *args, **kwargs):
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), counter]
        original_trainer_init(self, *args, **kwargs)

    monkeypatch.setattr(transformers.Trainer, "__init__", trainer_init)
    reporter = RecordingReporter()
    steps = 20
    train(
        TrainingConfig(
            kind="pretrain_clm",
            train_path=data_dir / "corpus.parquet",
            output_dir=tmp_path / "out",
            column_roles={"text": "text"},
            model_spec=ModelSpec("gpt2", "tiny", {"n_positions": 32}),
            tokenizer_dir=data_dir / "tokenizer",
            max_seq_length=32,
            batch_size=4,
            max_steps=steps,
            **({} if logging_steps is None else {"logging_steps": logging_steps}),
        ),
        reporter=reporter,
    )
    if logging_steps is None:
        logging_steps = 10  # the default: a point every 10 steps, not a sync at every step
        assert validate_hyperparameters({})["logging_steps"] == logging_steps
    assert counter.steps == steps
    logs = [step for step, values, _ in reporter.metric_points if "loss" in values]
    # The first step is logged too (logging_first_step), then every logging_steps.
    expected = sorted({1, *range(logging_steps, steps + 1, logging_steps)})
    assert logs == expected
    # A log reads the loss and the gradient norm (and the learning rate): a few reads per log,
    # none on the steps between logs.
    assert len(logs) <= counter.items <= 4 * len(logs), (counter.items, logs)
    if logging_steps > 1:
        assert counter.items < steps
