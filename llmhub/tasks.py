"""Periodic maintenance tasks of the job machinery."""

from __future__ import annotations

from llmhub.celery import app
from llmhub.jobs import sweep_stale_jobs


@app.task(name="llmhub.sweep_stale_jobs", ignore_result=True)
def sweep_stale_jobs_task() -> dict[str, int]:
    """Recover stale running jobs and re-send queued jobs whose message may be lost (beat)."""
    return sweep_stale_jobs()
