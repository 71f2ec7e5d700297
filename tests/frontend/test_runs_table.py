"""The runs table: every training job of a project with its settings and final metrics;
filter, sort, group by a hyperparameter; the overlay of chosen runs' curves; clone a run into
the launch form. One query for the jobs whatever their number."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from training.metrics_store import write_points
from training.models import TrainingJob

pytestmark = pytest.mark.django_db


def _job(project, name: str, *, lr: float, batch: int, loss: float | None, **extra) -> TrainingJob:
    now = timezone.now()
    return TrainingJob.objects.create(
        project=project,
        name=name,
        kind=extra.pop("kind", "classification"),
        status=extra.pop("status", "succeeded"),
        hyperparameters={"learning_rate": lr, "batch_size": batch, "max_steps": 30},
        final_metrics={} if loss is None else {"eval_loss": loss, "train_loss": loss + 0.1},
        started_at=now - timedelta(minutes=5),
        finished_at=now,
        **extra,
    )


@pytest.fixture
def runs(world):
    p = world.project
    return {
        "a": _job(p, "alpha", lr=0.001, batch=8, loss=0.9),
        "b": _job(p, "bravo", lr=0.003, batch=8, loss=0.5),
        "c": _job(p, "charlie", lr=0.001, batch=16, loss=0.7),
        "d": _job(p, "delta", lr=0.01, batch=16, loss=None, status="failed"),
        "e": _job(p, "echo", lr=0.003, batch=32, loss=0.6, kind="pretrain_clm"),
    }


@pytest.fixture
def viewer(world) -> Client:
    client = Client()
    client.force_login(world.users["viewer"])
    return client


def _names(response) -> list[str]:
    """The run names in the table's rows, in order."""
    html = response.content.decode()
    body = html[html.index('id="runs-table"') :]
    return re.findall(r'data-column="name"><a href="/training-jobs/\d+/"><strong>([^<]+)<', body)


def _get(client: Client, world, **params):
    response = client.get(f"/projects/{world.project.pk}/train/runs/", params)
    assert response.status_code == 200
    return response


def test_the_table_lists_every_run_with_its_settings_and_metrics(viewer, world, runs) -> None:
    response = _get(viewer, world)
    assert _names(response) == ["echo", "delta", "charlie", "bravo", "alpha"]  # newest first
    html = response.content.decode()
    # Hyperparameters that tell the runs apart are columns; one shared by all is not.
    assert 'data-column="hp:learning_rate"' in html and 'data-column="hp:batch_size"' in html
    assert 'data-column="hp:max_steps"' not in html
    assert 'data-column="metric:eval_loss"' in html
    table = response.context["table"]
    alpha = next(r for r in table["rows"] if r["name"] == "alpha")
    assert alpha["hp_cells"][table["hp_columns"].index("learning_rate")] == "0.001"
    assert alpha["metric_cells"][table["metric_columns"].index("eval_loss")] == 0.9
    assert alpha["duration_s"] == pytest.approx(300, abs=1)


def test_filters_by_status_kind_name_and_hyperparameter_value(viewer, world, runs) -> None:
    assert _names(_get(viewer, world, status="failed")) == ["delta"]
    assert _names(_get(viewer, world, kind="pretrain_clm")) == ["echo"]
    assert _names(_get(viewer, world, q="ar")) == ["charlie"]
    # Free text matches any hyperparameter value too (numbers by value: 1e-3 is 0.001).
    assert _names(_get(viewer, world, q="1e-3")) == ["charlie", "alpha"]
    assert _names(_get(viewer, world, param="batch_size", value="16")) == ["delta", "charlie"]
    assert _names(
        _get(viewer, world, param="learning_rate", value="0.003", status="succeeded")
    ) == [
        "echo",
        "bravo",
    ]


def test_sorts_by_any_column_hyperparameters_and_metrics_included(viewer, world, runs) -> None:
    # Runs without the metric come last in either direction.
    assert _names(_get(viewer, world, sort="metric:eval_loss")) == [
        "bravo",
        "echo",
        "charlie",
        "alpha",
        "delta",
    ]
    assert _names(_get(viewer, world, sort="-metric:eval_loss")) == [
        "alpha",
        "charlie",
        "echo",
        "bravo",
        "delta",
    ]
    assert _names(_get(viewer, world, sort="-hp:batch_size"))[:1] == ["echo"]
    assert _names(_get(viewer, world, sort="name")) == [
        "alpha",
        "bravo",
        "charlie",
        "delta",
        "echo",
    ]
    # The header links toggle the direction of the sorted column.
    response = _get(viewer, world, sort="hp:learning_rate")
    header = next(c for c in response.context["columns"] if c["key"] == "hp:learning_rate")
    assert header["sorted"] == "asc" and "sort=-hp%3Alearning_rate" in header["url"]
    # An unknown column falls back to the default order instead of failing.
    assert _names(_get(viewer, world, sort="hp:nope"))[0] == "echo"


