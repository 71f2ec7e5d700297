"""Project jobs: the health check, a cheap job that exercises the whole job machinery."""

from __future__ import annotations

import platform
import time
import uuid

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from llmhub.jobs import JobContext, job_runner
from llmhub.reporting import JobCancelled, JobInputError
from projects.models import ProjectHealthCheck


@job_runner(ProjectHealthCheck)
def run_project_health_check(job: ProjectHealthCheck, ctx: JobContext) -> None:
    """Check that the project's goals are measurable and that storage round-trips a file."""
    checks: list[dict] = []
    goals = list(job.project.goals.all())
    checks.append(
        {
            "name": "goals",
            "ok": bool(goals),
            "detail": f"{len(goals)} goal(s)"
            if goals
            else "No goals yet: add one on the Define tab.",
        }
    )
    ctx.progress(0.2, "Checked goals")

    name = default_storage.save(f"healthchecks/{uuid.uuid4().hex}.txt", ContentFile(b"ok"))
    try:
        with default_storage.open(name) as handle:
            round_trip = handle.read() == b"ok"
    finally:
        default_storage.delete(name)
    checks.append(
        {"name": "storage", "ok": round_trip, "detail": "Files can be written and read back."}
    )
    ctx.progress(0.4, "Checked storage")
    checks.append(
        {
            "name": "worker",
            "ok": True,
            "detail": f"Python {platform.python_version()} on {job.worker_host}",
        }
    )

    # Optional waiting, polled like any long runtime loop, so cancel and heartbeat are testable.
    deadline = time.monotonic() + job.sleep_seconds
    while time.monotonic() < deadline:
        if ctx.should_stop():
            raise JobCancelled
        ctx.progress(0.4 + 0.5 * (1 - (deadline - time.monotonic()) / job.sleep_seconds), "Waiting")
        time.sleep(0.1)
    if job.fail_with:
        raise JobInputError(job.fail_with)
    ctx.record(result={"checks": checks})
