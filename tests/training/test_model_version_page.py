"""The model version page and its API: tags and a description (one service, validated there),
the stage history, evaluations and goal status measured on the version, and a zip of its files
streamed from storage; all scoped (another team gets 404, a viewer may look but not edit)."""

from __future__ import annotations

import io
import zipfile

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import Client
from django.utils import timezone
from django.utils.html import escape

from datasets_app.models import Dataset, DatasetVersion
from evaluation.models import EvaluationRun
from llmhub import storage
from projects.models import AuditEvent
from tests.factories import GoalFactory
from training import services
from training.models import ModelVersion, RegisteredModel

pytestmark = pytest.mark.django_db

FILES = {
    "config.json": b'{"architectures": ["BertForSequenceClassification"]}',
    "model.safetensors": bytes(range(256)) * 64,
    "tokenizer/vocab.txt": b"[PAD]\n[UNK]\nhello\n",
}


def _version(project, tmp_path, *, number: int = 1) -> ModelVersion:
    directory = tmp_path / f"model-{number}"
    for name, content in FILES.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(content)
    prefix = storage.unique_prefix("models", project.pk)
    files = storage.store_directory(directory, prefix=prefix)
    registered, _ = RegisteredModel.objects.get_or_create(project=project, name="triage model")
    return ModelVersion.objects.create(
        registered_model=registered,
        number=number,
        task_kind="classification",
        files_prefix=prefix,
        files=files,
    )


@pytest.fixture
def version(world, tmp_path) -> ModelVersion:
    return _version(world.project, tmp_path)


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_service_sets_tags_and_description_and_records_the_change(world, version) -> None:
    manager = world.users["manager"]
    services.model_version_update(
        actor=manager, version=version, description="  First good one. ", tags=[" baseline", "v1"]
    )
    version.refresh_from_db()
    assert version.tags == ["baseline", "v1"] and version.description == "First good one."
    event = AuditEvent.objects.get(verb="model_version.updated")
    assert event.changes["tags"] == [[], ["baseline", "v1"]]
    # None leaves a field as it is.
    services.model_version_update(actor=manager, version=version, tags=["prod-candidate"])
    version.refresh_from_db()
    assert version.tags == ["prod-candidate"] and version.description == "First good one."


def test_bad_tags_are_refused_all_at_once_and_nothing_is_written(world, version) -> None:
    manager = world.users["manager"]
    with pytest.raises(ValidationError) as caught:
        services.model_version_update(
            actor=manager,
            version=version,
            description="changed",
            tags=["ok", "OK", "", "x" * 41, "a,b", 3],
        )
    problems = caught.value.message_dict["tags"]
    assert len(problems) == 5
    assert any("twice" in p for p in problems) and any("40 characters" in p for p in problems)
    with pytest.raises(ValidationError, match="At most 20 tags"):
        services.model_version_update(
            actor=manager, version=version, tags=[f"t{i}" for i in range(21)]
        )
    with pytest.raises(ValidationError, match="list"):
        services.model_version_update(actor=manager, version=version, tags="baseline")
    version.refresh_from_db()
    assert version.tags == [] and version.description == ""


def test_a_viewer_may_not_edit_and_another_team_gets_404(world, version) -> None:
    with pytest.raises(PermissionDenied, match="viewer"):
        services.model_version_update(actor=world.users["viewer"], version=version, tags=["x"])
    viewer = _client(world.users["viewer"])
    page = viewer.get(f"/model-versions/{version.pk}/")
    assert page.status_code == 200 and 'id="version-edit"' not in page.content.decode()
    refused = viewer.post(f"/model-versions/{version.pk}/", {"tags": "x", "description": ""})
    assert refused.status_code == 403
    outsider = _client(world.outsider)
    assert outsider.get(f"/model-versions/{version.pk}/").status_code == 404
    assert outsider.get(f"/model-versions/{version.pk}/download/").status_code == 404
    version.refresh_from_db()
    assert version.tags == []


