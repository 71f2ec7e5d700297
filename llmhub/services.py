"""Writes shared by every job kind."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from llmhub.jobs import request_cancel
from llmhub.models import Job
from projects.audit import record_event
from projects.permissions import Action
from projects.services import require


@transaction.atomic
def job_cancel(*, actor, job: Job) -> Job:
    """Cancel a queued job now, or ask a running one to stop (it stops within seconds and
    keeps what it saved so far). A finished job cannot be cancelled."""
    require(actor, job.project.team, Action.RUN_JOBS)
    if job.is_terminal:
        raise ValidationError(f"This {job.kind_label} already {job.status}; nothing to cancel.")
    status = request_cancel(job)
    record_event(
        actor=actor,
        team=job.project.team,
        project=job.project,
        verb=f"{job._meta.model_name}.cancel_requested",
        target=job,
        changes={"status_after": status},
    )
    job.refresh_from_db()
    return job
