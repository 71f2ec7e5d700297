"""A training job in several processes under torchrun (gloo on the CPU here; one rank per GPU
on a GPU machine): it trains, reports, checkpoints, registers, and stops on request."""

from __future__ import annotations

import pytest

from llmhub.models import JobStatus
from tests.training.conftest import TINY
from tests.training.test_training_api import run_training
from training.models import Checkpoint, MetricPoint
from training.services import training_job_launch

pytestmark = pytest.mark.slow


def test_a_job_trains_in_two_processes(world, prepared, settings) -> None:
    settings.LLMHUB_TRAINING_PROCESSES = 2
    training_job_launch(
        actor=world.users["engineer"],
        project=world.project,
        name="ddp",
        kind="pretrain_clm",
        model_spec={"family": "gpt2", "size": "tiny"},
        tokenizer=prepared.tokenizer,
        train_version=prepared.corpus,
        hyperparameters={**TINY, "max_steps": 20, "save_steps": 10, "batch_size": 4},
    )
    [job] = run_training()
    assert job.status == JobStatus.SUCCEEDED, job.error + job.traceback
    assert job.global_step == 20 and job.model_version is not None
    assert MetricPoint.objects.filter(job=job, name="loss").count() >= 20
    assert sorted(Checkpoint.objects.filter(job=job).values_list("step", flat=True)) == [10, 20]
    assert "model.safetensors" in job.model_version.files
