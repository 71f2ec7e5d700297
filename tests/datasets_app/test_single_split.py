"""A whole version named as one split: a test file uploaded on its own becomes a ``test`` split
(``{"ratios": {"test": 1.0}}``), an evaluation on it measures a goal "on test". Through the
API, with the data, training and evaluation jobs run in this process."""

from __future__ import annotations

from pathlib import Path

import pytest

from datasets_app.cleaning.options import OptionError, SplitParams
from datasets_app.models import DatasetVersion
from evaluation.models import EvaluationRun
from llmhub.models import JobStatus
from projects.models import GoalStatus
from projects.services import goal_create
from tests.datasets_app.test_data_api import run_queued, upload
from tests.evaluation.test_evaluation_api import run_evaluations
from tests.training.conftest import TINY, prepare
from tests.training.test_training_api import run_training

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"


def test_validator_accepts_one_whole_split_and_still_refuses_bad_ratios() -> None:
    assert SplitParams(ratios={"test": 1.0}).ratios == {"test": 1.0}
    assert SplitParams(ratios={"test": 1}).ratios == {"test": 1}
    for ratios, message in (
        ({"test": 1.0, "train": 0.2}, "add up to 1"),
        ({"test": 1.5}, "between 0 and 1"),
        ({"test": 0}, "between 0 and 1"),
        ({"train": 0.5}, "add up to 1"),
    ):
        with pytest.raises(OptionError, match=message) as caught:
            SplitParams(ratios=ratios)
        assert caught.value.field == "ratios"


def test_whole_version_as_test_split_measures_a_goal_on_test(world, api) -> None:
    prepared = prepare(world)
    client = api(world.users["engineer"])
    held_out = client.post(
        "/api/v1/datasets/", {"project": world.project.pk, "name": "poems-held-out"}
    ).json()
    response = upload(
        client, held_out["id"], "poems-test.csv", (FIXTURES / "poem_sample.csv").read_bytes()
    )
    assert response.status_code == 202, response.content
    run_queued()
    v1 = DatasetVersion.objects.get(dataset_id=held_out["id"], number=1)

    split = client.post(
        f"/api/v1/dataset-versions/{v1.pk}/split/", {"ratios": {"test": 1.0}}, format="json"
    )
    assert split.status_code == 202, split.content
    jobs = run_queued()
    assert all(j.status == JobStatus.SUCCEEDED for j in jobs), [j.error for j in jobs]
    v2 = DatasetVersion.objects.get(dataset_id=held_out["id"], number=2)
    assert [(s.name, s.row_count) for s in v2.splits.all()] == [("test", v1.row_count)]
    rows = client.get(f"/api/v1/dataset-versions/{v2.pk}/rows/?split=test&limit=5").json()
    assert rows["total"] == v1.row_count

    trained = client.post(
        "/api/v1/training-jobs/",
        {
            "project": world.project.pk,
            "name": "poet",
            "kind": "classification",
            "model_spec": {"family": "bert", "size": "tiny"},
            "tokenizer": prepared.tokenizer.pk,
            "train_version": prepared.poems.pk,
            "train_split": "train",
            "hyperparameters": {**TINY, "max_steps": 10},
        },
        format="json",
    )
    assert trained.status_code == 201, trained.content
    (job,) = run_training()
    assert job.status == JobStatus.SUCCEEDED, job.error

    goal = goal_create(
        actor=world.users["manager"],
        project=world.project,
        metric="accuracy",
        target=0.0,
        split="test",
    )
    run = client.post(
        "/api/v1/evaluation-runs/",
        {
            "model_version": job.model_version.pk,
            "dataset_version": v2.pk,
            "split": "test",
            "settings": {"batch_size": 16},
        },
        format="json",
    )
    assert run.status_code == 201, run.content
    run_evaluations()
    evaluation = EvaluationRun.objects.get(pk=run.json()["id"])
    assert evaluation.status == JobStatus.SUCCEEDED, evaluation.error
    assert evaluation.n_examples == v1.row_count  # every row of the uploaded file
    goal.refresh_from_db()
    assert goal.measured_value == evaluation.value("accuracy")
    assert f"evaluation #{evaluation.pk} on test" in goal.measured_source
    assert goal.status == GoalStatus.MET


def test_version_page_split_form_names_the_whole_version_test(world) -> None:
    import pyarrow as pa
    from django.test import Client
    from django.urls import reverse

    from datasets_app.models import DataJob
    from tests.datasets_app.tables import make_version

    version = make_version(world, pa.table({"text": ["a", "b", "c"], "label": ["x", "y", "x"]}))
    browser = Client()
    browser.force_login(world.users["engineer"])
    response = browser.post(
        reverse("version-split", args=[version.pk]),
        {"train": "0", "validation": "0", "test": "1", "seed": "42"},
    )
    assert response.status_code == 302
    job = DataJob.objects.get(kind="split", source_version=version)
    assert job.params["ratios"] == {"test": 1.0}
    (done,) = run_queued()
    assert done.status == JobStatus.SUCCEEDED, done.error
    split = done.result_version.splits.get()
    assert (split.name, split.row_count) == ("test", 3)
