"""Reads of the Monitor stage's drift side: drift jobs and monitor settings scoped to the user's
teams, a statistic's history for the charts, and the reference a drift job compares with.

The reference: the settings' dataset version (with its split and column) when one is chosen,
else the serving version's training data (the dataset version, split and text column of the
training job that made it). :func:`resolve_reference` says which, or why there is none.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import OuterRef, QuerySet, Subquery

from datasets_app.models import DatasetVersion
from projects.selectors import User, get_visible, visible_to
from serving.models import Endpoint
from serving.monitoring.models import DriftJob, DriftStatistic, MonitorSettings
from training.models import ModelVersion

VIA_ENDPOINT = "endpoint__project__team"
# Roles whose column holds a prompt-like input text, in the order a reference reads them
# (datasets_app.services.INPUT_TEXT_ROLES).
TEXT_ROLES = ("text", "prompt", "question", "context")
# The role holding the answers a generator learnt from (the reference completions).
COMPLETION_ROLES = ("target", "completion", "response", "chosen")


# --- scoped reads --------------------------------------------------------------------------------


def drift_jobs_for_user(user: User) -> QuerySet[DriftJob]:
    """Drift jobs of the user's teams (the report is a JSON field on the row)."""
    return visible_to(
        DriftJob.objects.select_related(
            "project__team",
            "endpoint",
            "version__registered_model",
            "reference_version__dataset",
            "created_by",
        ),
        user,
    )


def get_drift_job_for_user(user: User, pk) -> DriftJob:
    return get_visible(drift_jobs_for_user(user), user, pk)


def monitor_settings_for_user(user: User) -> QuerySet[MonitorSettings]:
    """Monitor settings of the user's endpoints (rows exist once read or changed)."""
    return visible_to(
        MonitorSettings.objects.select_related(
            "endpoint__project__team", "reference_version__dataset"
        ).order_by("endpoint_id"),
        user,
        team_path=VIA_ENDPOINT,
    )


def get_monitor_settings_for_user(user: User, pk) -> MonitorSettings:
    return get_visible(monitor_settings_for_user(user), user, pk, team_path=VIA_ENDPOINT)


def latest_drift_job(endpoint: Endpoint) -> DriftJob | None:
    """The endpoint's latest finished drift job with a result (the dashboard's "last check")."""
    return (
        DriftJob.objects.filter(endpoint=endpoint)
        .exclude(result="")
        .order_by("-window_end", "-id")
        .first()
    )


def drift_history(endpoint: Endpoint, *, since: datetime) -> dict[str, list[dict[str, Any]]]:
    """Each statistic's values since ``since``, oldest first, for the charts over time (one
    query): ``{name: [{"t", "value", "threshold", "drifted", "job_id"}]}``."""
    history: dict[str, list[dict[str, Any]]] = defaultdict(list)
    rows = (
        DriftStatistic.objects.filter(endpoint=endpoint, computed_at__gte=since)
        .order_by("name", "computed_at", "id")
        .values_list("name", "computed_at", "value", "threshold", "drifted", "job_id")
    )
    for name, at, value, threshold, drifted, job_id in rows:
        history[name].append(
            {
                "t": at.isoformat(),
                "value": value,
                "threshold": threshold,
                "drifted": drifted,
                "job_id": job_id,
            }
        )
    return dict(history)


# --- the reference -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """What a drift job compares the window with; ``version`` None: none, ``reason`` says why."""

    version: DatasetVersion | None
    split: str = ""
    text_column: str = ""
    label_column: str = ""
    completion_column: str = ""
    reason: str = ""
    default: bool = True  # the serving version's training data, not a chosen version


def _string_columns(version: DatasetVersion) -> set[str]:
    return {
        c["name"] for c in version.schema or [] if c.get("type") in (None, "string", "large_string")
    }


