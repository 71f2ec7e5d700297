"""A project with data ready to train on: a Shakespeare corpus with a tokenizer, and poems
split into train/test, prepared through the real services and data jobs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from datasets_app import services as data_services
from datasets_app.models import DatasetVersion, Tokenizer
from tests.datasets_app.test_data_api import run_queued

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"


@dataclass
class Prepared:
    corpus: DatasetVersion
    poems: DatasetVersion  # split into train/test
    tokenizer: Tokenizer


def prepare(world) -> Prepared:
    engineer = world.users["engineer"]
    corpus_set = data_services.dataset_create(
        actor=engineer, project=world.project, name="shakespeare"
    )
    data_services.upload_start(
        actor=engineer,
        dataset=corpus_set,
        txt_mode="chunks",
        chunk_chars=600,
        uploaded_file=SimpleUploadedFile(
            "shakespeare.txt", (FIXTURES / "tinyshakespeare_sample.txt").read_bytes()
        ),
    )
    poem_set = data_services.dataset_create(actor=engineer, project=world.project, name="poems")
    data_services.upload_start(
        actor=engineer,
        dataset=poem_set,
        uploaded_file=SimpleUploadedFile("poems.csv", (FIXTURES / "poem_sample.csv").read_bytes()),
    )
    run_queued()
    corpus = DatasetVersion.objects.get(dataset=corpus_set, number=1)
    data_services.tokenizer_launch(actor=engineer, version=corpus, name="bard-bpe", vocab_size=400)
    poems_v1 = DatasetVersion.objects.get(dataset=poem_set, number=1)
    data_services.split_launch(
        actor=engineer,
        version=poems_v1,
        ratios={"train": 0.8, "test": 0.2},
        stratify_column="label",
    )
    run_queued()
    return Prepared(
        corpus=corpus,
        poems=DatasetVersion.objects.get(dataset=poem_set, number=2),
        tokenizer=Tokenizer.objects.get(name="bard-bpe"),
    )


@pytest.fixture
def prepared(world) -> Prepared:
    return prepare(world)


TINY = {
    "max_steps": 30,
    "batch_size": 8,
    "max_seq_length": 32,
    "learning_rate": 0.003,
    "logging_steps": 1,
}


def launch_long_run(client, world, prepared: Prepared) -> int:
    """Launch (through the API) a pre-training run long enough for a cancel or a worker stop
    to land mid-run: the "small" GPT-2 preset at 128 tokens takes a few steps per second here,
    and checkpoints every 5 of its 80 steps, so a resumed run finishes soon. Returns its id."""
    response = client.post(
        "/api/v1/training-jobs/",
        {
            "project": world.project.pk,
            "name": "long",
            "kind": "pretrain_clm",
            "model_spec": {"family": "gpt2", "size": "small"},
            "tokenizer": prepared.tokenizer.pk,
            "train_version": prepared.corpus.pk,
            "hyperparameters": {
                **TINY,
                "max_steps": 80,
                "save_steps": 5,
                "max_seq_length": 128,
                "learning_rate": 0.001,
            },
        },
    )
    assert response.status_code == 201, response.content
    return response.json()["id"]


def is_running_past_a_checkpoint(job_id: int) -> bool:
    """Curves arrive while it runs (the heartbeat flushes them) and a checkpoint is stored."""
    from training.models import Checkpoint, MetricPoint

    return (
        MetricPoint.objects.filter(job_id=job_id, name="loss").count() > 5
        and Checkpoint.objects.filter(job_id=job_id).exists()
    )
