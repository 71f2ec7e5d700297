"""Architecture families and sizes for models trained from random weights, and estimates of
their size and cost computed analytically (no torch), so the web form can show them.

Families: ``gpt2`` and ``llama`` (decoders), ``bert`` and ``roberta`` (encoders), ``bart`` and
``t5`` (encoder-decoders). Sizes go from ``tiny`` (trains on a laptop CPU in a minute) to real
ones (``gpt2`` base is GPT-2 124M, ``llama`` large is TinyLlama-1.1B's shape).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmhub.reporting import JobInputError

DECODER, ENCODER, ENCODER_DECODER = "decoder", "encoder", "encoder-decoder"

FAMILIES: dict[str, dict[str, Any]] = {
    "gpt2": {"label": "GPT-2 style decoder", "architecture": DECODER},
    "llama": {"label": "Llama style decoder", "architecture": DECODER},
    "bert": {"label": "BERT style encoder", "architecture": ENCODER},
    "roberta": {"label": "RoBERTa style encoder", "architecture": ENCODER},
    "bart": {"label": "BART style encoder-decoder", "architecture": ENCODER_DECODER},
    "t5": {"label": "T5 style encoder-decoder", "architecture": ENCODER_DECODER},
}

# Each size in the family's own config vocabulary.
SIZES: dict[str, dict[str, dict[str, int]]] = {
    "gpt2": {
        "tiny": {"n_embd": 64, "n_layer": 2, "n_head": 2, "n_positions": 256},
        "small": {"n_embd": 256, "n_layer": 4, "n_head": 4, "n_positions": 512},
        "base": {"n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024},
        "medium": {"n_embd": 1024, "n_layer": 24, "n_head": 16, "n_positions": 1024},
        "large": {"n_embd": 1280, "n_layer": 36, "n_head": 20, "n_positions": 1024},
    },
    "llama": {
        "tiny": {
            "hidden_size": 64,
            "intermediate_size": 176,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "max_position_embeddings": 256,
        },
        "small": {
            "hidden_size": 256,
            "intermediate_size": 688,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "max_position_embeddings": 1024,
        },
        "base": {
            "hidden_size": 1024,
            "intermediate_size": 2816,
            "num_hidden_layers": 12,
            "num_attention_heads": 16,
            "num_key_value_heads": 8,
            "max_position_embeddings": 2048,
        },
        "large": {
            "hidden_size": 2048,
            "intermediate_size": 5632,
            "num_hidden_layers": 22,
            "num_attention_heads": 32,
            "num_key_value_heads": 4,
            "max_position_embeddings": 2048,
        },
    },
    "bert": {
        "tiny": {
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 256,
            "max_position_embeddings": 256,
        },
        "small": {
            "hidden_size": 256,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "intermediate_size": 1024,
            "max_position_embeddings": 512,
        },
        "base": {
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "max_position_embeddings": 512,
        },
        "large": {
            "hidden_size": 1024,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "intermediate_size": 4096,
            "max_position_embeddings": 512,
        },
    },
    "roberta": {
        "tiny": {
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 256,
            "max_position_embeddings": 258,
        },
        "small": {
            "hidden_size": 256,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "intermediate_size": 1024,
            "max_position_embeddings": 514,
        },
        "base": {
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "max_position_embeddings": 514,
        },
        "large": {
            "hidden_size": 1024,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "intermediate_size": 4096,
            "max_position_embeddings": 514,
        },
    },
    "bart": {
        "tiny": {
            "d_model": 64,
            "encoder_layers": 2,
            "decoder_layers": 2,
            "encoder_attention_heads": 2,
            "decoder_attention_heads": 2,
            "encoder_ffn_dim": 256,
            "decoder_ffn_dim": 256,
            "max_position_embeddings": 256,
        },
        "small": {
            "d_model": 256,
            "encoder_layers": 3,
            "decoder_layers": 3,
            "encoder_attention_heads": 4,
            "decoder_attention_heads": 4,
            "encoder_ffn_dim": 1024,
            "decoder_ffn_dim": 1024,
            "max_position_embeddings": 512,
        },
        "base": {
            "d_model": 768,
            "encoder_layers": 6,
            "decoder_layers": 6,
            "encoder_attention_heads": 12,
            "decoder_attention_heads": 12,
            "encoder_ffn_dim": 3072,
            "decoder_ffn_dim": 3072,
            "max_position_embeddings": 1024,
        },
    },
    "t5": {
        "tiny": {
            "d_model": 64,
            "d_kv": 32,
            "d_ff": 256,
            "num_layers": 2,
            "num_decoder_layers": 2,
            "num_heads": 2,
        },
        "small": {
            "d_model": 512,
            "d_kv": 64,
            "d_ff": 2048,
            "num_layers": 6,
            "num_decoder_layers": 6,
            "num_heads": 8,
        },
        "base": {
            "d_model": 768,
            "d_kv": 64,
            "d_ff": 3072,
            "num_layers": 12,
            "num_decoder_layers": 12,
            "num_heads": 12,
        },
    },
}

# Which families can do which job kinds.
KINDS_BY_ARCHITECTURE = {
    DECODER: ("pretrain_clm", "sft_causal", "classification"),
    ENCODER: ("pretrain_mlm", "classification", "qa"),
    ENCODER_DECODER: ("seq2seq",),
}
T5_RELATIVE_BUCKETS = 32
# The vocabulary an estimate assumes when it is given no tokenizer and no vocab_size.
DEFAULT_VOCAB_SIZE = 8000
T5_MAX_POSITIONS = 512  # relative positions: no hard limit, but what the presets support

# The architecture's own settings a job may choose for a model from random weights (the
# hyperparameter table in ``config.py`` describes and validates them, one row each): per
# setting, the families that have it and the fields of their transformers config it sets.
# ``dropout`` sets every dropout of the family at once; a family's own name (``resid_pdrop``)
# wins over it. Families not listed have no such setting and refuse it.
_ALL_DROPOUTS = {
    "gpt2": ("resid_pdrop", "embd_pdrop", "attn_pdrop"),
    "llama": ("attention_dropout",),
    "bert": ("hidden_dropout_prob", "attention_probs_dropout_prob"),
    "roberta": ("hidden_dropout_prob", "attention_probs_dropout_prob"),
    "bart": ("dropout", "attention_dropout", "activation_dropout"),
    "t5": ("dropout_rate",),
}
MODEL_SETTINGS: dict[str, dict[str, tuple[str, ...]]] = {
    "dropout": _ALL_DROPOUTS,
    "resid_pdrop": {"gpt2": ("resid_pdrop",)},
    "embd_pdrop": {"gpt2": ("embd_pdrop",)},
    "attn_pdrop": {"gpt2": ("attn_pdrop",)},
    "attention_dropout": {"llama": ("attention_dropout",), "bart": ("attention_dropout",)},
    "hidden_dropout_prob": {f: ("hidden_dropout_prob",) for f in ("bert", "roberta")},
    "attention_probs_dropout_prob": {
        f: ("attention_probs_dropout_prob",) for f in ("bert", "roberta")
    },
    # Not offered for bart and t5: their encoder and decoder embeddings follow it too, and t5's
    # head in transformers 5 ignores it.
    "tie_word_embeddings": {
        f: ("tie_word_embeddings",) for f in ("gpt2", "llama", "bert", "roberta")
    },
    "activation": {
        "gpt2": ("activation_function",),
        "llama": ("hidden_act",),
        "bert": ("hidden_act",),
        "roberta": ("hidden_act",),
        "bart": ("activation_function",),
    },
    "attention_bias": {"llama": ("attention_bias",)},
    "mlp_bias": {"llama": ("mlp_bias",)},
    "rope_theta": {"llama": ("rope_theta",)},
}
# Whether a family ties its output layer to the input embedding when no setting says
# (build_config's own choice for llama: untied, as TinyLlama).
TIED_BY_DEFAULT = {family: family != "llama" for family in FAMILIES}


def model_setting_kwargs(family: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The transformers config values of the chosen architecture ``settings`` (None: the
    family's own default) for ``family``: the generic ``dropout`` first, a family's own name
    over it."""
    values: dict[str, Any] = {}
    ordered = sorted(settings.items(), key=lambda item: item[0] != "dropout")
    for name, value in ordered:
        if value is None or name not in MODEL_SETTINGS:
            continue
        fields_ = MODEL_SETTINGS[name].get(family)
        if fields_ is None:
            raise JobInputError(
                f"A {family} model has no setting {name}; its settings are "
                f"{', '.join(family_settings(family))}."
            )
        values.update(dict.fromkeys(fields_, value))
    return values


