"""Training from feedback with trl: a reward model, DPO and KTO.

``train_preference(config, reporter=..., checkpoint_callback=...)`` is what ``run.train`` hands a
job of kind ``reward_model``, ``dpo`` or ``kto``. It reads the data in trl's formats:

- ``reward_model`` and ``dpo``: preference pairs, ``prompt`` / ``chosen`` / ``rejected``;
- ``kto``: unpaired thumbs, ``prompt`` / ``completion`` / ``label`` (true: a good completion);

each field from the column mapped to the role of that name, else from a column named so
(``config.preference_columns``). The prompt is joined to its response with ``run.SEPARATOR``,
as supervised fine-tuning joins them, so a DPO model is tuned on the inputs it was fine-tuned
and is evaluated and served on.

It starts from a trained model (never random weights): the reward model is the base with a new
one-output head (``AutoModelForSequenceClassification``, ``num_labels=1``); DPO and KTO tune a
causal LM against a frozen copy of it (the reference; with LoRA, the base with the adapter off).
Training goes through the same callback as every other kind (``run._make_callback``): metric
lines (trl's ``rewards/margins``, ``rewards/accuracies``, ``logps/chosen`` ...), progress, a
stop within a step when cancelled, divergence, checkpoints handed over as they are written. The
final model is saved with safetensors into ``output_dir/model`` with its tokenizer.

A reward model reports ``eval_accuracy``: the share of held-out pairs whose chosen response it
scores above the rejected one, counted pair by pair on the eval split, or when the job has none
on a seeded tenth of the pairs held out of training (``eval_holdout: auto``).

Plain Python: no Django, no Celery.
"""

from __future__ import annotations

import copy
import logging
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmhub.reporting import JobInputError, Reporter
from training.runtime.config import (
    TrainingConfig,
    evaluation_and_checkpoint_args,
    optimizer_args,
    preference_columns,
)

logger = logging.getLogger("llmhub.runtime.training")

# A reward job without an eval split holds out this share of its pairs (when it has enough).
HOLDOUT_SHARE = 0.1
MIN_PAIRS_FOR_HOLDOUT = 10
TRUE_WORDS = frozenset({"true", "1", "yes", "good", "up", "thumbs_up", "positive"})
FALSE_WORDS = frozenset({"false", "0", "no", "bad", "down", "thumbs_down", "negative"})


# --- data -----------------------------------------------------------------------------------


def read_examples(path: Path, kind: str, roles: dict[str, str]) -> list[dict[str, Any]]:
    """The rows of the Parquet file at ``path`` as trl examples for ``kind``: dicts of prompt,
    chosen, rejected (pairs) or prompt, completion, label (a bool). Rows with an empty response
    are skipped; a label that is no yes/no is a JobInputError naming the row."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    columns = preference_columns(kind, roles, table.column_names)
    data = {field: table.column(column).to_pylist() for field, column in columns.items()}
    examples = []
    for i in range(table.num_rows):
        prompt = _text(data["prompt"][i])
        if kind == "kto":
            completion = _text(data["completion"][i])
            if completion.strip():
                label = _label(data["label"][i], row=i + 1)
                examples.append({"prompt": prompt, "completion": completion, "label": label})
            continue
        chosen, rejected = _text(data["chosen"][i]), _text(data["rejected"][i])
        if chosen.strip() and rejected.strip():
            examples.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    if not examples:
        what = "completion" if kind == "kto" else "chosen and rejected response"
        raise JobInputError(f"No usable examples in {path.name}: no row has a {what}.")
    return examples


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _label(value: Any, *, row: int) -> bool:
    """A KTO label as a bool: true/false, 1/0, or words such as yes/no, good/bad."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):  # NaN equals neither
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise JobInputError(
        f"Row {row}: the label {value!r} is neither true nor false (use true/false or 1/0)."
    )


def _prompt_text(prompt: str) -> str:
    """The prompt as the model reads it before its response (empty stays empty)."""
    from training.runtime.run import SEPARATOR

    return prompt + SEPARATOR if prompt else ""


def to_trl_rows(kind: str, examples: list[dict[str, Any]]) -> dict[str, list]:
    """Columns for ``datasets.Dataset.from_dict``, prompts joined to responses as SFT joins them.
    A reward model reads each whole conversation (trl prepends the prompt itself)."""
    rows: dict[str, list] = {}
    for example in examples:
        for key, value in example.items():
            rows.setdefault(key, []).append(_prompt_text(value) if key == "prompt" else value)
    return rows


