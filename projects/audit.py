"""Recording audit events: called by services inside their transaction."""

from __future__ import annotations

from typing import Any

from django.db.models import ForeignKey, Model

from projects.models import AuditEvent, Project, Team

_DERIVE: Any = object()  # "not given": derive it from the target (None means "no project")


def record_event(
    *,
    actor,
    verb: str,
    target: Model,
    team: Team | None = None,
    project: Project | None = _DERIVE,
    changes: dict[str, Any] | None = None,
) -> AuditEvent:
    """Write one audit event: ``actor`` did ``verb`` (e.g. "goal.updated") to ``target``.

    ``team`` and ``project`` are derived from ``target`` when not given (see
    :func:`scope_of`); pass ``project=None`` for an event that must not point at a project
    (the project itself is being deleted).
    """
    if team is None or project is _DERIVE:
        derived_team, derived_project = scope_of(target)
        team = team or derived_team
        if project is _DERIVE:
            project = derived_project
    if team is None:
        raise ValueError(f"record_event cannot tell the team of {target!r}; pass team=.")
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


def scope_of(target: Model) -> tuple[Team | None, Project | None]:
    """The team and project an object belongs to: itself (a Team or Project), its ``project``
    or ``team`` field, or those of the object one foreign key up (a dataset version's dataset)."""
    if isinstance(target, Team):
        return target, None
    if isinstance(target, Project):
        return target.team, target
    for name in ("project", "team"):
        if _has_fk(target, name):
            value = getattr(target, name)
            if isinstance(value, Project):
                return value.team, value
            if isinstance(value, Team):
                return value, None
    for field in target._meta.concrete_fields:
        if isinstance(field, ForeignKey) and field.name not in ("project", "team"):
            related_model = field.related_model
            if _has_fk(related_model, "project") or _has_fk(related_model, "team"):
                parent = getattr(target, field.name)
                if parent is not None:
                    return scope_of(parent)
    return None, None


def _has_fk(model: type[Model] | Model, name: str) -> bool:
    try:
        return isinstance(model._meta.get_field(name), ForeignKey)
    except Exception:  # FieldDoesNotExist
        return False


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
