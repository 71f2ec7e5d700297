"""Drift to retraining: an alert's window of prompts becomes a dataset version (labels from
the thumbs, columns and splits of the serving version's own training data, lineage to the
endpoint and the alert), once; the launch form is pre-filled to fine-tune the serving version on
it, and the training service accepts what it pre-fills."""

from __future__ import annotations

import time
from datetime import timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.test import Client
from django.utils import timezone

from datasets_app.models import DatasetVersion
from llmhub import storage
from projects.models import AuditEvent
from serving import services
from serving.engine.types import FeedbackRecord
from serving.models import Endpoint
from serving.monitoring import retrain
from serving.monitoring.models import Alert, DriftJob, MonitorSettings
from tests.datasets_app.tables import make_version
from tests.serving.builders import request_record, stored_version
from training import services as training_services
from training.models import ModelVersion, TrainingJob

pytestmark = pytest.mark.django_db


@pytest.fixture
def manager(world):
    return world.users["manager"]


@pytest.fixture
def trained(world, tmp_path):
    """A classifier version made by a job on a version with columns ``review``/``sentiment``
    and train/validation splits."""
    table = pa.table(
        {"review": [f"old review {i}" for i in range(20)], "sentiment": ["pos", "neg"] * 10}
    )
    data = make_version(
        world, table, name="reviews", column_roles={"text": "review", "label": "sentiment"}
    )
    version = stored_version(world.project, tmp_path, kind="classification", name="triage")
    TrainingJob.objects.create(
        project=world.project,
        name="triage-v1",
        kind="classification",
        base_source="random",
        model_spec={"family": "bert", "size": "tiny"},
        train_version=data,
        train_split="train",
        eval_split="validation",
        column_roles={"text": "review", "label": "sentiment"},
        hyperparameters={"learning_rate": 5e-4, "batch_size": 8, "num_epochs": 1.0},
        status="succeeded",
        model_version=version,
    )
    return version


@pytest.fixture
def endpoint(world, manager, trained) -> Endpoint:
    endpoint = services.endpoint_create(actor=manager, project=world.project, name="triage")
    Endpoint.objects.filter(pk=endpoint.pk).update(version=trained)
    endpoint.refresh_from_db()
    return endpoint


def _log(endpoint, prompts_labels, *, at, route="predict", status=200, version=None):
    records = [
        request_record(
            endpoint,
            response_id=f"r-{i}-{at.timestamp():.0f}-{status}",
            created_at=(at + timedelta(seconds=i)).timestamp(),
            route=route,
            status_code=status,
            version_id=(version or endpoint.version).pk,
            prompt_text=prompt,
            completion_text=label,
        )
        for i, (prompt, label) in enumerate(prompts_labels)
    ]
    services.request_logs_ingest(records=records)
    return [r.response_id for r in records]


def _thumb(endpoint, response_id: str, score: int) -> None:
    services.request_logs_ingest(
        records=[
            FeedbackRecord(
                response_id=response_id,
                endpoint_id=endpoint.pk,
                key_id=None,
                score=score,
                created_at=time.time(),
            )
        ]
    )


def _alert(endpoint, *, drift_job=None, last_seen=None) -> Alert:
    return Alert.objects.create(
        endpoint=endpoint,
        version=endpoint.version,
        kind="drift",
        statistic="classifier_auc",
        value=0.9,
        threshold=0.55,
        message="AUC 0.9 >= 0.55",
        drift_job=drift_job,
        last_seen_at=last_seen or timezone.now(),
    )


def _table(version: DatasetVersion) -> pa.Table:
    return pq.read_table(storage.local_copy(version.file))


