"""Every write of the Monitor stage's drift side: an endpoint's monitor settings, drift jobs
started by people, and the periodic scheduler that starts one per endpoint and period.

As elsewhere: keyword-only arguments, the actor's role checked first, every error at once (a
ValidationError of ``{field: message}``), slow checks (resolving a webhook's host) before the
transaction opens, one short transaction, an audit event for each person's write.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone

from datasets_app.models import DatasetVersion
from llmhub.exceptions import ServiceUnavailable
from llmhub.jobs import check_broker, enqueue_job, requires_broker
from llmhub.net import check_public_url
from llmhub.services import update_instance
from projects.audit import record_event
from projects.permissions import Action
from projects.services import require
from serving.models import Endpoint, EngineKind
from serving.monitoring.models import DriftJob, MonitorSettings
from serving.monitoring.runtime.config import DriftConfig, DriftConfigError, settings_schema
from serving.monitoring.selectors import resolve_reference

logger = logging.getLogger(__name__)

SETTINGS_EDITABLE_FIELDS = (
    "drift_enabled",
    "reference_version",
    "reference_split",
    "reference_column",
    "window_requests",
    "window_hours",
    "drift_every_minutes",
    "thresholds",
    "error_rate_max",
    "p95_latency_ms_max",
    "feedback_score_min",
    "limit_window_minutes",
    "limit_min_requests",
    "webhook_url",
    "webhook_secret",
)
REFERENCE_FIELDS = {"reference_version", "reference_split", "reference_column"}
HIDDEN_FIELDS = {"webhook_secret"}
MAX_WINDOW_HOURS = 24 * 90
# What a drift job uses where the endpoint's thresholds say nothing, over DriftConfig's own
# defaults: the encoder is the slow part (some 20 ms of CPU a prompt with the offline MiniLM),
# and 500 rows a side keep a 10,000-request window within 30 s on 2 cores while the centroid's
# noise floor (~0.01 at 500 a side) stays under its 0.02 threshold.
JOB_CONFIG_DEFAULTS = {"embedding_max_rows": 500}


def drift_settings_schema() -> list[dict[str, Any]]:
    """DriftConfig's fields (name, type, default, range, help, rule) with the defaults a drift
    job really uses (:data:`JOB_CONFIG_DEFAULTS` over DriftConfig's): for forms and the API."""
    return [
        {**row, "default": JOB_CONFIG_DEFAULTS.get(row["name"], row["default"])}
        for row in settings_schema()
    ]


def _error(field: str | None, message: str) -> ValidationError:
    return ValidationError({field: message} if field else message)


# --- settings ---------------------------------------------------------------------------------


def monitor_settings_get(*, endpoint: Endpoint) -> MonitorSettings:
    """The endpoint's monitor settings, created with their defaults the first time (a system
    write, no actor: the defaults are what an endpoint has until someone changes them)."""
    settings = MonitorSettings.objects.filter(endpoint=endpoint).first()
    if settings is not None:
        return settings
    settings, _created = MonitorSettings.objects.get_or_create(endpoint=endpoint)
    return settings


def _threshold_errors(value: Any) -> dict[str, str]:
    try:
        DriftConfig.from_dict(value)
    except DriftConfigError as exc:
        return {f"thresholds.{name}": message for name, message in exc.fields.items()}
    return {}


def _reference_errors(endpoint: Endpoint, settings: MonitorSettings) -> dict[str, str]:
    """Why the (new) reference cannot serve: another team's version, a missing split or column,
    no text column. Nothing when the reference is the serving version's training data and that
    does not exist (the drift job then says so) unless a column or split was named."""
    version = settings.reference_version
    if version is not None:
        if version.dataset.project.team_id != endpoint.project.team_id:
            return {"reference_version": "Choose a dataset version of this endpoint's team."}
    elif not (settings.reference_split or settings.reference_column):
        return {}
    reference = resolve_reference(endpoint, settings)
    if not reference.reason:
        return {}
    if reference.version is None:
        return {"reference_version": reference.reason}
    if settings.reference_split and reference.version.missing_split(settings.reference_split):
        return {"reference_split": reference.reason}
    field = "reference_column" if settings.reference_column else "reference_version"
    return {field: reference.reason}


def _audited(diff: dict[str, list[Any]]) -> dict[str, list[Any]]:
    out = {}
    for name, (old, new) in diff.items():
        if name in HIDDEN_FIELDS:
            out[name] = ["(hidden)", "(changed)"]
        elif isinstance(old, models.Model) or isinstance(new, models.Model):
            out[name] = [getattr(old, "pk", old), getattr(new, "pk", new)]
        else:
            out[name] = [old, new]
    return out


def monitor_settings_update(*, actor, endpoint: Endpoint, **changes: Any) -> MonitorSettings:
    """Change how ``endpoint`` is watched (EDIT_PROJECT). Every problem is reported at once:
    thresholds as ``thresholds.<name>`` (DriftConfig's validator), a webhook that is not a
    public http(s) URL, a reference version of another team or without a text column, values
    out of range. The webhook secret never reaches the audit log."""
    require(actor, endpoint.project.team, Action.EDIT_PROJECT)
    problems: dict[str, str] = {}
    unknown = set(changes) - set(SETTINGS_EDITABLE_FIELDS)
    if unknown:
        raise _error(None, f"These fields cannot be changed: {', '.join(sorted(unknown))}.")
    if endpoint.archived_at is not None:
        raise _error(None, "This endpoint is archived; its monitoring cannot be changed.")
    if "thresholds" in changes:
        if changes["thresholds"] is None:
            changes["thresholds"] = {}
        problems.update(_threshold_errors(changes["thresholds"]))
    for name in ("reference_split", "reference_column", "webhook_secret"):
        if name in changes:
            changes[name] = (changes[name] or "").strip()
    if "webhook_url" in changes:
        url = (changes["webhook_url"] or "").strip()
        if url:
            # Resolves the host: slow I/O, so before any transaction.
            try:
                url = check_public_url(url, field="webhook_url")
            except ValidationError as exc:
                problems.update({k: " ".join(v) for k, v in exc.message_dict.items()})
        changes["webhook_url"] = url
    reference = changes.get("reference_version")
    if reference is not None and not isinstance(reference, DatasetVersion):
        problems["reference_version"] = "Give the id of a dataset version."
        changes.pop("reference_version")
    current = monitor_settings_get(endpoint=endpoint)
    # Check the whole new state (model ranges and the reference) on a copy before writing.
    trial = MonitorSettings.objects.get(pk=current.pk)
    for name, value in changes.items():
        setattr(trial, name, value)
    try:
        trial.full_clean(exclude=[name.split(".")[0] for name in problems])
    except ValidationError as exc:
        for name, messages in exc.message_dict.items():
            problems.setdefault(name, " ".join(messages))
    if REFERENCE_FIELDS & set(changes) and not REFERENCE_FIELDS & set(problems):
        problems.update(_reference_errors(endpoint, trial))
    if problems:
        raise ValidationError(problems)
    with transaction.atomic():
        settings = MonitorSettings.objects.select_for_update().get(pk=current.pk)
        diff = update_instance(
            settings, changes, editable=SETTINGS_EDITABLE_FIELDS, touch="updated_at"
        )
        if diff:
            record_event(
                actor=actor,
                verb="monitor_settings.updated",
                target=endpoint,
                changes=_audited(diff),
            )
    return settings


# --- drift jobs -------------------------------------------------------------------------------


def _new_drift_job(
    endpoint: Endpoint,
    settings: MonitorSettings,
    *,
    actor=None,
    window_hours: int | None = None,
    scheduled: bool = False,
) -> DriftJob:
    now = timezone.now()
    hours = window_hours or settings.window_hours
    reference = resolve_reference(endpoint, settings)
    try:
        config = DriftConfig.from_dict({**JOB_CONFIG_DEFAULTS, **settings.thresholds}).to_dict()
    except DriftConfigError:
        # Saved before a setting was retired: run with the defaults rather than not at all.
        config = DriftConfig.from_dict(JOB_CONFIG_DEFAULTS).to_dict()
    job = DriftJob(
        project=endpoint.project,
        created_by=actor,
        endpoint=endpoint,
        version_id=endpoint.version_id,
        reference_version=reference.version if not reference.reason else None,
        reference_split=reference.split,
        reference_column=reference.text_column,
        window_start=now - timedelta(hours=hours),
        window_end=now,
        window_requests=settings.window_requests,
        config=config,
        scheduled=scheduled,
    )
    job.full_clean()
    job.save()
    return job


@requires_broker
@transaction.atomic
def drift_job_create(*, actor, endpoint: Endpoint, window_hours: int | None = None) -> DriftJob:
    """Queue a drift check of ``endpoint``'s recent requests now (RUN_JOBS); ``window_hours``
    (default: the settings') bounds how far back the window reaches."""
    require(actor, endpoint.project.team, Action.RUN_JOBS)
    if endpoint.archived_at is not None:
        raise _error("endpoint", "This endpoint is archived: it serves no requests to check.")
    if window_hours is not None and (
        isinstance(window_hours, bool)
        or not isinstance(window_hours, int)
        or not 1 <= window_hours <= MAX_WINDOW_HOURS
    ):
        raise _error("window_hours", f"Give a whole number of hours from 1 to {MAX_WINDOW_HOURS}.")
    settings = monitor_settings_get(endpoint=endpoint)
    job = _new_drift_job(endpoint, settings, actor=actor, window_hours=window_hours)
    record_event(
        actor=actor,
        verb="drift_job.launched",
        target=job,
        changes={"endpoint": endpoint.slug, "window_hours": window_hours or settings.window_hours},
    )
    enqueue_job(job)
    return job


def _watched_endpoints() -> models.QuerySet[Endpoint]:
    """Active endpoints that serve something (a version, or an external engine)."""
    return Endpoint.objects.filter(archived_at__isnull=True).filter(
        models.Q(version__isnull=False) | models.Q(engine=EngineKind.EXTERNAL)
    )


def drift_schedule_due(*, now=None) -> int:
    """Periodic (every process): start a scheduled drift job for each watched endpoint whose
    ``drift_every_minutes`` has passed since its last claim; returns how many were queued.

    Each period is claimed by a conditional update of ``MonitorSettings.drift_claimed_at``
    (from the value read to now) in the transaction that creates the job, so two processes
    never queue one period twice, and a broker that is down undoes the claim with the job.
    Cheap when nothing is due: one query for endpoints without settings, one for the due ones.
    """
    now = now or timezone.now()
    missing = list(
        _watched_endpoints().filter(monitor_settings__isnull=True).values_list("pk", flat=True)
    )
    if missing:
        MonitorSettings.objects.bulk_create(
            [MonitorSettings(endpoint_id=pk) for pk in missing], ignore_conflicts=True
        )
    rows = MonitorSettings.objects.filter(
        drift_enabled=True, endpoint__in=_watched_endpoints()
    ).values_list("pk", "drift_claimed_at", "drift_every_minutes")
    due = [
        (pk, claimed)
        for pk, claimed, every in rows
        if claimed is None or claimed + timedelta(minutes=every) <= now
    ]
    if not due:
        return 0
    try:
        # The broker's round trip before any row is claimed (and so locked); the checks inside
        # enqueue_job then reuse this answer.
        check_broker()
    except ServiceUnavailable:
        logger.warning("Drift jobs not scheduled: the job queue is unreachable.")
        return 0
    queued = 0
    for pk, claimed in due:
        try:
            with transaction.atomic():
                claim = MonitorSettings.objects.filter(pk=pk)
                claim = (
                    claim.filter(drift_claimed_at__isnull=True)
                    if claimed is None
                    else claim.filter(drift_claimed_at=claimed)
                )
                if not claim.update(drift_claimed_at=now):
                    continue  # another process claimed this period
                settings = MonitorSettings.objects.select_related("endpoint__project").get(pk=pk)
                job = _new_drift_job(settings.endpoint, settings, scheduled=True)
                enqueue_job(job)
        except ServiceUnavailable:
            # The claim rolled back with the job: the next tick tries again.
            logger.warning("Drift jobs not scheduled: the job queue is unreachable.")
            break
        queued += 1
    return queued
