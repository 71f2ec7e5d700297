"""Training on a real Celery worker: live metrics while it runs, cancel within seconds keeping
a checkpoint, and resume to the same final step."""

from __future__ import annotations

import pytest
from django.utils import timezone

from llmhub.jobs import wait_until
from tests.training.conftest import is_running_past_a_checkpoint, launch_long_run, prepare
from training.models import Checkpoint, MetricPoint, TrainingJob

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _status(pk: int) -> str:
    return TrainingJob.objects.values_list("status", flat=True).get(pk=pk)


def test_cancel_then_resume_on_the_worker(world, api, celery_worker) -> None:
    prepared = prepare(world)
    client = api(world.users["engineer"])
    job_id = launch_long_run(client, world, prepared)
    assert wait_until(lambda: is_running_past_a_checkpoint(job_id), timeout=90), celery_worker.log()
    running = client.get(f"/api/v1/training-jobs/{job_id}/").json()
    assert running["status"] == "running" and running["device"] == "cpu"
    assert running["worker_host"] and running["progress"] > 0

    asked = timezone.now()
    assert client.post(f"/api/v1/training-jobs/{job_id}/cancel/").status_code == 200
    assert wait_until(lambda: _status(job_id) == "cancelled", timeout=20), celery_worker.log()
    job = TrainingJob.objects.get(pk=job_id)
    assert (job.finished_at - asked).total_seconds() < 10
    last = Checkpoint.objects.filter(job=job).order_by("-step").first()
    assert last is not None and last.step < 80
    assert job.curve_summary["loss"]["total"] > 5

    resumed = client.post(f"/api/v1/training-jobs/{job_id}/resume/")
    assert resumed.status_code == 201, resumed.content
    resumed_id = resumed.json()["id"]
    assert wait_until(lambda: _status(resumed_id) in ("succeeded", "failed"), timeout=180), (
        celery_worker.log()
    )
    done = TrainingJob.objects.get(pk=resumed_id)
    assert done.status == "succeeded", done.error
    assert done.global_step == 80 and done.resumed_from_id == job_id
    first_step = MetricPoint.objects.filter(job=done).order_by("step").first().step
    assert first_step > last.step - 1  # it continued from the checkpoint, not from zero
    assert done.model_version is not None