def split_holdout(
    examples: list[dict[str, Any]], *, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, held out): a seeded tenth of the pairs held out, none below ten pairs."""
    if len(examples) < MIN_PAIRS_FOR_HOLDOUT:
        return examples, []
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    held = set(order[: max(1, round(len(examples) * HOLDOUT_SHARE))])
    return (
        [e for i, e in enumerate(examples) if i not in held],
        [e for i, e in enumerate(examples) if i in held],
    )


# --- scoring --------------------------------------------------------------------------------


def reward_scores(model, tokenizer, texts: list[str], *, max_len: int, batch: int = 16):
    """The reward model's scalar score of each text (prompt and response together)."""
    import torch

    scores: list[float] = []
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    eos = tokenizer.eos_token or ""
    with torch.no_grad():
        for start in range(0, len(texts), batch):
            chunk = [t if t.endswith(eos) else t + eos for t in texts[start : start + batch]]
            encoded = tokenizer(
                chunk, truncation=True, max_length=max_len, padding=True, return_tensors="pt"
            ).to(device)
            scores.extend(model(**encoded).logits.squeeze(-1).float().tolist())
    model.train(was_training)
    return scores


def pair_accuracy(model, tokenizer, pairs: list[dict[str, Any]], *, max_len: int) -> dict:
    """``eval_accuracy`` (share of pairs with chosen scored above rejected, ties count as
    wrong), ``eval_reward_margin`` (mean chosen - rejected score) and ``eval_pairs``."""
    chosen = reward_scores(
        model, tokenizer, [_prompt_text(p["prompt"]) + p["chosen"] for p in pairs], max_len=max_len
    )
    rejected = reward_scores(
        model,
        tokenizer,
        [_prompt_text(p["prompt"]) + p["rejected"] for p in pairs],
        max_len=max_len,
    )
    right = sum(1 for c, r in zip(chosen, rejected, strict=True) if c > r)
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    return {
        "eval_accuracy": right / len(pairs),
        "eval_reward_margin": sum(margins) / len(margins),
        "eval_pairs": float(len(pairs)),
    }


# --- train ----------------------------------------------------------------------------------


def _trl_config(kind: str, config: TrainingConfig, precision_flags: dict, *, has_eval: bool):
    from trl import DPOConfig, KTOConfig, RewardConfig

    common = {
        "output_dir": str(config.output_dir / "checkpoints"),
        "per_device_train_batch_size": config.batch_size,
        "per_device_eval_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "learning_rate": config.learning_rate,
        **optimizer_args(config),  # AdamW's settings, clipping, the schedule and its floor
        "num_train_epochs": config.num_epochs,
        "max_steps": config.max_steps if config.max_steps > 0 else -1,
        "logging_steps": config.logging_steps,
        "logging_first_step": True,
        "seed": config.seed,
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        # trl turns it on by default: on the small models a job trains it only costs time.
        "gradient_checkpointing": False,
        "max_length": config.max_seq_length,
        **evaluation_and_checkpoint_args(config, has_eval=has_eval),
        **precision_flags,  # bf16/fp16 given explicitly: trl would default to bf16
    }
    if kind == "reward_model":
        return RewardConfig(**common)
    if kind == "dpo":
        return DPOConfig(beta=config.beta, **common)
    return KTOConfig(beta=config.beta, **common)


def _trainer_class(kind: str):
    from trl import DPOTrainer, KTOTrainer, RewardTrainer

    return {"reward_model": RewardTrainer, "dpo": DPOTrainer, "kto": KTOTrainer}[kind]


