"""The import arrows of DESIGN.md, the hooks that replace forbidden calls, and the update helper
and audit recording that every app's services share."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured, ValidationError

from llmhub import hooks
from llmhub.services import update_instance
from projects.audit import record_event, scope_of
from projects.models import AuditEvent, Goal, Membership

REPO_ROOT = Path(__file__).resolve().parents[2]
STAGE_APPS = ("projects", "datasets_app", "training", "evaluation", "serving", "frontend")


def _imports(folder: str, *, skip=lambda path: False) -> dict[str, set[str]]:
    """Every module imported anywhere in ``folder``'s files (also inside functions)."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO_ROOT / folder).rglob("*.py")):
        relative = path.relative_to(REPO_ROOT)
        if "migrations" in relative.parts or skip(relative):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name, set()).add(str(relative))
    return found


def test_the_core_imports_no_stage_app_outside_url_routing() -> None:
    imports = _imports("llmhub", skip=lambda path: path.name == "urls.py")
    offending = {
        name: sorted(paths) for name, paths in imports.items() if name.split(".")[0] in STAGE_APPS
    }
    assert offending == {}


def test_projects_calls_no_later_stage() -> None:
    imports = _imports("projects")
    later = {
        name: sorted(paths)
        for name, paths in imports.items()
        if name.split(".")[0] in ("datasets_app", "training", "evaluation", "serving", "frontend")
        # The metric catalog is a plain table (names, tasks, direction), not a stage's code.
        and name != "evaluation.metrics.catalog"
    }
    assert later == {}


def test_the_hooks_are_registered_by_the_apps_that_own_them() -> None:
    from evaluation.services import goals_refresh
    from projects.services import authorize_job_action

    assert goals_refresh in hooks.registered(hooks.GOALS_CHANGED)
    assert hooks.registered(hooks.JOB_AUTHORIZE) == [authorize_job_action]
    assert record_event in hooks.registered(hooks.AUDIT)


def test_a_required_hook_fails_closed_when_nobody_registered_it() -> None:
    with pytest.raises(ImproperlyConfigured, match="No function is registered"):
        hooks.call_required("nobody.registered.this")
    assert hooks.fire("nobody.registered.this", x=1) == []


def test_a_goal_change_fires_the_goals_hook(world) -> None:
    from projects.services import goal_create, goal_update

    seen = []

    def listener(*, project):
        seen.append(project.pk)

    hooks.register(hooks.GOALS_CHANGED, listener)
    try:
        goal = goal_create(
            actor=world.users["admin"], project=world.project, metric="accuracy", target=0.8
        )
        goal_update(actor=world.users["admin"], goal=goal, target=0.9)
    finally:
        hooks.unregister(hooks.GOALS_CHANGED, listener)
    assert seen == [world.project.pk, world.project.pk]


def test_job_cancel_checks_the_role_through_the_hook(world) -> None:
    from django.core.exceptions import PermissionDenied
    from django.http import Http404

    from llmhub.services import job_cancel
    from projects.models import ProjectHealthCheck

    job = ProjectHealthCheck.objects.create(project=world.project)
    with pytest.raises(PermissionDenied):
        job_cancel(actor=world.users["viewer"], job=job)
    with pytest.raises(Http404):
        job_cancel(actor=world.outsider, job=job)
    job = job_cancel(actor=world.users["engineer"], job=job)
    event = AuditEvent.objects.get(verb="projecthealthcheck.cancel_requested")
    assert (event.team, event.project) == (world.team, world.project)
    assert event.changes == {"status_after": "cancelled"}


# --- the update helper and record_event ---------------------------------------------------------


def test_update_instance_saves_only_what_changed_and_returns_the_diff(world) -> None:
    goal = Goal.objects.create(
        project=world.project, metric="accuracy", comparison=">=", target=0.8, split="test"
    )
    assert update_instance(goal, {"target": 0.8}) == {}  # nothing changes: nothing saved
    changes = update_instance(goal, {"target": 0.9, "split": "test"}, editable=("target", "split"))
    assert changes == {"target": [0.8, 0.9]}
    goal.refresh_from_db()
    assert goal.target == 0.9


def test_update_instance_refuses_unknown_fields_and_invalid_values(world) -> None:
    goal = Goal.objects.create(
        project=world.project, metric="accuracy", comparison=">=", target=0.8, split="test"
    )
    with pytest.raises(ValidationError, match="cannot be changed: project"):
        update_instance(goal, {"project": world.other_project}, editable=("target",))
    with pytest.raises(ValidationError):
        update_instance(goal, {"metric": "no-such-metric"})
    goal.refresh_from_db()
    assert (goal.project, goal.metric) == (world.project, "accuracy")


def test_update_instance_touch_and_before_save(world) -> None:
    project = world.project
    before, old = project.updated_at, project.description
    calls = []

    def check(instance, diff):
        calls.append(dict(diff))
        instance.problem_statement = "derived"
        return ["problem_statement"]

    changes = update_instance(
        project, {"description": "new"}, touch="updated_at", before_save=check
    )
    assert changes == {"description": [old, "new"]}  # the derived field is saved, not diffed
    project.refresh_from_db()
    assert project.description == "new" and project.problem_statement == "derived"
    assert project.updated_at > before and calls and "description" in calls[0]


def test_record_event_derives_team_and_project_from_its_target(world) -> None:
    goal = Goal.objects.create(
        project=world.project, metric="accuracy", comparison=">=", target=0.8, split="test"
    )
    membership = Membership.objects.get(team=world.team, user=world.users["viewer"])
    assert scope_of(goal) == (world.team, world.project)
    assert scope_of(world.project) == (world.team, world.project)
    assert scope_of(world.team) == (world.team, None)
    assert scope_of(membership) == (world.team, None)

    event = record_event(actor=world.users["admin"], verb="goal.updated", target=goal)
    assert (event.team, event.project, event.target_id) == (world.team, world.project, str(goal.pk))
    # Explicit values still win (backward compatible), and project=None means none.
    event = record_event(
        actor=world.users["admin"], verb="project.deleted", target=world.project, project=None
    )
    assert (event.team, event.project) == (world.team, None)
    with pytest.raises(ValueError, match="cannot tell the team"):
        record_event(actor=world.users["admin"], verb="user.x", target=world.users["admin"])
