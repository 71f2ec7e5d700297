"""What each role in a team may do. Services enforce it, for the UI and the API alike.

| role     | may                                                                  |
| -------- | -------------------------------------------------------------------- |
| admin    | everything, including managing members and deleting projects         |
| manager  | create and edit projects and goals, data, launch jobs, label          |
| engineer | data (upload, clean, split, tokenizers), launch and cancel jobs       |
| rater    | look at the team's projects and label outputs; nothing else           |
| viewer   | look only                                                             |
"""

from __future__ import annotations

from enum import StrEnum

from django.core.exceptions import PermissionDenied

from projects.models import Role


class Action(StrEnum):
    VIEW = "view"
    VIEW_WORK = "view_work"
    MANAGE_TEAM = "manage_team"
    CREATE_PROJECT = "create_project"
    EDIT_PROJECT = "edit_project"
    DELETE_PROJECT = "delete_project"
    EDIT_GOALS = "edit_goals"
    EDIT_DATA = "edit_data"
    RUN_JOBS = "run_jobs"
    LABEL = "label"


ACTION_LABELS: dict[Action, str] = {
    Action.VIEW: "view this team and its projects",
    Action.VIEW_WORK: "view this team's data, jobs, models, evaluations, members and activity",
    Action.MANAGE_TEAM: "manage the team and its members",
    Action.CREATE_PROJECT: "create projects",
    Action.EDIT_PROJECT: "edit projects",
    Action.DELETE_PROJECT: "delete projects",
    Action.EDIT_GOALS: "edit goals",
    Action.EDIT_DATA: "change datasets",
    Action.RUN_JOBS: "launch or cancel jobs",
    Action.LABEL: "label outputs",
}

ROLE_ACTIONS: dict[str, frozenset[Action]] = {
    Role.ADMIN: frozenset(Action),
    Role.MANAGER: frozenset(
        {
            Action.VIEW,
            Action.VIEW_WORK,
            Action.CREATE_PROJECT,
            Action.EDIT_PROJECT,
            Action.EDIT_GOALS,
            Action.EDIT_DATA,
            Action.RUN_JOBS,
            Action.LABEL,
        }
    ),
    Role.ENGINEER: frozenset({Action.VIEW, Action.VIEW_WORK, Action.EDIT_DATA, Action.RUN_JOBS}),
    # Raters label outputs shown to them; they do not browse the team's data, jobs or models.
    Role.RATER: frozenset({Action.VIEW, Action.LABEL}),
    Role.VIEWER: frozenset({Action.VIEW, Action.VIEW_WORK}),
}


def roles_allowed(action: Action) -> list[str]:
    """The roles whose table allows ``action`` (for selectors' membership filters)."""
    return sorted(role for role, actions in ROLE_ACTIONS.items() if action in actions)


def role_allows(role: str | None, action: Action) -> bool:
    return role is not None and action in ROLE_ACTIONS.get(role, frozenset())


def check_role(role: str, action: Action, *, team_name: str) -> None:
    """Raise PermissionDenied (403) with a message naming the role and the refused action."""
    if not role_allows(role, action):
        raise PermissionDenied(
            f"Your role in {team_name} is {role}, which may not {ACTION_LABELS[action]}."
        )


def allowed_actions(role: str | None) -> dict[str, bool]:
    """``{action: allowed}`` for templates, which hide what the user may not do."""
    return {action.value: role_allows(role, action) for action in Action}
