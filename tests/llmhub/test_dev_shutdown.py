"""Stopping a worker hands its running job back, and ``bin/dev`` stops within seconds.

Before: Celery's warm shutdown waited for the running task, however long (a training run), so
Ctrl-C or SIGTERM left bin/dev hanging with the worker in "Warm shutdown", and the job stayed
"running" until a sweep noticed its dead heartbeat. Now the job is asked to stop, as by a
cancel, and handed back: queued again with its message re-sent when its kind resumes from a
checkpoint, failed with the reason otherwise; the processes exit within seconds.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from django.db import connection

from llmhub import jobs
from llmhub.celery import app
from llmhub.jobs import execute_job, hand_back_running_jobs, run_job_inline, runner_for, wait_until
from llmhub.models import JobStatus
from projects.models import ProjectHealthCheck
from projects.services import health_check_launch

REPO_ROOT = Path(__file__).resolve().parents[2]


def _row(job) -> ProjectHealthCheck:
    return ProjectHealthCheck.objects.get(pk=job.pk)


def _private_queue(monkeypatch) -> str:
    """Route health checks to a queue of this test's own, which no worker reads."""
    name = f"handback-{uuid.uuid4().hex[:8]}"
    runner = dataclasses.replace(runner_for(ProjectHealthCheck), queue=name)
    monkeypatch.setitem(jobs._RUNNERS, ProjectHealthCheck, runner)
    return name


def _queue_size(name: str) -> int:
    with app.connection_for_write() as conn:
        return conn.default_channel.queue_declare(queue=name, auto_delete=False).message_count


def _purge(name: str) -> None:
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(name)


def _run_in_thread(job, fn=None) -> threading.Thread:
    """Run ``job`` as a worker would (heartbeat included) in a thread of this process."""
    fn = fn or runner_for(ProjectHealthCheck).function

    def target() -> None:
        try:
            execute_job(ProjectHealthCheck, job.pk, fn)
        finally:
            connection.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert wait_until(lambda: _row(job).status == JobStatus.RUNNING, timeout=10)
    return thread


# --- the hand-back, in process ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_resumable_job_is_queued_again_with_its_message_when_its_worker_stops(
    world, monkeypatch
) -> None:
    # A kind that resumes from a checkpoint (training) says so with max_attempts > 1.
    monkeypatch.setattr(ProjectHealthCheck, "max_attempts", 2)
    queue = _private_queue(monkeypatch)
    job = health_check_launch(
        actor=world.users["engineer"], project=world.project, sleep_seconds=60
    )
    assert wait_until(lambda: _queue_size(queue) == 1, timeout=5)
    _purge(queue)  # the worker took its message
    thread = _run_in_thread(job)

    asked = time.monotonic()
    assert hand_back_running_jobs(exit_after=False) == 1
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - asked < 3
    row = _row(job)
    assert row.status == JobStatus.QUEUED
    assert row.attempts == 0  # a hand-back is not a failed attempt
    assert row.worker_host == "" and row.finished_at is None and row.error == ""
    assert row.progress_message.startswith("Re-queued: the worker was stopped")
    assert "resumes from its last checkpoint" in row.log
    assert _queue_size(queue) == 1  # re-sent: the next worker takes it at once

    # The next worker runs it to the end, once.
    ProjectHealthCheck.objects.filter(pk=job.pk).update(sleep_seconds=0)
    assert run_job_inline(_row(job)) == JobStatus.SUCCEEDED
    assert _row(job).attempts == 1
    _purge(queue)


@pytest.mark.django_db(transaction=True)
def test_a_job_that_cannot_resume_fails_with_the_reason(world, monkeypatch) -> None:
    queue = _private_queue(monkeypatch)
    job = health_check_launch(
        actor=world.users["engineer"], project=world.project, sleep_seconds=60
    )
    _purge(queue)
    thread = _run_in_thread(job)
    assert hand_back_running_jobs(exit_after=False) == 1
    thread.join(10)
    row = _row(job)
    assert row.status == JobStatus.FAILED and row.finished_at is not None
    assert row.error == (
        "Stopped: the worker was stopped while the job was running (a project health check"
        " cannot resume); start it again."
    )
    assert row.log.splitlines()[-1] == f"FAILED: {row.error}"
    assert _queue_size(queue) == 0  # nothing re-sent


@pytest.mark.django_db(transaction=True)
def test_a_cancel_asked_before_the_stop_still_cancels(world, monkeypatch) -> None:
    monkeypatch.setattr(ProjectHealthCheck, "max_attempts", 2)
    queue = _private_queue(monkeypatch)
    job = health_check_launch(
        actor=world.users["engineer"], project=world.project, sleep_seconds=60
    )
    _purge(queue)
    thread = _run_in_thread(job)
    jobs.request_cancel(_row(job))
    # The heartbeat (every second in tests) reads the cancel request; then the worker stops.
    assert wait_until(lambda: _row(job).status == JobStatus.CANCELLED, timeout=10)
    thread.join(10)
    assert hand_back_running_jobs(exit_after=False) == 0  # nothing left to hand back
    assert _row(job).status == JobStatus.CANCELLED and _queue_size(queue) == 0


