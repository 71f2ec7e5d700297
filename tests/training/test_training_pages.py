"""The training pages render for what the store and the API accept."""

from __future__ import annotations

from django.urls import reverse

from llmhub.models import JobStatus
from training.models import Sweep, TrainingJob


def test_a_sweep_over_a_choice_charts_it_as_categories(world, client) -> None:
    sweep = Sweep.objects.create(
        project=world.project,
        name="schedules",
        search_space={"lr_scheduler": ["linear", "cosine"], "learning_rate": [1e-3]},
        metric="train_loss",
    )
    for index, (scheduler, loss) in enumerate((("linear", 2.0), ("cosine", 1.5)), start=1):
        TrainingJob.objects.create(
            project=world.project,
            name=f"schedules #{index}",
            kind="pretrain_clm",
            sweep=sweep,
            status=JobStatus.SUCCEEDED,
            hyperparameters={"lr_scheduler": scheduler, "learning_rate": 1e-3},
            final_metrics={"train_loss": loss},
        )
    client.force_login(world.users["viewer"])
    page = client.get(reverse("sweep-page", args=[sweep.pk]))
    assert page.status_code == 200
    assert b"ticktext" in page.content and b"cosine" in page.content


def test_the_job_page_of_an_external_run_without_hyperparameters(world, client) -> None:
    job = TrainingJob.objects.create(
        project=world.project, name="colab", kind="sft_causal", external=True
    )
    client.force_login(world.users["viewer"])
    page = client.get(reverse("training-job-page", args=[job.pk]))
    assert page.status_code == 200