def family_settings(family: str) -> list[str]:
    """The architecture settings ``family`` has (names of :data:`MODEL_SETTINGS`)."""
    return [name for name, by_family in MODEL_SETTINGS.items() if family in by_family]


@dataclass
class ModelSpec:
    """A family, a size and optional overrides of the size's config values."""

    family: str
    size: str = "tiny"
    overrides: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise JobInputError(
                f"Unknown architecture family {self.family!r}; families: {', '.join(FAMILIES)}."
            )
        if self.size not in SIZES[self.family]:
            raise JobInputError(
                f"{self.family} has no size {self.size!r}; sizes: {', '.join(SIZES[self.family])}."
            )
        allowed = set(SIZES[self.family][self.size])
        unknown = sorted(set(self.overrides) - allowed)
        settings = [name for name in unknown if name in MODEL_SETTINGS]
        if settings:
            # Dropouts, tied embeddings and the like are hyperparameters (validated, estimated
            # and shown in the launch form with the others), not size overrides.
            raise JobInputError(
                f"{', '.join(settings)} is set with the job's hyperparameters (e.g. "
                f'"hyperparameters": {{"{settings[0]}": ...}}), not in the model spec.'
            )
        if unknown:
            raise JobInputError(
                f"Unknown {self.family} setting(s) {', '.join(unknown)}; you can "
                f"set {', '.join(sorted(allowed))}."
            )
        for name, value in self.overrides.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise JobInputError(f"{name} must be a positive whole number.")
        dims = self.dims
        heads = dims.get("n_head") or dims.get("num_attention_heads")
        width = dims.get("n_embd") or dims.get("hidden_size")
        if heads and width and width % heads:
            raise JobInputError(
                f"The hidden size {width} must be divisible by the number of "
                f"attention heads {heads}."
            )

    @property
    def dims(self) -> dict[str, int]:
        return {**SIZES[self.family][self.size], **self.overrides}

    @property
    def architecture(self) -> str:
        return FAMILIES[self.family]["architecture"]

    @property
    def max_positions(self) -> int:
        dims = self.dims
        value = dims.get("n_positions") or dims.get("max_position_embeddings") or T5_MAX_POSITIONS
        return value - 2 if self.family == "roberta" else value

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        if not isinstance(data, dict) or "family" not in data:
            raise JobInputError(
                'A model spec needs a family, e.g. {"family": "gpt2", "size": "tiny"}.'
            )
        known = {"family", "size", "overrides", "vocab_size"}
        loose = {k: v for k, v in data.items() if k not in known}
        return cls(
            family=data["family"],
            size=data.get("size", "tiny"),
            overrides={**data.get("overrides", {}), **loose},
        )

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "size": self.size, "overrides": dict(self.overrides)}


