"""The project page's Monitor loop panel: per endpoint the serving version, the last 24 hours'
requests and errors, open alerts, the dataset version an alert's Retrain made, the job trained
on it and its model version with the goal gate's verdict; a fixed number of queries whatever the
project holds."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from frontend.monitor_loop import gate_states, monitor_loop
from serving import services
from serving.models import Endpoint
from serving.monitoring import retrain
from serving.monitoring.models import Alert
from serving.selectors import promotion_blockers
from tests.factories import GoalFactory
from tests.serving.builders import finished_evaluation, stored_version
from tests.serving.monitoring.test_retrain import _alert, _log
from training.models import TrainingJob

pytestmark = pytest.mark.django_db


def _served(world, tmp_path, name: str):
    version = stored_version(world.project, tmp_path / name, kind="classification", name=name)
    endpoint = services.endpoint_create(
        actor=world.users["manager"], project=world.project, name=name
    )
    Endpoint.objects.filter(pk=endpoint.pk).update(version=version)
    endpoint.refresh_from_db()
    return endpoint


def _loop_of(world, endpoint, tmp_path, *, passes: bool):
    """Traffic, an open alert, its retrain version and a model version trained on it."""
    now = timezone.now()
    _log(endpoint, [("a", "pos"), ("b", "neg"), ("c", "pos")], at=now - timedelta(hours=1))
    _log(endpoint, [("d", None)], at=now - timedelta(hours=1), status=500)
    alert = _alert(endpoint)
    data = retrain.retrain_propose(actor=world.users["manager"], alert=alert)
    new = stored_version(world.project, tmp_path / f"new-{endpoint.pk}", kind="classification")
    new.dataset_version = data
    new.save()
    TrainingJob.objects.create(
        project=world.project,
        name=f"{endpoint.slug}-retrain",
        kind="classification",
        base_source="model_version",
        base_model_version=endpoint.version,
        train_version=data,
        status="succeeded",
        model_version=new,
    )
    finished_evaluation(world, new, metric="f1_macro", value=0.9 if passes else 0.5)
    return alert, data, new


def test_the_panel_shows_the_loop_and_the_gate(world, tmp_path) -> None:
    GoalFactory(project=world.project, metric="f1_macro", target=0.85, split="test")
    first = _served(world, tmp_path, "alpha")
    second = _served(world, tmp_path, "beta")
    alert, data, new = _loop_of(world, first, tmp_path, passes=True)
    _, _, held = _loop_of(world, second, tmp_path, passes=False)
    Endpoint.objects.filter(pk=first.pk).update(canary_version=new, canary_percent=10)

    client = Client()
    client.force_login(world.users["viewer"])
    html = client.get(f"/projects/{world.project.pk}/").content.decode()
    panel = html[html.index('id="monitor-loop"') :]
    row = panel[panel.index(f'data-monitor-endpoint="{first.pk}"') :]
    row = row[: row.index("</tr>")]
    assert re.search(r"data-loop-requests>4<", row)  # every answered or refused request
    assert re.search(r"data-loop-errors>1<", row)
    assert "<strong>1</strong> open" in row and "classifier_auc" in row
    assert f'href="/versions/{data.pk}/"' in row
    assert "3 prompts" in row
    assert f'data-loop-new-version="{new.pk}"' in row
    assert 'data-gate="passes"' in row and "data-loop-serving-new>canary<" in row
    other = panel[panel.index(f'data-monitor-endpoint="{second.pk}"') :]
    other = other[: other.index("</tr>")]
    assert f'data-loop-new-version="{held.pk}"' in other and 'data-gate="blocked"' in other

    # The gate's verdict is promotion_blockers' own.
    states = gate_states(world.project, [new, held], world.users["viewer"])
    assert states[new.pk]["passes"] == (promotion_blockers(new) == []) is True
    assert states[held.pk]["passes"] == (promotion_blockers(held) == []) is False
    # A resolved alert keeps its retrain version in the loop but is not counted as open.
    Alert.objects.filter(pk=alert.pk).update(state="resolved")
    loop = monitor_loop(world.users["viewer"], world.project)
    by_endpoint = {r["endpoint"].pk: r for r in loop["rows"]}
    assert by_endpoint[first.pk]["open_alerts"] == 0
    assert by_endpoint[first.pk]["retrain_version"].pk == data.pk


def test_the_panels_queries_do_not_grow_with_the_project(world, tmp_path) -> None:
    GoalFactory(project=world.project, metric="f1_macro", target=0.85, split="test")
    GoalFactory(project=world.project, metric="accuracy", target=0.5, split="test")
    user = world.users["viewer"]
    first = _served(world, tmp_path, "alpha")
    _loop_of(world, first, tmp_path, passes=True)
    with CaptureQueriesContext(connection) as one:
        monitor_loop(user, world.project)
    for name in ("beta", "gamma", "delta"):
        endpoint = _served(world, tmp_path, name)
        _loop_of(world, endpoint, tmp_path, passes=name == "beta")
    with CaptureQueriesContext(connection) as several:
        loop = monitor_loop(user, world.project)
    assert len(loop["rows"]) == 4
    assert all(row["new_version"] is not None for row in loop["rows"])
    assert len(one) == len(several) == 7


def test_an_empty_project_says_what_to_do(world) -> None:
    client = Client()
    client.force_login(world.users["viewer"])
    html = client.get(f"/projects/{world.project.pk}/").content.decode()
    assert "data-monitor-loop-hint" in html
    with CaptureQueriesContext(connection) as queries:
        assert monitor_loop(world.users["viewer"], world.project)["empty"] is True
    assert len(queries) == 1
