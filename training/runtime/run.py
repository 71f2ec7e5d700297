"""Training with the transformers ``Trainer``: pre-training (causal or masked LM) and fine-tuning
(instructions, seq2seq, classification, extractive QA), fully or with LoRA (peft).

``train(config, reporter=..., checkpoint_callback=...)`` prepares the data for the job kind,
builds or loads the model, and runs the Trainer with a callback that forwards every log line to
the reporter (loss, learning rate, gradient norm, evaluation loss, tokens per second), reports
progress, and stops within a step when the reporter asks, saving a checkpoint first. Each
checkpoint the Trainer finishes writing is handed to ``checkpoint_callback`` (the worker uploads
it); the final model is saved with safetensors into ``output_dir/model`` together with its
tokenizer, as one plain directory (LoRA adapters are merged into it and also kept apart in
``output_dir/adapter``).

Several GPUs: with ``LLMHUB_TRAINING_PROCESSES=N`` the worker runs each job under
``torchrun --nproc_per_node N`` (``launch.py``); the Trainer then trains data-parallel over the N
GPUs (NCCL), or N CPU processes (gloo). Only rank 0 reports, checkpoints and saves, and every rank
stops at the same step when cancelled or diverged (``_agree``).

Honest outcomes: every logged training loss goes through a ``DivergenceMonitor``
(``divergence.py``); a diverged run stops and fails with the reason (``on_divergence="stop"``)
or finishes with a warning in ``TrainResult.warnings``. Each (metric, step) is reported once;
one-off totals (``train_runtime``, ``total_flos`` ...) stay in the final metrics, off the
curves; each training log step also carries system metrics (``system/cpu_percent``,
``system/memory_mb``, ``system/gpu_memory_mb`` with CUDA). Classification evaluations compute
the evaluation catalog's metrics (``eval_f1_macro``, ``eval_accuracy`` ...), which early
stopping and the best checkpoint (``metric_for_best_model``) can use.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmhub.reporting import JobCancelled, JobInputError, Reporter
from shared_runtime.inputs import build_input
from training.runtime.config import (
    CLASSIFICATION_METRICS,
    LM_KINDS,
    PREFERENCE_KINDS,
    TrainingConfig,
    check_model_size,
    evaluation_and_checkpoint_args,
    model_settings,
    optimizer_args,
    required_roles,
)
from training.runtime.divergence import Divergence, DivergenceMonitor

logger = logging.getLogger("llmhub.runtime.training")

SEPARATOR = "\n"  # between an instruction (prompt/text) and its response in SFT examples
# Figures the Trainer logs once (at the end of training, or per evaluation about the evaluation
# itself): they go with the final metrics, not on the curves, which hold per-step values.
ONE_OFF_METRICS = frozenset(
    {
        "train_runtime",
        "train_samples_per_second",
        "train_steps_per_second",
        "total_flos",
        "train_loss",
        "eval_runtime",
        "eval_samples_per_second",
        "eval_steps_per_second",
    }
)
# System metrics sampled at each training log step (names the job page charts).
SYSTEM_CPU, SYSTEM_MEMORY, SYSTEM_GPU_MEMORY = (
    "system/cpu_percent",
    "system/memory_mb",
    "system/gpu_memory_mb",
)
DEFAULT_LORA_TARGETS = {
    "gpt2": ["c_attn"],
    "llama": ["q_proj", "v_proj"],
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "bart": ["q_proj", "v_proj"],
    "t5": ["q", "v"],
}


@dataclass
class TrainResult:
    global_step: int
    metrics: dict[str, float]
    model_dir: Path
    parameters: int
    trainable_parameters: int
    device: str
    precision: str
    # [{"code": "diverged", "message": ..., "step": 120}]: the worker stores them on the job.
    warnings: list[dict[str, Any]] = field(default_factory=list)
    # The step of the checkpoint kept as the final model (metric_for_best_model), else None.
    best_step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["model_dir"] = str(self.model_dir)
        return data


# --- data -----------------------------------------------------------------------------------


def _read_rows(path: Path, roles: dict[str, str], kind: str) -> dict[str, list]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    columns = table.column_names
    for alternatives in required_roles(kind):
        if not any(role in roles and roles[role] in columns for role in alternatives):
            names = " or ".join(repr(r) for r in alternatives)
            raise JobInputError(
                f"The data has no {names} column for a {kind} job (roles: "
                f"{json.dumps(roles)}; columns: {', '.join(columns)})."
            )
    data = {
        role: table.column(column).to_pylist()
        for role, column in roles.items()
        if column in columns
    }
    if table.num_rows == 0:
        raise JobInputError("The training data has no rows.")
    return data


def _source_text(data: dict[str, list], i: int, *, model_kind: str) -> str:
    """The model's input for row ``i``, built exactly as evaluation builds it, so a fine-tuned
    model is scored on the inputs it was trained on."""
    row = {role: values[i] for role, values in data.items()}
    task = (
        "qa"
        if {"context", "question"} <= set(data) and not ({"text", "prompt"} & set(data))
        else "generation"
    )
    return build_input(row, {role: role for role in data}, task, model_kind=model_kind)


def _target_text(data: dict[str, list], i: int) -> str | None:
    target = data.get("target", [None] * (i + 1))[i]
    if isinstance(target, str):
        return target
    answers = data.get("answers", [None] * (i + 1))[i] or {}
    texts = answers.get("text") if isinstance(answers, dict) else None
    return texts[0] if texts else None


ROW_SEPARATOR = "\n"  # rows of one stream are the lines (or line-cut chunks) of one text
STREAM_ROWS = 1000  # rows tokenized per call: one call per row would cost a Python round trip each


def _stream_ids(tokenizer, texts: list[str], separator: str) -> list[int]:
    """The token ids of the rows as one stream, without a BOS/EOS the text does not hold.

    ``separator="none"``: the rows are joined with newlines back into the text they were cut
    from (a .txt upload's lines or chunks) and tokenized as that text (groups of rows at a time,
    each group ending with its newline). ``"eos"``: rows are separate documents, each followed
    by the tokenizer's end token (GPT-2's ``<|endoftext|>`` between documents)."""
    ids: list[int] = []
    if separator == "eos":
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else None
        eos = eos if eos is not None else tokenizer.sep_token_id
        if eos is None:
            raise JobInputError(
                'document_separator "eos" needs a tokenizer with an end (eos or sep) token.'
            )
        for start in range(0, len(texts), STREAM_ROWS):
            encoded = tokenizer(texts[start : start + STREAM_ROWS], add_special_tokens=False)
            for row in encoded["input_ids"]:
                ids.extend(row)
                ids.append(eos)
        return ids
    for start in range(0, len(texts), STREAM_ROWS):
        group = ROW_SEPARATOR.join(texts[start : start + STREAM_ROWS])
        if start + STREAM_ROWS < len(texts):
            group += ROW_SEPARATOR
        ids.extend(tokenizer(group, add_special_tokens=False)["input_ids"])
    return ids


def _pack(
    tokenizer, texts: list[str], block: int, *, separator: str = "none", offset: int = 0
) -> list[list[int]]:
    """The rows as one token stream (``_stream_ids``) cut into equal blocks of ``block``
    tokens from ``offset`` on: the blocks put end to end are the stream itself."""
    ids = _stream_ids(tokenizer, texts, separator)
    if len(ids) < 2:
        raise JobInputError("The training text is empty after tokenization.")
    if len(ids) < block:
        return [ids]
    offset = offset % block if len(ids) >= 2 * block else 0
    count = (len(ids) - offset) // block
    return [ids[offset + i * block : offset + (i + 1) * block] for i in range(count)]


class StreamBlocks:
    """Pre-training rows: the token stream cut into blocks of ``block`` tokens, from an offset
    drawn anew for each epoch (as nanoGPT samples windows anywhere in the text).

    A causal LM's row is nanoGPT's ``(x, y)`` (``targets="next"``): ``block`` input tokens and,
    as ``shift_labels``, the ``block`` tokens that follow them. Block ``i`` starts at ``s =
    offset + i * block``, reads ``stream[s : s + block]`` and predicts ``stream[s + 1 : s + block
    + 1]``, sharing its last target with the next block's first input. There are ``(len - 1) //
    block`` blocks at every offset: from offset 0 they predict every token after the first (of
    a stream of ``k * block + 1`` tokens; else all but the last ``(len - 1) % block``); from
    another offset the last block runs on past the stream's end into its start, as if the text
    came round again: the stream's first token is predicted from its last (one join an epoch,
    where a document stream already has its end token), and every token is a target once but
    the one at the offset (and the ``(len - 1) % block`` after the last block).
    transformers' causal-LM loss (``ForCausalLMLoss``) takes ``shift_labels`` as they are and the
    Trainer counts the targets from them (``num_items_in_batch``); ``labels`` carries the same
    tensor, since the Trainer and the model compute a loss only when there are labels.

    ``targets="same"`` is for a model whose loss does not take ``shift_labels``: ``labels`` =
    ``input_ids``, shifted inside the model (the first token of each block is then never a
    target); ``targets=None`` (masked LM): inputs only, the collator masks them. These two cut
    whole blocks of the stream, as many at every offset (one block's room left for it).

    The Trainer calls ``set_epoch`` (through accelerate's data loader) before each epoch; the
    offset is ``Random(seed, epoch)`` in ``[0, block)``. Rows are tensors, so the collator only
    stacks them."""

    def __init__(self, ids: list[int], block: int, *, seed: int, targets: str | None) -> None:
        import torch

        self.ids = torch.tensor(ids, dtype=torch.long)
        self.requested_block = block
        self.seed = seed
        self.epoch = 0
        self.set_targets(targets)

    def set_targets(self, targets: str | None) -> None:
        """The layout of the rows (see the class); the block count follows it."""
        if targets not in ("next", "same", None):
            raise ValueError(f"targets must be 'next', 'same' or None, not {targets!r}")
        self.targets = targets
        size = len(self.ids)
        if targets == "next":
            # Each input needs the token after it: len - 1 targets, blocks round the end.
            self.block = max(1, min(self.requested_block, size - 1))
            self.spare = self.block - 1
            self.count = max(1, (size - 1) // self.block)
        else:
            self.block = min(self.requested_block, size)
            # Offsets up to block - 1 must leave as many whole blocks as offset 0 minus one.
            self.spare = self.block - 1 if size >= 2 * self.block else 0
            self.count = (size - self.spare) // self.block
        self.set_epoch(self.epoch)

    def set_epoch(self, epoch: int) -> None:
        import random

        self.epoch = epoch
        self.offset = random.Random(f"{self.seed}:{epoch}").randint(0, self.spare)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        import torch

        if not 0 <= index < self.count:
            raise IndexError(index)
        start = self.offset + index * self.block
        if self.targets != "next":
            ids = self.ids[start : start + self.block]
            row = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            if self.targets == "same":
                row["labels"] = ids.clone()
            return row
        end = start + self.block + 1
        if end <= len(self.ids):
            window = self.ids[start:end]
        else:  # the last block from an offset above 0 comes round to the stream's start
            window = self.ids[torch.arange(start, end) % len(self.ids)]
        ids, targets = window[:-1], window[1:]
        return {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "labels": targets,
            "shift_labels": targets,
        }


def _document_separator(config: TrainingConfig) -> str:
    """``config.document_separator``; ``"auto"`` follows the data: a table whose only column
    is the text (what a .txt upload becomes) is one stream ("none"), else rows are documents
    separated by the end token ("eos")."""
    choice = getattr(config, "document_separator", "auto")
    if choice != "auto":
        return choice
    import pyarrow.parquet as pq

    names = pq.ParquetFile(config.train_path).schema_arrow.names
    return "none" if names == [config.column_roles.get("text")] else "eos"


def _texts(data: dict[str, list], role: str) -> list[str]:
    return [t if isinstance(t, str) else "" for t in data[role]]


def prepare_dataset(
    kind: str,
    data: dict[str, list],
    tokenizer,
    *,
    max_len: int,
    label2id: dict[str, int] | None = None,
    document_separator: str = "none",
    seed: int = 42,
):
    """A ``datasets.Dataset`` of model inputs for ``kind`` (pre-training: ``StreamBlocks``)."""
    import datasets

    if kind in ("pretrain_clm", "pretrain_mlm"):
        texts = [t for t in _texts(data, "text") if t.strip()]
        ids = _stream_ids(tokenizer, texts, document_separator)
        if len(ids) < 2:
            raise JobInputError("The training text is empty after tokenization.")
        # Rows come out as tensors: the collator stacks them instead of building tensors
        # from Python lists, ~12 ms of every step for 8 x 128 tokens.
        return StreamBlocks(
            ids, max_len, seed=seed, targets="next" if kind == "pretrain_clm" else None
        )
    if kind == "sft_causal":
        input_ids, labels = [], []
        for i in range(len(next(iter(data.values())))):
            source = _source_text(data, i, model_kind="causal_lm")
            target = _target_text(data, i)
            if target is not None:
                prompt_ids = tokenizer(source + SEPARATOR, add_special_tokens=False)["input_ids"]
                answer_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
                bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
                eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
                ids = (bos + prompt_ids + answer_ids + eos)[:max_len]
                masked = len(bos) + len(prompt_ids)
                label = ([-100] * masked + ids[masked:])[:max_len]
            else:
                ids = tokenizer(source, truncation=True, max_length=max_len)["input_ids"]
                label = list(ids)
            if len(ids) > 1 and any(v != -100 for v in label):
                input_ids.append(ids)
                labels.append(label)
        if not input_ids:
            raise JobInputError(
                "No usable examples: every row is empty or its prompt fills "
                "the whole sequence length."
            )
        return datasets.Dataset.from_dict({"input_ids": input_ids, "labels": labels})
    if kind == "seq2seq":
        rows = len(next(iter(data.values())))
        sources = [_source_text(data, i, model_kind="seq2seq") for i in range(rows)]
        targets = [_target_text(data, i) or "" for i in range(rows)]
        keep = [i for i in range(len(sources)) if sources[i] and targets[i]]
        encoded = tokenizer([sources[i] for i in keep], truncation=True, max_length=max_len)
        labels = tokenizer(
            text_target=[targets[i] for i in keep], truncation=True, max_length=max_len
        )["input_ids"]
        return datasets.Dataset.from_dict(
            {
                "input_ids": encoded["input_ids"],
                "attention_mask": encoded["attention_mask"],
                "labels": labels,
            }
        )
    if kind == "classification":
        keep = [i for i, label in enumerate(data["label"]) if label is not None]
        encoded = tokenizer(
            [_texts(data, "text")[i] for i in keep], truncation=True, max_length=max_len
        )
        unknown = {str(data["label"][i]) for i in keep} - set(label2id or {})
        if unknown:
            raise JobInputError(f"Labels not seen in training: {', '.join(sorted(unknown))}.")
        return datasets.Dataset.from_dict(
            {
                "input_ids": encoded["input_ids"],
                "attention_mask": encoded["attention_mask"],
                "labels": [label2id[str(data["label"][i])] for i in keep],
            }
        )
    return _prepare_qa(data, tokenizer, max_len)


def _prepare_qa(data: dict[str, list], tokenizer, max_len: int):
    """SQuAD-style features: question + context windows with answer start/end token positions."""
    import datasets

    if not getattr(tokenizer, "is_fast", False):
        raise JobInputError("Extractive QA needs a fast tokenizer (with offsets).")
    stride = max(8, max_len // 4)
    encoded = tokenizer(
        _texts(data, "question"),
        _texts(data, "context"),
        truncation="only_second",
        max_length=max_len,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length",
    )
    starts, ends = [], []
    for feature, offsets in enumerate(encoded["offset_mapping"]):
        example = encoded["overflow_to_sample_mapping"][feature]
        answers = data["answers"][example] or {}
        texts, answer_starts = answers.get("text") or [], answers.get("answer_start") or []
        sequence_ids = encoded.sequence_ids(feature)
        if not texts or not answer_starts:
            starts.append(0)
            ends.append(0)
            continue
        start_char = answer_starts[0]
        end_char = start_char + len(texts[0])
        context_tokens = [i for i, s in enumerate(sequence_ids) if s == 1]
        if (
            not context_tokens
            or offsets[context_tokens[0]][0] > start_char
            or offsets[context_tokens[-1]][1] < end_char
        ):
            starts.append(0)
            ends.append(0)
            continue
        start = next(i for i in context_tokens if offsets[i][1] > start_char)
        end = next(i for i in reversed(context_tokens) if offsets[i][0] < end_char)
        starts.append(start)
        ends.append(max(end, start))
    return datasets.Dataset.from_dict(
        {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "start_positions": starts,
            "end_positions": ends,
        }
    ).with_format("torch")  # padded to max_length: equal rows, stacked as tensors


# --- model ----------------------------------------------------------------------------------


def _auto_class(kind: str):
    import transformers

    return {
        "pretrain_clm": transformers.AutoModelForCausalLM,
        "sft_causal": transformers.AutoModelForCausalLM,
        "pretrain_mlm": transformers.AutoModelForMaskedLM,
        "seq2seq": transformers.AutoModelForSeq2SeqLM,
        "classification": transformers.AutoModelForSequenceClassification,
        "qa": transformers.AutoModelForQuestionAnswering,
        # Training from feedback (preference.py): a scalar-reward classifier, or the causal LM.
        "reward_model": transformers.AutoModelForSequenceClassification,
        "dpo": transformers.AutoModelForCausalLM,
        "kto": transformers.AutoModelForCausalLM,
    }[kind]


def _load_tokenizer(config: TrainingConfig):
    from transformers import AutoTokenizer

    source = config.tokenizer_dir or config.base_model_dir or config.hub_model_id
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source))
    except (OSError, ValueError) as exc:
        raise JobInputError(f"Cannot load a tokenizer from {source}: {exc}") from exc
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise JobInputError("The tokenizer has neither a pad nor an end-of-text token.")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _build_model(config: TrainingConfig, tokenizer, label2id: dict[str, int] | None):
    from training.runtime.presets import build_config, count_parameters, estimate_from_config

    auto = _auto_class(config.kind)
    labels = {}
    if label2id is not None:
        labels = {
            "num_labels": len(label2id),
            "label2id": label2id,
            "id2label": {i: label for label, i in label2id.items()},
        }
    if config.model_spec is not None:
        # Counted analytically before anything is allocated: a spec of a million layers is a
        # clear refusal here, not an out-of-memory kill of the worker.
        check_model_size(
            count_parameters(
                config.model_spec,
                vocab_size=len(tokenizer),
                kind=config.kind,
                num_labels=len(label2id) if label2id else 2,
                settings=model_settings(vars(config)),
            ),
            limit=config.max_parameters,
        )
        model_config = build_config(
            config.model_spec,
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            settings=model_settings(vars(config)),  # dropouts, tied embeddings, ...
            **labels,
        )
        import transformers

        transformers.set_seed(config.seed)
        model = auto.from_config(model_config)
    else:
        source = str(config.base_model_dir or config.hub_model_id)
        if config.base_model_dir is not None:
            base_config = json.loads((config.base_model_dir / "config.json").read_text())
            check_model_size(
                estimate_from_config(base_config, seq_len=1, batch_size=1)["parameters"],
                limit=config.max_parameters,
            )
        try:
            model = auto.from_pretrained(source, ignore_mismatched_sizes=bool(labels), **labels)
        except (OSError, ValueError) as exc:
            raise JobInputError(f"Cannot load a {config.kind} model from {source}: {exc}") from exc
    embeddings = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > embeddings:
        raise JobInputError(
            f"The tokenizer has {len(tokenizer):,} tokens but the model's embedding has "
            f"{embeddings:,}: use the model's own tokenizer or a smaller vocabulary."
        )
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    positions = _max_positions(model.config)
    if positions is not None and config.max_seq_length > positions:
        raise JobInputError(
            f"max_seq_length {config.max_seq_length} is above the model's "
            f"maximum of {positions} positions."
        )
    return model


def _name_the_causal_loss(model) -> None:
    """A causal LM whose class name transformers cannot map to a loss (GPT2LMHeadModel) finds
    ``ForCausalLMLoss`` at every forward through a ``logger.warning_once``: the same loss, but
    a graph break under ``torch_compile`` that leaves the loss, and the backward split, outside
    the compiled graphs. Naming the loss it already uses removes that detour."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if hasattr(base, "loss_type") and base.loss_type is None:
        base.loss_type = "ForCausalLM"  # the loss transformers falls back to for it


def _takes_shift_labels(model) -> bool:
    """Whether the causal LM's loss is transformers' ``ForCausalLMLoss``, which takes targets
    already aligned with the inputs (``shift_labels``) as they are, and its ``forward`` passes
    them on (every causal LM of transformers 5 does, gpt2 and llama included). A model with a
    loss of its own (remote code) gets ``labels`` = ``input_ids`` instead."""
    import inspect

    from transformers.loss.loss_utils import ForCausalLMLoss

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    forward = inspect.signature(base.forward).parameters.values()
    return getattr(base, "loss_function", None) is ForCausalLMLoss and any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in forward
    )


def _max_positions(model_config) -> int | None:
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(model_config, name, None)
        if isinstance(value, int):
            return value - 2 if model_config.model_type == "roberta" else value
    return None


def _apply_lora(model, config: TrainingConfig):
    from peft import LoraConfig, TaskType, get_peft_model

    task = {
        "pretrain_clm": TaskType.CAUSAL_LM,
        "sft_causal": TaskType.CAUSAL_LM,
        "seq2seq": TaskType.SEQ_2_SEQ_LM,
        "classification": TaskType.SEQ_CLS,
        "qa": TaskType.QUESTION_ANS,
        "pretrain_mlm": None,
        "reward_model": TaskType.SEQ_CLS,
        "dpo": TaskType.CAUSAL_LM,
        "kto": TaskType.CAUSAL_LM,
    }[config.kind]
    targets = [t.strip() for t in config.lora_target_modules.split(",") if t.strip()]
    targets = targets or DEFAULT_LORA_TARGETS.get(model.config.model_type)
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        task_type=task,
    )
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:
        raise JobInputError(f"LoRA cannot wrap this model: {exc}") from exc


