"""Load a local model directory, tell what kind of model it is, and score or generate text with it.

A model directory is what ``save_pretrained`` writes: ``config.json``, safetensors weights, and
the tokenizer files beside them. Loading never touches the network (``local_files_only``), never
runs code from the directory (no ``trust_remote_code``) and never unpickles (safetensors only).

The scoring helpers work in batches and return plain Python numbers:

- :func:`causal_nll`: summed negative log-likelihood of chosen tokens of a causal LM;
- :func:`masked_pll`: pseudo-log-likelihood of a masked LM (each token masked in turn);
- :func:`generate`: continuations from a causal or seq2seq model, prompt stripped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llmhub.reporting import JobInputError

logger = logging.getLogger(__name__)

CAUSAL_LM = "causal_lm"
MASKED_LM = "masked_lm"
SEQ2SEQ = "seq2seq"
SEQUENCE_CLASSIFICATION = "sequence_classification"
EXTRACTIVE_QA = "extractive_qa"
MODEL_KINDS = (CAUSAL_LM, MASKED_LM, SEQ2SEQ, SEQUENCE_CLASSIFICATION, EXTRACTIVE_QA)
GENERATIVE_KINDS = (CAUSAL_LM, SEQ2SEQ)

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "tokenizer.model",
    "sentencepiece.bpe.model",
)
_DEFAULT_MAX_POSITIONS = 1024
# Called between batches; raises JobCancelled when the job was asked to stop.
BatchHook = Callable[[int, int], None]


@dataclass
class LoadedModel:
    kind: str
    model: Any
    tokenizer: Any
    device: str
    max_positions: int
    config: Any

    @property
    def pad_id(self) -> int:
        """A token id to pad with: it is always masked out, so any valid id would do."""
        tok = self.tokenizer
        for candidate in (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id):
            if candidate is not None:
                return int(candidate)
        return 0


def resolve_device(device: str) -> str:
    """'auto': 'cuda' when a GPU is visible, else 'cpu'; a GPU asked for but absent is refused."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise JobInputError(f"Device {device!r} was asked for but this worker has no usable GPU.")
    return device


def detect_model_kind(model_dir: str | Path) -> str:
    """One of :data:`MODEL_KINDS`, from ``config.json``'s architectures (or AutoConfig).

    Raises JobInputError when the directory is not a transformers model directory.
    """
    model_dir = Path(model_dir)
    config = _read_config(model_dir)
    archs = [str(a) for a in config.get("architectures") or []]
    for arch in archs:
        if arch.endswith("ForSequenceClassification"):
            return SEQUENCE_CLASSIFICATION
        if arch.endswith("ForQuestionAnswering"):
            return EXTRACTIVE_QA
        if arch.endswith("ForMaskedLM"):
            return MASKED_LM
    auto = _auto_config(model_dir)
    if getattr(auto, "is_encoder_decoder", False):
        return SEQ2SEQ
    for arch in archs:
        if arch.endswith(("ForCausalLM", "LMHeadModel")):
            return CAUSAL_LM
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if auto.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return CAUSAL_LM
    if auto.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return MASKED_LM
    raise JobInputError(
        f"Cannot tell what kind of model {model_dir} holds (architectures: "
        f"{', '.join(archs) or 'none'}). LLMHub evaluates causal LMs, masked LMs, seq2seq models, "
        "sequence classifiers and extractive QA models."
    )


def _read_config(model_dir: Path) -> dict:
    if not model_dir.is_dir():
        raise JobInputError(f"No model directory at {model_dir}.")
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        if (model_dir / "adapter_config.json").is_file():
            raise JobInputError(
                f"{model_dir} holds a LoRA adapter without its base model; evaluate the model "
                "version with the adapter merged into the base weights."
            )
        raise JobInputError(f"{model_dir} is not a model directory: it has no config.json.")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JobInputError(f"{config_file} cannot be read as JSON: {exc}") from exc
    if not isinstance(config, dict) or "model_type" not in config:
        raise JobInputError(f"{config_file} is not a transformers model config (no model_type).")
    return config


