"""Writes shared by every job kind, and the update helper every app's services use.

The core imports no stage app (DESIGN.md): who may cancel a job and how the audit log records
it are decided by ``projects``, which registers the ``JOB_AUTHORIZE`` and ``AUDIT`` hooks (see
``llmhub.hooks``) in its ``ready()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Model
from django.utils import timezone

from llmhub import hooks
from llmhub.jobs import request_cancel
from llmhub.models import Job

M = TypeVar("M", bound=Model)

# The role action a cancel needs (a ``projects.permissions.Action`` value, by name).
RUN_JOBS = "run_jobs"


@transaction.atomic
def job_cancel(*, actor, job: Job) -> Job:
    """Cancel a queued job now, or ask a running one to stop (it stops within seconds and
    keeps what it saved so far). A finished job cannot be cancelled."""
    hooks.call_required(hooks.JOB_AUTHORIZE, actor=actor, job=job, action=RUN_JOBS)
    if job.is_terminal:
        raise ValidationError(f"This {job.kind_label} already {job.status}; nothing to cancel.")
    status = request_cancel(job)
    hooks.fire(
        hooks.AUDIT,
        actor=actor,
        verb=f"{job._meta.model_name}.cancel_requested",
        target=job,
        changes={"status_after": status},
    )
    job.refresh_from_db()
    return job


def update_instance(
    instance: M,
    changes: Mapping[str, Any],
    *,
    editable: Iterable[str] | None = None,
    touch: str | None = None,
    before_save: Callable[[M, dict[str, list[Any]]], Iterable[str] | None] | None = None,
) -> dict[str, list[Any]]:
    """Apply ``changes`` to ``instance``, validate and save only what changed; return the diff.

    - ``editable``: the fields a caller may change; any other name is a ValidationError
      naming them (nothing is set).
    - The diff is ``{field: [old, new]}`` for the fields whose value really changes; with an
      empty diff nothing is validated or saved.
    - ``touch``: a timestamp field set to now whenever something changed (``updated_at``).
    - ``before_save(instance, diff)``: runs after ``full_clean()``, before the save, for checks
      that need the new values (raise ValidationError to refuse) and for derived fields: it
      returns the names of any further fields it set, which are saved too (not in the diff).

    Call it inside the service's transaction, on a row read with ``select_for_update()`` when
    concurrent updates must not interleave; pass the diff to ``record_event(changes=...)``.
    """
    if editable is not None:
        unknown = set(changes) - set(editable)
        if unknown:
            raise ValidationError(f"These fields cannot be changed: {', '.join(sorted(unknown))}.")
    diff = {
        name: [getattr(instance, name), value]
        for name, value in changes.items()
        if getattr(instance, name) != value
    }
    if not diff:
        return diff
    for name, (_old, new) in diff.items():
        setattr(instance, name, new)
    fields = list(diff)
    if touch:
        setattr(instance, touch, timezone.now())
        fields.append(touch)
    instance.full_clean()
    if before_save is not None:
        fields = list(dict.fromkeys([*fields, *(before_save(instance, diff) or ())]))
    instance.save(update_fields=fields)
    return diff
