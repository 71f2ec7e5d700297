"""Honest outcomes on the job and its version, through the API and the job runner: a diverged
run fails with the reason or succeeds with its warnings (stored on the job, copied to the
version, shown on the job page); the job and the version count the same parameters; sweeps rank
only by metrics their trials report; best-checkpoint options are checked before launch."""

from __future__ import annotations

from django.urls import reverse

from llmhub.models import JobStatus
from tests.training.conftest import TINY
from tests.training.test_training_api import run_training
from training import services
from training.models import MetricPoint, ModelVersion
from training.runtime.presets import ModelSpec, count_parameters


def classifier(world, prepared, **hyperparameters) -> dict:
    return {
        "project": world.project.pk,
        "name": "sentiment",
        "kind": "classification",
        "model_spec": {"family": "bert", "size": "tiny"},
        "tokenizer": prepared.tokenizer.pk,
        "train_version": prepared.poems.pk,
        "train_split": "train",
        "eval_split": "test",
        "hyperparameters": {**TINY, **hyperparameters},
    }


def test_a_diverging_run_fails_with_the_reason_by_default(world, api, prepared) -> None:
    client = api(world.users["engineer"])
    response = client.post(
        "/api/v1/training-jobs/", classifier(world, prepared, learning_rate=1.0, max_steps=12)
    )
    assert response.status_code == 201, response.content
    [job] = run_training()
    assert job.status == JobStatus.FAILED
    assert job.error.startswith("Training diverged at step ") and " from " in job.error
    assert job.model_version is None and not ModelVersion.objects.exists()
    # The curve up to the divergence is kept for the record.
    assert MetricPoint.objects.filter(job=job, name="loss").count() >= 5


def test_warn_succeeds_with_warnings_on_the_job_its_version_and_page(
    world, api, client, prepared
) -> None:
    api_client = api(world.users["engineer"])
    body = classifier(world, prepared, learning_rate=1.0, max_steps=12, on_divergence="warn")
    assert api_client.post("/api/v1/training-jobs/", body).status_code == 201
    [job] = run_training()
    assert job.status == JobStatus.SUCCEEDED, job.error
    [warning] = job.warnings
    assert warning["code"] == "diverged" and warning["message"].startswith("Training diverged")
    assert job.model_version.warnings == job.warnings

    client.force_login(world.users["viewer"])
    page = client.get(reverse("training-job-page", args=[job.pk])).content.decode()
    assert 'id="job-with-warnings"' in page and warning["message"][:40] in page

    healthy = api_client.post("/api/v1/training-jobs/", classifier(world, prepared, max_steps=12))
    assert healthy.status_code == 201
    [clean] = run_training()
    assert clean.status == JobStatus.SUCCEEDED and clean.warnings == []
    page = client.get(reverse("training-job-page", args=[clean.pk])).content.decode()
    assert 'id="job-with-warnings"' not in page and 'id="job-warnings"' not in page


def test_the_job_and_its_version_count_the_same_parameters(world, api, prepared) -> None:
    client = api(world.users["engineer"])
    response = client.post(
        "/api/v1/training-jobs/", classifier(world, prepared, max_steps=10, eval_steps=5)
    )
    assert response.status_code == 201, response.content
    spec, vocab = ModelSpec("bert", "tiny"), prepared.tokenizer.vocab_size
    # Before launch: the classifier's head, for two classes until the labels are read.
    assert response.json()["estimate"]["parameters"] == count_parameters(
        spec, vocab_size=vocab, kind="classification", num_labels=2
    )
    # The form's estimate, given the kind and the tokenizer, is the launch's figure.
    form_estimate = services.estimate_for(
        model_spec={"family": "bert", "size": "tiny"},
        hyperparameters={"max_seq_length": 32, "batch_size": 8, "precision": "fp32"},
        method="full",
        kind="classification",
        tokenizer=prepared.tokenizer,
    )
    assert form_estimate["parameters"] == response.json()["estimate"]["parameters"]
    [job] = run_training()
    assert job.status == JobStatus.SUCCEEDED, job.error
    version = job.model_version
    # The poems have four labels: the job now says what it built, as the version does.
    assert version.parameters == count_parameters(
        spec, vocab_size=vocab, kind="classification", num_labels=4
    )
    assert job.estimate["parameters"] == version.parameters
    assert job.estimate["estimated_parameters"] == response.json()["estimate"]["parameters"]
    # The classification metrics of the catalog are final metrics too, for sweeps and goals.
    assert {"eval_f1_macro", "eval_accuracy", "eval_precision_macro"} <= set(job.final_metrics)
    assert not {"train_runtime", "total_flos"} & set(
        MetricPoint.objects.filter(job=job).values_list("name", flat=True)
    )


def test_sweeps_rank_only_by_metrics_their_trials_report(world, api, prepared) -> None:
    client = api(world.users["engineer"])
    base = classifier(world, prepared)
    base.pop("name")
    refused = client.post(
        "/api/v1/sweeps/",
        {
            "project": world.project.pk,
            "name": "by bleu",
            "search_space": {"learning_rate": [0.001, 0.003]},
            "metric": "eval_bleu",
            "direction": "maximize",
            "base": base,
        },
    )
    assert refused.status_code == 400
    message = refused.json()["error"]["fields"]["metric"][0]
    assert "does not report eval_bleu" in message and "eval_f1_macro" in message
    accepted = client.post(
        "/api/v1/sweeps/",
        {
            "project": world.project.pk,
            "name": "by f1",
            "search_space": {"learning_rate": [0.001, 0.003]},
            "metric": "eval_f1_macro",
            "direction": "maximize",
            "base": base,
        },
    )
    assert accepted.status_code == 201, accepted.content


def test_best_checkpoint_options_are_checked_before_launch(world, api, prepared) -> None:
    client = api(world.users["engineer"])
    no_eval = classifier(world, prepared, metric_for_best_model="eval_f1_macro", eval_steps=5)
    no_eval["eval_split"] = ""
    response = client.post("/api/v1/training-jobs/", no_eval)
    assert response.status_code == 400
    assert "choose an eval split" in response.json()["error"]["fields"]["hyperparameters"][0]
    no_interval = classifier(world, prepared, early_stopping_patience=2)
    response = client.post("/api/v1/training-jobs/", no_interval)
    assert response.status_code == 400
    assert "set eval_steps above 0" in response.json()["error"]["fields"]["hyperparameters"][0]
