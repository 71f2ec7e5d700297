"""Small template helpers: status badges and number formatting."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from django import template
from django.urls import reverse
from django.utils.html import format_html, format_html_join

register = template.Library()

_GOAL_BADGES = {
    "met": ("badge-success", "Met"),
    "not_met": ("badge-danger", "Not met"),
    "not_measured": ("badge-muted", "Not measured"),
}

_JOB_BADGES = {
    "queued": "badge-muted",
    "running": "badge-info",
    "succeeded": "badge-success",
    "failed": "badge-danger",
    "cancelled": "badge-warning",
}


@register.simple_tag
def goal_badge(goal) -> str:
    css, label = _GOAL_BADGES[goal.status]
    return format_html('<span class="badge {}">{}</span>', css, label)


@register.simple_tag
def job_badge(status: str) -> str:
    return format_html(
        '<span class="badge {}" data-status="{}">{}</span>',
        _JOB_BADGES.get(status, "badge-muted"),
        status,
        status.capitalize(),
    )


@register.filter
def num(value, digits: int = 4) -> str:
    """A number with at most ``digits`` significant digits; '—' for none."""
    if value is None or value == "":
        return "—"
    try:
        return f"{float(value):.{int(digits)}g}"
    except (TypeError, ValueError):
        return str(value)


@register.filter
def percent(value) -> str:
    if value is None:
        return "—"
    return f"{float(value) * 100:.0f}%"


@register.filter
def duration(value: timedelta | None) -> str:
    if value is None:
        return "—"
    seconds = int(value.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {seconds:02d}s"
    return f"{seconds}s"


@register.filter
def verb_label(verb: str) -> str:
    """'goal.created' -> 'created goal'; 'member.role_changed' -> 'role changed member'."""
    noun, _, action = verb.partition(".")
    if not action:
        return verb.replace("_", " ")
    return f"{action.replace('_', ' ')} {noun.replace('_', ' ')}"


@register.filter
def get_item(mapping, key):
    """``mapping|get_item:key`` for keys that are not valid template identifiers."""
    if not isinstance(mapping, dict):
        return None
    return mapping.get(key)


@register.filter
def sum_values(values) -> float:
    return sum(values)


@register.filter
def key_label(key: str) -> str:
    """'stereotype_preferred' -> 'Stereotype preferred'; 'ci_low' -> 'CI low'."""
    words = str(key).replace("_", " ").split()
    words = [w.upper() if w in ("ci", "n") else w for w in words]
    text = " ".join(words)
    return text[:1].upper() + text[1:]


# Live jobs: one mechanism for every page that shows a job. An element carrying
# ``data-job-url`` (the job's API detail) and ``data-job-active="true"`` is polled by
# llmhub.js while the job is queued or running; when it ends the page reloads (or offers to,
# once a form has been edited). Pages declare the jobs they show with these tags, never by
# writing the attributes themselves, so a new page follows its jobs by showing them.
_JOB_API_ROUTES = {
    "datasets_app.datajob": "data-job-detail",
    "training.trainingjob": "training-job-detail",
    "evaluation.evaluationrun": "evaluation-run-detail",
    "evaluation.biasreport": "bias-report-detail",
    "projects.projecthealthcheck": "health-check-detail",
    "evaluation.feedbackexport": "feedback-export-detail",
    "evaluation.airatingjob": "feedback-ai-rating-job-detail",
    "evaluation.generationjob": "feedback-generation-detail",
    "serving.driftjob": "drift-job-detail",
}


def job_api_url(job) -> str:
    """The API detail URL the page polls for ``job`` (any concrete ``Job`` model)."""
    return reverse(_JOB_API_ROUTES[job._meta.label_lower], args=[job.pk])


@register.simple_tag
def live_job(job) -> str:
    """Attributes that make the element carrying them follow ``job``:
    ``<tr {% live_job job %}>``. Inside it, ``[data-status]`` (a job badge), ``.progress > div``
    and ``[data-job-message]`` are kept current while the job runs."""
    return format_html(
        'data-job-url="{}" data-job-active="{}"',
        job_api_url(job),
        "true" if job.is_active else "false",
    )


@register.simple_tag
def live_jobs(*job_lists) -> str:
    """Hidden markers for the active jobs among ``job_lists`` (jobs or iterables of jobs), for
    a page whose content a job changes without showing it as a row: the Define page follows
    the project's running evaluations, since their end changes the goals' status."""
    markers = []
    for jobs in job_lists:
        if jobs is None or jobs == "":
            continue
        for job in jobs if isinstance(jobs, Iterable) else [jobs]:
            if job.is_active:
                markers.append(
                    format_html(
                        '<span hidden data-live-job data-job-url="{}" data-job-active="true">'
                        "</span>",
                        job_api_url(job),
                    )
                )
    return format_html_join("", "{}", ((m,) for m in markers))


# The columns of report examples that read best first, in this order; others follow by name.
# Not the rows' key order: PostgreSQL's jsonb keeps keys sorted by length, SQLite as written.
EXAMPLE_COLUMN_ORDER = (
    "group",
    "index",
    "input",
    "prompt",
    "sentence",
    "prediction",
    "reference",
    "score",
)


@register.filter
def example_columns(examples) -> list[str]:
    """The keys of a report's example rows: the columns of its table, in the same order on
    every database (``EXAMPLE_COLUMN_ORDER``, then the rest alphabetically)."""
    keys = {key for example in examples or [] if isinstance(example, dict) for key in example}
    first = [key for key in EXAMPLE_COLUMN_ORDER if key in keys]
    return first + sorted(keys - set(first))


@register.filter
def cell(value, limit: int = 300) -> str:
    """One table cell: numbers to 4 significant digits, text cut at ``limit`` characters."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return num(value)
    if isinstance(value, dict):
        text = ", ".join(f"{k} {cell(v)}" for k, v in value.items())
    else:
        text = str(value)
    limit = int(limit)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@register.filter
def with_job_status(events) -> list:
    """The feed's events with their jobs' current status (``projects.selectors``)."""
    from projects.selectors import events_with_job_status

    return events_with_job_status(events)


@register.filter
def change_text(value) -> str:
    """One entry of an event's changes: ``[old, new]`` reads "old → new"; a created object's
    value (a string, a number, a list of names) reads as itself, never letter by letter."""
    # ``update_instance`` stores each change as the pair [old, new].
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"{_change_item(value[0])} → {_change_item(value[1])}"
    return _change_item(value)


def _change_item(value) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, (list, tuple)):
        return ", ".join(_change_item(v) for v in value) or "—"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_change_item(v)}" for k, v in value.items()) or "—"
    if isinstance(value, float):
        return num(value)
    return str(value)


@register.simple_tag
def default_smoothing() -> str:
    """The loss charts' default smoothing weight (one constant, in ``frontend.charts``)."""
    from frontend.charts import DEFAULT_SMOOTHING

    return f"{DEFAULT_SMOOTHING:.2f}"
