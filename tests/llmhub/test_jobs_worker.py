"""The job lifecycle on a real Celery worker process, over the configured broker."""

from __future__ import annotations

import pytest
from django.utils import timezone

from llmhub.jobs import runner_for, sweep_stale_jobs, wait_until
from llmhub.models import JobStatus
from llmhub.services import job_cancel
from projects.models import ProjectHealthCheck
from projects.services import health_check_launch

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def _status(job) -> str:
    return ProjectHealthCheck.objects.values_list("status", flat=True).get(pk=job.pk)


def test_a_job_succeeds_on_the_worker(world, celery_worker) -> None:
    job = health_check_launch(actor=world.users["engineer"], project=world.project)
    assert wait_until(lambda: _status(job) == JobStatus.SUCCEEDED, timeout=30), celery_worker.log()
    job.refresh_from_db()
    assert job.worker_host and job.celery_task_id and job.progress == 1.0
    assert job.result["checks"][1] == {
        "name": "storage",
        "ok": True,
        "detail": "Files can be written and read back.",
    }


def test_a_failing_job_records_its_reason(world, celery_worker) -> None:
    job = health_check_launch(
        actor=world.users["engineer"], project=world.project, fail_with="Goal metric unknown."
    )
    assert wait_until(lambda: _status(job) == JobStatus.FAILED, timeout=30), celery_worker.log()
    job.refresh_from_db()
    assert job.error == "Goal metric unknown."


def test_cancel_stops_a_running_job_within_seconds(world, celery_worker) -> None:
    job = health_check_launch(
        actor=world.users["engineer"], project=world.project, sleep_seconds=60
    )
    assert wait_until(lambda: _status(job) == JobStatus.RUNNING, timeout=30), celery_worker.log()
    # The heartbeat keeps the row fresh and carries progress while it runs.
    assert wait_until(lambda: ProjectHealthCheck.objects.get(pk=job.pk).progress > 0.4, timeout=10)
    asked = timezone.now()
    job_cancel(actor=world.users["engineer"], job=ProjectHealthCheck.objects.get(pk=job.pk))
    assert wait_until(lambda: _status(job) == JobStatus.CANCELLED, timeout=10)
    job.refresh_from_db()
    assert (job.finished_at - asked).total_seconds() < 5
    assert job.error == "Cancelled on request."


def test_a_dead_worker_is_swept(world, fresh_worker) -> None:
    # The job goes to a queue only the doomed worker reads, so no other worker can save it.
    doomed = fresh_worker.start(queues="doomed")
    job = ProjectHealthCheck.objects.create(project=world.project, sleep_seconds=60)
    runner_for(ProjectHealthCheck).task.apply_async(args=[job.pk], queue="doomed")
    assert wait_until(lambda: _status(job) == JobStatus.RUNNING, timeout=30), doomed.log()
    doomed.kill()
    running = ProjectHealthCheck.objects.get(pk=job.pk)
    assert running.status == JobStatus.RUNNING  # nobody told the database

    assert sweep_stale_jobs() == {"failed": 0, "requeued": 0}  # not stale yet
    assert wait_until(lambda: sweep_stale_jobs()["failed"] == 1, timeout=15, interval=0.5)
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert "stopped responding" in job.error and running.worker_host in job.error


def test_the_periodic_sweep_task_runs_on_the_worker(world, celery_worker) -> None:
    from datetime import timedelta

    from llmhub.tasks import sweep_stale_jobs_task

    old = timezone.now() - timedelta(minutes=10)
    job = ProjectHealthCheck.objects.create(
        project=world.project, status=JobStatus.RUNNING, heartbeat_at=old, attempts=1
    )
    sweep_stale_jobs_task.apply_async(queue="cpu")
    assert wait_until(lambda: _status(job) == JobStatus.FAILED, timeout=30), celery_worker.log()