# --- the Trainer callback -------------------------------------------------------------------


class _TokenCounter:
    """Wraps a data collator to count the real (non-padding) tokens it hands the model."""

    def __init__(self, collator) -> None:
        self.collator = collator
        self.tokens = 0

    def __call__(self, features):
        batch = self.collator(features)
        mask = batch.get("attention_mask")
        self.tokens += int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())
        return batch


def _make_callback(
    reporter: Reporter,
    counter: _TokenCounter,
    checkpoint_callback: Callable[[Path, int], None] | None,
    config: TrainingConfig,
):
    from transformers import TrainerCallback

    class LLMHubCallback(TrainerCallback):
        def __init__(self) -> None:
            self.cancelled = False
            self.started = time.perf_counter()
            self.start_tokens = 0
            self.last_checkpoint: Path | None = None
            self.monitor = DivergenceMonitor()
            self.divergence: Divergence | None = None
            # (name, step) pairs already reported: each point is reported once, although the
            # Trainer logs the last evaluation again when the final one falls on its step.
            self.reported: set[tuple[str, int]] = set()
            # Set once the final model is the best checkpoint, not the last step's: its final
            # evaluation then describes another step and is not drawn on the curves.
            self.final_is_best = False
            self.stopped_diverged = False
            self.process = _process()

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()
            self.start_tokens = counter.tokens
            if self.process is not None:
                self.process.cpu_percent(None)  # the first call only starts the measurement

        def on_step_end(self, args, state, control, **kwargs):
            if state.max_steps and state.is_world_process_zero:
                reporter.progress(
                    state.global_step / state.max_steps,
                    f"step {state.global_step}/{state.max_steps}",
                )
            diverged = self.divergence is not None and config.on_divergence == "stop"
            cancel, diverged = _agree(reporter.should_stop(), diverged)
            if diverged:  # every rank stops, and none saves: the weights are worthless
                self.stopped_diverged = True
                control.should_training_stop = True
                control.should_save = False
            elif cancel:  # a cancel (here or on another rank) keeps a checkpoint
                self.cancelled = True
                control.should_save = True
                control.should_training_stop = True
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero:
                return
            numbers = {
                k: float(v)
                for k, v in (logs or {}).items()
                if isinstance(v, int | float) and not isinstance(v, bool) and k != "epoch"
            }
            if "loss" in numbers and self.divergence is None:
                self.divergence = self.monitor.observe(
                    state.global_step, numbers["loss"], numbers.get("grad_norm")
                )
                if self.divergence is not None:
                    logger.warning("Training %s", self.divergence.describe())
                    if config.on_divergence == "stop" and not _distributed():
                        control.should_training_stop = True  # ranks stop in on_step_end
            numbers = {k: v for k, v in numbers.items() if k not in ONE_OFF_METRICS}
            if self.final_is_best:
                numbers = {k: v for k, v in numbers.items() if not k.startswith("eval_")}
            values = {k: v for k, v in numbers.items() if math.isfinite(v)}
            if len(values) < len(numbers):
                # A chart cannot draw NaN or infinity: say so in the job's log instead.
                logger.warning(
                    "Step %s: %s not finite; the run may have diverged (not charted).",
                    state.global_step,
                    ", ".join(f"{k}={v}" for k, v in numbers.items() if k not in values),
                )
            elapsed = time.perf_counter() - self.started
            if elapsed > 0 and "loss" in values:
                values["tokens_per_second"] = (counter.tokens - self.start_tokens) / elapsed
            if "eval_loss" in values and config.kind in LM_KINDS:
                values["eval_perplexity"] = math.exp(min(values["eval_loss"], 50))
            if "loss" in values:
                values.update(_system_metrics(self.process))
            step = state.global_step
            values = {k: v for k, v in values.items() if (k, step) not in self.reported}
            if values:
                self.reported.update((k, step) for k in values)
                reporter.metrics(step, values, epoch=state.epoch)

        def on_save(self, args, state, control, **kwargs):
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if not state.is_world_process_zero or not path.is_dir():
                return
            # The checkpoint describes itself; the worker uploads it only now, complete.
            (path / "llmhub_checkpoint.json").write_text(
                json.dumps(
                    {
                        "step": state.global_step,
                        "epoch": state.epoch,
                        "kind": config.kind,
                        "method": config.method,
                        "best_metric": state.best_metric,
                        "hyperparameters": {
                            k: getattr(config, k)
                            for k in (
                                "learning_rate",
                                "batch_size",
                                "max_seq_length",
                                "num_epochs",
                                "max_steps",
                                "seed",
                                "precision",
                            )
                        },
                    },
                    indent=2,
                )
            )
            self.last_checkpoint = path
            if checkpoint_callback is not None:
                checkpoint_callback(path, state.global_step)

    return LLMHubCallback()