def test_groups_by_a_hyperparameter_with_counts_and_the_best_metric(viewer, world, runs) -> None:
    response = _get(viewer, world, group="learning_rate", metric="eval_loss")
    groups = response.context["table"]["groups"]
    assert [(g["label"], g["count"]) for g in groups] == [("0.001", 2), ("0.003", 2), ("0.01", 1)]
    assert [g["best"]["value"] if g["best"] else None for g in groups] == [0.7, 0.5, None]
    assert groups[1]["best"]["run"]["name"] == "bravo"
    html = response.content.decode()
    assert html.count('class="run-group"') == 3
    assert "learning_rate = 0.003" in html
    # An accuracy-like metric picks the highest.
    TrainingJob.objects.filter(pk=runs["a"].pk).update(final_metrics={"eval_accuracy": 0.8})
    TrainingJob.objects.filter(pk=runs["c"].pk).update(final_metrics={"eval_accuracy": 0.6})
    groups = _get(viewer, world, group="learning_rate", metric="eval_accuracy").context["table"][
        "groups"
    ]
    assert groups[0]["best"]["value"] == 0.8


def test_the_query_count_does_not_grow_with_the_number_of_runs(viewer, world) -> None:
    url = f"/projects/{world.project.pk}/train/runs/"
    _job(world.project, "only", lr=0.001, batch=8, loss=0.5)
    viewer.get(url)
    with CaptureQueriesContext(connection) as one:
        assert viewer.get(url, {"group": "learning_rate"}).status_code == 200
    for index in range(19):
        _job(world.project, f"run {index}", lr=0.001 * (index % 4 + 1), batch=8, loss=0.5)
    with CaptureQueriesContext(connection) as twenty:
        response = viewer.get(url, {"group": "learning_rate"})
    assert len(response.context["table"]["rows"]) == 20
    assert len(one) == len(twenty)


def test_another_teams_runs_are_not_listed_and_their_project_is_404(world, runs) -> None:
    _job(world.other_project, "secret run", lr=0.5, batch=8, loss=0.1)
    client = Client()
    client.force_login(world.outsider)
    assert client.get(f"/projects/{world.project.pk}/train/runs/").status_code == 404
    mine = Client()
    mine.force_login(world.users["viewer"])
    assert "secret run" not in _get(mine, world).content.decode()


def test_the_overlay_draws_one_trace_per_chosen_run(viewer, world, runs) -> None:
    write_points(runs["a"].pk, [(s, "loss", 2.0 - s / 10, None) for s in range(10)])
    write_points(runs["b"].pk, [(s, "loss", 1.5 - s / 20, None) for s in range(5)])
    response = _get(viewer, world, overlay=[runs["a"].pk, runs["b"].pk])
    overlay = response.context["overlay"]
    traces = overlay["figure"]["data"]
    assert overlay["metric"] == "loss" and len(traces) == 2
    assert list(traces[0]["x"]) == list(range(10)) and traces[0]["y"][0] == 2.0
    assert list(traces[1]["x"]) == list(range(5))
    assert 'id="overlay-figure"' in response.content.decode()
    # Another team's job id is ignored, not drawn.
    other = _job(world.other_project, "theirs", lr=0.1, batch=8, loss=0.1)
    write_points(other.pk, [(0, "loss", 1.0, None)])
    response = _get(viewer, world, overlay=[other.pk])
    assert response.context["overlay"] is None


def test_the_train_tab_links_the_runs_table(viewer, world) -> None:
    html = viewer.get(f"/projects/{world.project.pk}/train/").content.decode()
    assert f'href="/projects/{world.project.pk}/train/runs/"' in html


def test_clone_prefills_the_launch_form_with_the_jobs_settings(world, runs) -> None:
    job = runs["b"]
    TrainingJob.objects.filter(pk=job.pk).update(
        train_split="train",
        eval_split="test",
        base_source="random",
        model_spec={"family": "gpt2", "size": "tiny"},
    )
    client = Client()
    client.force_login(world.users["engineer"])
    page = client.get(f"/training-jobs/{job.pk}/").content.decode()
    assert f'href="/projects/{world.project.pk}/train/new/?clone={job.pk}"' in page
    response = client.get(f"/projects/{world.project.pk}/train/new/", {"clone": job.pk})
    assert response.status_code == 200
    form = response.context["form"]
    assert form["name"].value() == "bravo-clone"
    assert form["kind"].value() == "classification"
    assert form["eval_split"].value() == "test"
    assert form["hp_learning_rate"].value() == 0.003
    assert form["hp_batch_size"].value() == 8
    assert 'value="bravo-clone"' in response.content.decode()


