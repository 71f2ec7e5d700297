"""In a real browser, the training launch form follows the data: a classification project with a
split version opens with the classification kind, the version's real splits in the split selects
(refilled when another version is chosen), its newest tokenizer preselected and marked required
for random weights, LoRA settings hidden (and not submitted) until LoRA is chosen, and a note for a
version without text. The tokenizer form's name follows the algorithm."""

from __future__ import annotations

import pytest

from tests.e2e.test_data_stage import _login, _shot
from tests.frontend.test_forms_follow_data import _tokenizer, _version
from training.models import TrainingJob

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _options(page, selector: str) -> list[str]:
    return page.eval_on_selector(selector, "el => Array.from(el.options, (o) => o.value)")


def test_the_launch_form_follows_the_project_and_its_data(page, world) -> None:
    project = world.project  # a classification project
    assert project.task_type == "classification"
    split = _version(project, "tickets", splits=("train", "test"))
    with_dev = _version(project, "tickets", splits=("train", "validation"), number=2)
    no_text = _version(project, "codes", roles={"label": "label"})
    _tokenizer(project, split, "old-bpe")
    newest = _tokenizer(project, split, "new-bpe")

    _login(page, world.users["engineer"])
    page.goto(f"/projects/{project.pk}/train/new/")
    assert page.input_value("#id_kind") == "classification"
    # The newest version with splits, its splits as the choices, train and no eval by default.
    assert page.input_value("#id_train_version") == str(with_dev.pk)
    assert page.input_value("#id_train_split") == "train"
    assert page.input_value("#id_eval_split") == "validation"
    page.select_option("#id_train_version", str(split.pk))
    assert _options(page, "#id_train_split") == ["", "train", "test"]
    assert _options(page, "#id_eval_split") == ["", "train", "test"]
    assert page.input_value("#id_train_split") == "train"
    assert page.input_value("#id_eval_split") == ""  # no validation split here
    note = page.locator("[data-note-for=train_version]")
    assert not note.is_visible()
    page.select_option("#id_train_version", str(no_text.pk))
    assert note.is_visible() and "no text column" in note.inner_text()
    assert _options(page, "#id_train_split") == [""]  # the whole version
    page.select_option("#id_train_version", str(split.pk))

    # Random weights (the team has no base model) with the newest tokenizer, marked required.
    assert page.input_value("#id_base_source") == "random"
    assert page.input_value("#id_tokenizer") == str(newest.pk)
    tokenizer_label = page.locator("label[for=id_tokenizer]")
    assert "(required)" in tokenizer_label.inner_text()
    assert "(optional)" not in tokenizer_label.inner_text()
    page.select_option("#id_base_source", "hub")
    assert page.input_value("#id_tokenizer") == ""  # a pretrained model brings its own
    assert "(optional)" in tokenizer_label.inner_text()
    assert page.locator("#id_hub_model_id").is_visible()
    assert not page.locator("#id_family").is_visible()
    page.select_option("#id_base_source", "random")
    assert page.input_value("#id_tokenizer") == str(newest.pk)
    assert page.locator("#id_family").is_visible() and page.input_value("#id_family") == "bert"

    # The architecture follows the kind until the user picks one.
    page.select_option("#id_kind", "pretrain_clm")
    assert page.input_value("#id_family") == "gpt2"
    page.select_option("#id_kind", "classification")
    assert page.input_value("#id_family") == "bert"

    # LoRA settings only for LoRA: hidden and disabled (never validated by the browser) before.
    lora = page.locator("#lora-settings")
    assert not lora.is_visible() and page.is_disabled("#id_hp_lora_r")
    page.select_option("#id_method", "lora")
    assert lora.is_visible() and page.is_enabled("#id_hp_lora_r")
    page.fill("#id_hp_lora_r", "0")  # out of range, then LoRA is given up
    _shot(page, "launch-follows-data.png")
    page.select_option("#id_method", "full")
    assert not lora.is_visible()

    page.fill("#id_hp_max_steps", "3")
    page.click("button:has-text('Launch on the gpu queue')")
    page.wait_for_url("**/training-jobs/*/")
    job = TrainingJob.objects.get()
    assert (job.kind, job.train_version_id, job.train_split, job.eval_split) == (
        "classification",
        split.pk,
        "train",
        "",
    )
    assert job.tokenizer_id == newest.pk and job.hyperparameters["lora_r"] == 8


def test_the_tokenizer_name_follows_the_algorithm(page, world) -> None:
    version = _version(world.project, "tickets")
    _login(page, world.users["engineer"])
    page.goto(f"/versions/{version.pk}/")
    assert page.input_value("#id_name") == "tickets-v1-bpe"
    page.select_option("#id_algorithm", "wordpiece")
    assert page.input_value("#id_name") == "tickets-v1-wordpiece"
    page.fill("#id_name", "my-own")
    page.select_option("#id_algorithm", "unigram")
    assert page.input_value("#id_name") == "my-own"  # a name the user typed is kept


def test_upload_errors_show_next_to_their_fields(page, world, tmp_path) -> None:
    """The upload form posts by script; a refusal puts each error under its own field (opening
    the collapsed format options that hold it), and no dataset is created."""
    from playwright.sync_api import expect

    from datasets_app.models import Dataset

    sample = tmp_path / "tickets.csv"
    sample.write_text("text,label\nhello,a\nbye,b\n")
    _login(page, world.users["engineer"])
    page.goto(f"/projects/{world.project.pk}/data/")
    page.set_input_files("#id_file", str(sample))
    page.click("text=Format options")
    page.fill("#id_column_roles", "{bad")
    page.click("text=Format options")  # folded again, as a person may leave it
    page.click("form[data-upload-form] button:has-text('Upload')")
    error = page.locator("[data-upload-field-error=column_roles]")
    expect(error).to_contain_text("Not valid JSON")
    assert error.evaluate("el => el.closest('.field').querySelector('#id_column_roles') !== null")
    assert page.locator("form[data-upload-form] details").evaluate("el => el.open")
    assert page.locator("[data-upload-errors]").is_hidden()
    assert not Dataset.objects.exists()