def preset_catalog() -> dict[str, dict[str, Any]]:
    """Families with their sizes and the job kinds they fit (for forms and the API)."""
    return {
        name: {
            **info,
            "sizes": list(SIZES[name]),
            "kinds": list(KINDS_BY_ARCHITECTURE[info["architecture"]]),
            "dims": SIZES[name],
        }
        for name, info in FAMILIES.items()
    }


def build_config(
    spec: ModelSpec,
    *,
    vocab_size: int,
    pad_token_id: int | None = None,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    settings: dict[str, Any] | None = None,
    **extra: Any,
):
    """The transformers config of ``spec`` with the tokenizer's vocabulary and special ids, and
    the chosen architecture ``settings`` (:data:`MODEL_SETTINGS` names; None: the family's
    default)."""
    import transformers

    dims = spec.dims
    ids = {"pad_token_id": pad_token_id, "bos_token_id": bos_token_id, "eos_token_id": eos_token_id}
    ids = {k: v for k, v in ids.items() if v is not None}
    extra = {**model_setting_kwargs(spec.family, settings or {}), **extra}
    if spec.family == "gpt2":
        # GPT-2's tanh-approximated GELU as PyTorch's one fused kernel: the same function as
        # "gelu_new", which runs it as five element-wise ops (and their backward) in Python,
        # about 15% of a small model's training step on CPU.
        extra.setdefault("activation_function", "gelu_pytorch_tanh")
        return transformers.GPT2Config(
            vocab_size=vocab_size, n_ctx=dims["n_positions"], **dims, **ids, **extra
        )
    if spec.family == "llama":
        extra.setdefault("tie_word_embeddings", TIED_BY_DEFAULT["llama"])
        return transformers.LlamaConfig(vocab_size=vocab_size, **dims, **ids, **extra)
    if spec.family == "bert":
        return transformers.BertConfig(vocab_size=vocab_size, **dims, **ids, **extra)
    if spec.family == "roberta":
        return transformers.RobertaConfig(vocab_size=vocab_size, **dims, **ids, **extra)
    if spec.family == "bart":
        return transformers.BartConfig(
            vocab_size=vocab_size,
            decoder_start_token_id=eos_token_id,
            forced_eos_token_id=None,
            **dims,
            **ids,
            **extra,
        )
    return transformers.T5Config(
        vocab_size=vocab_size,
        decoder_start_token_id=pad_token_id,
        relative_attention_num_buckets=T5_RELATIVE_BUCKETS,
        **dims,
        **ids,
        **extra,
    )


