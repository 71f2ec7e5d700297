"""A bare PyTorch training loop (nanoGPT style) for causal LM pre-training.

It does the same work as ``run.train`` for a ``pretrain_clm`` job — same model (built from the
same spec and seed), same packed token blocks, same batch, fused AdamW with the same learning
rate, weight decay, linear schedule and gradient clipping, and a safetensors save at the end — with
nothing around it. The model's architecture settings (dropout, activation, tie_word_embeddings,
...) are checked and passed to ``build_config`` as the job's are (``model_settings`` of the
checked hyperparameters), and its vocabulary is ``model_vocab_size`` of the tokenizer, so both
sides build the same model. ``bench/training_overhead.py`` compares the two to measure what the job
machinery costs.
"""

from __future__ import annotations

import time
from pathlib import Path

from shared_runtime.vocab import model_vocab_size
from training.runtime.config import model_settings, validate_hyperparameters
from training.runtime.presets import ModelSpec, build_config


def bare_train(
    *,
    spec: ModelSpec,
    tokenizer_dir: Path,
    train_path: Path,
    text_column: str,
    steps: int,
    batch_size: int,
    seq_len: int,
    learning_rate: float,
    weight_decay: float = 0.0,
    seed: int = 42,
    output_dir: Path | None = None,
    hyperparameters: dict | None = None,
) -> dict[str, float]:
    """Train for ``steps`` optimizer steps; returns tokens/s, the last loss and the steps.
    ``hyperparameters``: the job's, of which the architecture settings shape the model (checked
    for ``spec``'s family as a launch checks them; JobInputError when refused)."""
    import pyarrow.parquet as pq
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.runtime.run import _pack

    checked = validate_hyperparameters(hyperparameters or {}, family=spec.family)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    texts = [
        t
        for t in pq.read_table(train_path).column(text_column).to_pylist()
        if isinstance(t, str) and t.strip()
    ]
    blocks = torch.tensor(_pack(tokenizer, texts, seq_len))
    config = build_config(
        spec,
        vocab_size=model_vocab_size(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        settings=model_settings(checked),  # dropouts, tied embeddings, ... as the job's
    )
    transformers.set_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.train()
    # Fused AdamW: what the Trainer uses by default, so both sides do the same optimizer work.
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=learning_rate, weight_decay=weight_decay, fused=True
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / steps)
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    loss = torch.tensor(0.0)
    for _step in range(steps):
        rows = torch.randint(len(blocks), (batch_size,), generator=generator)
        batch = blocks[rows]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    if output_dir is not None:
        # A checkpoint like the Trainer's: weights (safetensors) and the optimizer state.
        model.save_pretrained(str(output_dir))
        torch.save(optimizer.state_dict(), Path(output_dir) / "optimizer.pt")
    elapsed = time.perf_counter() - started
    return {
        "tokens_per_second": steps * batch_size * seq_len / elapsed,
        "final_loss": float(loss.detach()),
        "steps": steps,
        "seconds": elapsed,
    }