@pytest.fixture
def window(endpoint):
    """Six prompts in the last hours (one predict call of two inputs), thumbs on three, and
    requests that are not in the window: too old, refused, another version's."""
    now = timezone.now()
    ids = _log(
        endpoint,
        [
            ("my card was charged twice", "neg"),
            ("love the new app", "pos"),
            ("refund please", "neg"),
            ("fast delivery", "pos"),
            ("first input\nsecond input", "pos\nneg"),
        ],
        at=now - timedelta(hours=2),
    )
    _thumb(endpoint, ids[0], 1)
    _thumb(endpoint, ids[1], -1)
    _thumb(endpoint, ids[4], 1)
    # Two people disagree on ids[3]: no label.
    _thumb(endpoint, ids[3], 1)
    _thumb(endpoint, ids[3], -1)
    _log(endpoint, [("ancient prompt", "pos")], at=now - timedelta(days=3))
    _log(endpoint, [("refused prompt", None)], at=now - timedelta(hours=1), status=429)
    return ids


def test_the_window_becomes_a_version_with_labels_from_the_thumbs(world, manager, endpoint, window):
    alert = _alert(endpoint)
    version = retrain.retrain_propose(actor=manager, alert=alert)

    table = _table(version).to_pylist()
    assert [row["review"] for row in table] == [
        "my card was charged twice",
        "love the new app",
        "refund please",
        "fast delivery",
        "first input",
        "second input",
    ]
    # Thumbs up keeps the predicted label; thumbs down, a tie or no thumbs leave it empty.
    assert [row["sentiment"] for row in table] == ["neg", None, None, None, "pos", "neg"]
    assert [row["feedback"] for row in table] == ["up", "down", "", "", "up", "up"]
    assert version.column_roles == {"text": "review", "label": "sentiment"}
    assert version.dataset.project_id == world.project.pk

    recipe = version.recipe
    assert recipe["kind"] == "monitor_window"
    assert (recipe["endpoint"], recipe["alert"], recipe["drift_job"]) == (
        endpoint.pk,
        alert.pk,
        None,
    )
    assert (recipe["rows"], recipe["labelled_rows"]) == (6, 3)
    start = timezone.datetime.fromisoformat(recipe["window_start"])
    end = timezone.datetime.fromisoformat(recipe["window_end"])
    assert end == alert.last_seen_at and end - start == timedelta(hours=24)

    # The splits hold the confirmed rows only, under the current job's names; three are too
    # few to part, so they are all the train split.
    assert {s.name: s.row_count for s in version.splits.all()} == {"train": 3}
    assert (recipe["train_split"], recipe["eval_split"]) == ("train", "")
    assert version.warnings == []

    alert.refresh_from_db()
    assert alert.retrain_dataset_version_id == version.pk
    event = AuditEvent.objects.get(verb="alert.retrain_proposed")
    assert event.actor == manager and event.project_id == world.project.pk


def test_a_drift_jobs_window_and_the_window_limit(world, manager, endpoint, window):
    now = timezone.now()
    job = DriftJob.objects.create(
        project=world.project,
        endpoint=endpoint,
        version=endpoint.version,
        window_start=now - timedelta(days=4),
        window_end=now - timedelta(days=2),
    )
    alert = _alert(endpoint, drift_job=job)
    version = retrain.retrain_propose(actor=manager, alert=alert)
    assert [row["review"] for row in _table(version).to_pylist()] == ["ancient prompt"]
    assert version.recipe["drift_job"] == job.pk
    # No thumbs in that window: no split to train on, and the version says to label first.
    assert not version.splits.exists()
    assert version.recipe["train_split"] == ""
    assert "label the prompts" in version.warnings[0]
    client = Client()
    client.force_login(world.users["engineer"])
    page = client.get(retrain.retrain_launch_url(alert)).content.decode()
    assert "label the prompts" in page

    # The newest window_requests prompts are kept, oldest first.
    MonitorSettings.objects.create(endpoint=endpoint, window_requests=10, window_hours=48)
    _log(endpoint, [(f"late {i}", "pos") for i in range(12)], at=now - timedelta(minutes=30))
    other = Alert.objects.create(
        endpoint=endpoint, kind="error_rate", statistic="error_rate", value=1, threshold=0
    )
    rows = _table(retrain.retrain_propose(actor=manager, alert=other)).to_pylist()
    assert [row["review"] for row in rows] == [f"late {i}" for i in range(2, 12)]