def _auto_config(model_dir: Path) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False)
    except (ValueError, OSError, KeyError) as exc:
        raise JobInputError(f"{model_dir}/config.json is not a usable model config: {exc}") from exc


def _check_weights(model_dir: Path) -> None:
    if (model_dir / "model.safetensors").is_file() or (
        model_dir / "model.safetensors.index.json"
    ).is_file():
        return
    if any(model_dir.glob("*.bin")) or any(model_dir.glob("*.pt")):
        raise JobInputError(
            f"{model_dir} has weights only in a pickle-based format (.bin/.pt); LLMHub loads "
            "safetensors only. Save the model with save_pretrained(safe_serialization=True)."
        )
    raise JobInputError(f"{model_dir} is not a model directory: it has no model weights.")


def load_tokenizer(model_dir: str | Path) -> Any:
    model_dir = Path(model_dir)
    if not any((model_dir / name).is_file() for name in _TOKENIZER_FILES):
        raise JobInputError(
            f"{model_dir} has no tokenizer files (tokenizer.json, tokenizer_config.json...). "
            "Save the tokenizer beside the model with tokenizer.save_pretrained(model_dir)."
        )
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(
            model_dir, local_files_only=True, trust_remote_code=False
        )
    except (ValueError, OSError, KeyError, TypeError) as exc:
        raise JobInputError(f"The tokenizer in {model_dir} cannot be loaded: {exc}") from exc


def load_model(model_dir: str | Path, *, device: str = "auto") -> LoadedModel:
    """Load the model and tokenizer of ``model_dir`` for inference on ``device``."""
    import transformers

    model_dir = Path(model_dir)
    kind = detect_model_kind(model_dir)
    _check_weights(model_dir)
    tokenizer = load_tokenizer(model_dir)
    auto = {
        CAUSAL_LM: transformers.AutoModelForCausalLM,
        MASKED_LM: transformers.AutoModelForMaskedLM,
        SEQ2SEQ: transformers.AutoModelForSeq2SeqLM,
        SEQUENCE_CLASSIFICATION: transformers.AutoModelForSequenceClassification,
        EXTRACTIVE_QA: transformers.AutoModelForQuestionAnswering,
    }[kind]
    device = resolve_device(device)
    transformers.utils.logging.disable_progress_bar()
    try:
        model = auto.from_pretrained(
            model_dir, local_files_only=True, use_safetensors=True, trust_remote_code=False
        )
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        raise JobInputError(f"The model in {model_dir} cannot be loaded: {exc}") from exc
    model.to(device).eval()
    vocab = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab:
        raise JobInputError(
            f"The tokenizer in {model_dir} has {len(tokenizer):,} tokens but the model's embedding "
            f"has {vocab:,}: they do not belong together."
        )
    logger.info("Loaded %s from %s on %s", kind, model_dir, device)
    return LoadedModel(
        kind, model, tokenizer, device, _max_positions(model.config, tokenizer), model.config
    )


def _max_positions(config: Any, tokenizer: Any) -> int:
    limits = [
        getattr(config, key)
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length")
        if isinstance(getattr(config, key, None), int)
    ]
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and model_max < 1_000_000:
        limits.append(model_max)
    return min(limits) if limits else _DEFAULT_MAX_POSITIONS


def encode(loaded: LoadedModel, text: str, *, special: bool = True) -> list[int]:
    return list(loaded.tokenizer(text, add_special_tokens=special)["input_ids"])


