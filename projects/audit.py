"""Recording audit events: called by services inside their transaction."""

from __future__ import annotations

from typing import Any

from django.db.models import Model

from projects.models import AuditEvent, Project, Team


def record_event(
    *,
    actor,
    team: Team,
    verb: str,
    target: Model,
    project: Project | None = None,
    changes: dict[str, Any] | None = None,
) -> AuditEvent:
    """Write one audit event: ``actor`` did ``verb`` (e.g. "goal.updated") to ``target``."""
    return AuditEvent.objects.create(
        team=team,
        project=project,
        actor=actor if getattr(actor, "is_authenticated", False) else None,
        verb=verb,
        target_type=target._meta.model_name,
        target_id=str(target.pk or ""),
        target_repr=str(target)[:255],
        changes=_jsonable(changes or {}),
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def diff(instance: Model, updates: dict[str, Any]) -> dict[str, list[Any]]:
    """``{field: [old, new]}`` for the fields ``updates`` would change."""
    return {
        name: [getattr(instance, name), new]
        for name, new in updates.items()
        if getattr(instance, name) != new
    }
