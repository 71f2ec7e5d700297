"""Tiny random-weight model directories for the serving tests: built here, no hub, no network.

Each builder writes what ``save_pretrained`` writes (config.json, model.safetensors, tokenizer
files; no chat_template) into a fresh folder under ``tmp_path`` and returns it. They are seeded,
so the same call gives the same weights and tokenizer, and each takes well under a second.
"""

from __future__ import annotations

from pathlib import Path

from tests.tiny_tokenizers import byte_level_tokenizer, wordpiece_tokenizer

# A little text with a few multi-byte characters, so the byte-level BPE has tokens that split
# a character (the streaming decoder must hold those back).
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "A model serves answers to questions, one token at a time.",
    "Batching many requests together keeps the accelerator busy.",
    "Café au lait, naïve façade, jalapeño — über smörgåsbord!",
    "Tokens, prompts, completions and embeddings: the serving vocabulary.",
    "Hello world. Hello there. How are you today? I am fine, thank you.",
    "Numbers 0 1 2 3 4 5 6 7 8 9 and symbols + - * / = < > ( ) [ ] { }",
    "日本語のテキストと絵文字 🙂 も少し。",
]
LABELS = ("negative", "neutral", "positive")


def _quiet() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _byte_level_tokenizer() -> object:
    _quiet()
    return byte_level_tokenizer(TEXTS, vocab_size=360)


def _wordpiece_tokenizer() -> object:
    _quiet()
    return wordpiece_tokenizer(TEXTS, vocab_size=300)


def _bert_config(tokenizer: object, **kw: object) -> object:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        **kw,
    )


def _fresh(tmp_path: Path, name: str) -> Path:
    out = Path(tmp_path) / name
    n = 1
    while out.exists():  # two builds in one tmp_path get two folders
        n += 1
        out = Path(tmp_path) / f"{name}-{n}"
    return out


def tiny_causal_lm_dir(tmp_path: Path, *, n_positions: int = 128) -> Path:
    """A 2-layer GPT-2 (32 dims) with a byte-level BPE tokenizer of ~360 tokens."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = _byte_level_tokenizer()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tok),
            n_positions=n_positions,
            n_embd=32,
            n_layer=2,
            n_head=2,
            # Larger random weights than the default 0.02: varied text instead of one token
            # repeated, so the tests compare real continuations.
            initializer_range=0.3,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    )
    out = _fresh(tmp_path, "tiny-gpt2")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def tiny_classifier_dir(tmp_path: Path) -> Path:
    """A 2-layer BERT sequence classifier with labels negative/neutral/positive."""
    import torch
    from transformers import BertForSequenceClassification

    tok = _wordpiece_tokenizer()
    torch.manual_seed(0)
    model = BertForSequenceClassification(
        _bert_config(
            tok,
            num_labels=len(LABELS),
            id2label=dict(enumerate(LABELS)),
            label2id={label: i for i, label in enumerate(LABELS)},
        )
    )
    out = _fresh(tmp_path, "tiny-bert-cls")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def tiny_encoder_dir(tmp_path: Path) -> Path:
    """A 2-layer BERT masked LM (32 dims), for embeddings."""
    import torch
    from transformers import BertForMaskedLM

    tok = _wordpiece_tokenizer()
    torch.manual_seed(0)
    model = BertForMaskedLM(_bert_config(tok))
    out = _fresh(tmp_path, "tiny-bert-mlm")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
