"""The job lifecycle on a real Celery worker process, over the configured broker."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from llmhub import jobs
from llmhub.celery import app
from llmhub.jobs import runner_for, sweep_stale_jobs, wait_until
from llmhub.models import JobStatus
from llmhub.services import job_cancel
from projects.models import ProjectHealthCheck
from projects.services import health_check_launch

REPO_ROOT = Path(__file__).resolve().parents[2]

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

    assert sweep_stale_jobs()["failed"] == 0  # not stale yet
    assert wait_until(lambda: sweep_stale_jobs()["failed"] == 1, timeout=15, interval=0.5)
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert "stopped responding" in job.error and running.worker_host in job.error


def test_the_periodic_sweep_task_runs_on_the_worker(world, celery_worker) -> None:
    from llmhub.tasks import sweep_stale_jobs_task

    old = timezone.now() - timedelta(minutes=10)
    job = ProjectHealthCheck.objects.create(
        project=world.project, status=JobStatus.RUNNING, heartbeat_at=old, attempts=1
    )
    sweep_stale_jobs_task.apply_async(queue="cpu")
    assert wait_until(lambda: _status(job) == JobStatus.FAILED, timeout=30), celery_worker.log()


def test_a_job_whose_message_was_lost_still_finishes(world, celery_worker, settings) -> None:
    # The launch's message goes to a queue nobody reads, which is then purged in the broker
    # (on Redis, under this run's key prefix): the message is lost, the row says "queued".
    lost_queue = f"lost-{uuid.uuid4().hex[:8]}"
    runner = runner_for(ProjectHealthCheck)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(jobs._RUNNERS, ProjectHealthCheck, dataclasses.replace(runner, queue=lost_queue))
        job = health_check_launch(actor=world.users["engineer"], project=world.project)
    with app.connection_for_write() as conn:
        assert conn.default_channel.queue_purge(lost_queue) == 1
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.enqueued_at is not None

    later = job.enqueued_at + timedelta(seconds=settings.JOB_RESEND_AFTER_SECONDS + 1)
    assert sweep_stale_jobs(now=later)["resent"] == 1
    assert wait_until(lambda: _status(job) == JobStatus.SUCCEEDED, timeout=30), celery_worker.log()
    job.refresh_from_db()
    assert job.attempts == 1


def test_a_killed_workers_job_is_recovered_by_a_sweep_in_another_process(
    world, fresh_worker, tmp_path
) -> None:
    from tests.conftest import WorkerProcess

    # Like bin/dev's single worker: its job is on a queue only it reads, and it dies.
    doomed = fresh_worker.start(queues="doomed")
    job = ProjectHealthCheck.objects.create(project=world.project, sleep_seconds=60)
    runner_for(ProjectHealthCheck).task.apply_async(args=[job.pk], queue="doomed")
    assert wait_until(lambda: _status(job) == JobStatus.RUNNING, timeout=30), doomed.log()
    doomed.kill()
    host = ProjectHealthCheck.objects.get(pk=job.pk).worker_host

    # Another worker (of any queue) sweeps on its own timer: nobody calls the sweep here.
    rescuer = WorkerProcess(tmp_path / "rescuer.log")
    try:
        rescuer.start(queues=f"idle-{uuid.uuid4().hex[:6]}", sweep_every=1)
        assert wait_until(lambda: _status(job) == JobStatus.FAILED, timeout=30), rescuer.log()
    finally:
        rescuer.stop()
    job.refresh_from_db()
    assert "stopped responding" in job.error and host in job.error


def test_the_web_process_sweeps_on_its_own(world, tmp_path) -> None:
    # A web process (gunicorn or runserver load llmhub.wsgi) recovers jobs with no worker and
    # no beat alive: here a running job whose worker vanished ten minutes ago.
    old = timezone.now() - timedelta(minutes=10)
    job = ProjectHealthCheck.objects.create(
        project=world.project, status=JobStatus.RUNNING, heartbeat_at=old, attempts=1
    )
    probe = (
        "import llmhub.wsgi, os, time\n"
        "from llmhub.sweeper import _running\n"
        "sweeper = _running[os.getpid()]\n"
        "deadline = time.monotonic() + 60\n"
        "while sweeper.sweeps < 1 and time.monotonic() < deadline:\n"
        "    time.sleep(0.1)\n"
        "print('sweeps', sweeper.sweeps)\n"
    )
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "LLMHUB_TEST_WORKER_DB": str(connection.settings_dict["NAME"]),
        "LLMHUB_JOB_SWEEP_IN_PROCESS": "true",
    }
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "sweeps 1" in result.stdout, result.stdout + result.stderr
    assert _status(job) == JobStatus.FAILED
