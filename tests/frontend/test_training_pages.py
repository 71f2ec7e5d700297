"""The Train stage's launch form: one job, or a sweep of them, and its errors."""

from __future__ import annotations

import pytest
from django.test import Client

from llmhub.models import JobStatus
from tests.training.conftest import TINY, prepare
from tests.training.test_training_api import run_training
from training.models import Sweep, TrainingJob


@pytest.fixture
def launch(world):
    prepared = prepare(world)
    client = Client()
    client.force_login(world.users["engineer"])
    url = f"/projects/{world.project.pk}/train/new/"

    def post(**overrides):
        form = {
            "name": "bard",
            "kind": "pretrain_clm",
            "base_source": "random",
            "family": "gpt2",
            "size": "tiny",
            "method": "full",
            "tokenizer": prepared.tokenizer.pk,
            "train_version": prepared.corpus.pk,
            "train_split": "",
            "eval_split": "",
            "sweep_method": "grid",
            "sweep_max_trials": 8,
            "sweep_metric": "train_loss",
            "sweep_direction": "minimize",
            **{f"hp_{k}": v for k, v in {**TINY, "max_steps": 12}.items()},
        }
        return client.post(url, {**form, **overrides})

    return post


def test_the_form_launches_one_job(launch) -> None:
    response = launch()
    job = TrainingJob.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/training-jobs/{job.pk}/"
    assert job.sweep is None and job.hyperparameters["max_steps"] == 12


def test_the_form_launches_a_sweep_that_ranks_its_trials(launch, world) -> None:
    response = launch(name="lr", sweep_space="learning_rate: 0.0001, 0.003\n# comment\n\nseed: 1")
    sweep = Sweep.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/sweeps/{sweep.pk}/"
    assert sweep.search_space == {"learning_rate": [0.0001, 0.003], "seed": [1]}
    jobs = run_training()
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED] * 2
    assert {j.name for j in jobs} == {"lr #1", "lr #2"}
    assert all(j.hyperparameters["max_steps"] == 12 and j.sweep == sweep for j in jobs)

    client = Client()
    client.force_login(world.users["viewer"])
    page = client.get(f"/sweeps/{sweep.pk}/").content.decode()
    best = min(jobs, key=lambda j: j.final_metrics["train_loss"])
    assert best.hyperparameters["learning_rate"] == 0.003
    assert f'best: <a href="/training-jobs/{best.pk}/">{best.name}</a>' in page


def test_random_search_takes_ranges(launch) -> None:
    launch(
        name="rand",
        sweep_method="random",
        sweep_max_trials=3,
        sweep_space="learning_rate: 1e-4 .. 1e-2 log\nwarmup_steps: 0 .. 4\nlr_scheduler: cosine",
    )
    sweep = Sweep.objects.get()
    assert sweep.search_space["learning_rate"] == {"min": 1e-4, "max": 1e-2, "log": True}
    assert sweep.search_space["warmup_steps"] == {"min": 0, "max": 4, "log": False, "integer": True}
    jobs = TrainingJob.objects.filter(sweep=sweep)
    assert jobs.count() == 3
    for job in jobs:
        assert 1e-4 <= job.hyperparameters["learning_rate"] <= 1e-2
        assert job.hyperparameters["warmup_steps"] in range(5)
        assert job.hyperparameters["lr_scheduler"] == "cosine"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sweep_space": "learning_rate 0.1"}, "Line 1: write &#x27;name: values&#x27;."),
        ({"sweep_space": "lr: 0.1"}, "Line 1: &#x27;lr&#x27; is not a hyperparameter"),
        ({"sweep_space": "batch_size: 8, many"}, "&#x27;many&#x27; is not a number"),
        ({"sweep_space": "batch_size: 8, 2.5"}, "batch_size takes whole numbers, not 2.5"),
        ({"sweep_space": "precision: fp8"}, "precision is one of fp32, bf16, fp16"),
        ({"sweep_space": "seed: 1\nseed: 2"}, "Line 2: &#x27;seed&#x27; is given twice"),
        ({"sweep_space": "learning_rate: 1e-4 .. 1e-2"}, "a range needs random search"),
        ({"sweep_space": "learning_rate: -1, 0.1"}, "learning_rate must be positive"),
        ({"sweep_space": "seed: " + ", ".join(map(str, range(9)))}, "9 combinations"),
        (
            {"sweep_space": "seed: 1, 2", "sweep_metric": "eval_loss"},
            "eval_loss is measured on an eval split",
        ),
    ],
)
def test_bad_sweeps_are_form_errors_and_launch_nothing(launch, overrides, message) -> None:
    response = launch(**overrides)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Sweep.objects.exists() and not TrainingJob.objects.exists()
