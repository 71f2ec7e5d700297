"""One validator per evaluation config: the service (API and form) refuses exactly what the worker's
EvalConfig refuses, with the same message, and stores the values typed."""

from __future__ import annotations

import html

import pytest
from django.urls import reverse

from datasets_app.models import Dataset, DatasetVersion
from evaluation.models import BiasReport, EvaluationRun
from evaluation.runtime.evaluate_model import EvalConfig
from llmhub.reporting import JobInputError
from training.models import ModelVersion, RegisteredModel


@pytest.fixture
def launchable(world):
    """A registered model with tokenizer files and a labelled dataset version (rows only in the
    database: nothing here runs)."""
    registered = RegisteredModel.objects.create(project=world.project, name="clf")
    model = ModelVersion.objects.create(
        registered_model=registered,
        number=1,
        task_kind="classification",
        files_prefix="models/x",
        files=["config.json", "model.safetensors", "tokenizer.json"],
    )
    dataset = Dataset.objects.create(project=world.project, name="tickets")
    version = DatasetVersion.objects.create(
        dataset=dataset,
        number=1,
        file="tables/x.parquet",
        content_sha256="0" * 64,
        row_count=10,
        size_bytes=100,
        schema=[{"name": "text", "type": "string"}, {"name": "label", "type": "string"}],
        column_roles={"text": "text", "label": "label"},
    )
    return model, version


def _launch(api, world, launchable, **body):
    model, version = launchable
    return api(world.users["engineer"]).post(
        "/api/v1/evaluation-runs/",
        {"model_version": model.pk, "dataset_version": version.pk, "split": "", **body},
        format="json",
    )


def _worker_refusal(tmp_path, **settings) -> str:
    with pytest.raises(JobInputError) as refused:
        EvalConfig(
            model_dir=tmp_path,
            task_type="classification",
            data_path=tmp_path / "x.parquet",
            **{"metrics": ["accuracy"], **settings},
        )
    return str(refused.value)


@pytest.mark.parametrize(
    "settings",
    [
        {"top_p": 0},  # the service took it and the worker refused it
        {"top_p": 1.5},
        {"temperature": -1},
        {"num_beams": 0},
        {"max_new_tokens": 2.5},
        {"batch_size": True},
        {"do_sample": True},  # sampling at temperature 0
        {"max_examples": 0},
        {"n_bootstrap": -1},
    ],
)
def test_settings_the_worker_refuses_are_refused_at_launch_with_its_message(
    world, api, launchable, tmp_path, settings
) -> None:
    response = _launch(api, world, launchable, settings=settings)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert "settings" in error["fields"]
    assert error["fields"]["settings"] == [_worker_refusal(tmp_path, **settings)]
    assert not EvaluationRun.objects.exists()


def test_metrics_are_checked_by_the_runtimes_catalog(world, api, launchable, tmp_path) -> None:
    response = _launch(api, world, launchable, metrics=["bleu"])
    assert response.status_code == 400
    message = response.json()["error"]["fields"]["metrics"][0]
    assert message.startswith("BLEU does not fit a classification task")
    assert message == _worker_refusal(tmp_path, metrics=["bleu"])
    assert not EvaluationRun.objects.exists()


def test_good_settings_are_stored_typed_and_the_worker_accepts_them(
    world, api, launchable, tmp_path
) -> None:
    response = _launch(
        api, world, launchable, settings={"top_p": 1, "temperature": 0.7, "max_examples": 5}
    )
    assert response.status_code == 201, response.content
    run = EvaluationRun.objects.get()
    assert run.settings == {"top_p": 1.0, "temperature": 0.7, "max_examples": 5}
    assert isinstance(run.settings["top_p"], float)
    config = EvalConfig(
        model_dir=tmp_path,
        task_type=run.task_type,
        data_path=tmp_path / "x.parquet",
        metrics=run.metrics,
        **run.settings,
    )
    assert config.generation.top_p == 1.0


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("crows_pairs", {"max_pairs": 0}, "max_pairs must be between 1 and 100000, not 0."),
        ("bold", {"max_new_tokens": 1000}, "max_new_tokens must be between 1 and 256"),
        ("winobias", {"max_prompts_per_group": 3}, "Unknown parameter(s): max_prompts_per_group"),
    ],
)
def test_bias_parameters_are_checked_by_the_probes_own_table(
    world, api, launchable, kind, params, message
) -> None:
    from evaluation.runtime.bias import crows_pairs

    model, _version = launchable
    response = api(world.users["engineer"]).post(
        "/api/v1/bias-reports/",
        {"kind": kind, "model_version": model.pk, "params": params},
        format="json",
    )
    assert response.status_code == 400, response.content
    assert message in response.json()["error"]["fields"]["params"][0]
    assert not BiasReport.objects.exists()
    # The probe on the worker refuses the same value, before it reads anything.
    with pytest.raises(JobInputError, match="max_pairs must be between 1 and 100000, not 0"):
        crows_pairs("/nowhere", "/nowhere.csv", max_pairs=0, reporter=None)


def test_non_finite_results_are_stored_as_null_and_served(world, api, launchable) -> None:
    import math

    from evaluation.services import evaluation_store_results

    response = _launch(api, world, launchable, metrics=["accuracy"])
    run = EvaluationRun.objects.get(pk=response.json()["id"])
    result = {
        "metrics": {"accuracy": {"value": 0.5, "ci_low": -math.inf, "ci_high": math.nan, "n": 2}},
        "examples": [
            {"index": 0, "input": "a", "scores": {"correct": math.nan, "accuracy": 1.0}},
            {"index": 1, "input": "b", "scores": {"correct": 0.0}},
        ],
        "n_examples": 2,
    }
    run = evaluation_store_results(run=run, result=result)
    assert run.results["accuracy"] == {"value": 0.5, "ci_low": None, "ci_high": None, "n": 2}
    assert list(run.examples.order_by("index").values_list("score", flat=True)) == [1.0, 0.0]
    client = api(world.users["viewer"])
    assert client.get(f"/api/v1/evaluation-runs/{run.pk}/").status_code == 200
    assert client.get(f"/api/v1/evaluation-runs/{run.pk}/examples/").status_code == 200


def test_the_evaluate_form_refuses_what_the_worker_would_with_its_message(
    world, client, launchable, tmp_path
) -> None:
    """The form takes its bounds from the runtime's table and has none of its own, so the
    page refuses top_p=0 with the same sentence as the worker (once it refused 0.001 alone)."""
    model, version = launchable
    # Generation settings apply to (and are shown for) generative models only.
    ModelVersion.objects.filter(pk=model.pk).update(task_kind="sft_causal")
    client.force_login(world.users["engineer"])
    form = {
        "model_version": model.pk,
        "dataset_version": version.pk,
        "split": "",
        "max_new_tokens": 64,
        "temperature": 0,
        "num_beams": 1,
    }
    page = client.post(
        reverse("evaluate-stage", args=[world.project.pk]), {**form, "top_p": 0}
    ).content.decode()
    assert html.escape(_worker_refusal(tmp_path, top_p=0)) in page
    assert not EvaluationRun.objects.exists()
    client.post(reverse("evaluate-stage", args=[world.project.pk]), {**form, "top_p": 0.001})
    assert EvaluationRun.objects.get().settings["top_p"] == 0.001