# --- train ----------------------------------------------------------------------------------


def _device_and_precision(config: TrainingConfig) -> tuple[str, dict[str, bool]]:
    import torch

    cuda = torch.cuda.is_available()
    device = f"cuda:{torch.cuda.current_device()}" if cuda else "cpu"
    if config.precision == "fp16" and not cuda:
        raise JobInputError("fp16 needs a CUDA GPU; this worker has none. Use fp32 or bf16.")
    if config.precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise JobInputError(
            f"{torch.cuda.get_device_name()} does not support bf16; use fp16 or fp32."
        )
    return device, {
        "bf16": config.precision == "bf16",
        "fp16": config.precision == "fp16",
        "use_cpu": not cuda,
    }


def train(
    config: TrainingConfig,
    *,
    reporter: Reporter,
    checkpoint_callback: Callable[[Path, int], None] | None = None,
) -> TrainResult:
    """Run one training job; see the module docstring."""
    if config.kind in PREFERENCE_KINDS:  # reward model, DPO, KTO: trl's trainers
        from training.runtime.preference import train_preference

        return train_preference(config, reporter=reporter, checkpoint_callback=checkpoint_callback)
    import torch
    import transformers
    from transformers import (
        DataCollatorForLanguageModeling,
        DataCollatorForSeq2Seq,
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
        TrainingArguments,
        default_data_collator,
    )

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    device, precision_flags = _device_and_precision(config)
    if config.torch_compile:
        _check_compiler(device)
    logger.info("Training on %s with %d CPU threads", device, torch.get_num_threads())
    reporter.progress(0.0, "Preparing data")
    tokenizer = _load_tokenizer(config)
    roles = config.column_roles
    train_rows = _read_rows(config.train_path, roles, config.kind)
    label2id = None
    if config.kind == "classification":
        labels = sorted({str(v) for v in train_rows["label"] if v is not None})
        if len(labels) < 2:
            raise JobInputError(f"Classification needs at least two labels; found {labels}.")
        label2id = {label: i for i, label in enumerate(labels)}
    # Pre-training reads the rows as one stream or as documents (document_separator).
    stream = (
        {"document_separator": _document_separator(config), "seed": config.seed}
        if config.kind in ("pretrain_clm", "pretrain_mlm")
        else {}
    )
    train_set = prepare_dataset(
        config.kind,
        train_rows,
        tokenizer,
        max_len=config.max_seq_length,
        label2id=label2id,
        **stream,
    )
    eval_set = None
    if config.eval_path is not None:
        eval_rows = _read_rows(config.eval_path, roles, config.kind)
        eval_set = prepare_dataset(
            config.kind,
            eval_rows,
            tokenizer,
            max_len=config.max_seq_length,
            label2id=label2id,
            **stream,
        )
    reporter.progress(0.02, "Building the model")
    model = _build_model(config, tokenizer, label2id)
    if config.method == "lora":
        model = _apply_lora(model, config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if config.kind in ("pretrain_clm", "sft_causal"):
        _name_the_causal_loss(model)
    shifted = isinstance(train_set, StreamBlocks) and train_set.targets == "next"
    if shifted and not _takes_shift_labels(model):
        for blocks in (train_set, eval_set):
            if blocks is not None:
                blocks.set_targets("same")  # the model shifts its labels itself

    if config.kind == "pretrain_mlm":
        if tokenizer.mask_token is None:
            raise JobInputError("Masked LM pre-training needs a tokenizer with a mask token.")
        collator = DataCollatorForLanguageModeling(
            tokenizer, mlm=True, mlm_probability=config.mlm_probability
        )
    elif config.kind == "pretrain_clm" or config.kind == "qa":
        collator = default_data_collator
    elif config.kind == "classification":
        collator = DataCollatorWithPadding(tokenizer)
    else:
        collator = DataCollatorForSeq2Seq(
            tokenizer, model=model if config.kind == "seq2seq" else None, label_pad_token_id=-100
        )
    counter = _TokenCounter(collator)

    checkpoint_args = evaluation_and_checkpoint_args(config, has_eval=eval_set is not None)
    best_metric = checkpoint_args.get("metric_for_best_model", "")
    args = TrainingArguments(
        output_dir=str(config.output_dir / "checkpoints"),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        **optimizer_args(config),  # AdamW's settings, clipping, the schedule and its floor
        num_train_epochs=config.num_epochs,
        max_steps=config.max_steps if config.max_steps > 0 else -1,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        seed=config.seed,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        torch_compile=config.torch_compile,  # inductor; _check_compiler refused it up front
        **checkpoint_args,
        **precision_flags,
    )
    callback = _make_callback(reporter, counter, checkpoint_callback, config)
    callbacks = [callback]
    if config.early_stopping_patience:
        from transformers import EarlyStoppingCallback

        callbacks.append(EarlyStoppingCallback(config.early_stopping_patience))
    compute_metrics = None
    if config.kind == "classification":
        compute_metrics = _classification_metrics({i: label for label, i in label2id.items()})
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=counter,
        processing_class=tokenizer,
        callbacks=callbacks,
        compute_metrics=compute_metrics,
    )
    # The reporter carries the logs; the Trainer's own printing would only fill worker logs.
    trainer.remove_callback(PrinterCallback)
    reporter.progress(0.03, "Training")
    output, warnings = train_to_the_end(trainer, callback, config, device)
    metrics = dict(output.metrics)
    best_step = None
    if best_metric and trainer.state.best_global_step:
        best_step = int(trainer.state.best_global_step)
        metrics["best_step"] = best_step
        # The final evaluation below is of the best checkpoint's weights: not a point of the
        # last step's curve.
        callback.final_is_best = best_step != trainer.state.global_step
    if eval_set is not None:
        reporter.progress(0.97, "Evaluating")
        # Logged through the callback like every evaluation (each (name, step) once).
        evaluated = trainer.evaluate()
        metrics.update(evaluated)
        if config.kind in LM_KINDS and "eval_loss" in evaluated:
            metrics["eval_perplexity"] = math.exp(min(evaluated["eval_loss"], 50))
    elapsed = metrics.get("train_runtime") or 0
    if elapsed:
        metrics["tokens_per_second"] = counter.tokens / elapsed
    if config.kind in LM_KINDS and "train_loss" in metrics:
        metrics["train_perplexity"] = math.exp(min(metrics["train_loss"], 50))
    model_dir = _save_final(trainer, tokenizer, config)
    parameters = sum(p.numel() for p in trainer.model.parameters())
    return TrainResult(
        global_step=trainer.state.global_step,
        metrics={k: float(v) for k, v in metrics.items() if isinstance(v, int | float)},
        model_dir=model_dir,
        parameters=parameters,
        trainable_parameters=trainable,
        device=device,
        precision=config.precision,
        warnings=warnings,
        best_step=best_step,
    )


