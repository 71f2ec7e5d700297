"""Benchmark: nanoGPT's "baby GPT" on Shakespeare, trained as an LLMHub pre-training job on a
real worker, against a minimal PyTorch GPT of the same size written here.

The setting (issue 17): 4 layers, 4 heads, 128 dimensions, context 64, batch 12, 2000 steps,
learning rate 1e-3 decayed (cosine) to 1e-4 after 100 warm-up steps, dropout 0, characters as
tokens, the first 90% of ``corpus_tinyshakespeare.txt`` to train on and the last 10% to score.

The job side is what a user does through the REST API alone, against a real web server
(gunicorn) and a real Celery worker on a scratch SQLite database (the embedded default):
upload the .txt as chunks, train a ``char`` tokenizer, split by ``position`` 0.9 / 0.1, launch
``pretrain_clm`` with family GPT-2 from random weights, then evaluate ``bits_per_char`` on the
validation split (the product's sliding-window perplexity: windows of the model's context,
stride = context, every character after the first scored once). The job's tokens/s is the
Trainer's own figure (``final_metrics.tokens_per_second``: the training loop, logging and the
live-curve callback included); the wall time runs from the launch request until the job
reads as succeeded (queueing, data preparation, checkpoint upload and registry included).

The minimal side is ``MinimalGPT`` below: a few dozen lines, nanoGPT-like (learned positions,
pre-norm blocks, ``F.scaled_dot_product_attention``, tied embeddings, fused AdamW, beta2 0.99,
random 65-character windows per step), trained in this process on the same split text tokenized
by the same tokenizer files. It is scored by the same function the evaluation job uses
(``evaluation.runtime.sliding.sliding_token_nll``), and, as a cross-check, both models are also
scored by this bench's own plain loop (``bits_per_char``).

Rounds alternate minimal / job after a warm-up; the figures are medians over rounds. Each side
of each round records the CPU time other processes took during it (``bench/helpers/
contention.py``), printed with the table.

    .venv/bin/python bench/pretrain.py                          # 2 rounds of 2000 steps
    .venv/bin/python bench/pretrain.py --steps 100 --rounds 1   # a quick check
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.helpers import (  # noqa: E402
    configure_django,
    start_web_server,
    stop_on_sigterm,
    stop_process,
)
from bench.helpers.contention import Round, cores, split_rounds  # noqa: E402

CORPUS = REPO.parent / "shared" / "datasets" / "corpus_tinyshakespeare.txt"
LAYERS, HEADS, WIDTH, CONTEXT, BATCH = 4, 4, 128, 64, 12
LR, MIN_LR, WARMUP, SEED = 1e-3, 1e-4, 100, 1337
SCRATCH = Path(tempfile.mkdtemp(prefix="llmhub-pretrain-bench-"))


# --- the product, through its REST API -------------------------------------------------------


class Api:
    """The REST API of the bench's web server, with a bearer token (what an integrator uses)."""

    def __init__(self, port: int, token: str) -> None:
        import logging

        import httpx

        logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per poll

        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{port}/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=120,
        )

    def call(self, method: str, path: str, **kwargs) -> dict:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise SystemExit(f"{method} {path}: {response.status_code} {response.text}")
        return response.json() if response.content else {}

    def post(self, path: str, **kwargs) -> dict:
        return self.call("POST", path, **kwargs)

    def get(self, path: str, **kwargs) -> dict:
        return self.call("GET", path, **kwargs)

    def wait(self, path: str, timeout: float = 1800) -> dict:
        """Poll a job until it ends; its final state (the bench stops if it did not succeed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get(path)
            if job["status"] in ("succeeded", "failed", "cancelled"):
                if job["status"] != "succeeded":
                    raise SystemExit(f"{path} {job['status']}: {job.get('error')}")
                return job
            time.sleep(0.25)
        raise SystemExit(f"{path} did not finish in {timeout:.0f} s")


def start_product() -> tuple[Api, list]:
    """A scratch SQLite database, a user with an API token, the web server and one worker."""
    import subprocess

    configure_django(SCRATCH / "var", None, None)
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from projects.services import api_token_create

    call_command("migrate", verbosity=0)
    user = User.objects.create_user("bench", password="bench-password-123")
    _, token = api_token_create(actor=user, name="bench")
    processes = []
    log = open(SCRATCH / "worker.log", "wb")  # noqa: SIM115 - closed with the process
    processes.append(
        subprocess.Popen(
            [
                *(sys.executable, "-m", "celery", "-A", "llmhub.celery", "worker"),
                *("-Q", "gpu,cpu", "--pool", "solo", "-l", "warning"),
                *("--without-gossip", "--without-mingle", "--without-heartbeat"),
            ],
            cwd=REPO,
            env=os.environ.copy(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    )
    server, port = start_web_server(os.environ.copy(), gunicorn=True, threads=2)
    processes.append(server)
    return Api(port, token), processes


def prepare_data(api: Api) -> dict:
    """The user's steps before training: team, project, the .txt upload, the char tokenizer,
    the position split. Returns the ids the jobs need."""
    team = api.post("/teams/", json={"name": "Bench"})
    project = api.post(
        "/projects/", json={"team": team["id"], "name": "Baby GPT", "task_type": "generation"}
    )
    dataset = api.post("/datasets/", json={"project": project["id"], "name": "shakespeare"})
    with CORPUS.open("rb") as corpus:
        job = api.post(
            f"/datasets/{dataset['id']}/upload/",
            data={"txt_mode": "chunks", "chunk_chars": "2000"},
            files={"file": (CORPUS.name, corpus, "text/plain")},
        )
    upload = api.wait(f"/data-jobs/{job['id']}/")
    version = upload["result_version"]
    job = api.post(
        "/tokenizers/",
        json={
            "version": version,
            "name": "chars",
            "algorithm": "char",
            "vocab_size": 1000,
            "min_frequency": 1,
        },
    )
    tokenizer = api.wait(f"/data-jobs/{job['id']}/")["result_tokenizer"]
    job = api.post(
        f"/dataset-versions/{version}/split/",
        json={"ratios": {"train": 0.9, "validation": 0.1}, "strategy": "position"},
    )
    split = api.wait(f"/data-jobs/{job['id']}/")["result_version"]
    return {"project": project["id"], "tokenizer": tokenizer, "version": split}


def job_request(ids: dict, steps: int, name: str) -> dict:
    """The launch request: the baby-GPT setting, every value the user gives."""
    return {
        "project": ids["project"],
        "name": name,
        "kind": "pretrain_clm",
        "base_source": "random",
        "model_spec": {
            "family": "gpt2",
            "size": "small",
            "n_layer": LAYERS,
            "n_head": HEADS,
            "n_embd": WIDTH,
            "n_positions": CONTEXT,
        },
        "tokenizer": ids["tokenizer"],
        "train_version": ids["version"],
        "train_split": "train",
        "hyperparameters": {
            "max_steps": steps,
            "batch_size": BATCH,
            "max_seq_length": CONTEXT,
            "learning_rate": LR,
            "lr_scheduler": "cosine",
            "min_lr": MIN_LR,
            "warmup_steps": WARMUP,
            "adam_beta2": 0.99,
            "dropout": 0.0,
            "seed": SEED,
        },
    }


def run_job(api: Api, ids: dict, steps: int, name: str) -> dict:
    started = time.perf_counter()
    job = api.post("/training-jobs/", json=job_request(ids, steps, name))
    job = api.wait(f"/training-jobs/{job['id']}/")
    wall = time.perf_counter() - started
    metrics = job["final_metrics"]
    return {
        "job": job,
        "seconds": metrics.get("train_runtime", wall),
        "wall": wall,
        "tokens_per_second": metrics["tokens_per_second"],
        "final_loss": metrics.get("train_loss", float("nan")),
    }


def evaluate_job(api: Api, ids: dict, job: dict) -> dict:
    """bits_per_char (and perplexity) of the job's model on the validation split, by the
    product's evaluation job."""
    run = api.post(
        "/evaluation-runs/",
        json={
            "model_version": job["model_version"],
            "dataset_version": ids["version"],
            "split": "validation",
            "metrics": ["bits_per_char", "perplexity"],
        },
    )
    run = api.wait(f"/evaluation-runs/{run['id']}/")
    return {
        "bpc": run["results"]["bits_per_char"]["value"],
        "perplexity": run["results"]["perplexity"]["value"],
        "warnings": run["warnings"],
        "scoring": run.get("scoring") or {},
    }


