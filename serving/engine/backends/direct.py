"""The serving bench's limit: the same model's HF ``generate`` on the whole batch at once.

No queue, no HTTP, no streaming: what the hardware does with every prompt in one left-padded
batch. The bench compares the engine's throughput against it.
"""

from __future__ import annotations

import time
from pathlib import Path


def direct_batched_generate(
    model_dir: str | Path, prompts: list[str], max_new_tokens: int, device: str = "auto"
) -> tuple[float, int]:
    """(seconds, generated tokens) for greedy ``generate`` of exactly ``max_new_tokens`` per
    prompt (end tokens ignored), all prompts in one batch; bfloat16 on CUDA as the engine.

    Loading and a two-token warm-up run are not timed.
    """
    import torch

    from evaluation.runtime.models import load_model

    loaded = load_model(model_dir, device=device)
    if loaded.device.startswith("cuda"):
        loaded.model.to(torch.bfloat16)
    tok, pad = loaded.tokenizer, loaded.pad_id
    encoded = [list(tok(p, add_special_tokens=True)["input_ids"]) or [pad] for p in prompts]
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        attention[row, width - len(ids) :] = 1
    input_ids, attention = input_ids.to(loaded.device), attention.to(loaded.device)

    def run(tokens: int) -> torch.Tensor:
        return loaded.model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=pad,
        )

    def sync() -> None:
        if loaded.device.startswith("cuda"):
            torch.cuda.synchronize()

    with torch.inference_mode():
        run(2)
        sync()
        start = time.perf_counter()
        output = run(max_new_tokens)
        sync()
        seconds = time.perf_counter() - start
    generated = int(output.shape[1] - width) * len(encoded)
    return seconds, generated