def _check_compiler(device: str) -> None:
    """``torch_compile`` on a CPU builds C++ kernels (inductor): without a working compiler the
    job fails now, with the reason, instead of at its first step."""
    if not device.startswith("cpu"):
        return
    from torch._inductor import exc
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except exc.InvalidCxxCompiler as error:
        raise JobInputError(
            "torch_compile on a CPU needs a C++ compiler (g++, or the one the CXX environment "
            "variable names) and this worker has none that runs: install one or turn "
            "torch_compile off."
        ) from error


class TrainingDiverged(JobInputError):
    """The loss diverged and ``on_divergence`` is "stop": the job fails with this reason."""


def _classification_metrics(id2label: dict[int, str]) -> Callable[[Any], dict[str, float]]:
    """The Trainer's ``compute_metrics`` for classification: the evaluation catalog's own
    implementations (macro-F1, accuracy, ...) over the predicted and true label names, so a
    goal's metric means the same during training as in an evaluation run."""

    def compute(eval_prediction) -> dict[str, float]:
        import numpy as np

        from evaluation.metrics.compute import compute_metrics

        logits, labels = eval_prediction.predictions, eval_prediction.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        predicted = [id2label[int(i)] for i in np.argmax(logits, axis=-1)]
        expected = [id2label[int(i)] for i in labels]
        results = compute_metrics(
            CLASSIFICATION_METRICS, predictions=predicted, references=expected, n_bootstrap=0
        )
        return {
            name: float(value["value"])
            for name, value in results.metrics.items()
            if value["value"] is not None
        }

    return compute