def test_clone_of_another_teams_job_is_404(world) -> None:
    theirs = _job(world.other_project, "theirs", lr=0.1, batch=8, loss=0.1)
    client = Client()
    client.force_login(world.users["engineer"])
    url = f"/projects/{world.project.pk}/train/new/"
    assert client.get(url, {"clone": theirs.pk}).status_code == 404
    assert client.get(url, {"clone": "nope"}).status_code == 404


def test_the_compare_page_diffs_the_models_hyperparameters(viewer, world) -> None:
    from datasets_app.models import Dataset, DatasetVersion
    from evaluation.models import EvaluationRun
    from training.models import ModelVersion, RegisteredModel

    registered = RegisteredModel.objects.create(project=world.project, name="m")
    dataset = Dataset.objects.create(project=world.project, name="d")
    data = DatasetVersion.objects.create(
        dataset=dataset,
        number=1,
        file="x.parquet",
        content_sha256="0" * 64,
        row_count=1,
        size_bytes=1,
        schema=[{"name": "text", "type": "string"}],
    )
    hps = [
        {"learning_rate": 0.001, "batch_size": 8, "seed": 0},
        {"learning_rate": 0.003, "batch_size": 8, "seed": 0, "warmup_steps": 10},
    ]
    runs = []
    for number, hp in enumerate(hps, start=1):
        model = ModelVersion.objects.create(
            registered_model=registered,
            number=number,
            task_kind="classification",
            files_prefix="x",
            hyperparameters=hp,
        )
        runs.append(
            EvaluationRun.objects.create(
                project=world.project,
                model_version=model,
                dataset_version=data,
                split="test",
                task_type="classification",
                metrics=["accuracy"],
                status="succeeded",
                finished_at=timezone.now(),
                results={"accuracy": {"value": 0.5 + number / 10}},
            )
        )
    response = viewer.get(
        f"/projects/{world.project.pk}/evaluate/compare/", {"runs": [r.pk for r in runs]}
    )
    diff = response.context["hp_diff"]
    assert [(r["name"], r["values"]) for r in diff["differ"]] == [
        ("learning_rate", ["0.001", "0.003"]),
        ("warmup_steps", ["—", "10"]),
    ]
    assert [r["name"] for r in diff["same"]] == ["batch_size", "seed"]
    html = response.content.decode()
    table = html[html.index('id="hp-differ"') : html.index('id="hp-same"')]
    assert "learning_rate" in table and "0.003" in table and "batch_size" not in table
    assert "2 equal in all" in html


def test_names_and_values_are_escaped(viewer, world) -> None:
    _job(world.project, "<script>alert(1)</script>", lr=0.001, batch=8, loss=0.5)
    TrainingJob.objects.update(hyperparameters={"lr_scheduler": "<b>x</b>", "seed": 1})
    _job(world.project, "plain", lr=0.001, batch=8, loss=0.5)
    html = _get(viewer, world).content.decode()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)" in html
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html


def test_any_hyperparameter_is_sortable_even_when_not_a_column(viewer, world, runs) -> None:
    # max_steps is the same for every run, so it is no column; the sort select still offers it.
    response = _get(viewer, world)
    assert "max_steps" not in response.context["table"]["hp_columns"]
    assert ("hp:max_steps", "max_steps ↑") in response.context["sort_options"]
    TrainingJob.objects.filter(pk=runs["c"].pk).update(
        hyperparameters={"learning_rate": 0.001, "batch_size": 16, "max_steps": 5}
    )
    response = _get(viewer, world, sort="hp:max_steps")
    assert ("-hp:max_steps", "max_steps ↓") in response.context["sort_options"]
    assert _names(response)[0] == "charlie"
    assert 'value="hp:max_steps" selected' in response.content.decode()


def test_the_overlay_says_when_it_shows_fewer_runs_than_selected(viewer, world) -> None:
    jobs = [_job(world.project, f"r{i}", lr=0.001, batch=8, loss=0.5) for i in range(10)]
    response = _get(viewer, world, overlay=[j.pk for j in jobs])
    assert len(response.context["overlay"]["figure"]["data"]) == 8
    assert "Showing the first 8 of the 10 runs selected." in response.content.decode()
