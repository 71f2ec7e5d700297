"""Deleting data that models were trained on is refused; deleting a whole project is not."""

from __future__ import annotations

from datasets_app.models import Dataset, DatasetVersion
from projects.models import Project
from tests.training.conftest import TINY, prepare
from tests.training.test_training_api import pretrain, run_training
from training.models import ModelVersion


def test_data_in_use_cannot_be_deleted_but_the_project_can(world, api) -> None:
    prepared = prepare(world)
    client = api(world.users["admin"])
    pretrain(client, world, prepared, hyperparameters={**TINY, "max_steps": 2})
    run_training()
    response = client.delete(f"/api/v1/datasets/{prepared.corpus.dataset_id}/")
    assert response.status_code == 400
    assert "is used by" in response.json()["error"]["message"]
    assert DatasetVersion.objects.filter(pk=prepared.corpus.pk).exists()

    unused = client.delete(f"/api/v1/datasets/{prepared.poems.dataset_id}/")
    assert unused.status_code == 204
    assert not Dataset.objects.filter(pk=prepared.poems.dataset_id).exists()

    assert client.delete(f"/api/v1/projects/{world.project.pk}/").status_code == 204
    assert not Project.objects.filter(pk=world.project.pk).exists()
    assert not ModelVersion.objects.exists() and not DatasetVersion.objects.exists()