def train_to_the_end(
    trainer: Any, callback: Any, config: TrainingConfig, device: str
) -> tuple[Any, list[dict[str, Any]]]:
    """Run ``trainer.train`` (from the checkpoint to resume, if any) and turn how it ended into
    the job's outcome, the same for every trainer (transformers' and trl's): out of memory is
    an input error with advice, a cancel is JobCancelled, a divergence stops the job or becomes
    a warning (``on_divergence``). Returns the train output and the warnings."""
    import torch

    try:
        output = trainer.train(
            resume_from_checkpoint=str(config.resume_from_checkpoint)
            if config.resume_from_checkpoint
            else None
        )
    except torch.cuda.OutOfMemoryError as exc:
        raise JobInputError(_oom_message(device, config)) from exc
    except torch._dynamo.exc.TorchDynamoException as exc:
        # torch_compile could not compile this model here: a reason, not a traceback.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise JobInputError(
            f"torch_compile failed ({type(exc).__name__}: {first[:300]}); turn torch_compile "
            "off to train this model uncompiled."
        ) from exc
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower():
            raise JobInputError(_oom_message(device, config)) from exc
        raise
    if callback.cancelled:
        logger.info("Stopped on request at step %s", trainer.state.global_step)
        raise JobCancelled
    warnings: list[dict[str, Any]] = []
    divergence = callback.divergence
    if divergence is not None and config.on_divergence == "stop":
        raise TrainingDiverged(f"Training {divergence.describe()}")
    if callback.stopped_diverged:
        raise JobCancelled  # another rank (rank 0) diverged and reports why
    if divergence is not None:
        warnings.append(
            {
                "code": "diverged",
                "message": "Training " + divergence.describe(),
                "step": divergence.step,
            }
        )
    return output, warnings