def test_the_page_edits_tags_and_shows_stage_history_goals_and_evaluations(world, version) -> None:
    manager = world.users["manager"]
    services.model_version_set_stage(
        actor=manager, version=version, stage="staging", reason="beats the baseline"
    )
    goal = GoalFactory(project=world.project, metric="accuracy", target=0.8, split="test")
    dataset = Dataset.objects.create(project=world.project, name="tickets")
    data = DatasetVersion.objects.create(
        dataset=dataset,
        number=1,
        file="x.parquet",
        content_sha256="0" * 64,
        row_count=10,
        size_bytes=1,
        schema=[{"name": "text", "type": "string"}],
    )
    run = EvaluationRun.objects.create(
        project=world.project,
        model_version=version,
        dataset_version=data,
        split="test",
        task_type="classification",
        metrics=["accuracy"],
        status="succeeded",
        finished_at=timezone.now(),
        results={"accuracy": {"value": 0.84, "ci_low": 0.8, "ci_high": 0.88, "n": 10}},
    )
    client = _client(manager)
    # All errors at once, next to the field; nothing saved.
    response = client.post(
        f"/model-versions/{version.pk}/", {"tags": "a, A, " + "y" * 50, "description": "d"}
    )
    assert response.status_code == 200
    errors = response.context["edit_form"].errors["tags"]
    assert len(errors) == 2
    version.refresh_from_db()
    assert version.tags == [] and version.description == ""
    response = client.post(
        f"/model-versions/{version.pk}/",
        {"tags": "baseline, small-data", "description": "Trained on the March tickets."},
    )
    assert response.status_code == 302 and response["Location"] == f"/model-versions/{version.pk}/"
    version.refresh_from_db()
    assert version.tags == ["baseline", "small-data"]
    html = client.get(f"/model-versions/{version.pk}/").content.decode()
    assert '<span class="tag">baseline</span>' in html and "Trained on the March tickets." in html
    history = html[html.index('id="stage-history"') :]
    assert "candidate" in history and "staging" in history and "beats the baseline" in history
    goals = html[html.index('id="version-goals"') :]
    assert escape(str(goal)) in goals and "0.84" in goals and "met</span>" in goals
    assert f'href="/evaluation-runs/{run.pk}/"' in html[html.index('id="version-evaluations"') :]


def _zip_contents(body: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.testzip() is None
        return {name: archive.read(name) for name in archive.namelist()}


def test_the_download_is_a_zip_of_the_model_files(world, version) -> None:
    response = _client(world.users["viewer"]).get(f"/model-versions/{version.pk}/download/")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert 'filename="triage-model-v1.zip"' in response["Content-Disposition"]
    contents = _zip_contents(b"".join(response.streaming_content))
    assert contents == {f"triage-model-v1/{name}": data for name, data in FILES.items()}


def test_the_api_patches_tags_and_downloads(world, version, api) -> None:
    url = f"/api/v1/model-versions/{version.pk}/"
    manager = api(world.users["manager"])
    response = manager.patch(url, {"tags": ["baseline"], "description": "ok"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["tags"] == ["baseline"] and response.json()["description"] == "ok"
    bad = manager.patch(url, {"tags": ["a", "a"]}, format="json")
    assert bad.status_code == 400 and "tags" in bad.json()["error"]["fields"]
    assert manager.patch(url, {"stage": "production"}, format="json").status_code == 400
    assert api(world.users["viewer"]).patch(url, {"tags": []}, format="json").status_code == 403
    assert api(world.outsider).patch(url, {"tags": []}, format="json").status_code == 404
    download = api(world.users["viewer"]).get(url + "download/")
    assert download.status_code == 200
    contents = _zip_contents(b"".join(download.streaming_content))
    assert contents["triage-model-v1/model.safetensors"] == FILES["model.safetensors"]
    assert api(world.outsider).get(url + "download/").status_code == 404
    version.refresh_from_db()
    assert version.tags == ["baseline"]
