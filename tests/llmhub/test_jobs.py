"""The shared job lifecycle, in process (claiming, outcomes, cancel, sweep, enqueue failure)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from llmhub.jobs import execute_job, run_job_inline, runner_for, sweep_stale_jobs
from llmhub.models import JobStatus
from llmhub.reporting import JobInputError
from llmhub.services import job_cancel
from projects.models import ProjectHealthCheck
from projects.services import health_check_launch


def test_a_job_runs_once_even_if_delivered_twice(world) -> None:
    job = ProjectHealthCheck.objects.create(project=world.project)
    assert run_job_inline(job) == JobStatus.SUCCEEDED
    assert run_job_inline(job) is None  # the second delivery finds nothing to claim
    job.refresh_from_db()
    assert job.attempts == 1 and job.progress == 1.0 and job.finished_at is not None
    assert {c["name"] for c in job.result["checks"]} == {"goals", "storage", "worker"}


def test_expected_failures_keep_their_message_and_crashes_their_traceback(world) -> None:
    expected = ProjectHealthCheck.objects.create(project=world.project, fail_with="No data yet.")
    assert run_job_inline(expected) == JobStatus.FAILED
    expected.refresh_from_db()
    assert expected.error == "No data yet." and expected.traceback == ""
    assert "FAILED: No data yet." in expected.log

    def crash(job, ctx):
        raise ZeroDivisionError("division by zero")

    crashing = ProjectHealthCheck.objects.create(project=world.project)
    assert execute_job(ProjectHealthCheck, crashing.pk, crash, heartbeat=False) == JobStatus.FAILED
    crashing.refresh_from_db()
    assert crashing.error == "The job crashed: ZeroDivisionError: division by zero"
    assert "Traceback" in crashing.traceback and "crash" in crashing.traceback


def test_progress_metrics_and_logs_reach_the_row(world) -> None:
    import logging

    def runner(job, ctx):
        ctx.progress(0.5, "halfway")
        logging.getLogger("llmhub.runtime").info("hello from the runtime")
        ctx.flush()
        row = ProjectHealthCheck.objects.get(pk=job.pk)
        assert (row.progress, row.progress_message) == (0.5, "halfway")
        assert "hello from the runtime" in row.log
        raise JobInputError("stop here")

    job = ProjectHealthCheck.objects.create(project=world.project)
    assert execute_job(ProjectHealthCheck, job.pk, runner, heartbeat=False) == JobStatus.FAILED


def test_cancelling_a_queued_job_is_immediate(world) -> None:
    job = health_check_launch(actor=world.users["engineer"], project=world.project)
    job = job_cancel(actor=world.users["engineer"], job=job)
    assert job.status == JobStatus.CANCELLED and job.finished_at is not None
    assert run_job_inline(job) is None  # a late delivery does not revive it


def test_a_finished_job_cannot_be_cancelled(world) -> None:
    job = ProjectHealthCheck.objects.create(project=world.project)
    run_job_inline(job)
    job.refresh_from_db()
    with pytest.raises(ValidationError, match="already succeeded"):
        job_cancel(actor=world.users["admin"], job=job)


def test_running_job_sees_a_cancel_request(world) -> None:
    seen = []

    def runner(job, ctx):
        ProjectHealthCheck.objects.filter(pk=job.pk).update(cancel_requested_at=timezone.now())
        ctx.flush()
        seen.append(ctx.should_stop())
        from llmhub.reporting import JobCancelled

        raise JobCancelled

    job = ProjectHealthCheck.objects.create(project=world.project)
    assert execute_job(ProjectHealthCheck, job.pk, runner, heartbeat=False) == JobStatus.CANCELLED
    assert seen == [True]


def test_sweep_fails_running_jobs_with_a_stale_heartbeat(world, settings) -> None:
    old = timezone.now() - timedelta(seconds=settings.JOB_STALE_AFTER_SECONDS + 1)
    stale = ProjectHealthCheck.objects.create(
        project=world.project,
        status=JobStatus.RUNNING,
        heartbeat_at=old,
        attempts=1,
        worker_host="gpu-7:123",
        started_at=old,
    )
    fresh = ProjectHealthCheck.objects.create(
        project=world.project, status=JobStatus.RUNNING, heartbeat_at=timezone.now(), attempts=1
    )
    assert sweep_stale_jobs() == {"failed": 1, "requeued": 0, "resent": 0}
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert stale.status == JobStatus.FAILED
    assert "gpu-7:123" in stale.error and "stopped responding" in stale.error
    assert fresh.status == JobStatus.RUNNING


def test_sweep_requeues_kinds_that_may_resume(
    world, settings, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    monkeypatch.setattr(ProjectHealthCheck, "max_attempts", 2)
    sent = []
    monkeypatch.setattr(
        runner_for(ProjectHealthCheck).task,
        "apply_async",
        lambda args, queue: sent.append((args, queue)) or type("R", (), {"id": "t"})(),
    )
    old = timezone.now() - timedelta(seconds=settings.JOB_STALE_AFTER_SECONDS + 1)
    job = ProjectHealthCheck.objects.create(
        project=world.project, status=JobStatus.RUNNING, heartbeat_at=old, attempts=1
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert sweep_stale_jobs() == {"failed": 0, "requeued": 1, "resent": 0}
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and "Re-queued" in job.progress_message
    assert sent == [([job.pk], "cpu")]


def test_a_launch_while_the_broker_is_down_creates_nothing(world, monkeypatch) -> None:
    from llmhub import jobs
    from llmhub.celery import app
    from llmhub.exceptions import ServiceUnavailable
    from projects.models import AuditEvent

    monkeypatch.setattr(jobs, "_broker_ok_until", 0.0)  # forget an earlier successful check
    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:1/0")  # nothing listens
    events = AuditEvent.objects.count()
    with pytest.raises(ServiceUnavailable, match="The job queue cannot be reached"):
        health_check_launch(actor=world.users["admin"], project=world.project)
    assert not ProjectHealthCheck.objects.exists()
    assert AuditEvent.objects.count() == events


def test_success_callbacks_commit_with_the_outcome_and_a_failing_one_is_undone(world) -> None:
    """What a job's success changes is written in the transaction that records the success
    (a page reloading when the job ends sees both); a callback that fails is rolled back alone."""
    from projects.models import Project

    def runner(job, ctx) -> None:
        def rename() -> None:
            Project.objects.filter(pk=job.project_id).update(name="renamed by success")

        def broken() -> None:
            Project.objects.filter(pk=job.project_id).update(description="half written")
            raise RuntimeError("callback crashed")

        ctx.after_success(rename)
        ctx.after_success(broken)

    job = ProjectHealthCheck.objects.create(project=world.project)
    assert execute_job(ProjectHealthCheck, job.pk, runner, heartbeat=False) == JobStatus.SUCCEEDED
    project = Project.objects.get(pk=world.project.pk)
    assert project.name == "renamed by success" and project.description != "half written"
