"""Periodic maintenance tasks of the job machinery."""

from __future__ import annotations

from celery import shared_task

from llmhub.jobs import sweep_stale_jobs


@shared_task(name="llmhub.sweep_stale_jobs", ignore_result=True)
def sweep_stale_jobs_task() -> dict[str, int]:
    """Fail or re-queue running jobs whose worker stopped sending heartbeats."""
    return sweep_stale_jobs()
