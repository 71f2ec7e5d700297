"""Issue 17's "done when", through the REST API alone and a real worker: a user reproduces
nanoGPT's baby-GPT recipe (characters as tokens, the first 90% of the text to train on and the
last 10% held back, 4 layers / 4 heads / 128 dims / context 64, dropout 0, cosine to a floor)
and reads an honest bits-per-character on the held-back tail, every character of it scored.

The corpus is the first 120,000 characters of Shakespeare and the run 60 steps, so the test
takes about a minute; ``bench/pretrain.py`` runs the full 2000 steps on the whole text."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from llmhub.jobs import wait_until
from projects.services import api_token_create
from tests.factories import UserFactory

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "datasets" / "corpus_tinyshakespeare.txt"
TEXT = CORPUS.read_text(encoding="utf-8")[:120_000]


def _done(client: APIClient, path: str, worker) -> dict:
    """Wait for a job to end on the worker; its final state, which must be succeeded."""
    state: dict = {}

    def ended() -> bool:
        state.update(client.get(path).json())
        return state["status"] in ("succeeded", "failed", "cancelled")

    assert wait_until(ended, timeout=300, interval=0.5), worker.log()
    assert state["status"] == "succeeded", (state.get("error"), worker.log())
    return state


def test_baby_gpt_through_the_api_with_an_honest_bits_per_character(celery_worker) -> None:
    user = UserFactory(username="researcher")
    _, token = api_token_create(actor=user, name="notebook")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")

    team = api.post("/api/v1/teams/", {"name": "Lab"}, format="json").json()
    project = api.post(
        "/api/v1/projects/",
        {"team": team["id"], "name": "Baby GPT", "task_type": "generation"},
        format="json",
    ).json()
    dataset = api.post(
        "/api/v1/datasets/", {"project": project["id"], "name": "shakespeare"}, format="json"
    ).json()
    upload = api.post(
        f"/api/v1/datasets/{dataset['id']}/upload/",
        {
            "file": SimpleUploadedFile("shakespeare.txt", TEXT.encode()),
            "txt_mode": "chunks",
            "chunk_chars": 2000,
        },
        format="multipart",
    )
    assert upload.status_code == 202, upload.json()
    version = _done(api, f"/api/v1/data-jobs/{upload.json()['id']}/", celery_worker)[
        "result_version"
    ]

    tokenizer_job = api.post(
        "/api/v1/tokenizers/",
        {"version": version, "name": "chars", "algorithm": "char", "min_frequency": 1},
        format="json",
    )
    assert tokenizer_job.status_code == 202, tokenizer_job.json()
    tokenizer_id = _done(api, f"/api/v1/data-jobs/{tokenizer_job.json()['id']}/", celery_worker)[
        "result_tokenizer"
    ]
    tokenizer = api.get(f"/api/v1/tokenizers/{tokenizer_id}/").json()
    assert tokenizer["algorithm"] == "char"
    assert tokenizer["vocab_size"] < 100  # every distinct character, plus the special tokens

    split_job = api.post(
        f"/api/v1/dataset-versions/{version}/split/",
        {"ratios": {"train": 0.9, "validation": 0.1}, "strategy": "position"},
        format="json",
    )
    assert split_job.status_code == 202, split_job.json()
    split = _done(api, f"/api/v1/data-jobs/{split_job.json()['id']}/", celery_worker)[
        "result_version"
    ]
    # The held-back text is the tail of the corpus, in order: never interleaved with training.
    tail = api.get(f"/api/v1/dataset-versions/{split}/download/?split=validation")
    rows = pq.read_table(io.BytesIO(b"".join(tail.streaming_content))).column("text")
    held_back = "\n".join(rows.to_pylist())
    assert TEXT.rstrip("\n").endswith(held_back)
    assert 0.08 * len(TEXT) < len(held_back) < 0.12 * len(TEXT)

    request = {
        "project": project["id"],
        "name": "baby-gpt",
        "kind": "pretrain_clm",
        "base_source": "random",
        "model_spec": {
            "family": "gpt2",
            "size": "small",
            "n_layer": 4,
            "n_head": 4,
            "n_embd": 128,
            "n_positions": 64,
        },
        "tokenizer": tokenizer_id,
        "train_version": split,
        "train_split": "train",
        "hyperparameters": {
            "max_steps": 60,
            "batch_size": 12,
            "max_seq_length": 64,
            "learning_rate": 1e-3,
            "lr_scheduler": "cosine",
            "min_lr": 1e-4,
            "warmup_steps": 10,
            "adam_beta2": 0.99,
            "dropout": 0.0,
        },
    }
    estimate = api.post(
        "/api/v1/training-jobs/estimate/",
        {
            "model_spec": request["model_spec"],
            "tokenizer": tokenizer_id,
            "hyperparameters": request["hyperparameters"],
            "kind": "pretrain_clm",
        },
        format="json",
    )
    assert estimate.status_code == 200, estimate.json()
    launched = api.post("/api/v1/training-jobs/", request, format="json")
    assert launched.status_code == 201, launched.json()
    job = _done(api, f"/api/v1/training-jobs/{launched.json()['id']}/", celery_worker)
    assert job["final_metrics"]["tokens_per_second"] > 0

    model_version = api.get(f"/api/v1/model-versions/{job['model_version']}/").json()
    config = model_version["config"]
    assert (config["resid_pdrop"], config["embd_pdrop"], config["attn_pdrop"]) == (0.0, 0.0, 0.0)
    assert (config["n_layer"], config["n_head"], config["n_embd"], config["n_positions"]) == (
        4,
        4,
        128,
        64,
    )
    # The estimate the user read before launching is the model that was trained.
    assert estimate.json()["parameters"] == model_version["parameters"], estimate.json()

    run = api.post(
        "/api/v1/evaluation-runs/",
        {
            "model_version": job["model_version"],
            "dataset_version": split,
            "split": "validation",
            "metrics": ["bits_per_char", "perplexity"],
        },
        format="json",
    )
    assert run.status_code == 201, run.json()
    run = _done(api, f"/api/v1/evaluation-runs/{run.json()['id']}/", celery_worker)
    bits = run["results"]["bits_per_char"]["value"]
    perplexity = run["results"]["perplexity"]["value"]
    # 60 steps learn the character frequencies at least: below a uniform guess over the
    # vocabulary, and (characters being tokens) bits per character is log2 of the perplexity.
    assert 1.0 < bits < math.log2(tokenizer["vocab_size"])
    assert bits == pytest.approx(math.log2(perplexity), rel=1e-6)
    # Every character of the held-back text scored, but the first (nothing predicts it).
    scored = f"{len(held_back) - 1:,} of {len(held_back):,} characters"
    assert any(scored in warning for warning in run["warnings"]), run["warnings"]
