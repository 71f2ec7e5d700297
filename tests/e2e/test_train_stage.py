"""An engineer pre-trains a tiny model from random weights on Shakespeare, watches the loss
fall live, fine-tunes a classifier on poems, and finds both in the registry with lineage."""

from __future__ import annotations

from pathlib import Path

import pytest

from datasets_app.models import DataJob, DatasetVersion, Tokenizer
from llmhub.jobs import wait_until
from tests.e2e.test_data_stage import _login, _shot
from training.models import ModelVersion, TrainingJob

pytestmark = [
    pytest.mark.browser,
    pytest.mark.worker,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"


def _upload(page, project_id: int, name: str, path: Path, txt_mode: str | None = None) -> None:
    page.goto(f"/projects/{project_id}/data/")
    page.fill("#id_name", name)
    page.set_input_files("#id_file", str(path))
    if txt_mode:
        page.click("text=Format options")
        page.select_option("#id_txt_mode", txt_mode)
    page.click("form[data-upload-form] button:has-text('Upload')")
    page.wait_for_url("**/datasets/*/")
    page.wait_for_selector("#versions a:has-text('v1')", timeout=60_000)
    # The profile job follows the ingest: let it finish, as a person would before going on.
    assert wait_until(
        lambda: not DataJob.objects.filter(status__in=("queued", "running")).exists(), timeout=60
    )


def _launch(
    page, project_id: int, fields: dict[str, str], selects: dict[str, str], sweep_space: str = ""
) -> None:
    page.goto(f"/projects/{project_id}/train/new/")
    for name, value in selects.items():
        page.select_option(f"#id_{name}", value)
    for name, value in fields.items():
        if name in ("train_split", "eval_split"):  # selects of the chosen version's splits
            page.select_option(f"#id_{name}", value)
        else:
            page.fill(f"#id_{name}", value)
    if sweep_space:
        page.click("#sweep summary")
        page.fill("#id_sweep_space", sweep_space)
        page.fill("#id_sweep_metric", "train_loss")
    page.wait_for_function(
        "() => document.querySelector('[data-estimate=parameters]').textContent !== '—'"
    )
    _shot(page, f"launch-{fields['name']}.png")
    page.click("button:has-text('Launch on the gpu queue')")
    page.wait_for_url("**/sweeps/*/" if sweep_space else "**/training-jobs/*/")


def test_engineer_trains_two_models_and_finds_them_in_the_registry(
    page, world, celery_worker
) -> None:
    project = world.project.pk
    _login(page, world.users["engineer"])
    _upload(page, project, "shakespeare", FIXTURES / "tinyshakespeare_sample.txt", "chunks")
    corpus = DatasetVersion.objects.get(dataset__name="shakespeare", number=1)
    page.goto(f"/versions/{corpus.pk}/")
    page.fill("#id_name", "bard-bpe")
    page.fill("#id_vocab_size", "400")
    page.click("button:has-text('Train')")
    assert wait_until(lambda: Tokenizer.objects.filter(name="bard-bpe").exists(), timeout=60)

    tokenizer = Tokenizer.objects.get(name="bard-bpe")
    pretraining = {
        "kind": "pretrain_clm",
        "base_source": "random",
        "family": "gpt2",
        "size": "tiny",
        "tokenizer": str(tokenizer.pk),
        "train_version": str(corpus.pk),
    }
    _launch(
        page,
        project,
        {
            "name": "bard-tiny",
            "train_split": "",
            "eval_split": "",
            "hp_max_steps": "300",
            "hp_batch_size": "8",
            "hp_max_seq_length": "32",
            "hp_learning_rate": "0.003",
        },
        pretraining,
    )
    # The loss chart fills while the job runs, without reloading the page.
    page.wait_for_function(
        "() => { const g = document.getElementById('chart-loss');"
        " return g && g.data && g.data.length && g.data[0].x.length >= 20 }",
        timeout=60_000,
    )
    points = page.evaluate("() => document.getElementById('chart-loss').data[0].y")
    assert sum(points[-5:]) / 5 < sum(points[:5]) / 5
    _shot(page, "training.png")
    job = TrainingJob.objects.get(name="bard-tiny")
    assert wait_until(
        lambda: TrainingJob.objects.get(pk=job.pk).status == "succeeded", timeout=120
    ), celery_worker.log()

    _upload(page, project, "poems", FIXTURES / "poem_sample.csv")
    poems = DatasetVersion.objects.get(dataset__name="poems", number=1)
    page.goto(f"/versions/{poems.pk}/")
    # The sample has a `split` column, which the form proposes; this split is by ratios.
    page.select_option("#id_by_column", "")
    page.fill("#id_train", "0.8")
    page.fill("#id_validation", "0")
    page.fill("#id_test", "0.2")
    page.select_option("#id_stratify_column", "label")
    page.click("button:has-text('Split')")
    assert wait_until(
        lambda: DatasetVersion.objects.filter(dataset__name="poems", recipe__kind="split").exists(),
        timeout=60,
    )
    split = DatasetVersion.objects.get(dataset__name="poems", recipe__kind="split")
    _launch(
        page,
        project,
        {
            "name": "poem-sentiment",
            "train_split": "train",
            "eval_split": "test",
            "hp_max_steps": "40",
            "hp_max_seq_length": "32",
            "hp_learning_rate": "0.003",
        },
        {
            "kind": "classification",
            "base_source": "random",
            "family": "bert",
            "size": "tiny",
            "tokenizer": str(tokenizer.pk),
            "train_version": str(split.pk),
        },
    )
    assert wait_until(lambda: ModelVersion.objects.count() == 2, timeout=120), celery_worker.log()

    page.goto(f"/projects/{project}/train/")
    _shot(page, "train-tab.png")
    registry = page.inner_text("#registry")
    assert "pretrain_clm" in registry and "classification" in registry
    classifier = ModelVersion.objects.get(task_kind="classification")
    page.click(f"#registry a[href='/model-versions/{classifier.pk}/']")
    lineage = page.inner_text("#lineage")
    assert "poems v1" in lineage and "poems v2" in lineage and "poem-sentiment" in lineage
    _shot(page, "model.png")

    # A learning-rate sweep from the same form: two trials, ranked on the sweep page.
    _launch(
        page,
        project,
        {
            "name": "bard-lr",
            "train_split": "",
            "eval_split": "",
            "hp_max_steps": "15",
            "hp_max_seq_length": "32",
        },
        pretraining,
        sweep_space="learning_rate: 0.0001, 0.003",
    )
    assert "2 trials queued" in page.inner_text(".messages .success")
    assert wait_until(
        lambda: TrainingJob.objects.filter(sweep__name="bard-lr", status="succeeded").count() == 2,
        timeout=120,
    ), celery_worker.log()
    page.reload()
    page.wait_for_selector("[data-figure=sweep-figure] .main-svg")
    best = TrainingJob.objects.get(name="bard-lr #2")  # the faster learner wins in 15 steps
    assert f"best: {best.name}" in page.inner_text("main")
    _shot(page, "sweep.png")
