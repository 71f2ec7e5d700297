"""The training config: one validated dataclass the worker builds and ``run.train`` takes.

Hyperparameters are described once, in :data:`HYPERPARAMETERS`: the web form, the API and this
dataclass all validate against it (:func:`validate_hyperparameters`), so a value refused in
the browser is refused by the API and by the worker with the same message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from llmhub.reporting import JobInputError
from training.runtime.presets import FAMILIES, MODEL_SETTINGS, ModelSpec

KINDS = (
    "pretrain_clm",
    "pretrain_mlm",
    "sft_causal",
    "seq2seq",
    "classification",
    "qa",
    "reward_model",
    "dpo",
    "kto",
)
METHODS = ("full", "lora")
LM_KINDS = ("pretrain_clm", "pretrain_mlm", "sft_causal", "seq2seq")
# Training from feedback with trl (``preference.py``): a reward model and DPO on preference
# pairs (prompt/chosen/rejected), KTO on unpaired thumbs (prompt/completion/label). Each starts
# from a trained model: a reward model from any model with a sequence-classification head, DPO
# and KTO from a causal LM, which they keep (their versions generate like any causal LM).
PREFERENCE_KINDS = ("reward_model", "dpo", "kto")
# The kinds of model versions each preference kind may start from.
PREFERENCE_BASE_KINDS = {
    "reward_model": (
        "pretrain_clm",
        "sft_causal",
        "dpo",
        "kto",
        "pretrain_mlm",
        "classification",
        "reward_model",
    ),
    "dpo": ("pretrain_clm", "sft_causal", "dpo", "kto"),
    "kto": ("pretrain_clm", "sft_causal", "dpo", "kto"),
}
# The kind whose model a preference kind builds, for estimates and architecture checks.
PREFERENCE_MODEL_KIND = {"reward_model": "classification", "dpo": "sft_causal", "kto": "sft_causal"}
# Kinds whose models generate text (evaluated with generation settings; a masked LM does not).
TEXT_GENERATING_KINDS = ("pretrain_clm", "sft_causal", "seq2seq", "dpo", "kto")
# The task metrics a classification job computes on its eval split at every evaluation (names
# of the evaluation catalog, reported with the prefix ``eval_``). f1_micro is left out: for
# single-label classification it equals accuracy.
CLASSIFICATION_METRICS = ("f1_macro", "accuracy", "precision_macro", "recall_macro", "f1_weighted")


@dataclass(frozen=True)
class Hyperparameter:
    name: str
    type: str  # int | float | choice | str | bool
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    lora_only: bool = False
    # The job kinds it applies to (empty: every kind); elsewhere forms hide it and ignore it.
    kinds: tuple[str, ...] = ()
    # An architecture setting of a model from random weights: the families that have it (the
    # presets' MODEL_SETTINGS). Its default None (or "") keeps the family's own value; a value
    # for a family without it, or for a pretrained start, is refused.
    families: tuple[str, ...] = ()


def _model_setting(name: str, type_: str, help_: str, **limits: Any) -> Hyperparameter:
    """A row for the architecture setting ``name`` of :data:`MODEL_SETTINGS`."""
    default = "" if type_ == "choice" else None
    families = tuple(MODEL_SETTINGS[name])
    return Hyperparameter(name, type_, default, help_, families=families, **limits)


_DROPOUT = {"min": 0.0, "max": 0.95}
_ACTIVATIONS = ("", "gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu")


HYPERPARAMETERS: tuple[Hyperparameter, ...] = (
    Hyperparameter("num_epochs", "float", 1.0, "Passes over the training data.", 0.01, 1000),
    Hyperparameter(
        "max_steps",
        "int",
        0,
        "Stop after this many optimizer steps (0: use the epochs).",
        0,
        10_000_000,
    ),
    Hyperparameter("batch_size", "int", 8, "Examples per device per step.", 1, 4096),
    Hyperparameter(
        "gradient_accumulation_steps", "int", 1, "Micro-batches per optimizer step.", 1, 1024
    ),
    Hyperparameter("learning_rate", "float", 5e-4, "Peak learning rate.", 1e-9, 1.0),
    Hyperparameter(
        "lr_scheduler",
        "choice",
        "linear",
        "Learning-rate schedule after warmup.",
        choices=("linear", "cosine", "constant", "constant_with_warmup"),
    ),
    Hyperparameter("warmup_steps", "int", 0, "Steps of linear warmup.", 0, 1_000_000),
    Hyperparameter("weight_decay", "float", 0.0, "AdamW weight decay.", 0.0, 1.0),
    Hyperparameter(
        "max_seq_length",
        "int",
        128,
        "Tokens per example (or per packed block for pre-training).",
        8,
        32_768,
    ),
    Hyperparameter(
        "precision",
        "choice",
        "fp32",
        "fp32 everywhere; bf16 or fp16 mixed precision where the device supports it.",
        choices=("fp32", "bf16", "fp16"),
    ),
    Hyperparameter("seed", "int", 42, "Random seed (weights, shuffling, dropout).", 0, 2**31 - 1),
    Hyperparameter(
        "eval_steps", "int", 0, "Evaluate every N steps (0: at the end only).", 0, 1_000_000
    ),
    Hyperparameter(
        "save_steps", "int", 0, "Checkpoint every N steps (0: at the end only).", 0, 1_000_000
    ),
    # 10, not 1: each log reads the loss and gradient norm off the device (a sync that stalls
    # a GPU's queue of kernels), samples system metrics and writes a chart point, at every step
    # with 1; a small model's steps are milliseconds, so 10 still draws a point a second or so.
    Hyperparameter(
        "logging_steps",
        "int",
        10,
        "Log loss, learning rate and gradient norm every N steps (and at the first step). "
        "Each log waits for the device and writes a chart point: 10 keeps live curves moving "
        "without slowing short steps; 1 charts every step.",
        1,
        100_000,
    ),
    Hyperparameter(
        "document_separator",
        "choice",
        "auto",
        "Pre-training: the rows are one text (none: joined with newlines into one stream) or "
        "separate documents (eos: an end token after each); auto: one stream for a table whose "
        "only column is the text (a .txt upload), documents otherwise.",
        choices=("auto", "none", "eos"),
        kinds=("pretrain_clm", "pretrain_mlm"),
    ),
    Hyperparameter(
        "mlm_probability",
        "float",
        0.15,
        "Share of tokens masked (masked LM).",
        0.01,
        0.9,
        kinds=("pretrain_mlm",),
    ),
    # "stop" by default: a diverged run (the learning rate of 1.0 sends a classifier's
    # loss from 1.4 to 44) only burns compute from there on, and its model must not be
    # registered as if it had learned. "warn" is for runs the user expects to recover from a
    # spike: they finish, marked "succeeded with warnings".
    Hyperparameter(
        "on_divergence",
        "choice",
        "stop",
        "When the loss becomes NaN or stays far above its start: stop (the job fails with the "
        "reason) or warn (it goes on and succeeds with a warning).",
        choices=("stop", "warn"),
    ),
    Hyperparameter(
        "metric_for_best_model",
        "choice",
        "",
        "Keep the checkpoint that is best by this validation metric as the final model "
        "(needs an eval split and eval_steps); empty: keep the last.",
        choices=("", *(f"eval_{name}" for name in ("loss", *CLASSIFICATION_METRICS))),
    ),
    Hyperparameter(
        "early_stopping_patience",
        "int",
        0,
        "Stop after this many evaluations without improvement of metric_for_best_model "
        "(eval_loss when empty); 0: never stop early.",
        0,
        1000,
    ),
    Hyperparameter(
        "beta",
        "float",
        0.1,
        "DPO and KTO: how far the model may move from the model it starts from (higher: less).",
        0.001,
        100.0,
        kinds=("dpo", "kto"),  # preference.py passes it to DPOConfig and KTOConfig only
    ),
    # Off by default: compiling costs tens of seconds before the first step (a C++ build on a
    # CPU), which only pays back on runs of many steps; a short fine-tune would only wait.
    Hyperparameter(
        "torch_compile",
        "bool",
        False,
        "Compile the model with torch.compile (inductor) before training: faster steps after a "
        "compile of tens of seconds at the start; on a CPU it needs a C++ compiler (gcc).",
        kinds=tuple(k for k in KINDS if k not in PREFERENCE_KINDS),  # transformers' Trainer
    ),
    # The optimizer (AdamW) and the floor of the learning-rate decay.
    Hyperparameter("adam_beta1", "float", 0.9, "AdamW beta1.", 0.0, 0.9999),
    Hyperparameter(
        "adam_beta2",
        "float",
        0.999,
        "AdamW beta2 (0.99 or 0.95 for small models trained fast, as nanoGPT).",
        0.0,
        0.99999,
    ),
    Hyperparameter("adam_epsilon", "float", 1e-8, "AdamW epsilon.", 0.0, 1.0),
    Hyperparameter(
        "max_grad_norm",
        "float",
        1.0,
        "Clip gradients to this global norm (0: no clipping).",
        0.0,
        1e6,
    ),
    Hyperparameter(
        "min_lr",
        "float",
        0.0,
        "The learning rate the cosine decay ends at (e.g. 1e-4 from a peak of 1e-3); "
        "needs lr_scheduler cosine.",
        0.0,
        1.0,
    ),
    # The architecture's own settings (models from random weights; empty: the family's value).
    _model_setting(
        "dropout",
        "float",
        "Every dropout of the model (gpt2: resid, embd and attn; llama: attention; bert: "
        "hidden and attention probs; bart: dropout, attention, activation; t5: dropout_rate). "
        "0 for pre-training small models (nanoGPT).",
        **_DROPOUT,
    ),
    _model_setting("resid_pdrop", "float", "GPT-2: dropout on residual branches.", **_DROPOUT),
    _model_setting("embd_pdrop", "float", "GPT-2: dropout on the embeddings.", **_DROPOUT),
    _model_setting("attn_pdrop", "float", "GPT-2: dropout on attention weights.", **_DROPOUT),
    _model_setting(
        "attention_dropout", "float", "Llama, BART: dropout on attention weights.", **_DROPOUT
    ),
    _model_setting(
        "hidden_dropout_prob", "float", "BERT, RoBERTa: dropout on hidden states.", **_DROPOUT
    ),
    _model_setting(
        "attention_probs_dropout_prob",
        "float",
        "BERT, RoBERTa: dropout on attention weights.",
        **_DROPOUT,
    ),
    _model_setting(
        "tie_word_embeddings",
        "bool",
        "Share the input embedding with the output layer (gpt2, bert: yes; llama: no).",
    ),
    _model_setting(
        "activation",
        "choice",
        "The feed-forward activation (empty: the family's own; llama: silu, bert: gelu).",
        choices=_ACTIVATIONS,
    ),
    _model_setting("attention_bias", "bool", "Llama: biases on q, k, v and o projections."),
    _model_setting("mlp_bias", "bool", "Llama: biases on the feed-forward projections."),
    _model_setting(
        "rope_theta",
        "float",
        "Llama: the base of the rotary position embedding (10000).",
        min=1.0,
        max=1e9,
    ),
    Hyperparameter("lora_r", "int", 8, "LoRA rank.", 1, 1024, lora_only=True),
    Hyperparameter("lora_alpha", "int", 16, "LoRA scaling (alpha).", 1, 4096, lora_only=True),
    Hyperparameter(
        "lora_dropout", "float", 0.05, "Dropout on LoRA inputs.", 0.0, 0.9, lora_only=True
    ),
    Hyperparameter(
        "lora_target_modules",
        "str",
        "",
        "Comma-separated module names; empty: the attention projections of the family.",
        lora_only=True,
    ),
)
_BY_NAME = {h.name: h for h in HYPERPARAMETERS}
# Defaults that differ for a job that starts from pretrained weights (a registered base, a
# model version, a local or hub model). A pretrained encoder is fine-tuned gently for a few
# passes (the 2e-5..1e-4 of BERT-style fine-tuning): at the random-weights rate of 5e-4 all-MiniLM
# forgets what it knew, and one epoch of a thousand rows leaves it predicting the majority class.
# A model from random weights needs the larger rate to learn anything in a short run.
PRETRAINED_DEFAULTS: dict[str, Any] = {"learning_rate": 5e-5, "num_epochs": 3.0}
# The largest model a job may build or load, in parameters (the web's setting
# LLMHUB_MAX_MODEL_PARAMETERS overrides it): about 80 GB of fp32 weights, 320 GB to train with
# Adam, already beyond one machine of this product's GPU workers.
DEFAULT_MAX_PARAMETERS = 20_000_000_000
# Keys the Django side keeps with the hyperparameters but the runtime does not use.
PASS_THROUGH = ("register_as",)


def required_roles(kind: str) -> list[tuple[str, ...]]:
    """Per kind, the column roles its data needs; each tuple lists alternatives."""
    return {
        "pretrain_clm": [("text",)],
        "pretrain_mlm": [("text",)],
        "sft_causal": [("text", "prompt", "question")],
        "seq2seq": [("text", "prompt", "question"), ("target", "answers")],
        "classification": [("text",), ("label",)],
        "qa": [("context",), ("question",), ("answers",)],
        "reward_model": [("prompt",), ("chosen",), ("rejected",)],
        "dpo": [("prompt",), ("chosen",), ("rejected",)],
        "kto": [("prompt",), ("completion",), ("label",)],
    }[kind]


def preference_columns(kind: str, roles: dict[str, str], columns: list[str]) -> dict[str, str]:
    """The column of each field a preference job of ``kind`` reads (prompt, chosen, rejected;
    or prompt, completion, label): the column mapped to the role of that name, else a column
    named so (the trl formats' own names: ``completion`` is no role of the data stage, and an
    export or import names its columns after the fields). JobInputError naming what is
    missing."""
    found, missing = {}, []
    for (name,) in required_roles(kind):
        mapped = roles.get(name)
        if mapped in columns:
            found[name] = mapped
        elif name in columns:
            found[name] = name
        else:
            missing.append(name)
    if missing:
        raise JobInputError(
            f"A {kind} job reads the columns {', '.join(n for (n,) in required_roles(kind))}; "
            f"the data has no {', '.join(repr(m) for m in missing)} column (columns: "
            f"{', '.join(columns) or 'none'}; roles: {json.dumps(roles) if roles else 'none'})."
        )
    return found


def eval_metric_names(kind: str) -> tuple[str, ...]:
    """The metrics a job of ``kind`` reports at each evaluation on its eval split (the ones
    early stopping and the best checkpoint can use)."""
    names = ("eval_loss",)
    if kind == "classification":
        names += tuple(f"eval_{name}" for name in CLASSIFICATION_METRICS)
    if kind == "reward_model":
        names += ("eval_accuracy",)  # the share of held-out pairs scored the right way round
    return names


def final_metric_names(kind: str, *, has_eval: bool) -> tuple[str, ...]:
    """The final metrics a job of ``kind`` reports that rank it (a sweep's choices)."""
    names: tuple[str, ...] = ("train_loss",)
    if kind in LM_KINDS:
        names += ("train_perplexity",)
    if has_eval:
        names += eval_metric_names(kind)
        if kind in LM_KINDS:
            names += ("eval_perplexity",)
    return names


def greater_is_better(metric: str) -> bool:
    """Whether a higher value of ``metric`` is better (losses and perplexities: lower)."""
    return not metric.endswith(("loss", "perplexity"))


def evaluation_and_checkpoint_args(config: TrainingConfig, *, has_eval: bool) -> dict[str, Any]:
    """The Trainer arguments for when to evaluate, when to save and which checkpoint is best,
    shared by every kind (transformers' Trainer and trl's trainers take the same names).

    The best checkpoint (and early stopping, which compares against it) needs evaluated
    checkpoints: a save at every evaluation unless save_steps says otherwise (the config
    checked that it is a multiple of eval_steps, and that there are evaluations at all).
    """
    do_eval_steps = has_eval and config.eval_steps > 0
    best_metric = config.metric_for_best_model or (
        "eval_loss" if config.early_stopping_patience else ""
    )
    save_steps = config.save_steps or (config.eval_steps if best_metric else 0)
    args: dict[str, Any] = {
        "eval_strategy": "steps" if do_eval_steps else "no",
        "eval_steps": config.eval_steps if do_eval_steps else None,
        "save_strategy": "steps" if save_steps > 0 else "no",
        "save_steps": save_steps if save_steps > 0 else 500,
        "save_total_limit": 2,  # with a best model, the Trainer keeps it too
    }
    if best_metric:
        args |= {
            "load_best_model_at_end": True,
            "metric_for_best_model": best_metric,
            "greater_is_better": greater_is_better(best_metric),
        }
    return args


def check_training_options(values: dict[str, Any], *, kind: str, has_eval: bool) -> str | None:
    """The first problem with checked hyperparameters ``values`` for a job of ``kind`` (with or
    without an eval split), as a sentence naming what to change; None when they fit."""
    if kind == "kto" and (values.get("batch_size") or 0) < 2:
        # KTO estimates its KL term from the other completions of the same batch.
        return "KTO needs a batch_size of at least 2 (its KL term compares examples of a batch)."
    metric = values.get("metric_for_best_model") or ""
    patience = values.get("early_stopping_patience") or 0
    if not metric and not patience:
        return None
    what = "metric_for_best_model" if metric else "early_stopping_patience"
    if not has_eval:
        return f"{what} compares evaluations: choose an eval split."
    eval_steps = values.get("eval_steps") or 0
    if eval_steps <= 0:
        return f"{what} compares evaluations during training: set eval_steps above 0."
    allowed = eval_metric_names(kind)
    if metric and metric not in allowed:
        return (
            f"metric_for_best_model {metric} is not reported by a {kind} job; "
            f"choose one of {', '.join(allowed)}."
        )
    save_steps = values.get("save_steps") or 0
    if save_steps and save_steps % eval_steps:
        return (
            f"The best checkpoint is chosen among evaluated checkpoints: save_steps "
            f"({save_steps}) must be a multiple of eval_steps ({eval_steps}), or 0."
        )
    return None


def hyperparameter_schema() -> list[dict[str, Any]]:
    """JSON-able description of every hyperparameter (for forms and the API)."""
    return [
        {
            "name": h.name,
            "type": h.type,
            "default": h.default,
            "pretrained_default": PRETRAINED_DEFAULTS.get(h.name, h.default),
            "help": h.help,
            "min": h.min,
            "max": h.max,
            "choices": list(h.choices),
            "lora_only": h.lora_only,
            "kinds": list(h.kinds),
            "families": list(h.families),
        }
        for h in HYPERPARAMETERS
    ]


def _check(h: Hyperparameter, value: Any) -> Any:
    if h.families and value is None:
        return None  # the family's own value
    if h.type == "bool":
        if not isinstance(value, bool):
            raise JobInputError(f"{h.name} must be true or false, not {value!r}.")
    elif h.type in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise JobInputError(f"{h.name} must be a number, not {value!r}.")
        if h.type == "int":
            if int(value) != value:
                raise JobInputError(f"{h.name} must be a whole number, not {value!r}.")
            value = int(value)
        else:
            value = float(value)
        if h.min is not None and value < h.min:
            what = "positive" if h.min > 0 and h.min < 1e-6 else f"at least {h.min:g}"
            raise JobInputError(f"{h.name} must be {what}, not {value:g}.")
        if h.max is not None and value > h.max:
            raise JobInputError(f"{h.name} must be at most {h.max:g}, not {value:g}.")
    elif h.type == "choice":
        if value not in h.choices:
            raise JobInputError(f"{h.name} must be one of {', '.join(h.choices)}, not {value!r}.")
    elif not isinstance(value, str):
        raise JobInputError(f"{h.name} must be text.")
    return value


def _count(n: int) -> str:
    for size, word in ((10**12, "trillion"), (10**9, "billion"), (10**6, "million")):
        if n >= size:
            return f"{n / size:,.1f} {word}"
    return f"{n:,}"


def check_model_size(parameters: int, *, limit: int | None = DEFAULT_MAX_PARAMETERS) -> None:
    """Refuse a model of more than ``limit`` parameters (JobInputError with the estimate), so a
    config such as ``num_hidden_layers: 1000000`` fails before anything is allocated. The
    service checks the launch's estimate with it, the worker the model it is about to build."""
    if limit is not None and parameters > limit:
        raise JobInputError(
            f"The model would have about {_count(parameters)} parameters ({parameters:,}), "
            f"above the limit of {_count(limit)} (setting LLMHUB_MAX_MODEL_PARAMETERS). "
            "Choose a smaller size or fewer layers."
        )


def model_settings(values: dict[str, Any]) -> dict[str, Any]:
    """The architecture settings chosen in checked hyperparameters ``values`` (those not left
    to the family), for ``presets.build_config`` and the estimate."""
    return {
        h.name: values[h.name]
        for h in HYPERPARAMETERS
        if h.families and values.get(h.name) not in (None, "")
    }


def check_model_settings(values: dict[str, Any], *, family: str) -> str | None:
    """The first architecture setting of ``values`` the model cannot take, as a sentence:
    one its ``family`` does not have, or any for a pretrained start (``family`` "")."""
    chosen = model_settings(values)
    if not chosen:
        return None
    if not family:
        return (
            f"{', '.join(chosen)} set{'s' if len(chosen) == 1 else ''} the architecture of a "
            "model built from random weights; a pretrained model keeps its own."
        )
    for name in chosen:
        if family not in _BY_NAME[name].families:
            own = [h.name for h in HYPERPARAMETERS if family in h.families]
            return f"A {family} model has no setting {name}; its settings are {', '.join(own)}."
    return None


def optimizer_args(config: TrainingConfig) -> dict[str, Any]:
    """The Trainer arguments of the optimizer and the learning-rate schedule: AdamW's betas
    and epsilon, clipping, and a cosine decay to ``min_lr`` when it is above 0 (transformers'
    cosine_with_min_lr schedule)."""
    scheduler: dict[str, Any] = {"lr_scheduler_type": config.lr_scheduler}
    if config.min_lr > 0:
        scheduler = {
            "lr_scheduler_type": "cosine_with_min_lr",
            "lr_scheduler_kwargs": {"min_lr": config.min_lr},
        }
    return {
        **scheduler,
        "warmup_steps": config.warmup_steps,
        "weight_decay": config.weight_decay,
        "adam_beta1": config.adam_beta1,
        "adam_beta2": config.adam_beta2,
        "adam_epsilon": config.adam_epsilon,
        "max_grad_norm": config.max_grad_norm,
    }


def validate_hyperparameters(
    values: dict[str, Any],
    *,
    kind: str | None = None,
    has_eval: bool | None = None,
    pretrained: bool = False,
    family: str | None = None,
) -> dict[str, Any]:
    """Every hyperparameter with defaults filled in (those of a pretrained start when
    ``pretrained``: :data:`PRETRAINED_DEFAULTS`); JobInputError for unknown names and values out
    of range. Given the job's ``kind`` and whether it has an eval split, also the options that
    depend on them (:func:`check_training_options`); given the model's ``family`` ("" for a
    pretrained start), its architecture settings (:func:`check_model_settings`)."""
    if not isinstance(values, dict):
        raise JobInputError("Hyperparameters must be an object of name -> value.")
    unknown = sorted(set(values) - set(_BY_NAME) - set(PASS_THROUGH))
    if unknown:
        raise JobInputError(
            f"Unknown hyperparameter(s): {', '.join(unknown)}. Known: {', '.join(_BY_NAME)}."
        )
    defaults = {h.name: h.default for h in HYPERPARAMETERS}
    if pretrained:
        defaults.update(PRETRAINED_DEFAULTS)
    checked = {h.name: _check(h, values.get(h.name, defaults[h.name])) for h in HYPERPARAMETERS}
    checked.update({k: values[k] for k in PASS_THROUGH if k in values})
    if checked["min_lr"] > 0 and checked["lr_scheduler"] != "cosine":
        raise JobInputError(
            f"min_lr is the floor of the cosine decay: choose lr_scheduler cosine (not "
            f"{checked['lr_scheduler']}), or set min_lr to 0."
        )
    if checked["min_lr"] > checked["learning_rate"]:
        raise JobInputError(
            f"min_lr ({checked['min_lr']:g}) must be at most the learning_rate "
            f"({checked['learning_rate']:g}) it decays from."
        )
    if family is not None and (family in FAMILIES or not family):
        problem = check_model_settings(checked, family=family)
        if problem:
            raise JobInputError(problem)
    if kind is not None and has_eval is not None:
        problem = check_training_options(checked, kind=kind, has_eval=has_eval)
        if problem:
            raise JobInputError(problem)
    return checked


@dataclass
class TrainingConfig:
    """One training job. Paths are local to the worker. Exactly one model source is given:
    ``model_spec`` (random weights), ``base_model_dir`` or ``hub_model_id``."""

    kind: str = field(metadata={"help": f"One of {', '.join(KINDS)}."})
    train_path: Path = field(metadata={"help": "Training data, a Parquet file."})
    output_dir: Path = field(metadata={"help": "Checkpoints and the final model go here."})
    column_roles: dict[str, str] = field(
        default_factory=dict, metadata={"help": "role -> column of the data."}
    )
    method: str = field(default="full", metadata={"help": "full or lora."})
    model_spec: ModelSpec | None = field(
        default=None, metadata={"help": "Family and size, random weights."}
    )
    base_model_dir: Path | None = field(
        default=None, metadata={"help": "A local model to start from."}
    )
    hub_model_id: str = field(default="", metadata={"help": "A hub model id (downloaded)."})
    tokenizer_dir: Path | None = field(
        default=None, metadata={"help": "A tokenizer directory; the base model's when empty."}
    )
    eval_path: Path | None = field(default=None, metadata={"help": "Evaluation data (Parquet)."})
    resume_from_checkpoint: Path | None = field(
        default=None, metadata={"help": "A checkpoint directory written by an earlier run."}
    )
    # Hyperparameters (see HYPERPARAMETERS for their meaning and ranges).
    num_epochs: float = 1.0
    max_steps: int = 0
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-4
    lr_scheduler: str = "linear"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_seq_length: int = 128
    precision: str = "fp32"
    seed: int = 42
    eval_steps: int = 0
    save_steps: int = 0
    logging_steps: int = 10
    document_separator: str = "auto"
    mlm_probability: float = 0.15
    on_divergence: str = "stop"
    metric_for_best_model: str = ""
    early_stopping_patience: int = 0
    beta: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    min_lr: float = 0.0
    torch_compile: bool = False
    # Architecture settings (None or "": the family's own; see presets.MODEL_SETTINGS).
    dropout: float | None = None
    resid_pdrop: float | None = None
    embd_pdrop: float | None = None
    attn_pdrop: float | None = None
    attention_dropout: float | None = None
    hidden_dropout_prob: float | None = None
    attention_probs_dropout_prob: float | None = None
    tie_word_embeddings: bool | None = None
    activation: str = ""
    attention_bias: bool | None = None
    mlp_bias: bool | None = None
    rope_theta: float | None = None
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: str = ""
    max_parameters: int | None = field(
        default=DEFAULT_MAX_PARAMETERS,
        metadata={"help": "The largest model this job may build or load; None: no limit."},
    )

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise JobInputError(f"Unknown job kind {self.kind!r}; kinds: {', '.join(KINDS)}.")
        if self.method not in METHODS:
            raise JobInputError(f"Unknown method {self.method!r}; use full or lora.")
        validate_hyperparameters(
            {h.name: getattr(self, h.name) for h in HYPERPARAMETERS},
            kind=self.kind,
            has_eval=self.eval_path is not None,
            family=self.model_spec.family if isinstance(self.model_spec, ModelSpec) else "",
        )
        sources = [s for s in (self.model_spec, self.base_model_dir, self.hub_model_id) if s]
        if len(sources) != 1:
            raise JobInputError(
                "Give exactly one model source: a model spec (random weights), "
                "a base model directory, or a hub model id."
            )
        if self.model_spec is not None and self.tokenizer_dir is None:
            raise JobInputError("A model from random weights needs a tokenizer directory.")
        if self.model_spec is not None and self.kind in PREFERENCE_KINDS:
            raise JobInputError(
                f"A {self.kind} job trains a model from feedback: start it from a trained model "
                "(a model version or a base model), not from random weights."
            )
        if self.model_spec is not None and self.method == "lora":
            raise JobInputError("LoRA adapts a trained model; train a random one fully.")
        if self.base_model_dir is not None:
            self.base_model_dir = Path(self.base_model_dir)
            if not self.base_model_dir.is_dir():
                raise JobInputError(
                    f"The base model directory {self.base_model_dir} does not exist."
                )
            if not (self.base_model_dir / "config.json").is_file():
                raise JobInputError(f"{self.base_model_dir} is not a model: it has no config.json.")
        for name in ("train_path", "eval_path", "tokenizer_dir", "resume_from_checkpoint"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, Path(value))
                if not Path(value).exists():
                    raise JobInputError(f"{name} {value} does not exist.")
        self.output_dir = Path(self.output_dir)
        if self.model_spec is not None:
            allowed = {
                "decoder": ("pretrain_clm", "sft_causal", "classification"),
                "encoder": ("pretrain_mlm", "classification", "qa"),
                "encoder-decoder": ("seq2seq",),
            }[self.model_spec.architecture]
            if self.kind not in allowed:
                raise JobInputError(
                    f"A {self.model_spec.family} ({self.model_spec.architecture}) model cannot "
                    f"do {self.kind}; it can do {', '.join(allowed)}."
                )
            if self.max_seq_length > self.model_spec.max_positions:
                raise JobInputError(
                    f"max_seq_length {self.max_seq_length} is above the model's maximum of "
                    f"{self.model_spec.max_positions} positions."
                )

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}
