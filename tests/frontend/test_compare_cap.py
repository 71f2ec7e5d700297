"""The compare page and the API share one cap on the number of runs, and the page says when it
shows fewer runs than were chosen."""

from __future__ import annotations

from django.test import Client
from django.utils import timezone

from datasets_app.models import Dataset, DatasetVersion
from evaluation.models import EvaluationRun
from evaluation.selectors import MAX_COMPARED
from llmhub.models import JobStatus
from training.models import ModelVersion, RegisteredModel


def _runs(project, count: int) -> list[int]:
    dataset = Dataset.objects.create(project=project, name="poems")
    version = DatasetVersion.objects.create(
        dataset=dataset,
        number=1,
        file="x.parquet",
        content_sha256="0" * 64,
        row_count=10,
        size_bytes=1,
        schema=[{"name": "text", "type": "string"}],
    )
    registered = RegisteredModel.objects.create(project=project, name="m")
    model = ModelVersion.objects.create(
        registered_model=registered, number=1, task_kind="classification", files_prefix="x"
    )
    runs = EvaluationRun.objects.bulk_create(
        EvaluationRun(
            project=project,
            model_version=model,
            dataset_version=version,
            split="test",
            task_type="classification",
            metrics=["accuracy"],
            status=JobStatus.SUCCEEDED,
            finished_at=timezone.now(),
            results={"accuracy": {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 10}},
        )
        for _ in range(count)
    )
    return [run.pk for run in runs]


def _page(world, ids: list[int]):
    client = Client()
    client.force_login(world.users["viewer"])
    query = "&".join(f"runs={i}" for i in ids)
    return client.get(f"/projects/{world.project.pk}/evaluate/compare/?{query}")


def test_page_says_it_shows_the_first_runs_of_more_than_the_cap(world, api) -> None:
    ids = _runs(world.project, MAX_COMPARED + 2)
    response = _page(world, ids)
    assert response.status_code == 200
    body = response.content.decode()
    assert (
        f"Showing the first {MAX_COMPARED} of {MAX_COMPARED + 2} runs; the API compares at "
        f"most {MAX_COMPARED}." in body
    )
    assert f"{MAX_COMPARED} runs side by side" in body
    # The API refuses what the page cuts, with the same number.
    client = api(world.users["viewer"])
    refused = client.get(f"/api/v1/evaluation-runs/compare/?runs={','.join(map(str, ids))}")
    assert refused.status_code == 400
    assert f"Give 1 to {MAX_COMPARED} run ids." in refused.content.decode()
    allowed = client.get(
        f"/api/v1/evaluation-runs/compare/?runs={','.join(map(str, ids[:MAX_COMPARED]))}"
    )
    assert allowed.status_code == 200 and len(allowed.json()["runs"]) == MAX_COMPARED


def test_no_notice_at_the_cap(world) -> None:
    ids = _runs(world.project, MAX_COMPARED)
    body = _page(world, ids).content.decode()
    assert 'id="compare-cap"' not in body
    assert f"{MAX_COMPARED} runs side by side" in body


def test_a_model_with_warnings_is_marked_in_comparisons(world, api) -> None:
    ids = _runs(world.project, 2)
    ModelVersion.objects.update(
        warnings=[{"code": "diverged", "message": "Training diverged at step 9.", "step": 9}]
    )
    body = _page(world, ids).content.decode()
    assert body.count("data-model-warnings") == 2 and "Training diverged at step 9." in body
    data = api(world.users["viewer"]).get(
        f"/api/v1/evaluation-runs/compare/?runs={','.join(map(str, ids))}"
    )
    assert data.json()["runs"][0]["model_warnings"] == ["Training diverged at step 9."]
    ModelVersion.objects.update(warnings=[])
    assert "data-model-warnings" not in _page(world, ids).content.decode()
