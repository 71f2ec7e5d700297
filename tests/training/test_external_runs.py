"""Tracking a run that trains outside LLMHub, through the API, like an integrator's script."""

from __future__ import annotations

import math

import pytest

from llmhub.jobs import sweep_stale_jobs
from training.models import MetricPoint, TrainingJob


def test_external_run_logs_curves_and_finishes(world, api) -> None:
    client = api(world.users["engineer"])
    run = client.post(
        "/api/v1/training-jobs/external/",
        {"project": world.project.pk, "name": "colab-run", "kind": "sft_causal"},
    )
    assert run.status_code == 201, run.content
    run_id = run.json()["id"]
    assert run.json()["status"] == "running" and run.json()["external"] is True

    points = [{"step": s, "name": "loss", "value": 3.0 / (1 + s)} for s in range(1, 301)]
    points += [{"step": s, "name": "learning_rate", "value": 1e-3} for s in range(1, 301)]
    stored = client.post(f"/api/v1/training-jobs/{run_id}/metrics/", {"points": points})
    assert stored.status_code == 201 and stored.json() == {"stored": 600}

    curves = client.get(f"/api/v1/training-jobs/{run_id}/curves/?names=loss").json()
    loss = curves["curves"]["loss"]
    assert loss["total"] == 300 and loss["steps"][0] == 1 and loss["steps"][-1] == 300
    assert curves["global_step"] == 300

    done = client.post(
        f"/api/v1/training-jobs/{run_id}/finish/",
        {"status": "succeeded", "final_metrics": {"train_loss": 0.01}},
    )
    assert done.status_code == 200 and done.json()["status"] == "succeeded"
    late = client.post(
        f"/api/v1/training-jobs/{run_id}/metrics/",
        {"points": [{"step": 301, "name": "loss", "value": 1}]},
    )
    assert late.status_code == 400 and "succeeded" in late.json()["error"]["message"]


def test_bad_metric_points_are_refused_whole(world, api) -> None:
    client = api(world.users["engineer"])
    run_id = client.post(
        "/api/v1/training-jobs/external/", {"project": world.project.pk, "name": "r"}
    ).json()["id"]
    response = client.post(
        f"/api/v1/training-jobs/{run_id}/metrics/",
        {
            "points": [
                {"step": 1, "name": "loss", "value": 1.0},
                {"step": 2, "name": "loss", "value": "lots"},
            ]
        },
    )
    assert response.status_code == 400
    assert "points[1].value: must be a finite number" in response.json()["error"]["message"]
    assert MetricPoint.objects.count() == 0


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"value": "Infinity"}, "points[3].value: must be a finite number."),
        ({"value": "NaN"}, "points[3].value: must be a finite number."),
        ({"value": "-inf"}, "points[3].value: must be a finite number."),
        ({"epoch": "Infinity"}, "points[3].epoch: must be a finite number."),
        ({"step": 10**20}, "points[3].step: must be between 0 and 2147483647"),
        ({"step": 2**31}, "points[3].step: must be between 0 and 2147483647"),
        ({"name": "x" * 61}, "points[3].name: must be text of 1 to 60 characters"),
    ],
)
def test_non_finite_values_and_out_of_range_steps_are_400_naming_the_point(
    world, api, bad, message
) -> None:
    client = api(world.users["engineer"])
    run_id = client.post(
        "/api/v1/training-jobs/external/", {"project": world.project.pk, "name": "r"}
    ).json()["id"]
    points = [{"step": s, "name": "loss", "value": 1.0} for s in range(5)]
    points[3] = {**points[3], **bad}
    response = client.post(f"/api/v1/training-jobs/{run_id}/metrics/", {"points": points})
    assert response.status_code == 400, response.content
    assert message in response.json()["error"]["message"]
    assert MetricPoint.objects.count() == 0
    # The run's curves still answer (nothing half-written).
    assert client.get(f"/api/v1/training-jobs/{run_id}/curves/").json()["curves"] == {}


def test_viewers_cannot_log_and_outsiders_cannot_see(world, api) -> None:
    run_id = (
        api(world.users["engineer"])
        .post("/api/v1/training-jobs/external/", {"project": world.project.pk, "name": "r"})
        .json()["id"]
    )
    viewer = api(world.users["viewer"]).post(
        f"/api/v1/training-jobs/{run_id}/metrics/",
        {"points": [{"step": 1, "name": "loss", "value": 1}]},
    )
    assert viewer.status_code == 403
    outsider = api(world.outsider)
    assert outsider.get(f"/api/v1/training-jobs/{run_id}/").status_code == 404
    assert outsider.get(f"/api/v1/training-jobs/{run_id}/curves/").status_code == 404
    assert (
        outsider.post(
            "/api/v1/training-jobs/external/", {"project": world.project.pk, "name": "x"}
        ).status_code
        == 400
    )


def test_external_runs_are_not_swept_as_dead(world, api) -> None:
    from datetime import timedelta

    from django.utils import timezone

    run_id = (
        api(world.users["engineer"])
        .post("/api/v1/training-jobs/external/", {"project": world.project.pk, "name": "r"})
        .json()["id"]
    )
    TrainingJob.objects.filter(pk=run_id).update(heartbeat_at=timezone.now() - timedelta(days=1))
    sweep_stale_jobs()
    assert TrainingJob.objects.get(pk=run_id).status == "running"


def test_nan_points_are_dropped(world, api) -> None:
    client = api(world.users["engineer"])
    run_id = client.post(
        "/api/v1/training-jobs/external/", {"project": world.project.pk, "name": "r"}
    ).json()["id"]
    job = TrainingJob.objects.get(pk=run_id)
    TrainingJob.write_metric_points(job.pk, [(1, {"loss": math.nan, "lr": 0.1}, None)])
    assert list(MetricPoint.objects.values_list("name", flat=True)) == ["lr"]


def test_final_metrics_must_be_finite(world) -> None:
    from django.core.exceptions import ValidationError

    from training.services import external_run_finish, external_run_start

    engineer = world.users["engineer"]
    job = external_run_start(actor=engineer, project=world.project, name="r")
    with pytest.raises(ValidationError, match=r"final_metrics.train_loss: must be a finite"):
        external_run_finish(actor=engineer, job=job, final_metrics={"train_loss": math.inf})
    job.refresh_from_db()
    assert job.status == "running" and job.final_metrics == {}