def test_a_second_call_returns_the_same_version(manager, endpoint, window):
    alert = _alert(endpoint)
    first = retrain.retrain_propose(actor=manager, alert=alert)
    again = retrain.retrain_propose(actor=manager, alert=Alert.objects.get(pk=alert.pk))
    assert again.pk == first.pk
    assert DatasetVersion.objects.filter(recipe__kind="monitor_window").count() == 1
    assert AuditEvent.objects.filter(verb="alert.retrain_proposed").count() == 1
    # The next alert's version goes to the same dataset of monitor windows.
    other = Alert.objects.create(
        endpoint=endpoint, kind="error_rate", statistic="error_rate", value=1, threshold=0
    )
    assert retrain.retrain_propose(actor=manager, alert=other).dataset_id == first.dataset_id


def test_refusals_write_nothing(world, manager, endpoint):
    alert = _alert(endpoint)
    before = DatasetVersion.objects.count()
    with pytest.raises(ValidationError, match="No answered request"):
        retrain.retrain_propose(actor=manager, alert=alert)
    Endpoint.objects.filter(pk=endpoint.pk).update(store_text=False)
    alert = Alert.objects.select_related("endpoint").get(pk=alert.pk)
    with pytest.raises(ValidationError, match="does not store prompt text"):
        retrain.retrain_propose(actor=manager, alert=alert)
    assert DatasetVersion.objects.count() == before
    assert Alert.objects.get(pk=alert.pk).retrain_dataset_version_id is None
    assert not AuditEvent.objects.filter(verb="alert.retrain_proposed").exists()


def test_roles(world, endpoint, window):
    alert = _alert(endpoint)
    with pytest.raises(PermissionDenied):
        retrain.retrain_propose(actor=world.users["viewer"], alert=alert)
    with pytest.raises(Http404):
        retrain.retrain_propose(actor=world.outsider, alert=alert)
    assert retrain.retrain_propose(actor=world.users["engineer"], alert=alert)


def test_a_generators_window_keeps_confirmed_completions(world, manager, tmp_path):
    table = pa.table({"question": ["q1", "q2"], "answer": ["a1", "a2"]})
    data = make_version(world, table, column_roles={"prompt": "question", "target": "answer"})
    version = stored_version(world.project, tmp_path, kind="dpo", name="bot")
    TrainingJob.objects.create(
        project=world.project,
        name="bot-dpo",
        kind="dpo",
        base_source="model_version",
        train_version=data,
        column_roles={"prompt": "question", "target": "answer"},
        status="succeeded",
        model_version=version,
    )
    endpoint = services.endpoint_create(actor=manager, project=world.project, name="bot")
    Endpoint.objects.filter(pk=endpoint.pk).update(version=version)
    endpoint.refresh_from_db()
    ids = _log(
        endpoint,
        [("hi", " hello"), ("bye", " ciao")],
        at=timezone.now() - timedelta(hours=1),
        route="completions",
    )
    _thumb(endpoint, ids[1], 1)
    messages = '[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "yo"}]'
    [chat] = _log(
        endpoint, [(messages, "hey")], at=timezone.now() - timedelta(minutes=30), route="chat"
    )
    new = retrain.retrain_propose(actor=manager, alert=_alert(endpoint))
    assert _table(new).to_pylist() == [
        {"question": "hi", "answer": None, "response_id": ids[0], "feedback": ""},
        {"question": "bye", "answer": " ciao", "response_id": ids[1], "feedback": "up"},
        {
            "question": "System: Be brief.\nUser: yo\nAssistant:",
            "answer": None,
            "response_id": chat,
            "feedback": "",
        },
    ]
    assert new.column_roles == {"prompt": "question", "target": "answer"}
    # The job trained on the whole version; the confirmed rows are the train split.
    assert {s.name: s.row_count for s in new.splits.all()} == {"train": 1}
    # Thumbs give no preference pairs: the DPO version is continued with SFT.
    assert retrain.launch_values(Alert.objects.get(retrain_dataset_version=new))["kind"] == (
        "sft_causal"
    )