def text_column_of(
    version: DatasetVersion, *, column: str = "", roles: dict | None = None
) -> tuple[str, str]:
    """The column of ``version`` holding its input text: ``column`` when given, else the first
    text role of ``roles`` (default: the version's own). Returns (column, "") or ("", why)."""
    names = set(version.columns)
    strings = _string_columns(version)
    if column:
        if column not in names:
            return "", f"{version} has no column '{column}'; its columns are {_listed(version)}."
        if column not in strings:
            return "", f"{version}'s column '{column}' holds no text (it is not a string column)."
        return column, ""
    for source in (roles or {}, version.column_roles or {}):
        for role in TEXT_ROLES:
            name = source.get(role)
            if name and name in strings:
                return name, ""
    return "", (
        f"{version} has no text column (no column has a text role: "
        f"{', '.join(TEXT_ROLES)}); its columns are {_listed(version)}. Map the text column on "
        "the version's page or name the column."
    )


def _listed(version: DatasetVersion) -> str:
    return ", ".join(version.columns) or "none"


def _role_column(version: DatasetVersion, roles: dict, names: tuple[str, ...]) -> str:
    columns = set(version.columns)
    for source in (roles or {}, version.column_roles or {}):
        for role in names:
            if source.get(role) in columns:
                return source[role]
    return ""


def _training_data(version: ModelVersion) -> tuple[DatasetVersion | None, str, dict]:
    """The dataset version, train split and column roles ``version`` was trained on."""
    from training.models import TrainingJob

    job = (
        TrainingJob.objects.filter(model_version=version)
        .select_related("train_version__dataset")
        .first()
    )
    if job is not None and job.train_version_id is not None:
        return job.train_version, job.train_split, dict(job.column_roles or {})
    if version.dataset_version_id is not None:
        return version.dataset_version, "", {}
    return None, "", {}


def resolve_reference(
    endpoint: Endpoint, settings: MonitorSettings | None = None, *, default: bool = False
) -> Reference:
    """The reference of ``endpoint``'s drift jobs under ``settings`` (read if not given): the
    chosen dataset version, else (or with ``default``) the serving version's training data."""
    if settings is None:
        settings = MonitorSettings.objects.filter(endpoint=endpoint).first()
    roles: dict = {}
    chosen = not default and settings is not None and settings.reference_version_id is not None
    if chosen:
        version = settings.reference_version
        split, column = settings.reference_split, settings.reference_column
    else:
        column = settings.reference_column if settings is not None and not default else ""
        served = endpoint.version
        if served is None:
            return Reference(
                None,
                reason=(
                    f"{endpoint.name} serves no version of the registry, so it has no training "
                    "data to compare with: choose a reference dataset version in its monitor "
                    "settings."
                ),
            )
        version, split, roles = _training_data(served)
        if version is None:
            return Reference(
                None,
                reason=(
                    f"{served} was not trained on a dataset version of LLMHub, so there is no "
                    "default reference: choose a reference dataset version in the monitor "
                    "settings."
                ),
            )
        if settings is not None and settings.reference_split and not default:
            split = settings.reference_split
    problem = version.missing_split(split) if split else None
    if problem:
        return Reference(version, split, reason=problem, default=not chosen)
    text, why = text_column_of(version, column=column, roles=roles)
    return Reference(
        version,
        split,
        text_column=text,
        label_column=_role_column(version, roles, ("label",)),
        completion_column=_role_column(version, roles, COMPLETION_ROLES),
        reason=why,
        default=not chosen,
    )


def reference_for(
    endpoint: Endpoint, *, default: bool = False
) -> tuple[DatasetVersion | None, str]:
    """The reference dataset version of ``endpoint``'s drift jobs (the chosen one, else the
    serving version's training data; with ``default`` always the latter) and, when there is
    none or it cannot serve (no text column, a missing split), why ("" when it can)."""
    reference = resolve_reference(endpoint, default=default)
    return reference.version, reference.reason


def latest_drift_jobs(user, endpoints: list) -> dict[int, DriftJob]:
    """{endpoint id: its newest drift job} in one query, however many endpoints."""
    if not endpoints:
        return {}
    newest = (
        DriftJob.objects.filter(endpoint=OuterRef("endpoint_id"))
        .order_by("-created_at", "-id")
        .values("id")[:1]
    )
    jobs = drift_jobs_for_user(user).filter(
        endpoint__in=[e.pk for e in endpoints], pk=Subquery(newest)
    )
    return {job.endpoint_id: job for job in jobs}