# --- what the minimal GPT reads: the same split text and tokenizer files ---------------------


def split_texts(api: Api, ids: dict) -> tuple[str, str]:
    """The train and validation text as the product holds them: each split's rows (the .txt
    chunks in file order) joined by newlines, as the training stream and the scorer join them."""
    import io

    import pyarrow.parquet as pq

    texts = []
    for split in ("train", "validation"):
        response = api.http.get(f"/dataset-versions/{ids['version']}/download/?split={split}")
        response.raise_for_status()
        rows = pq.read_table(io.BytesIO(response.content)).column("text").to_pylist()
        texts.append("\n".join(rows))
    return texts[0], texts[1]


def product_tokenizer(ids: dict):
    """The char tokenizer the job trained with, loaded from its stored files."""
    from transformers import AutoTokenizer

    from datasets_app.models import Tokenizer
    from llmhub import storage

    row = Tokenizer.objects.get(pk=ids["tokenizer"])
    return AutoTokenizer.from_pretrained(str(storage.local_directory(row.files_prefix, row.files)))


# --- the minimal GPT ------------------------------------------------------------------------


def minimal_gpt(vocab: int):
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
            self.qkv, self.proj = nn.Linear(WIDTH, 3 * WIDTH), nn.Linear(WIDTH, WIDTH)
            self.mlp = nn.Sequential(
                nn.Linear(WIDTH, 4 * WIDTH),
                nn.GELU(approximate="tanh"),
                nn.Linear(4 * WIDTH, WIDTH),
            )

        def forward(self, x):
            b, t, c = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(WIDTH, dim=2)
            q, k, v = (z.view(b, t, HEADS, c // HEADS).transpose(1, 2) for z in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
            return x + self.mlp(self.ln2(x))

    class MinimalGPT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok, self.pos = nn.Embedding(vocab, WIDTH), nn.Embedding(CONTEXT, WIDTH)
            self.blocks = nn.Sequential(*[Block() for _ in range(LAYERS)])
            self.ln = nn.LayerNorm(WIDTH)
            self.head = nn.Linear(WIDTH, vocab, bias=False)
            self.head.weight = self.tok.weight  # tied, as GPT-2
            for name, p in self.named_parameters():  # GPT-2's initialisation
                if p.dim() > 1:
                    std = 0.02 / math.sqrt(2 * LAYERS) if name.endswith("proj.weight") else 0.02
                    nn.init.normal_(p, 0.0, std)
                elif name.endswith("bias"):
                    nn.init.zeros_(p)

        def forward(self, idx):
            x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
            return self.head(self.ln(self.blocks(x)))

    return MinimalGPT()


def lr_at(step: int, steps: int) -> float:
    """Linear warm-up, then cosine from LR to MIN_LR (nanoGPT's get_lr)."""
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    ratio = (step - WARMUP) / max(1, steps - WARMUP)
    return MIN_LR + 0.5 * (1 + math.cos(math.pi * min(ratio, 1.0))) * (LR - MIN_LR)


def run_minimal(train_ids, vocab: int, steps: int):
    import torch
    from torch.nn import functional as F

    torch.manual_seed(SEED)
    model = minimal_gpt(vocab)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.99), fused=True)
    generator = torch.Generator().manual_seed(SEED)
    offsets = torch.arange(CONTEXT + 1)
    started = time.perf_counter()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps)
        starts = torch.randint(len(train_ids) - CONTEXT - 1, (BATCH, 1), generator=generator)
        window = train_ids[starts + offsets]
        logits = model(window[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, vocab), window[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - started
    model.eval()
    return (lambda ids: model(ids)), {
        "seconds": seconds,
        "tokens_per_second": steps * BATCH * CONTEXT / seconds,
        "final_loss": float(loss.detach()),
    }


# --- scoring ---------------------------------------------------------------------------------


def bits_per_char(forward, ids) -> float:
    """Every character of ``ids`` after the first scored once: windows of CONTEXT inputs,
    each predicting the next CONTEXT characters (no overlap, so a window's early characters
    see little context: the same for both models)."""
    import torch
    from torch.nn import functional as F

    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, CONTEXT * 64):
            chunk = []
            for s in range(start, min(start + CONTEXT * 64, len(ids) - 1), CONTEXT):
                chunk.append(ids[s : min(s + CONTEXT + 1, len(ids))])
            # Equal windows as one batch; the last short one alone.
            full = [c for c in chunk if len(c) == CONTEXT + 1]
            short = [c for c in chunk if len(c) != CONTEXT + 1]
            for group in ([torch.stack(full)] if full else []) + [c[None] for c in short]:
                logits = forward(group[:, :-1])
                total += F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), group[:, 1:].reshape(-1), reduction="sum"
                ).item()
                count += group[:, 1:].numel()
    assert count == len(ids) - 1
    return total / count / math.log(2)