def _confirmed(endpoint, count: int) -> None:
    """``count`` more predictions in the window, each confirmed by a thumbs up."""
    at = timezone.now() - timedelta(hours=3)
    labels = [("pos", "neg")[i % 2] for i in range(count)]
    ids = _log(endpoint, [(f"confirmed {i}", label) for i, label in enumerate(labels)], at=at)
    for response_id in ids:
        _thumb(endpoint, response_id, 1)


def test_enough_confirmed_rows_give_a_stratified_eval_split(manager, endpoint, window):
    _confirmed(endpoint, 20)
    version = retrain.retrain_propose(actor=manager, alert=_alert(endpoint))
    splits = {s.name: s for s in version.splits.all()}
    assert {n: s.row_count for n, s in splits.items()} == {"train": 21, "validation": 2}
    for split in splits.values():
        labels = pq.read_table(storage.local_copy(split.file))["sentiment"].to_pylist()
        assert None not in labels and set(labels) == {"pos", "neg"}


def test_the_launch_page_is_prefilled_and_the_service_accepts_it(
    world, manager, endpoint, window, trained
):
    _confirmed(endpoint, 20)
    alert = _alert(endpoint)
    new = retrain.retrain_propose(actor=manager, alert=alert)
    assert retrain.retrain_launch_url(alert) == (
        f"/projects/{world.project.pk}/train/new/?retrain={alert.pk}"
    )
    client = Client()
    client.force_login(world.users["engineer"])
    response = client.get(retrain.retrain_launch_url(alert))
    assert response.status_code == 200
    form = response.context["form"]
    assert form["base_source"].value() == "model_version"
    assert form["base_model_version"].value() == str(trained.pk)
    assert form["train_version"].value() == str(new.pk)
    assert form["train_split"].value() == "train"
    assert form["eval_split"].value() == "validation"
    assert form["kind"].value() == "classification"
    # The random-weights rate of the first job becomes the fine-tuning default.
    assert form["hp_learning_rate"].value() == 5e-5
    assert form["hp_batch_size"].value() == 8
    assert f'value="{new.pk}" selected' in response.content.decode()

    values = retrain.launch_values(alert)
    job = training_services.training_job_launch(
        actor=world.users["engineer"],
        project=world.project,
        name=values["name"],
        kind=values["kind"],
        method=values["method"],
        base_source=values["base_source"],
        base_model_version=ModelVersion.objects.get(pk=values["base_model_version"]),
        train_version=DatasetVersion.objects.get(pk=values["train_version"]),
        train_split=values["train_split"],
        eval_split=values["eval_split"],
        hyperparameters=values["hyperparameters"],
    )
    assert job.status == "queued"
    assert (job.base_model_version_id, job.train_version_id) == (trained.pk, new.pk)
    assert job.column_roles == {"text": "review", "label": "sentiment"}


def test_the_launch_page_refuses_what_it_may_not_prefill(world, manager, endpoint, window):
    alert = _alert(endpoint)
    client = Client()
    client.force_login(world.users["engineer"])
    url = f"/projects/{world.project.pk}/train/new/"
    assert client.get(url, {"retrain": alert.pk}).status_code == 404  # not proposed yet
    retrain.retrain_propose(actor=manager, alert=alert)
    assert client.get(url, {"retrain": alert.pk}).status_code == 200
    assert client.get(url, {"retrain": "x1"}).status_code == 404
    other = f"/projects/{world.other_project.pk}/train/new/"
    outsider = Client()
    outsider.force_login(world.outsider)
    assert outsider.get(other, {"retrain": alert.pk}).status_code == 404


