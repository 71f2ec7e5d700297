"""No job is lost: lost messages are re-sent, and a launch while the broker is down is a 503.

These run in process against the configured broker (the filesystem one, or Redis under the
test run's key prefix when REDIS_URL is set): messages are really sent, counted and purged.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse

from llmhub import jobs
from llmhub.celery import app
from llmhub.exceptions import ServiceUnavailable
from llmhub.jobs import check_broker, run_job_inline, runner_for, sweep_stale_jobs
from llmhub.models import JobStatus
from projects.models import AuditEvent, ProjectHealthCheck
from projects.services import health_check_launch


def _private_queue(monkeypatch) -> str:
    """Route health checks to a queue of this test's own, which no worker reads."""
    name = f"lost-{uuid.uuid4().hex[:8]}"
    runner = dataclasses.replace(runner_for(ProjectHealthCheck), queue=name)
    monkeypatch.setitem(jobs._RUNNERS, ProjectHealthCheck, runner)
    return name


def _queue_size(name: str) -> int:
    with app.connection_for_write() as conn:
        return conn.default_channel.queue_declare(queue=name, auto_delete=False).message_count


def _purge(name: str) -> None:
    """Delete the queue's messages in the broker, as a Redis restart without persistence."""
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(name)


def test_the_sweep_resends_a_queued_job_whose_message_was_lost(
    world, settings, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    queue = _private_queue(monkeypatch)
    with django_capture_on_commit_callbacks(execute=True):
        job = health_check_launch(actor=world.users["engineer"], project=world.project)
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.enqueued_at and job.celery_task_id
    assert _queue_size(queue) == 1
    _purge(queue)
    assert _queue_size(queue) == 0  # the message is gone; the row still says "queued"

    sent = job.enqueued_at
    limit = settings.JOB_RESEND_AFTER_SECONDS
    # Within the limit the job may simply be waiting behind other work: left alone.
    assert sweep_stale_jobs(now=sent + timedelta(seconds=limit - 1))["resent"] == 0
    later = sent + timedelta(seconds=limit + 1)
    with django_capture_on_commit_callbacks(execute=True):
        assert sweep_stale_jobs(now=later) == {"failed": 0, "requeued": 0, "resent": 1}
    assert _queue_size(queue) == 1
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.enqueued_at == later
    # Another sweep at the same moment (a second process) does not send it again.
    with django_capture_on_commit_callbacks(execute=True):
        assert sweep_stale_jobs(now=later)["resent"] == 0
    assert _queue_size(queue) == 1

    # The job runs once; a finished job is never re-sent.
    assert run_job_inline(job) == JobStatus.SUCCEEDED
    assert sweep_stale_jobs(now=later + timedelta(seconds=10 * limit))["resent"] == 0
    _purge(queue)


def test_a_send_failing_after_the_commit_leaves_the_job_queued_for_the_sweep(
    world, settings, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    queue = _private_queue(monkeypatch)
    task = runner_for(ProjectHealthCheck).task
    real_apply_async = task.apply_async

    def refuse(*args, **kwargs):
        raise ConnectionRefusedError("[Errno 111] Connection refused")

    # The broker answered the launch's check, then went away before the commit's send.
    monkeypatch.setattr(task, "apply_async", refuse)
    with django_capture_on_commit_callbacks(execute=True):
        job = health_check_launch(actor=world.users["engineer"], project=world.project)
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.enqueued_at is None
    assert "Waiting for the job queue" in job.progress_message
    assert job.error == ""  # not failed: it will be sent

    monkeypatch.setattr(task, "apply_async", real_apply_async)
    later = job.created_at + timedelta(seconds=settings.JOB_RESEND_AFTER_SECONDS + 1)
    with django_capture_on_commit_callbacks(execute=True):
        assert sweep_stale_jobs(now=later)["resent"] == 1
    assert _queue_size(queue) == 1
    job.refresh_from_db()
    assert job.enqueued_at == later and job.celery_task_id
    _purge(queue)


@pytest.mark.django_db(transaction=True)
def test_concurrent_sweeps_send_a_lost_job_once(world, settings, monkeypatch) -> None:
    queue = _private_queue(monkeypatch)
    job = ProjectHealthCheck.objects.create(project=world.project)  # its message never went out
    later = job.created_at + timedelta(seconds=settings.JOB_RESEND_AFTER_SECONDS + 1)
    start = threading.Barrier(4)
    resent: list[int] = []

    def sweep() -> None:  # as four processes sweeping at the same moment
        start.wait()
        try:
            resent.append(sweep_stale_jobs(now=later)["resent"])
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(resent) == [0, 0, 0, 1]
    assert _queue_size(queue) == 1
    _purge(queue)


def test_a_launch_while_the_broker_is_down_is_a_503_and_creates_nothing(
    world, api, broker_down
) -> None:
    client = api(world.users["engineer"])
    events = AuditEvent.objects.count()
    response = client.post("/api/v1/health-checks/", {"project": world.project.pk}, format="json")
    assert response.status_code == 503, response.content
    error = response.json()["error"]
    assert error["code"] == "unavailable"
    assert error["message"].startswith("The job queue cannot be reached (")
    assert "nothing was launched" in error["message"]
    assert not ProjectHealthCheck.objects.exists()
    assert AuditEvent.objects.count() == events


def test_a_launch_page_shows_why_when_the_broker_is_down(world, client, broker_down) -> None:
    client.force_login(world.users["engineer"])
    response = client.post(reverse("health-check-launch", args=[world.project.pk]), follow=True)
    assert response.status_code == 200
    assert "The job queue cannot be reached" in response.content.decode()
    assert not ProjectHealthCheck.objects.exists()


def test_a_missing_filesystem_broker_folder_is_unavailable(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(jobs, "_broker_ok_until", 0.0)
    monkeypatch.setattr(app.conf, "broker_url", "filesystem://")
    options = dict(app.conf.broker_transport_options, data_folder_in=str(tmp_path / "gone"))
    monkeypatch.setitem(app.conf, "broker_transport_options", options)
    with pytest.raises(ServiceUnavailable, match="is missing or read-only"):
        check_broker()
    (tmp_path / "gone").mkdir()
    check_broker()  # back: no error