def mean_pooled(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings: the mean of ``hidden`` (batch, tokens, dims) over the tokens the
    mask keeps (padding left out), L2-normalised."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    return torch.nn.functional.normalize(pooled, p=2, dim=-1)


def _batches(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


# --- causal LM log-likelihood -----------------------------------------------------------------


@torch.no_grad()
def causal_nll(
    loaded: LoadedModel,
    sequences: Sequence[tuple[list[int], int]],
    *,
    batch_size: int,
    on_batch: BatchHook | None = None,
) -> list[tuple[float, int]]:
    """(sum of token NLL, tokens scored) per ``(token_ids, first_scored)`` sequence.

    Tokens at positions ``>= max(first_scored, 1)`` are scored, each given all tokens before it
    (position 0 has no context). Sequences must already fit the model's positions.
    """
    model, pad = loaded.model, loaded.pad_id
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][0]))
    results: dict[int, tuple[float, int]] = {}
    batches = _batches(len(order), batch_size)
    for b, batch in enumerate(batches):
        if on_batch:
            on_batch(b, len(batches))
        items = [sequences[order[i]] for i in batch]
        width = max(len(ids) for ids, _ in items)
        if width < 2:
            for i in batch:
                results[order[i]] = (0.0, 0)
            continue
        input_ids = torch.full((len(items), width), pad, dtype=torch.long)
        attention = torch.zeros((len(items), width), dtype=torch.long)
        scored = torch.zeros((len(items), width), dtype=torch.bool)
        for r, (ids, first) in enumerate(items):
            input_ids[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[r, : len(ids)] = 1
            scored[r, max(first, 1) : len(ids)] = True
        input_ids, attention = input_ids.to(loaded.device), attention.to(loaded.device)
        logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        target = input_ids[:, 1:]
        token_lp = logprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1).cpu()
        mask = scored[:, 1:]
        nll = -(token_lp * mask).sum(dim=1)
        for r, i in enumerate(batch):
            results[order[i]] = (float(nll[r]), int(mask[r].sum()))
    return [results[i] for i in range(len(sequences))]


# --- masked LM pseudo-log-likelihood ----------------------------------------------------------