# --- analytic estimates ---------------------------------------------------------------------


def _linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def _encoder_layer(d: int, ffn: int) -> int:
    # self-attention (q, k, v, o with biases) + 2 layer norms + feed-forward
    return 4 * _linear(d, d) + 4 * d + _linear(d, ffn) + _linear(ffn, d)


def count_parameters(
    spec: ModelSpec,
    *,
    vocab_size: int,
    kind: str,
    num_labels: int = 2,
    settings: dict[str, Any] | None = None,
) -> int:
    """Parameters of the model a job of ``kind`` builds from ``spec`` (backbone and head) with
    the architecture ``settings`` (an untied output layer is a second vocabulary x width
    matrix, biases add their vectors)."""
    dims, v = spec.dims, vocab_size
    settings = settings or {}
    tied = settings.get("tie_word_embeddings")
    tied = TIED_BY_DEFAULT[spec.family] if tied is None else tied
    # The output layer over the vocabulary a language-model head adds when it is not the
    # input embedding itself.
    untied_head = 0 if tied or kind == "classification" else v
    if spec.family == "gpt2":
        d, layers, positions = dims["n_embd"], dims["n_layer"], dims["n_positions"]
        total = v * d + positions * d + layers * (12 * d * d + 13 * d) + 2 * d
        return total + (d * num_labels if kind == "classification" else untied_head * d)
    if spec.family == "llama":
        d, inner, layers = dims["hidden_size"], dims["intermediate_size"], dims["num_hidden_layers"]
        head_dim = d // dims["num_attention_heads"]
        kv = dims["num_key_value_heads"] * head_dim
        layer = 2 * d * d + 2 * d * kv + 3 * d * inner + 2 * d
        if settings.get("attention_bias"):
            layer += 2 * d + 2 * kv  # q, o and k, v projections
        if settings.get("mlp_bias"):
            layer += 2 * inner + d  # gate and up, down
        total = v * d + layers * layer + d
        return total + (d * num_labels if kind == "classification" else untied_head * d)
    if spec.family in ("bert", "roberta"):
        d, layers = dims["hidden_size"], dims["num_hidden_layers"]
        inner, positions = dims["intermediate_size"], dims["max_position_embeddings"]
        embeddings = v * d + positions * d + 2 * d + 2 * d  # + token types, layer norm
        total = embeddings + layers * _encoder_layer(d, inner)
        if kind == "pretrain_mlm":
            # transform, norm, decoder bias (tied: the embedding is the decoder's weight;
            # untied: a weight and a bias of its own beside the shared bias)
            return total + _linear(d, d) + 2 * d + v + untied_head * (d + 1)
        if kind == "qa":
            return total + _linear(d, 2)
        if spec.family == "bert":  # classification: pooler + classifier
            return total + _linear(d, d) + _linear(d, num_labels)
        return total + _linear(d, d) + _linear(d, num_labels)
    if spec.family == "bart":
        d, positions = dims["d_model"], dims["max_position_embeddings"]
        enc = dims["encoder_layers"] * _encoder_layer(d, dims["encoder_ffn_dim"])
        # decoder layers add cross-attention and its norm
        dec = dims["decoder_layers"] * (
            _encoder_layer(d, dims["decoder_ffn_dim"]) + 4 * _linear(d, d) + 2 * d
        )
        embeddings = v * d + 2 * (positions + 2) * d + 2 * 2 * d  # + embedding layer norms
        return embeddings + enc + dec
    d, inner, heads, d_kv = dims["d_model"], dims["d_ff"], dims["num_heads"], dims["d_kv"]
    attention = 4 * d * heads * d_kv
    enc = dims["num_layers"] * (attention + 2 * d * inner + 2 * d)
    dec = dims["num_decoder_layers"] * (2 * attention + 2 * d * inner + 3 * d)
    relative = 2 * T5_RELATIVE_BUCKETS * heads
    return v * d + enc + dec + relative + 2 * d


