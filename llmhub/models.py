"""The one job lifecycle shared by every long operation (cleaning, training, evaluation...).

``queued -> running -> succeeded | failed | cancelled``. A concrete job kind subclasses
:class:`Job`, adds its inputs and outputs, and registers a runner with
``llmhub.jobs.job_runner``; the runner machinery in ``llmhub.jobs`` does the claiming,
heartbeat, progress, cancellation, error capture and the stale-heartbeat sweep for all of them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

from django.conf import settings
from django.db import models
from django.utils import timezone


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)
TERMINAL_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class Job(models.Model):
    """Abstract base of every job row. Belongs to a project, so team scoping is uniform."""

    # Which Celery queue runs this kind: "cpu" for data work, "gpu" for training/evaluation.
    queue: ClassVar[str] = "cpu"
    # How many times a job may be started in all; a job whose worker died is re-queued while
    # it has attempts left (a kind that can resume from a checkpoint raises this).
    max_attempts: ClassVar[int] = 1
    # A short name for the kind, shown in pages and the audit log.
    kind_label: ClassVar[str] = "job"

    project = models.ForeignKey(
        "projects.Project", on_delete=models.CASCADE, related_name="%(app_label)s_%(class)s_set"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(
        max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED, db_index=True
    )
    progress = models.FloatField(default=0.0)
    progress_message = models.CharField(max_length=255, blank=True, default="")
    error = models.TextField(blank=True, default="")
    traceback = models.TextField(blank=True, default="")
    log = models.TextField(blank=True, default="")
    worker_host = models.CharField(max_length=255, blank=True, default="")
    celery_task_id = models.CharField(max_length=255, blank=True, default="")
    # When the job's message was last sent to the broker: the sweep re-sends a queued job whose
    # message is older than JOB_RESEND_AFTER_SECONDS (it may be lost), at most once per period.
    enqueued_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.kind_label} #{self.pk} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def cancel_requested(self) -> bool:
        return self.cancel_requested_at is not None

    @property
    def duration(self) -> timedelta | None:
        if self.started_at is None:
            return None
        return (self.finished_at or timezone.now()) - self.started_at

    @property
    def eta(self) -> timedelta | None:
        """Time left, extrapolated from progress so far; None until there is something to go on."""
        if self.status != JobStatus.RUNNING or not self.started_at or self.progress <= 0.01:
            return None
        elapsed = (timezone.now() - self.started_at).total_seconds()
        return timedelta(seconds=elapsed * (1 - self.progress) / self.progress)

    @classmethod
    def sweepable(cls) -> models.QuerySet:
        """Rows the stale-heartbeat sweep may touch (kinds that track outside runs narrow it)."""
        return cls.objects.all()

    @classmethod
    def write_metric_points(cls, job_id: int, points: list[tuple[int, dict, float | None]]) -> None:
        """Store metric points reported by the runtime; kinds with curves override this."""