@torch.no_grad()
def masked_pll(
    loaded: LoadedModel,
    texts: Sequence[str],
    *,
    batch_size: int,
    on_batch: BatchHook | None = None,
) -> list[tuple[float, int]]:
    """(pseudo-log-likelihood, tokens scored) per text: each non-special token is masked in turn
    and scored given all the others (Salazar et al., 2020). Costs one row per token."""
    tok = loaded.tokenizer
    if tok.mask_token_id is None:
        raise JobInputError(
            "This masked LM's tokenizer has no mask token, so it cannot score text."
        )
    rows: list[tuple[int, list[int], int]] = []  # (text index, masked ids, masked position)
    originals: list[int] = []
    limit = loaded.max_positions
    for t, text in enumerate(texts):
        enc = tok(
            text,
            add_special_tokens=True,
            truncation=True,
            max_length=limit,
            return_special_tokens_mask=True,
        )
        ids, special = list(enc["input_ids"]), list(enc["special_tokens_mask"])
        for pos, (token, is_special) in enumerate(zip(ids, special, strict=True)):
            if is_special:
                continue
            masked = list(ids)
            masked[pos] = tok.mask_token_id
            rows.append((t, masked, pos))
            originals.append(token)
    sums = [0.0] * len(texts)
    counts = [0] * len(texts)
    # Rows are independent; many rows per forward pass keeps it quick.
    row_batch = max(batch_size * 8, 32)
    batches = _batches(len(rows), row_batch)
    for b, batch in enumerate(batches):
        if on_batch:
            on_batch(b, len(batches))
        width = max(len(rows[i][1]) for i in batch)
        input_ids = torch.full((len(batch), width), loaded.pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for r, i in enumerate(batch):
            ids = rows[i][1]
            input_ids[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[r, : len(ids)] = 1
        logits = loaded.model(
            input_ids=input_ids.to(loaded.device), attention_mask=attention.to(loaded.device)
        ).logits.float()
        positions = torch.tensor([rows[i][2] for i in batch], device=logits.device)
        picked = logits[torch.arange(len(batch), device=logits.device), positions]
        logprobs = torch.log_softmax(picked, dim=-1)
        targets = torch.tensor([originals[i] for i in batch], device=logits.device)
        lp = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1).cpu()
        for r, i in enumerate(batch):
            t = rows[i][0]
            sums[t] += float(lp[r])
            counts[t] += 1
    return list(zip(sums, counts, strict=True))


# --- generation -------------------------------------------------------------------------------


@dataclass
class GenerationSettings:
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    num_beams: int = 1
    do_sample: bool | None = None

    @property
    def sampling(self) -> bool:
        return self.temperature > 0 if self.do_sample is None else self.do_sample


def _generation_config(loaded: LoadedModel, settings: GenerationSettings) -> Any:
    import copy

    config = copy.deepcopy(loaded.model.generation_config)
    config.max_new_tokens = settings.max_new_tokens
    config.max_length = None
    config.num_beams = settings.num_beams
    config.do_sample = settings.sampling
    if settings.sampling:
        config.temperature = settings.temperature
        config.top_p = settings.top_p
    else:
        # Greedy or beam search: sampling knobs would only produce warnings.
        config.temperature, config.top_p, config.top_k = None, None, None
    config.pad_token_id = loaded.pad_id
    if config.eos_token_id is None and loaded.tokenizer.eos_token_id is not None:
        config.eos_token_id = loaded.tokenizer.eos_token_id
    return config


@torch.no_grad()
def generate(
    loaded: LoadedModel,
    prompts: Sequence[str],
    settings: GenerationSettings,
    *,
    batch_size: int,
    on_batch: BatchHook | None = None,
) -> tuple[list[str], list[int], int]:
    """(texts, generated token counts, prompts truncated) for each prompt.

    Causal LMs continue the prompt (left-padded batches; the prompt keeps its last tokens when it
    is too long, so the continuation follows on from it) and only the new text is returned.
    Seq2seq models read the prompt with their encoder (truncated at the end).
    """
    if loaded.kind not in GENERATIVE_KINDS:
        raise JobInputError(f"A {loaded.kind.replace('_', ' ')} model cannot generate text.")
    tok, pad = loaded.tokenizer, loaded.pad_id
    gen_config = _generation_config(loaded, settings)
    causal = loaded.kind == CAUSAL_LM
    budget = loaded.max_positions - settings.max_new_tokens if causal else loaded.max_positions
    if budget < 1:
        raise JobInputError(
            f"max_new_tokens ({settings.max_new_tokens}) leaves no room for the prompt in this "
            f"model's {loaded.max_positions} positions."
        )
    stop_ids = {i for i in (tok.eos_token_id, tok.pad_token_id) if i is not None}
    encoded, truncated = [], 0
    for prompt in prompts:
        ids = encode(loaded, prompt)
        if len(ids) > budget:
            truncated += 1
            ids = ids[-budget:] if causal else ids[:budget]
        if not ids:
            ids = [tok.bos_token_id if tok.bos_token_id is not None else pad]
        encoded.append(ids)
    # Similar lengths together waste less padding.
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    texts: dict[int, str] = {}
    lengths: dict[int, int] = {}
    batches = _batches(len(order), batch_size)
    for b, batch in enumerate(batches):
        if on_batch:
            on_batch(b, len(batches))
        items = [encoded[order[i]] for i in batch]
        width = max(len(x) for x in items)
        input_ids = torch.full((len(items), width), pad, dtype=torch.long)
        attention = torch.zeros((len(items), width), dtype=torch.long)
        for r, ids in enumerate(items):
            if causal:
                input_ids[r, width - len(ids) :] = torch.tensor(ids)
                attention[r, width - len(ids) :] = 1
            else:
                input_ids[r, : len(ids)] = torch.tensor(ids)
                attention[r, : len(ids)] = 1
        output = loaded.model.generate(
            input_ids=input_ids.to(loaded.device),
            attention_mask=attention.to(loaded.device),
            generation_config=gen_config,
        ).cpu()
        new = output[:, width:] if causal else output[:, 1:]  # seq2seq: drop the start token
        for r, i in enumerate(batch):
            ids = new[r].tolist()
            length = next((k for k, t in enumerate(ids) if t in stop_ids), len(ids))
            lengths[order[i]] = length
            texts[order[i]] = tok.decode(ids[:length], skip_special_tokens=True)
    n = len(prompts)
    return [texts[i] for i in range(n)], [lengths[i] for i in range(n)], truncated
