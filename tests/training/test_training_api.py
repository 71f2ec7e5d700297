"""Training through the API: launch, run (in this process), registry, lineage, curves, sweeps,
resume rules, stage changes, and every bad input refused before launch."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from llmhub.jobs import run_job_inline, runner_for, sweep_stale_jobs
from llmhub.models import JobStatus
from tests.training.conftest import TINY
from training.models import Checkpoint, ModelVersion, Sweep, TrainingJob


def run_training() -> list[TrainingJob]:
    done = []
    while job := TrainingJob.objects.filter(status=JobStatus.QUEUED).order_by("id").first():
        run_job_inline(job)
        job.refresh_from_db()
        done.append(job)
    return done


def pretrain(client, world, prepared, **overrides):
    body = {
        "project": world.project.pk,
        "name": "bard",
        "kind": "pretrain_clm",
        "base_source": "random",
        "model_spec": {"family": "gpt2", "size": "tiny"},
        "tokenizer": prepared.tokenizer.pk,
        "train_version": prepared.corpus.pk,
        "hyperparameters": {**TINY, "save_steps": 15},
    }
    return client.post("/api/v1/training-jobs/", {**body, **overrides})


def lr_sweep(world, prepared) -> dict:
    """A grid sweep over two learning rates of a tiny GPT-2 (two 15-step trials)."""
    return {
        "project": world.project.pk,
        "name": "lr",
        "method": "grid",
        "search_space": {"learning_rate": [0.0001, 0.003]},
        "metric": "train_loss",
        "direction": "minimize",
        "base": {
            "project": world.project.pk,
            "kind": "pretrain_clm",
            "model_spec": {"family": "gpt2", "size": "tiny"},
            "tokenizer": prepared.tokenizer.pk,
            "train_version": prepared.corpus.pk,
            "hyperparameters": {**TINY, "max_steps": 15},
        },
    }


def test_pretraining_registers_a_model_with_its_lineage(world, api, prepared) -> None:
    client = api(world.users["engineer"])
    response = pretrain(client, world, prepared)
    assert response.status_code == 201, response.content
    launched = response.json()
    assert launched["status"] == "queued" and launched["estimate"]["parameters"] == 142_080
    [job] = run_training()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.device == "cpu" and job.global_step == 30
    assert Checkpoint.objects.filter(job=job).values_list("step", flat=True).count() >= 2

    curves = client.get(f"/api/v1/training-jobs/{job.pk}/curves/?names=loss,learning_rate")
    loss = curves.json()["curves"]["loss"]
    assert loss["total"] >= 30 and loss["values"][-1] < loss["values"][0]
    assert job.curve_summary["loss"]["total"] == loss["total"]

    version = ModelVersion.objects.get()
    assert version.parameters == 142_080 and version.stage == "candidate"
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(version.files)
    lineage = client.get(f"/api/v1/model-versions/{version.pk}/lineage/").json()
    assert lineage["job"]["id"] == job.pk
    assert [d["kind"] for d in lineage["data"]] == ["upload"]
    assert lineage["tokenizer"]["name"] == "bard-bpe"


def test_classifier_fine_tune_on_a_split(world, api, prepared) -> None:
    client = api(world.users["manager"])
    response = client.post(
        "/api/v1/training-jobs/",
        {
            "project": world.project.pk,
            "name": "sentiment",
            "kind": "classification",
            "model_spec": {"family": "bert", "size": "tiny"},
            "tokenizer": prepared.tokenizer.pk,
            "train_version": prepared.poems.pk,
            "train_split": "train",
            "eval_split": "test",
            "hyperparameters": {**TINY, "register_as": "poem-sentiment"},
        },
    )
    assert response.status_code == 201, response.content
    [job] = run_training()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert 0 <= job.final_metrics["eval_accuracy"] <= 1
    version = job.model_version
    assert version.registered_model.name == "poem-sentiment"
    assert set(version.config["id2label"].values()) == {
        "negative",
        "no_impact",
        "positive",
        "mixed",
    }
    assert version.dataset_version == prepared.poems


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        (
            {"hyperparameters": {"learning_rate": -1}},
            "hyperparameters",
            "learning_rate must be positive",
        ),
        (
            {"hyperparameters": {"batch_size": 0}},
            "hyperparameters",
            "batch_size must be at least 1",
        ),
        (
            {"hyperparameters": {"max_seq_length": 1024}},
            "hyperparameters",
            "above the model's maximum of 256 positions",
        ),
        ({"hyperparameters": {"lr": 0.1}}, "hyperparameters", "Unknown hyperparameter"),
        ({"kind": "classification"}, "train_version", "needs a 'label' column"),
        ({"tokenizer": None}, "tokenizer", "needs a tokenizer"),
        ({"method": "lora"}, "method", "LoRA adapts a trained base model"),
        ({"model_spec": {"family": "gpt5"}}, "model_spec", "Unknown architecture family"),
        (
            {"base_source": "local_dir", "base_path": "/nonexistent/model"},
            "base_path",
            "No directory at /nonexistent/model",
        ),
        (
            {"base_source": "local_dir", "base_path": "/tmp"},
            "base_path",
            "is not a model directory",
        ),
        ({"train_split": "holdout"}, "train_split", "has no 'holdout' split"),
        (
            {"model_spec": {"family": "llama", "size": "tiny", "num_hidden_layers": 1_000_000}},
            "model_spec",
            "parameters (50,304,051,264), above the limit of 20.0 billion",
        ),
    ],
)
def test_bad_launches_are_400_and_queue_nothing(
    world, api, prepared, overrides, field, message
) -> None:
    response = pretrain(api(world.users["engineer"]), world, prepared, **overrides)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert field in error["fields"], error
    assert message in error["message"], error
    assert not TrainingJob.objects.exists()


def test_a_tokenizer_bigger_than_the_base_is_refused(world, api, prepared) -> None:
    from datasets_app.services import tokenizer_launch
    from tests.datasets_app.test_data_api import run_queued

    client = api(world.users["engineer"])
    pretrain(client, world, prepared, hyperparameters={**TINY, "max_steps": 2})
    run_training()
    base = ModelVersion.objects.get()
    tokenizer_launch(
        actor=world.users["engineer"], version=prepared.corpus, name="bigger", vocab_size=900
    )
    run_queued()
    from datasets_app.models import Tokenizer

    response = pretrain(
        client,
        world,
        prepared,
        base_source="model_version",
        base_model_version=base.pk,
        model_spec=None,
        tokenizer=Tokenizer.objects.get(name="bigger").pk,
    )
    assert response.status_code == 400
    assert (
        "has 900 tokens but the base model's embedding has 400"
        in (response.json()["error"]["message"])
    )


def test_fine_tuning_a_registered_model_links_the_parent(world, api, prepared) -> None:
    client = api(world.users["engineer"])
    pretrain(client, world, prepared, hyperparameters={**TINY, "max_steps": 5})
    run_training()
    base = ModelVersion.objects.get()
    response = pretrain(
        client,
        world,
        prepared,
        name="bard-2",
        base_source="model_version",
        base_model_version=base.pk,
        model_spec=None,
        tokenizer=None,
        method="lora",
        hyperparameters={**TINY, "max_steps": 5},
    )
    assert response.status_code == 201, response.content
    [job] = run_training()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.model_version.parent == base and job.model_version.tokenizer == prepared.tokenizer


def test_a_sweep_creates_children_and_ranks_them(world, api, prepared) -> None:
    client = api(world.users["engineer"])
    response = client.post("/api/v1/sweeps/", lr_sweep(world, prepared))
    assert response.status_code == 201, response.content
    sweep_id = response.json()["id"]
    jobs = run_training()
    assert len(jobs) == 2 and all(j.status == JobStatus.SUCCEEDED for j in jobs)
    ranking = client.get(f"/api/v1/sweeps/{sweep_id}/ranking/").json()
    best = TrainingJob.objects.get(pk=ranking["best"])
    assert best.hyperparameters["learning_rate"] == 0.003  # the faster learner wins in 15 steps
    losses = [t["final_metrics"]["train_loss"] for t in ranking["trials"]]
    assert losses == sorted(losses)
    too_big = client.post(
        "/api/v1/sweeps/",
        {
            "project": world.project.pk,
            "name": "big",
            "search_space": {"seed": list(range(100))},
            "metric": "train_loss",
            "base": {
                "project": world.project.pk,
                "kind": "pretrain_clm",
                "train_version": prepared.corpus.pk,
                "tokenizer": prepared.tokenizer.pk,
            },
        },
    )
    assert too_big.status_code == 400 and "100 combinations" in too_big.json()["error"]["message"]
    # The default metric, eval_loss, needs an eval split: without one no trial could be ranked.
    unrankable = client.post(
        "/api/v1/sweeps/",
        {
            "project": world.project.pk,
            "name": "unrankable",
            "search_space": {"seed": [1, 2]},
            "base": {
                "project": world.project.pk,
                "kind": "pretrain_clm",
                "train_version": prepared.corpus.pk,
                "tokenizer": prepared.tokenizer.pk,
            },
        },
    )
    assert unrankable.status_code == 400
    assert unrankable.json()["error"]["fields"]["metric"] == [
        "eval_loss is measured on an eval split: name one, or rank by train_loss."
    ]
    assert Sweep.objects.count() == 1


def test_resume_rules_and_stale_training_jobs_are_requeued_once(
    world, api, prepared, settings, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    client = api(world.users["engineer"])
    pretrain(client, world, prepared)
    [job] = run_training()
    refused = client.post(f"/api/v1/training-jobs/{job.pk}/resume/")
    assert refused.status_code == 400 and "this one succeeded" in refused.json()["error"]["message"]

    sent = []
    monkeypatch.setattr(
        runner_for(TrainingJob).task,
        "apply_async",
        lambda args, queue: sent.append(queue) or type("R", (), {"id": "x"})(),
    )
    old = timezone.now() - timedelta(seconds=settings.JOB_STALE_AFTER_SECONDS + 5)
    stale = TrainingJob.objects.create(
        project=world.project,
        name="dying",
        kind="pretrain_clm",
        status=JobStatus.RUNNING,
        heartbeat_at=old,
        attempts=1,
        train_version=prepared.corpus,
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert sweep_stale_jobs()["requeued"] == 1
    assert sent == ["gpu"]
    TrainingJob.objects.filter(pk=stale.pk).update(
        status=JobStatus.RUNNING, heartbeat_at=old, attempts=2
    )
    assert sweep_stale_jobs()["failed"] == 1
    stale.refresh_from_db()
    assert stale.status == JobStatus.FAILED and "started 2 times" in stale.error


def test_stages_and_scoping(world, api, prepared) -> None:
    client = api(world.users["manager"])
    pretrain(client, world, prepared, hyperparameters={**TINY, "max_steps": 2})
    pretrain(client, world, prepared, hyperparameters={**TINY, "max_steps": 2})
    run_training()
    first, second = ModelVersion.objects.order_by("number")
    assert (
        client.post(f"/api/v1/model-versions/{first.pk}/stage/", {"stage": "production"}).json()[
            "stage"
        ]
        == "production"
    )
    client.post(f"/api/v1/model-versions/{second.pk}/stage/", {"stage": "production"})
    first.refresh_from_db()
    assert first.stage == "archived"
    assert (
        api(world.users["engineer"])
        .post(f"/api/v1/model-versions/{first.pk}/stage/", {"stage": "staging"})
        .status_code
        == 403
    )
    outsider = api(world.outsider)
    job = TrainingJob.objects.first()
    for url in (
        f"/api/v1/training-jobs/{job.pk}/",
        f"/api/v1/model-versions/{first.pk}/",
        f"/api/v1/model-versions/{first.pk}/lineage/",
        f"/api/v1/training-jobs/{job.pk}/checkpoints/",
    ):
        assert outsider.get(url).status_code == 404, url
    assert outsider.get("/api/v1/models/").json()["count"] == 0
    viewer = pretrain(api(world.users["viewer"]), world, prepared)
    assert viewer.status_code == 403


def test_estimates_and_presets_for_the_form(world, api) -> None:
    client = api(world.users["viewer"])
    presets = client.get("/api/v1/training-jobs/presets/").json()
    assert set(presets["presets"]) == {"gpt2", "llama", "bert", "roberta", "bart", "t5"}
    assert {h["name"] for h in presets["hyperparameters"]} >= {"learning_rate", "warmup_steps"}
    estimate = client.post(
        "/api/v1/training-jobs/estimate/",
        {
            "model_spec": {"family": "gpt2", "size": "base", "vocab_size": 50257},
            "max_seq_length": 1024,
            "batch_size": 8,
        },
    ).json()
    assert abs(estimate["parameters"] - 124_439_808) < 1000


def test_the_form_estimate_with_tokenizer_and_kind_is_the_launch_figure(world, api, prepared):
    """The launch form's estimate (tokenizer and kind sent) is the figure the job stores."""
    client = api(world.users["engineer"])
    launched = pretrain(client, world, prepared).json()
    estimate = client.post(
        "/api/v1/training-jobs/estimate/",
        {
            "model_spec": {"family": "gpt2", "size": "tiny"},
            "tokenizer": prepared.tokenizer.pk,
            "kind": "pretrain_clm",
            "max_seq_length": TINY.get("max_seq_length", 128),
        },
        format="json",
    ).json()
    without_tokenizer = client.post(
        "/api/v1/training-jobs/estimate/",
        {"model_spec": {"family": "gpt2", "size": "tiny"}, "kind": "pretrain_clm"},
        format="json",
    ).json()
    assert estimate["parameters"] == launched["estimate"]["parameters"]
    assert without_tokenizer["parameters"] != estimate["parameters"]  # the vocabulary counts


