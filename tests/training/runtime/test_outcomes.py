"""Honest outcomes and training that finds the best model, on tiny random-weight models:
divergence stops the run or warns, classification evaluations report the catalog's metrics,
early stopping stops early, the best checkpoint becomes the final model, each (metric, step)
is reported once, one-off totals stay off the curves, system metrics come with every log step."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from llmhub.reporting import JobInputError, RecordingReporter
from training.runtime import divergence
from training.runtime.config import (
    TrainingConfig,
    final_metric_names,
    hyperparameter_schema,
    validate_hyperparameters,
)
from training.runtime.divergence import DivergenceMonitor
from training.runtime.presets import ModelSpec
from training.runtime.run import ONE_OFF_METRICS, TrainingDiverged, train

torch.set_num_threads(1)

ROLES = {"text": "verse_text", "label": "label"}


def _classifier(data_dir: Path, tmp_path: Path, **kwargs) -> TrainingConfig:
    defaults = {
        "kind": "classification",
        "model_spec": ModelSpec("bert", "tiny"),
        "train_path": data_dir / "poems" / "train.parquet",
        "eval_path": data_dir / "poems" / "test.parquet",
        "output_dir": tmp_path / "out",
        "column_roles": ROLES,
        "tokenizer_dir": data_dir / "tokenizer",
        "max_seq_length": 32,
        "batch_size": 8,
        "learning_rate": 3e-3,
        "max_steps": 30,
        "logging_steps": 1,
    }
    return TrainingConfig(**{**defaults, **kwargs})


def _points(reporter: RecordingReporter, name: str) -> list[tuple[int, float]]:
    return [(step, values[name]) for step, values, _ in reporter.metric_points if name in values]


# --- the monitor, on plain numbers ------------------------------------------------------------


def _feed(losses: list[float]):
    monitor = DivergenceMonitor()
    found = [monitor.observe(step, loss) for step, loss in enumerate(losses, start=1)]
    return [d for d in found if d is not None]


def test_the_monitor_flags_a_sustained_rise_once_and_not_a_falling_or_spiky_loss() -> None:
    # The run: 1.4 -> 44.
    [diverged] = _feed([1.4, 5.7, 22.8, 25.9, 21.8, 15.0, 25.6, 44.0, 30.0, 40.0])
    assert diverged.step == 7 and diverged.baseline == 1.4 and diverged.since_step == 3
    assert diverged.describe().startswith("diverged at step 7: loss 25.6 from 1.4")
    # Healthy: falling, with noise.
    assert _feed([1.4, 1.3, 1.35, 1.1, 1.2, 0.9, 1.0, 0.8, 0.7, 0.75, 0.6] * 3) == []
    # One spike that recovers does not last PATIENCE smoothed steps above the threshold.
    assert _feed([1.4, 1.3, 1.2, 1.1, 9.0, 1.0, 0.9, 0.9, 0.8, 0.8, 0.8, 0.7]) == []
    # A fine-tune near zero loss: a 4x rise that stays under the absolute floor (MIN_RISE).
    assert _feed([0.05, 0.05, 0.05] + [0.2] * 20) == []
    # The first non-finite loss is a divergence at once.
    [nan] = _feed([1.4, 1.3, math.nan, 1.2])
    assert nan.step == 3 and "no longer a finite number" in nan.describe()
    [inf] = _feed([math.inf])
    assert inf.step == 1


def test_gradients_that_stay_non_finite_are_a_divergence_and_empty_batches_are_not() -> None:
    monitor = DivergenceMonitor()
    # A model whose weights became NaN: the Trainer logs its loss as 0, its norm as NaN.
    steps = [(1.4, 3.0), (1.3, 2.0), (1.2, 2.0)] + [(0.0, math.nan)] * 6
    found = [monitor.observe(i, loss, norm) for i, (loss, norm) in enumerate(steps, start=1)]
    [diverged] = [d for d in found if d is not None]
    assert diverged.step == 8 and diverged.since_step == 4 and diverged.gradients
    assert "gradient norm is no longer a finite number" in diverged.describe()
    # One overflowing fp16 step (infinite norm, skipped by the loss scaler) is not a stretch.
    monitor = DivergenceMonitor()
    steps = [(1.4, 3.0), (1.3, math.inf), (1.2, 2.0), (1.1, math.inf), (1.0, 2.0)] * 4
    assert all(monitor.observe(i, loss, norm) is None for i, (loss, norm) in enumerate(steps))
    # Batches with nothing to predict (zero gradient, the Trainer's filler loss of 0) are no
    # baseline: the real losses around them do not count as a rise from 0.
    monitor = DivergenceMonitor()
    steps = [(0.0, 0.0), (0.0, 0.0), (5.9, 12.9), (0.0, 0.0), (6.2, 12.3), (5.9, 13.5)] * 5
    assert all(monitor.observe(i, loss, norm) is None for i, (loss, norm) in enumerate(steps))


def test_a_masked_lm_run_with_empty_batches_is_not_diverged(data_dir, tmp_path) -> None:
    # Batches of 8 tokens with 5% masked: about two in three mask nothing (NaN loss, no
    # gradient); the run is healthy and must not be flagged.
    reporter = RecordingReporter()
    result = train(
        TrainingConfig(
            kind="pretrain_mlm",
            model_spec=ModelSpec("bert", "tiny"),
            train_path=data_dir / "corpus.parquet",
            output_dir=tmp_path / "out",
            column_roles={"text": "text"},
            tokenizer_dir=data_dir / "tokenizer",
            max_seq_length=8,
            batch_size=1,
            mlm_probability=0.05,
            max_steps=30,
            on_divergence="stop",
        ),
        reporter=reporter,
    )
    assert result.global_step == 30 and result.warnings == []
    assert any(value == 0.0 for _, value in _points(reporter, "grad_norm"))  # empty batches


def test_the_rule_constants_are_the_documented_ones() -> None:
    # The module docstring documents the rule with these names; the threshold uses them.
    monitor = DivergenceMonitor()
    for step, loss in enumerate([2.0, 3.0, 4.0], start=1):
        monitor.observe(step, loss)
    assert monitor.threshold() == max(divergence.RISE_FACTOR * 2.0, 2.0 + divergence.MIN_RISE)


# --- divergence in real runs ------------------------------------------------------------------


def test_a_huge_learning_rate_stops_the_run_with_the_reason(data_dir, tmp_path) -> None:
    reporter = RecordingReporter()
    with pytest.raises(TrainingDiverged) as raised:
        train(_classifier(data_dir, tmp_path, learning_rate=1.0), reporter=reporter)
    message = str(raised.value)
    assert isinstance(raised.value, JobInputError)  # the job fails with this message as is
    assert message.startswith("Training diverged at step ") and " from " in message
    losses = _points(reporter, "loss")
    assert losses[-1][0] < 30  # it stopped early, at the detection
    assert not (tmp_path / "out" / "model").exists()  # nothing to register


def test_warn_finishes_the_run_with_a_warning_and_a_healthy_run_has_none(
    data_dir, tmp_path
) -> None:
    warned = train(
        _classifier(data_dir, tmp_path / "a", learning_rate=1.0, on_divergence="warn"),
        reporter=RecordingReporter(),
    )
    assert warned.global_step == 30 and (warned.model_dir / "config.json").is_file()
    [warning] = warned.warnings
    assert warning["code"] == "diverged" and 1 <= warning["step"] <= 30
    assert warning["message"].startswith(f"Training diverged at step {warning['step']}: loss ")

    healthy = train(_classifier(data_dir, tmp_path / "b"), reporter=RecordingReporter())
    assert healthy.warnings == []


# --- metrics on the validation split ----------------------------------------------------------


def test_classification_reports_the_catalog_metrics_once_per_step(data_dir, tmp_path) -> None:
    reporter = RecordingReporter()
    result = train(_classifier(data_dir, tmp_path, eval_steps=10), reporter=reporter)
    names = ("eval_f1_macro", "eval_accuracy", "eval_precision_macro", "eval_recall_macro")
    for name in (*names, "eval_loss"):
        # Evaluations at 10, 20, 30; the final evaluation falls on step 30 and is not stored twice.
        assert [step for step, _ in _points(reporter, name)] == [10, 20, 30], name
        assert name in result.metrics
    pairs = Counter((step, name) for step, values, _ in reporter.metric_points for name in values)
    assert max(pairs.values()) == 1, [p for p, n in pairs.items() if n > 1]

    # The figures match an independent recomputation from the saved model's predictions.
    table = pq.read_table(data_dir / "poems" / "test.parquet")
    tokenizer = AutoTokenizer.from_pretrained(result.model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(result.model_dir).eval()
    batch = tokenizer(
        table.column("verse_text").to_pylist(),
        truncation=True,
        max_length=32,
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        predicted = model(**batch).logits.argmax(-1).tolist()
    labels = [model.config.id2label[i] for i in predicted]
    truth = table.column("label").to_pylist()
    assert result.metrics["eval_accuracy"] == pytest.approx(accuracy_score(truth, labels))
    assert result.metrics["eval_f1_macro"] == pytest.approx(
        f1_score(truth, labels, average="macro", labels=sorted(set(truth) | set(labels)))
    )


def test_one_off_totals_stay_off_the_curves_and_system_metrics_come_with_each_log(
    data_dir, tmp_path
) -> None:
    reporter = RecordingReporter()
    result = train(_classifier(data_dir, tmp_path, max_steps=12), reporter=reporter)
    charted = {name for _, values, _ in reporter.metric_points for name in values}
    assert not charted & ONE_OFF_METRICS
    assert {"train_runtime", "total_flos", "train_loss"} <= set(result.metrics)
    loss_steps = [step for step, _ in _points(reporter, "loss")]
    for name in ("system/cpu_percent", "system/memory_mb"):
        assert [step for step, _ in _points(reporter, name)] == loss_steps
    memory = [value for _, value in _points(reporter, "system/memory_mb")]
    assert all(50 < value < 64_000 for value in memory)  # MB of a Python process with torch
    assert all(value >= 0 for _, value in _points(reporter, "system/cpu_percent"))
    gpu = _points(reporter, "system/gpu_memory_mb")
    assert bool(gpu) == torch.cuda.is_available()


# --- early stopping and the best checkpoint ---------------------------------------------------


def test_early_stopping_stops_when_the_metric_stops_improving(data_dir, tmp_path) -> None:
    reporter = RecordingReporter()
    result = train(
        _classifier(
            data_dir,
            tmp_path,
            max_steps=200,
            eval_steps=2,
            early_stopping_patience=1,
            metric_for_best_model="eval_accuracy",
        ),
        reporter=reporter,
    )
    evaluations = _points(reporter, "eval_accuracy")
    assert result.global_step < 200 and result.global_step % 2 == 0
    # It stopped at the first evaluation that did not beat the best one so far.
    values = [value for _, value in evaluations]
    assert values[-1] <= max(values[:-1])
    assert all(b > a for a, b in itertools.pairwise(values[:-1]))


def test_the_best_checkpoint_by_metric_is_the_final_model(data_dir, tmp_path) -> None:
    reporter = RecordingReporter()
    # A learning rate that makes the evaluation loss jump around: the best is rarely the last.
    result = train(
        _classifier(
            data_dir,
            tmp_path,
            learning_rate=0.05,
            on_divergence="warn",
            eval_steps=5,
            metric_for_best_model="eval_loss",
        ),
        reporter=reporter,
    )
    evaluations = _points(reporter, "eval_loss")
    assert [step for step, _ in evaluations] == [5, 10, 15, 20, 25, 30]
    best_step, best_loss = min(evaluations, key=lambda point: point[1])
    assert result.best_step == best_step and result.metrics["best_step"] == best_step
    # The final evaluation is of the best checkpoint's weights.
    assert result.metrics["eval_loss"] == pytest.approx(best_loss, rel=1e-4)
    pairs = Counter((step, name) for step, values, _ in reporter.metric_points for name in values)
    assert max(pairs.values()) == 1


# --- the validators ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"metric_for_best_model": "eval_loss", "eval_path": None}, "choose an eval split"),
        ({"early_stopping_patience": 2, "eval_path": None}, "choose an eval split"),
        ({"early_stopping_patience": 2, "eval_steps": 0}, "set eval_steps above 0"),
        (
            {"metric_for_best_model": "eval_f1_macro", "eval_steps": 5, "save_steps": 7},
            "save_steps (7) must be a multiple of eval_steps (5)",
        ),
        ({"on_divergence": "ignore"}, "on_divergence must be one of stop, warn"),
    ],
)
def test_best_model_options_are_checked(data_dir, tmp_path, overrides, message) -> None:
    with pytest.raises(JobInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _classifier(data_dir, tmp_path, **overrides)


def test_a_metric_the_kind_does_not_report_is_refused_naming_the_allowed_ones(
    data_dir, tmp_path
) -> None:
    with pytest.raises(JobInputError, match="not reported by a pretrain_clm job; choose one of"):
        validate_hyperparameters(
            {"metric_for_best_model": "eval_f1_macro", "eval_steps": 5},
            kind="pretrain_clm",
            has_eval=True,
        )
    schema = {h["name"]: h for h in hyperparameter_schema()}
    assert schema["on_divergence"]["default"] == "stop"
    assert "eval_f1_macro" in schema["metric_for_best_model"]["choices"]
    assert "eval_f1_macro" in final_metric_names("classification", has_eval=True)
    assert "eval_f1_macro" not in final_metric_names("classification", has_eval=False)
    assert "eval_perplexity" in final_metric_names("pretrain_clm", has_eval=True)
