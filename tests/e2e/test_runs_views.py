"""In the browser: the runs table sorts and groups, overlays two runs' curves, a run is cloned
into a prefilled launch form, and a model version page takes tags and a description, shows its
stage history and downloads its files."""

from __future__ import annotations

import io
import zipfile
from datetime import timedelta

import pytest
from django.utils import timezone

from llmhub import storage
from tests.e2e.test_data_stage import _login
from training import services
from training.metrics_store import write_points
from training.models import ModelVersion, RegisteredModel, TrainingJob

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _jobs(project) -> list[TrainingJob]:
    now = timezone.now()
    jobs = []
    for index, (lr, loss) in enumerate([(0.001, 0.9), (0.003, 0.5), (0.001, 0.7), (0.01, 0.6)]):
        job = TrainingJob.objects.create(
            project=project,
            name=f"run-{index}",
            kind="classification",
            status="succeeded",
            hyperparameters={"learning_rate": lr, "batch_size": 8, "max_steps": 40 + index},
            final_metrics={"eval_loss": loss},
            started_at=now - timedelta(minutes=3),
            finished_at=now,
            created_at=now - timedelta(minutes=10 - index),
        )
        write_points(job.pk, [(s, "loss", 2.0 - s * loss / 10, None) for s in range(10)])
        jobs.append(job)
    return jobs


def test_the_runs_table_sorts_groups_and_overlays_two_runs(page, world) -> None:
    _jobs(world.project)
    _login(page, world.users["engineer"])
    page.goto(f"/projects/{world.project.pk}/train/")
    page.click("#runs-table-link")
    page.wait_for_url("**/train/runs/")
    names = "#runs-table td[data-column=name] strong"
    assert page.locator(names).all_inner_texts() == ["run-3", "run-2", "run-1", "run-0"]
    # Sort by a metric: click its header (ascending), then again (descending).
    page.click("#runs-table th[data-column='metric:eval_loss'] a")
    page.wait_for_url("**sort=metric*")
    assert page.locator(names).all_inner_texts() == ["run-1", "run-3", "run-2", "run-0"]
    page.click("#runs-table th[data-column='metric:eval_loss'] a")
    page.wait_for_url("**sort=-metric*")
    assert page.locator(names).all_inner_texts()[0] == "run-0"
    # Group by the learning rate: one group per value, with its count and best loss.
    page.select_option("#group-by", "learning_rate")
    page.select_option("#best-metric", "eval_loss")
    page.click("#runs-filter button[type=submit]")
    page.wait_for_url("**group=learning_rate*")
    groups = page.locator("tbody.run-group")
    assert groups.count() == 3
    first = page.locator("tbody.run-group[data-group='0.001'] .group-header")
    assert "2 runs" in first.inner_text() and "0.7" in first.inner_text()
    # Overlay two runs' loss curves.
    page.check("tr:has-text('run-0') input[name=overlay]")
    page.check("tr:has-text('run-1') input[name=overlay]")
    page.click("#overlay-selected")
    page.wait_for_selector("#overlay-chart .main-svg")
    page.wait_for_function(
        "() => document.querySelectorAll('#overlay-chart .scatterlayer .trace').length === 2"
    )
    assert page.evaluate("document.getElementById('overlay-chart').data.length") == 2
    legend = page.locator("#overlay-chart .legendtext").all_text_contents()
    assert any("run-0" in t for t in legend) and any("run-1" in t for t in legend)


def test_clone_opens_a_prefilled_launch_form(page, world) -> None:
    job = _jobs(world.project)[1]
    TrainingJob.objects.filter(pk=job.pk).update(eval_split="test", train_split="train")
    _login(page, world.users["engineer"])
    page.goto(f"/training-jobs/{job.pk}/")
    page.click("#clone-run")
    page.wait_for_url(f"**/train/new/?clone={job.pk}")
    assert page.input_value("#id_name") == "run-1-clone"
    assert page.input_value("#id_kind") == "classification"
    assert float(page.input_value("#id_hp_learning_rate")) == 0.003
    assert page.input_value("#id_hp_max_steps") == "41"


def test_the_model_version_page_takes_tags_shows_history_and_downloads(
    page, world, tmp_path
) -> None:
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"]}')
    (directory / "model.safetensors").write_bytes(b"\x01" * 4096)
    prefix = storage.unique_prefix("models", world.project.pk)
    files = storage.store_directory(directory, prefix=prefix)
    registered = RegisteredModel.objects.create(project=world.project, name="triage")
    version = ModelVersion.objects.create(
        registered_model=registered,
        number=1,
        task_kind="classification",
        files_prefix=prefix,
        files=files,
    )
    manager = world.users["manager"]
    services.model_version_set_stage(
        actor=manager, version=version, stage="staging", reason="first one to try"
    )
    _login(page, manager)
    page.goto(f"/model-versions/{version.pk}/")
    page.click("#version-edit summary")
    page.fill("#id_tags", "baseline, small-data")
    page.fill("#id_description", "Trained on the March tickets.")
    page.click("#version-edit button[type=submit]")
    page.wait_for_selector("#version-tags .tag:has-text('small-data')")
    assert page.locator("#version-tags .tag").all_inner_texts() == ["baseline", "small-data"]
    assert "Trained on the March tickets." in page.inner_text("#version-description")
    history = page.inner_text("#stage-history")
    assert "staging" in history and "first one to try" in history
    with page.expect_download() as info:
        page.click("#download-model")
    download = info.value
    assert download.suggested_filename == "triage-v1.zip"
    with zipfile.ZipFile(io.BytesIO(open(download.path(), "rb").read())) as archive:
        assert sorted(archive.namelist()) == [
            "triage-v1/config.json",
            "triage-v1/model.safetensors",
        ]
        assert archive.read("triage-v1/model.safetensors") == b"\x01" * 4096
