"""The training config: one validated dataclass the worker builds and ``run.train`` takes.

Hyperparameters are described once, in :data:`HYPERPARAMETERS`: the web form, the API and this
dataclass all validate against it (:func:`validate_hyperparameters`), so a value refused in
the browser is refused by the API and by the worker with the same message.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from llmhub.reporting import JobInputError
from training.runtime.presets import ModelSpec

KINDS = ("pretrain_clm", "pretrain_mlm", "sft_causal", "seq2seq", "classification", "qa")
METHODS = ("full", "lora")


@dataclass(frozen=True)
class Hyperparameter:
    name: str
    type: str  # int | float | choice | str
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    lora_only: bool = False


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
    Hyperparameter(
        "logging_steps", "int", 1, "Log loss and learning rate every N steps.", 1, 100_000
    ),
    Hyperparameter(
        "mlm_probability", "float", 0.15, "Share of tokens masked (masked LM).", 0.01, 0.9
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
    }[kind]


def hyperparameter_schema() -> list[dict[str, Any]]:
    """JSON-able description of every hyperparameter (for forms and the API)."""
    return [
        {
            "name": h.name,
            "type": h.type,
            "default": h.default,
            "help": h.help,
            "min": h.min,
            "max": h.max,
            "choices": list(h.choices),
            "lora_only": h.lora_only,
        }
        for h in HYPERPARAMETERS
    ]


def _check(h: Hyperparameter, value: Any) -> Any:
    if h.type in ("int", "float"):
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


def validate_hyperparameters(values: dict[str, Any]) -> dict[str, Any]:
    """Every hyperparameter with defaults filled in; JobInputError for unknown names and
    values out of range."""
    if not isinstance(values, dict):
        raise JobInputError("Hyperparameters must be an object of name -> value.")
    unknown = sorted(set(values) - set(_BY_NAME) - set(PASS_THROUGH))
    if unknown:
        raise JobInputError(
            f"Unknown hyperparameter(s): {', '.join(unknown)}. Known: {', '.join(_BY_NAME)}."
        )
    checked = {h.name: _check(h, values.get(h.name, h.default)) for h in HYPERPARAMETERS}
    checked.update({k: values[k] for k in PASS_THROUGH if k in values})
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
    logging_steps: int = 1
    mlm_probability: float = 0.15
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
        validate_hyperparameters({h.name: getattr(self, h.name) for h in HYPERPARAMETERS})
        sources = [s for s in (self.model_spec, self.base_model_dir, self.hub_model_id) if s]
        if len(sources) != 1:
            raise JobInputError(
                "Give exactly one model source: a model spec (random weights), "
                "a base model directory, or a hub model id."
            )
        if self.model_spec is not None and self.tokenizer_dir is None:
            raise JobInputError("A model from random weights needs a tokenizer directory.")
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