def _oom_message(device: str, config: TrainingConfig) -> str:
    return (
        f"Out of memory on {device} with batch size {config.batch_size} and sequence length "
        f"{config.max_seq_length}. Try a smaller batch size or sequence length, gradient "
        "accumulation to keep the effective batch, bf16, or LoRA."
    )


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _agree(*flags: bool) -> tuple[bool, ...]:
    """In a multi-process run every rank must stop at the same step, for the same reason, or
    the others wait forever in the next collective: each flag is true if it is on any rank
    (a cancel seen by one rank, a divergence only rank 0 watches)."""
    if not _distributed():
        return tuple(flags)
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([1 if f else 0 for f in flags])
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in tensor.tolist())


def _stop_everywhere(requested: bool) -> bool:
    """Stop on every rank if any rank was asked to (see :func:`_agree`)."""
    return _agree(requested)[0]


def _process():
    """This process for psutil's CPU and memory readings; None where psutil is missing."""
    try:
        import psutil
    except ImportError:  # a dependency of the project; a bare runtime install may lack it
        return None
    return psutil.Process()


def _system_metrics(process) -> dict[str, float]:
    """CPU percent (of one core, since the last reading) and resident memory of the training
    process, and the GPU memory torch holds when CUDA is present."""
    values: dict[str, float] = {}
    if process is not None:
        values[SYSTEM_CPU] = float(process.cpu_percent(None))
        values[SYSTEM_MEMORY] = process.memory_info().rss / 2**20
    import torch

    if torch.cuda.is_available():
        values[SYSTEM_GPU_MEMORY] = torch.cuda.memory_reserved() / 2**20
    return values


def _save_final(trainer, tokenizer, config: TrainingConfig) -> Path:
    model_dir = config.output_dir / "model"
    if not trainer.is_world_process_zero():
        return model_dir  # rank 0 writes the model; the others only trained
    model = trainer.model
    if config.method == "lora":
        model.save_pretrained(str(config.output_dir / "adapter"))
        model = model.merge_and_unload()
    model.save_pretrained(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))
    return model_dir