def train_preference(
    config: TrainingConfig,
    *,
    reporter: Reporter,
    checkpoint_callback: Callable[[Path, int], None] | None = None,
):
    """Run one reward-model, DPO or KTO job; see the module docstring. Returns run's
    ``TrainResult``."""
    import datasets
    import transformers
    from transformers import PrinterCallback

    from training.runtime import run

    kind = config.kind
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    if config.model_spec is not None:  # the config refuses it too; a clear word if bypassed
        raise JobInputError(f"A {kind} job starts from a trained model, not random weights.")
    device, precision_flags = run._device_and_precision(config)
    reporter.progress(0.0, "Preparing data")
    tokenizer = run._load_tokenizer(config)
    train_examples = read_examples(config.train_path, kind, config.column_roles)
    eval_examples: list[dict[str, Any]] = []
    holdout = ""
    if config.eval_path is not None:
        eval_examples = read_examples(config.eval_path, kind, config.column_roles)
    elif kind == "reward_model":
        train_examples, eval_examples = split_holdout(train_examples, seed=config.seed)
        holdout = "auto" if eval_examples else ""
    if kind == "kto" and len(train_examples) < config.batch_size:
        raise JobInputError(
            f"KTO compares the completions of a batch: {len(train_examples)} example(s) are "
            f"fewer than the batch size of {config.batch_size}."
        )
    train_set = datasets.Dataset.from_dict(to_trl_rows(kind, train_examples))
    # The held-out pairs of a reward model are scored below, pair by pair; trl's evaluation
    # runs only at eval_steps during training.
    eval_set = (
        datasets.Dataset.from_dict(to_trl_rows(kind, eval_examples)) if eval_examples else None
    )

    reporter.progress(0.02, "Building the model")
    label2id = {"reward": 0} if kind == "reward_model" else None  # one output: the score
    model = run._build_model(config, tokenizer, label2id)
    ref_model = None
    if kind != "reward_model" and config.method == "full":
        # The reference: the starting model, frozen (trl would load it again from its path).
        ref_model = copy.deepcopy(model).eval()
        for parameter in ref_model.parameters():
            parameter.requires_grad_(False)
    if config.method == "lora":
        model = run._apply_lora(model, config)  # DPO/KTO: the adapter off is the reference
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    counter = run._TokenCounter(None)
    callback = run._make_callback(reporter, counter, checkpoint_callback, config)
    callbacks = [callback]
    if config.early_stopping_patience:
        from transformers import EarlyStoppingCallback

        callbacks.append(EarlyStoppingCallback(config.early_stopping_patience))
    args = _trl_config(kind, config, precision_flags, has_eval=eval_set is not None)
    extra = {"ref_model": ref_model} if kind != "reward_model" else {}
    try:
        trainer = _trainer_class(kind)(
            model=model,
            args=args,
            train_dataset=train_set,
            eval_dataset=eval_set,
            processing_class=tokenizer,
            callbacks=callbacks,
            **extra,
        )
    except ValueError as exc:  # trl's refusals of the data or the model, in its words
        raise JobInputError(f"trl refused the {kind} job: {exc}") from exc
    if len(trainer.train_dataset) == 0:
        raise JobInputError(
            f"Every example is longer than max_seq_length {config.max_seq_length} tokens "
            "(or its prompt fills it): raise max_seq_length."
        )
    # Count the real tokens of each batch trl's own collator builds.
    counter.collator = trainer.data_collator
    trainer.data_collator = counter
    trainer.remove_callback(PrinterCallback)
    reporter.progress(0.03, "Training")
    output, warnings = run.train_to_the_end(trainer, callback, config, device)
    metrics = dict(output.metrics)
    best_step = None
    if args.load_best_model_at_end and trainer.state.best_global_step:
        best_step = int(trainer.state.best_global_step)
        metrics["best_step"] = best_step
        callback.final_is_best = best_step != trainer.state.global_step
    step = trainer.state.global_step
    if eval_set is not None:
        reporter.progress(0.97, "Evaluating")
        if kind == "reward_model":
            scored = pair_accuracy(
                trainer.model, tokenizer, eval_examples, max_len=config.max_seq_length
            )
            metrics.update(scored)
            if holdout:
                metrics["eval_holdout_auto"] = 1.0
            points = {k: v for k, v in scored.items() if (k, step) not in callback.reported}
            if points and trainer.is_world_process_zero() and not callback.final_is_best:
                callback.reported.update((k, step) for k in points)
                reporter.metrics(step, points, epoch=trainer.state.epoch)
        else:
            metrics.update(trainer.evaluate())  # logged through the callback
    elapsed = metrics.get("train_runtime") or 0
    if elapsed:
        metrics["tokens_per_second"] = counter.tokens / elapsed
    model_dir = run._save_final(trainer, tokenizer, config)
    parameters = sum(p.numel() for p in trainer.model.parameters())
    return run.TrainResult(
        global_step=step,
        metrics={
            k: float(v)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        },
        model_dir=model_dir,
        parameters=parameters,
        trainable_parameters=trainable,
        device=device,
        precision=config.precision,
        warnings=warnings,
        best_step=best_step,
    )