def sliding_bits_per_char(forward, ids, pad_id: int) -> float:
    """The evaluation job's scorer (``sliding_token_nll``, stride = context) on a model given
    as ``forward(ids) -> logits``: one character per token, so bits per character is the mean."""
    from types import SimpleNamespace

    from evaluation.runtime.sliding import sliding_token_nll

    class Wrapped:
        def __call__(self, input_ids, attention_mask=None):
            return SimpleNamespace(logits=forward(input_ids))

    (nll,) = sliding_token_nll(
        Wrapped(),
        [ids.tolist()],
        window=CONTEXT,
        stride=CONTEXT,
        batch_size=64,
        device="cpu",
        pad_id=pad_id,
    )
    scored = nll[1:]
    assert not any(math.isnan(v) for v in scored)
    return float(scored.mean()) / math.log(2)


# --- main -----------------------------------------------------------------------------------


def load_job_model(job: dict):
    """The job's registered model, for the cross-check scorer."""
    from transformers import AutoModelForCausalLM

    from llmhub import storage
    from training.models import ModelVersion

    version = ModelVersion.objects.get(pk=job["model_version"])
    model = AutoModelForCausalLM.from_pretrained(
        str(storage.local_directory(version.files_prefix, version.files))
    )
    model.eval()
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    stop_on_sigterm()
    processes: list = []
    try:
        api, processes = start_product()
        import torch

        setup_started = time.perf_counter()
        ids = prepare_data(api)
        setup_seconds = time.perf_counter() - setup_started
        train_text, val_text = split_texts(api, ids)
        tokenizer = product_tokenizer(ids)
        vocab = len(tokenizer)
        train_ids = torch.tensor(tokenizer(train_text, add_special_tokens=False)["input_ids"])
        val_ids = torch.tensor(tokenizer(val_text, add_special_tokens=False)["input_ids"])
        assert len(val_ids) == len(val_text), "characters as tokens"
        pad_id = tokenizer.pad_token_id or 0
        # Warm-up: imports, allocator, the first model build on both sides (the worker too).
        run_minimal(train_ids, vocab, 5)
        run_job(api, ids, 5, "warm-up")
        rounds = []
        for index in range(1, args.rounds + 1):
            with Round() as minimal_meter:
                forward, minimal = run_minimal(train_ids, vocab, args.steps)
            minimal["bpc"] = sliding_bits_per_char(forward, val_ids, pad_id)
            minimal["bpc_plain"] = bits_per_char(forward, val_ids)
            with Round() as job_meter:
                job = run_job(api, ids, args.steps, f"baby-gpt-{index}")
            job |= evaluate_job(api, ids, job["job"])
            model = load_job_model(job["job"])
            job["bpc_plain"] = bits_per_char(lambda x, m=model: m(input_ids=x).logits, val_ids)
            job["config"] = model.config
            rounds.append((minimal | {"meter": minimal_meter}, job | {"meter": job_meter}))
    finally:
        for process in processes:
            stop_process(process, timeout=20)
        shutil.rmtree(SCRATCH, ignore_errors=True)

    print(
        f"baby GPT ({LAYERS} layers, {HEADS} heads, {WIDTH} dims, context {CONTEXT}, batch "
        f"{BATCH}), {args.steps} steps, {args.rounds} interleaved rounds (minimal, job) on "
        f"{cores()} cores, {torch.get_num_threads()} torch threads; vocabulary {vocab}; "
        f"{len(train_ids):,} training and {len(val_ids):,} validation characters"
    )
    print(
        "job: REST API (gunicorn) + one Celery worker on SQLite; upload, char tokenizer and "
        f"position split took {setup_seconds:.1f} s"
    )
    print(
        f"{'round':>6} {'min bpc':>8} {'job bpc':>8} {'min s':>7} {'job s':>7} {'job wall':>8} "
        f"{'min tok/s':>10} {'job tok/s':>10} {'ratio':>6}  contention (minimal; job)"
    )
    for index, (m, j) in enumerate(rounds, start=1):
        print(
            f"{index:>6} {m['bpc']:>8.3f} {j['bpc']:>8.3f} {m['seconds']:>7.1f} "
            f"{j['seconds']:>7.1f} {j['wall']:>8.1f} {m['tokens_per_second']:>10,.0f} "
            f"{j['tokens_per_second']:>10,.0f} "
            f"{j['tokens_per_second'] / m['tokens_per_second']:>6.3f}  "
            f"{m['meter'].describe()}; {j['meter'].describe()}"
        )
    job = rounds[0][1]
    config = job["config"]
    print(
        f"(bpc: the evaluation job's bits_per_char for the job, the same sliding scorer for the "
        f"minimal GPT; cross-check with the bench's own loop: minimal "
        f"{statistics.median(r[0]['bpc_plain'] for r in rounds):.3f}, job "
        f"{statistics.median(r[1]['bpc_plain'] for r in rounds):.3f})"
    )
    print(
        f"(job model: attention {config._attn_implementation}, activation "
        f"{config.activation_function}, dropout {config.resid_pdrop}; job s: the Trainer's "
        "train_runtime; job wall: launch request to succeeded)"
    )
    for warning in job["warnings"]:
        print(f"evaluation: {warning}")

    # Medians of the rounds where other processes took under 15% of a core on both sides (of
    # all rounds, flagged, when none was clean): a contended side's tokens/s says nothing.
    clean, discarded = split_rounds(rounds, lambda r: [r[0]["meter"], r[1]["meter"]])
    contended = discarded == len(rounds)
    print(
        "(every round was contended: the medians are of ALL rounds and are not the product's "
        "figures)"
        if contended
        else f"(medians of {len(clean)} clean rounds, {discarded} contended rounds discarded)"
    )

    def median(side: int, key: str) -> float:
        return statistics.median(r[side][key] for r in clean)

    minimal_tps, job_tps = median(0, "tokens_per_second"), median(1, "tokens_per_second")
    minimal_bpc = median(0, "bpc")
    print(
        json.dumps(
            {
                "figures": {
                    "minimal_bpc": round(minimal_bpc, 4),
                    "job_bpc": round(median(1, "bpc"), 4),
                    "minimal_seconds": round(median(0, "seconds"), 1),
                    "job_seconds": round(median(1, "seconds"), 1),
                    "job_wall_seconds": round(median(1, "wall"), 1),
                    "minimal_tokens_per_s": round(minimal_tps, 1),
                    "job_tokens_per_s": round(job_tps, 1),
                    "job_to_minimal_ratio": round(
                        statistics.median(
                            j["tokens_per_second"] / m["tokens_per_second"] for m, j in clean
                        ),
                        3,
                    ),
                    "steps": args.steps,
                    "rounds": len(rounds),
                    "contended_rounds_discarded": discarded,
                    "all_rounds_contended": contended,
                    "max_other_cores": round(
                        max(s["meter"].other_cores for r in rounds for s in r), 3
                    ),
                },
                "targets": {
                    "job_bpc": {"max": round(minimal_bpc + 0.03, 4)},
                    "job_tokens_per_s": {"min": round(0.9 * minimal_tps, 1)},
                },
            }
        )
    )


if __name__ == "__main__":
    main()
