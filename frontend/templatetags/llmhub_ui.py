"""Small template helpers: status badges and number formatting."""

from __future__ import annotations

from datetime import timedelta

from django import template
from django.utils.html import format_html

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