def _layers_and_width(spec: ModelSpec) -> tuple[int, int]:
    dims = spec.dims
    width = dims.get("n_embd") or dims.get("hidden_size") or dims.get("d_model")
    layers = (
        dims.get("n_layer")
        or dims.get("num_hidden_layers")
        or (dims.get("encoder_layers", 0) + dims.get("decoder_layers", 0))
        or (dims.get("num_layers", 0) + dims.get("num_decoder_layers", 0))
    )
    return layers, width


def estimate(
    spec: ModelSpec,
    *,
    vocab_size: int,
    seq_len: int,
    batch_size: int,
    precision: str = "fp32",
    method: str = "full",
    kind: str | None = None,
    num_labels: int = 2,
    settings: dict[str, Any] | None = None,
) -> dict:
    """Parameters, training memory (bytes) and training FLOPs per token, estimated. The
    parameters are counted exactly for the model a job of ``kind`` builds (its head included:
    a classifier's, not a language model's), as the registered version reports them.

    Memory: fp32 weights and gradients plus Adam's two moments (16 bytes per trained
    parameter, 4 per frozen one) plus activations (~34 bytes per token, layer and width
    unit in 16-bit, twice that in fp32; Korthikanti et al. 2022). FLOPs: 6 per parameter per
    token, plus attention's 12 x layers x width x sequence length.
    """
    kind = kind or KINDS_BY_ARCHITECTURE[spec.architecture][0]
    parameters = count_parameters(
        spec, vocab_size=vocab_size, kind=kind, num_labels=num_labels, settings=settings
    )
    layers, width = _layers_and_width(spec)
    trainable = parameters if method == "full" else _lora_parameters(spec, layers, width)
    frozen = parameters - trainable if method != "full" else 0
    activation_bytes = (
        34 * seq_len * batch_size * width * layers * (1 if precision != "fp32" else 2)
    )
    memory = 16 * trainable + 4 * frozen + activation_bytes
    flops = 6 * parameters + 12 * layers * width * seq_len
    return {
        "parameters": parameters,
        "trainable_parameters": trainable,
        "memory_bytes": int(memory),
        "flops_per_token": int(flops),
        "max_positions": spec.max_positions,
        "architecture": spec.architecture,
    }


