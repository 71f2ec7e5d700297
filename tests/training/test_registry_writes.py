"""System writes of the training runner: checkpoints and model versions are uploaded before any
transaction opens (no row stays locked while the weights are copied), then recorded in a
short transaction that checks each row (full_clean)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.db import connection

from llmhub import storage
from training import services
from training.models import Checkpoint, ModelVersion, RegisteredModel, TrainingJob

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def uploads(monkeypatch) -> list[bool]:
    """Whether a transaction was open at each directory upload (the real upload still runs)."""
    seen: list[bool] = []
    real = storage.store_directory

    def store_directory(local_dir, *, prefix):
        seen.append(connection.in_atomic_block)
        return real(local_dir, prefix=prefix)

    monkeypatch.setattr(storage, "store_directory", store_directory)
    return seen


def _model_dir(tmp_path):
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    (directory / "model.safetensors").write_bytes(b"\0" * 1024)
    return directory


def _job(world) -> TrainingJob:
    return TrainingJob.objects.create(
        project=world.project, name="bard", kind="pretrain_clm", created_by=world.users["engineer"]
    )


def test_model_versions_upload_before_the_transaction_and_number_in_order(
    world, tmp_path, uploads
) -> None:
    job = _job(world)
    first = services.model_version_register(
        job=job, model_dir=_model_dir(tmp_path), metrics={"train_loss": 1.0}, parameters=10
    )
    second = services.model_version_register(
        job=job, model_dir=tmp_path / "model", metrics={}, parameters=10
    )
    assert uploads == [False, False]
    assert (first.number, second.number) == (1, 2)
    assert first.files_prefix != second.files_prefix
    assert {"config.json", "model.safetensors"} == set(first.files)
    assert (
        storage.local_directory(first.files_prefix, first.files)
        .joinpath("model.safetensors")
        .stat()
        .st_size
        == 1024
    )
    assert first.architecture == "GPT2LMHeadModel" and first.size_bytes > 1024
    assert TrainingJob.objects.get(pk=job.pk).model_version_id == second.pk
    assert RegisteredModel.objects.get().name == "bard"


def test_a_refused_version_leaves_no_files_behind(world, tmp_path, uploads) -> None:
    from django.core.exceptions import ValidationError

    job = _job(world)
    # A job kind the registry does not know: full_clean refuses the version after the upload.
    TrainingJob.objects.filter(pk=job.pk).update(kind="alchemy")
    job.refresh_from_db()
    with pytest.raises(ValidationError, match="alchemy"):
        services.model_version_register(
            job=job, model_dir=_model_dir(tmp_path), metrics={}, parameters=1
        )
    assert not ModelVersion.objects.exists()
    assert not Checkpoint.objects.exists()  # the final checkpoint went with it
    assert uploads == [False]
    folder = Path(storage.default_storage.path(f"models/{world.project.pk}/job-{job.pk}"))
    assert [p for p in folder.rglob("*") if p.is_file()] == []


def test_checkpoints_upload_first_and_a_second_save_of_a_step_replaces_it(
    world, tmp_path, uploads
) -> None:
    job = _job(world)
    first = services.checkpoint_register(job=job, local_dir=_model_dir(tmp_path), step=5)
    again = services.checkpoint_register(job=job, local_dir=tmp_path / "model", step=5)
    assert uploads == [False, False]
    assert Checkpoint.objects.get().pk == first.pk == again.pk
    assert again.files_prefix != first.files_prefix
    # The replaced files are deleted once the new row is committed.
    assert not storage.default_storage.exists(f"{first.files_prefix}/model.safetensors")
    assert storage.default_storage.exists(f"{again.files_prefix}/model.safetensors")