@pytest.mark.parametrize("spec", [None, [], "gpt2", {"size": "tiny"}])
def test_estimates_of_malformed_specs_are_400(world, api, spec) -> None:
    response = api(world.users["viewer"]).post(
        "/api/v1/training-jobs/estimate/", {"model_spec": spec}, format="json"
    )
    assert response.status_code == 400, response.content


def test_the_size_limit_is_a_setting_and_the_estimate_says_why(world, api, settings) -> None:
    client = api(world.users["viewer"])
    body = {"model_spec": {"family": "gpt2", "size": "base", "vocab_size": 50257}}
    assert client.post("/api/v1/training-jobs/estimate/", body).status_code == 200
    settings.LLMHUB_MAX_MODEL_PARAMETERS = 100_000_000
    refused = client.post("/api/v1/training-jobs/estimate/", body)
    assert refused.status_code == 400
    assert "about 124.4 million parameters" in refused.json()["error"]["message"]
    assert "limit of 100.0 million" in refused.json()["error"]["message"]


def test_a_requeued_attempt_keeps_one_point_per_step_the_latest_attempts(
    world, api, prepared
) -> None:
    """A worker dies after its checkpoint at step 15 and logged steps up to 30; the re-queued
    attempt resumes from step 15 and logs 16-30 again: each step keeps one point, the new one."""
    from training.metrics_store import BLOCK_FIELDS, rollup_blocks
    from training.models import MetricPoint, MetricRollup

    client = api(world.users["engineer"])
    assert pretrain(client, world, prepared).status_code == 201
    [job] = run_training()
    assert job.status == JobStatus.SUCCEEDED, job.error
    # As if the first attempt died after step 30, with its last checkpoint at 15: its points
    # after 15 are marked so the test can tell them from the next attempt's.
    Checkpoint.objects.filter(job=job, step__gt=15).delete()
    MetricPoint.objects.filter(job=job, step__gt=15).update(value=999.0)
    TrainingJob.objects.filter(pk=job.pk).update(status=JobStatus.QUEUED, attempts=1)
    [again] = run_training()
    assert again.status == JobStatus.SUCCEEDED, again.error
    assert again.global_step == 30

    steps = list(
        MetricPoint.objects.filter(job=job, name="loss")
        .order_by("step")
        .values_list("step", flat=True)
    )
    assert steps == list(range(1, 31))
    assert not MetricPoint.objects.filter(job=job, value=999.0).exists()
    points = list(MetricPoint.objects.filter(job=job).values_list("step", "name", "value", "epoch"))
    stored = {
        (r["name"], r["level"], r["block"]): tuple(r[f] for f in BLOCK_FIELDS)
        for r in MetricRollup.objects.filter(job=job).values()
    }
    assert stored == rollup_blocks(points)
    loss = client.get(f"/api/v1/training-jobs/{job.pk}/curves/?names=loss").json()
    assert loss["curves"]["loss"]["total"] == 30 and 999.0 not in loss["curves"]["loss"]["values"]


def test_launches_while_the_broker_is_down_are_503_and_create_nothing(
    world, api, prepared, broker_down
) -> None:
    client = api(world.users["engineer"])
    response = pretrain(client, world, prepared)
    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "unavailable"
    sweep = client.post("/api/v1/sweeps/", lr_sweep(world, prepared))
    assert sweep.status_code == 503, sweep.content
    assert not TrainingJob.objects.exists() and not Sweep.objects.exists()