def _lora_parameters(spec: ModelSpec, layers: int, width: int, rank: int = 8) -> int:
    # Default targets are the query and value projections: two d x r + r x d pairs per layer.
    return layers * 2 * 2 * width * rank


def estimate_from_config(
    config: dict[str, Any],
    *,
    seq_len: int,
    batch_size: int,
    precision: str = "fp32",
    method: str = "full",
    kind: str | None = None,
    num_labels: int = 2,
) -> dict:
    """The same estimate for an existing model's config.json (a base model to fine-tune)."""
    model_type = config.get("model_type", "")
    if model_type not in SIZES:
        width = config.get("hidden_size") or config.get("d_model") or config.get("n_embd") or 0
        layers = config.get("num_hidden_layers") or config.get("n_layer") or 0
        parameters = 12 * layers * width * width + (config.get("vocab_size") or 0) * width
        return {
            "parameters": parameters,
            "trainable_parameters": parameters,
            "memory_bytes": 16 * parameters,
            "flops_per_token": 6 * parameters,
            "approximate": True,
        }
    first = next(iter(SIZES[model_type].values()))
    overrides = {key: config[key] for key in first if isinstance(config.get(key), int)}
    spec = ModelSpec(family=model_type, size=next(iter(SIZES[model_type])), overrides=overrides)
    # The config's own choices that change the count (a saved config.json writes them).
    settings = {
        name: config.get(name)
        for name in ("tie_word_embeddings", "attention_bias", "mlp_bias")
        if model_type in MODEL_SETTINGS[name] and isinstance(config.get(name), bool)
    }
    return estimate(
        spec,
        vocab_size=config.get("vocab_size") or 0,
        seq_len=seq_len,
        batch_size=batch_size,
        precision=precision,
        method=method,
        kind=kind,
        num_labels=num_labels,
        settings=settings,
    )


def estimate_from_dict(
    spec_or_config: dict[str, Any],
    *,
    seq_len: int,
    batch_size: int,
    precision: str = "fp32",
    method: str = "full",
    kind: str | None = None,
    num_labels: int = 2,
    settings: dict[str, Any] | None = None,
) -> dict:
    """Estimate from ``{"family", "size", ..., "vocab_size"}`` or ``{"config": config.json}``,
    for a job of ``kind`` (the family's first kind when None) with ``num_labels`` classes and,
    for a spec, the architecture ``settings`` of the job's hyperparameters."""
    if not isinstance(spec_or_config, dict):
        raise JobInputError('A model spec is an object, e.g. {"family": "gpt2", "size": "tiny"}.')
    if "config" in spec_or_config:
        return estimate_from_config(
            spec_or_config["config"],
            seq_len=seq_len,
            batch_size=batch_size,
            precision=precision,
            method=method,
            kind=kind,
            num_labels=num_labels,
        )
    spec = ModelSpec.from_dict(spec_or_config)
    return estimate(
        spec,
        vocab_size=int(spec_or_config.get("vocab_size") or DEFAULT_VOCAB_SIZE),
        seq_len=seq_len,
        batch_size=batch_size,
        precision=precision,
        method=method,
        kind=kind,
        num_labels=num_labels,
        settings=settings,
    )