@pytest.mark.django_db(transaction=True)
def test_a_job_that_does_not_stop_is_handed_back_after_the_grace(world, monkeypatch) -> None:
    monkeypatch.setattr(ProjectHealthCheck, "max_attempts", 2)
    queue = _private_queue(monkeypatch)
    job = health_check_launch(actor=world.users["engineer"], project=world.project)
    _purge(queue)
    release = threading.Event()

    def stuck(job, ctx) -> None:  # one long call that never polls should_stop()
        release.wait(30)

    thread = _run_in_thread(job, stuck)
    assert hand_back_running_jobs(grace=0.5, exit_after=False) == 1
    assert wait_until(lambda: _row(job).status == JobStatus.QUEUED, timeout=5)
    row = _row(job)
    assert "did not stop within 0.5s" in row.log and _queue_size(queue) == 1
    # When the call finally returns, the late outcome does not overwrite the hand-back.
    release.set()
    thread.join(10)
    assert _row(job).status == JobStatus.QUEUED and _row(job).attempts == 0
    _purge(queue)


# --- bin/dev, end to end -------------------------------------------------------------------------

_LAUNCH = """
import sys
from django.contrib.auth import get_user_model
from projects.models import Membership, Project, Role, Team
from projects.services import health_check_launch
user = get_user_model().objects.create(username="dev-shutdown")
team = Team.objects.create(slug="dev-shutdown", name="Dev shutdown")
Membership.objects.create(team=team, user=user, role=Role.ADMIN)
project = Project.objects.create(team=team, name="P", slug="p", created_by=user)
print("JOB", health_check_launch(actor=user, project=project, sleep_seconds=300).pk)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _session_processes(sid: int) -> list[str]:
    out = subprocess.run(
        ["ps", "-o", "pid=,args=", "-s", str(sid)], capture_output=True, text=True
    ).stdout
    return [line for line in out.splitlines() if line.strip()]


@pytest.mark.worker
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_bin_dev_stops_within_seconds_and_hands_the_running_job_back(tmp_path, sig) -> None:
    var = tmp_path / "var"
    port = _free_port()
    # bin/dev on the embedded default (SQLite, filesystem broker) in a scratch folder: none of
    # the test run's settings, database, broker or Redis.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LLMHUB_", "DJANGO_", "CELERY_", "REDIS_", "DATABASE_"))
    }
    env |= {
        "LLMHUB_VAR_DIR": str(var),
        "LLMHUB_ADDRESS": f"127.0.0.1:{port}",
        "LLMHUB_DEV_NO_INSTALL": "1",
        "DJANGO_SETTINGS_MODULE": "llmhub.settings",
        "PYTHONUNBUFFERED": "1",
    }
    log_path = tmp_path / "dev.log"
    with log_path.open("wb") as log:
        # Its own session, as a terminal's foreground job: Ctrl-C is SIGINT to the whole group
        # (SIGINT is not left ignored, as it is for a background job of a script).
        dev = subprocess.Popen(
            [str(REPO_ROOT / "bin" / "dev")],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    try:
        assert wait_until(lambda: "Ctrl-C stops both" in log_path.read_text(), timeout=120), (
            log_path.read_text()
        )
        launched = subprocess.run(
            [str(REPO_ROOT / ".venv" / "bin" / "python"), "manage.py", "shell", "-c", _LAUNCH],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        job_id = int(launched.stdout.split("JOB")[-1])
        assert wait_until(
            lambda: f"Started health check #{job_id}" in log_path.read_text(), timeout=60
        ), log_path.read_text()
        assert len(_session_processes(dev.pid)) >= 5  # bash, worker + 2 pool, runserver + child

        asked = time.monotonic()
        os.killpg(dev.pid, sig)
        returncode = dev.wait(30)
        took = time.monotonic() - asked
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait(10)
    log = log_path.read_text()
    assert returncode == 0, log
    assert took < 12, f"bin/dev took {took:.1f}s to stop:\n{log}"
    assert "killed" not in log  # nothing needed SIGKILL
    time.sleep(0.5)
    assert _session_processes(dev.pid) == [], log  # no worker, pool process or server left

    with sqlite3.connect(var / "llmhub.sqlite3") as db:
        status, error = db.execute(
            # The table name is the model's own, not input.
            f"SELECT status, error FROM {ProjectHealthCheck._meta.db_table} WHERE id = ?",  # noqa: S608
            (job_id,),
        ).fetchone()
    assert status == JobStatus.FAILED, log
    assert error.startswith("Stopped: the worker was stopped while the job was running")
    assert f"Handed back health check #{job_id}" in log