def test_the_rest_action_proposes_once_and_its_values_launch_a_job(
    world, api, endpoint, window, trained
):
    _confirmed(endpoint, 20)
    alert = _alert(endpoint)
    url = f"/api/v1/alerts/{alert.pk}/retrain/"
    engineer = api(world.users["engineer"])
    response = engineer.post(url, {}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    version = DatasetVersion.objects.get(pk=body["dataset_version"])
    assert version.recipe["alert"] == alert.pk
    assert body["launch_url"] == retrain.retrain_launch_url(alert)
    values = body["training_job"]
    assert values["base_source"] == "model_version"
    assert (values["base_model_version"], values["train_version"]) == (trained.pk, version.pk)
    assert (values["train_split"], values["eval_split"]) == ("train", "validation")
    assert engineer.post(url, {}, format="json").json()["dataset_version"] == version.pk

    launched = engineer.post("/api/v1/training-jobs/", values, format="json")
    assert launched.status_code == 201, launched.content
    job = TrainingJob.objects.get(pk=launched.json()["id"])
    assert (job.base_model_version_id, job.train_version_id) == (trained.pk, version.pk)


def test_the_rest_action_refuses_viewers_outsiders_and_empty_windows(world, api, endpoint):
    alert = _alert(endpoint)
    url = f"/api/v1/alerts/{alert.pk}/retrain/"
    assert api(world.users["viewer"]).post(url).status_code == 403
    assert api(world.outsider).post(url).status_code == 404
    empty = api(world.users["manager"]).post(url)
    assert empty.status_code == 400
    assert "No answered request" in empty.json()["error"]["message"]
    assert Alert.objects.get(pk=alert.pk).retrain_dataset_version_id is None


@pytest.mark.slow
def test_a_real_classifier_is_fine_tuned_on_its_window(world, api) -> None:
    """The whole loop with real training: a tiny classifier trained on poems, served, its
    predictions on new verses confirmed by thumbs up; Retrain's values launch a job that
    fine-tunes that version on the window and registers the next version with its lineage."""
    import csv

    from tests.training.conftest import FIXTURES, TINY, prepare
    from tests.training.test_training_api import run_training

    prepared = prepare(world)
    client = api(world.users["engineer"])
    first = {
        "project": world.project.pk,
        "name": "poems-v1",
        "kind": "classification",
        "model_spec": {"family": "bert", "size": "tiny"},
        "tokenizer": prepared.tokenizer.pk,
        "train_version": prepared.poems.pk,
        "train_split": "train",
        "eval_split": "test",
        "hyperparameters": {**TINY, "max_steps": 10},
    }
    assert client.post("/api/v1/training-jobs/", first, format="json").status_code == 201
    [job] = run_training()
    assert job.status == "succeeded", job.error
    served = job.model_version
    endpoint = services.endpoint_create(
        actor=world.users["manager"], project=world.project, name="poems"
    )
    Endpoint.objects.filter(pk=endpoint.pk).update(version=served)
    endpoint.refresh_from_db()
    with open(FIXTURES / "poem_sample.csv", newline="") as handle:
        verses = [(row["verse_text"], row["label"]) for row in csv.DictReader(handle)][:60]
    ids = _log(endpoint, verses, at=timezone.now() - timedelta(hours=2))
    for response_id in ids:
        _thumb(endpoint, response_id, 1)

    alert = _alert(endpoint)
    response = client.post(f"/api/v1/alerts/{alert.pk}/retrain/", format="json")
    assert response.status_code == 200, response.content
    values = response.json()["training_job"]
    assert (values["train_split"], values["eval_split"]) == ("train", "test")
    values["hyperparameters"].update(max_steps=6)
    assert client.post("/api/v1/training-jobs/", values, format="json").status_code == 201
    [retrained] = run_training()
    assert retrained.status == "succeeded", retrained.error
    new = retrained.model_version
    assert new.parent_id == served.pk
    assert new.dataset_version_id == response.json()["dataset_version"]
    assert new.task_kind == "classification"
