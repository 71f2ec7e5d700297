"""The role table (``projects.permissions``) enforced on every API route, before validation.

Each viewset declares the action each of its routes needs (``required_actions``, keyed by the
viewset action's name, or ``"name.method"`` where one action has several methods; reads default
to the viewset's ``read_action``, itself ``Action.VIEW_WORK`` unless set). This permission
class, installed for every API view in ``REST_FRAMEWORK["DEFAULT_PERMISSION_CLASSES"]``, finds
the team from the object (detail routes) or from the ``team``/``project`` id of the request
body (creates), and answers 403 naming the role when the table refuses, before the body is
validated. Services still check the role themselves: this is the early, uniform answer, not
the only guard.

It lives here rather than in ``llmhub/api`` because the core may not import a stage app.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import cache
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import Model
from rest_framework.exceptions import NotFound
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from llmhub.api.fields import ScopedPrimaryKeyRelatedField
from llmhub.api.serializers import INT64_MAX
from projects.models import Project, Team
from projects.permissions import Action, check_role, role_allows
from projects.selectors import role_in_team

logger = logging.getLogger(__name__)


class UndeclaredAction(LookupError):
    """A route that writes but declares no required action (a bug: the meta-test finds it)."""


def read_action_of(view_class: type) -> Action:
    return getattr(view_class, "read_action", None) or Action.VIEW_WORK


def required_action(view_class: type, action: str, method: str) -> Action | None:
    """The action the role table must allow for ``method`` on the viewset action ``action``.

    ``None`` means no team role is involved (creating a team, one's own API tokens).
    Raises :class:`UndeclaredAction` for a write that declares nothing.
    """
    declared: Mapping[str, Action | None] = getattr(view_class, "required_actions", {})
    for key in (f"{action}.{method.lower()}", action):
        if key in declared:
            return declared[key]
    if method.upper() in SAFE_METHODS or action in ("list", "retrieve"):
        return read_action_of(view_class)
    raise UndeclaredAction(f"{view_class.__name__}.{action} ({method}) declares no action.")


@cache
def team_path_for(model: type[Model]) -> str | None:
    """The shortest foreign-key path from ``model`` to its Team ("" for Team), or None.

    Paths through required foreign keys win over shorter ones through nullable keys: a model
    version's optional ``base_model`` (-> team) must not hide ``registered_model__project__team``,
    or a version without a base would have no team and skip the role check."""
    if model is Team:
        return ""
    return _team_path(model, required_only=True) or _team_path(model, required_only=False)


def _team_path(model: type[Model], *, required_only: bool) -> str | None:
    queue: list[tuple[type[Model], str]] = [(model, "")]
    seen = {model}
    while queue:
        current, path = queue.pop(0)
        for field in current._meta.get_fields():
            if not (field.many_to_one and field.concrete and field.related_model):
                continue
            if required_only and field.null:
                continue
            step = f"{path}__{field.name}" if path else field.name
            if field.related_model is Team:
                return step
            if field.related_model not in seen and step.count("__") < 3:
                seen.add(field.related_model)
                queue.append((field.related_model, step))
    return None


def team_of(obj: Model) -> Team | None:
    path = team_path_for(type(obj))
    if path is None:
        return None
    for name in filter(None, path.split("__")):
        obj = getattr(obj, name)
        if obj is None:
            return None
    return obj


def _as_id(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value)
    return value if isinstance(value, int) and 0 < value <= INT64_MAX else None


def _team_id_in(data: Any, view, request: Request) -> int | None:
    """The team a collection request is about: its ``team`` or ``project`` id, else the first
    related object of the create serializer that the user can see."""
    if not isinstance(data, Mapping):
        return None
    if (team_id := _as_id(data.get("team"))) is not None:
        return team_id
    if (project_id := _as_id(data.get("project"))) is not None:
        return Project.objects.filter(pk=project_id).values_list("team_id", flat=True).first()
    serializer_class = getattr(view, "create_serializer_class", None)
    if view.action != "create" or serializer_class is None:
        return None
    for name, field in serializer_class().fields.items():
        if isinstance(field, ScopedPrimaryKeyRelatedField) and (pk := _as_id(data.get(name))):
            obj = field.selector(request.user).filter(pk=pk).first()
            team = team_of(obj) if obj is not None else None
            return team.pk if team is not None else None
    return None


def _check(request: Request, team: Team | int, action: Action, view) -> None:
    role = role_in_team(request.user, team)
    if role is None:
        return  # not a member: the selector or the serializer says "not found"
    if request.method in SAFE_METHODS and not role_allows(role, read_action_of(type(view))):
        raise NotFound("Not found.")  # what a role may not see, it cannot read through a route
    if not isinstance(team, Team):
        team = Team.objects.only("name").get(pk=team)
    check_role(role, action, team_name=team.name)


class RoleActionPermission(BasePermission):
    """Refuse, with 403 naming the role, what the viewset's declared action does not allow."""

    def _action(self, request: Request, view) -> Action | None:
        try:
            return required_action(type(view), view.action or "", request.method)
        except UndeclaredAction:
            # Fail closed, loudly: tests/api/test_route_permissions.py catches it before this.
            logger.error("Refused an API route that declares no action: %s", view.action)
            raise PermissionDenied("This route declares no permission; refused.") from None

    def has_permission(self, request: Request, view) -> bool:
        if not hasattr(view, "required_actions") or getattr(view, "detail", False):
            return True  # detail routes are checked on their object
        action = self._action(request, view)
        if action is None or view.action == "list":
            return True  # lists are filtered by the selector
        if request.method in SAFE_METHODS:
            team_id = _team_id_in(request.query_params, view, request)
        else:
            team_id = _team_id_in(request.data, view, request)
        if team_id is not None:
            _check(request, team_id, action, view)
        return True

    def has_object_permission(self, request: Request, view, obj: Model) -> bool:
        if not hasattr(view, "required_actions"):
            return True
        action = self._action(request, view)
        team = team_of(obj)
        if action is not None and team is not None:
            _check(request, team, action, view)
        return True
