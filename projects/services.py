"""Every write to teams, members, projects, goals and tokens.

Plain functions with keyword-only arguments, each in a transaction: check the actor's role,
validate with ``full_clean()``, save, record an audit event. Views, API views, tasks and
commands call these; they never write the models themselves.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import date, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.http import Http404
from django.utils import timezone
from django.utils.text import slugify

from evaluation.metrics.catalog import metric_info
from llmhub import hooks
from llmhub.jobs import enqueue_job, requires_broker
from llmhub.models import Job
from llmhub.services import update_instance
from projects.audit import record_event
from projects.models import (
    API_TOKEN_MAX_DAYS,
    ApiToken,
    Comparison,
    Goal,
    Membership,
    Project,
    ProjectHealthCheck,
    Role,
    Team,
)
from projects.permissions import Action, check_role
from projects.selectors import role_in_team

User = get_user_model()


# --- permission helpers -------------------------------------------------------------------------


def require(actor, team: Team, action: Action) -> str:
    """The actor's role in ``team`` if it allows ``action``.

    A non-member gets Http404, the same answer as for an object that does not exist; a member
    whose role does not allow the action gets PermissionDenied naming both.
    """
    role = role_in_team(actor, team)
    if role is None:
        raise Http404("Not found.")
    check_role(role, action, team_name=team.name)
    return role


def authorize_job_action(*, actor, job: Job, action: str) -> None:
    """The core's ``JOB_AUTHORIZE`` hook: may ``actor`` do ``action`` to ``job``? (404 / 403)"""
    require(actor, job.project.team, Action(action))


def _unique_slug(base: str, taken) -> str:
    slug = slugify(base)[:50] or "item"
    candidate, n = slug, 2
    while taken(candidate):
        candidate, n = f"{slug}-{n}", n + 1
    return candidate


# --- teams and members ------------------------------------------------------------------------


@transaction.atomic
def team_create(*, actor, name: str, slug: str | None = None) -> Team:
    """Create a team; its creator becomes its first admin."""
    if not actor.is_authenticated:
        raise ValidationError("You must be signed in to create a team.")
    name = (name or "").strip()
    if slug:
        if Team.objects.filter(slug=slug).exists():
            raise ValidationError({"slug": f"The team slug '{slug}' is taken."})
    else:
        slug = _unique_slug(name, lambda s: Team.objects.filter(slug=s).exists())
    team = Team(name=name, slug=slug)
    team.full_clean()
    team.save()
    membership = Membership(team=team, user=actor, role=Role.ADMIN)
    membership.full_clean()
    membership.save()
    record_event(actor=actor, verb="team.created", target=team)
    return team


@transaction.atomic
def team_update(*, actor, team: Team, name: str) -> Team:
    require(actor, team, Action.MANAGE_TEAM)
    changes = update_instance(team, {"name": (name or "").strip()})
    if changes:
        record_event(actor=actor, verb="team.updated", target=team, changes=changes)
    return team


def _find_user(identifier: str):
    identifier = (identifier or "").strip()
    user = User.objects.filter(Q(username__iexact=identifier) | Q(email__iexact=identifier)).first()
    if user is None or not identifier:
        raise ValidationError({"user": f"No user with the username or email '{identifier}'."})
    return user


def _validate_role(role: str) -> str:
    if role not in Role.values:
        raise ValidationError({"role": f"'{role}' is not a role. Roles: {', '.join(Role.values)}."})
    return role


@transaction.atomic
def membership_add(*, actor, team: Team, user_identifier: str, role: str) -> Membership:
    require(actor, team, Action.MANAGE_TEAM)
    user = _find_user(user_identifier)
    _validate_role(role)
    if Membership.objects.filter(team=team, user=user).exists():
        raise ValidationError({"user": f"{user.username} is already a member of {team.name}."})
    membership = Membership(team=team, user=user, role=role)
    membership.full_clean()
    membership.save()
    record_event(actor=actor, verb="member.added", target=membership, changes={"role": role})
    return membership


def _ensure_an_admin_remains(membership: Membership) -> None:
    other_admins = Membership.objects.filter(team=membership.team, role=Role.ADMIN).exclude(
        pk=membership.pk
    )
    if membership.role == Role.ADMIN and not other_admins.exists():
        raise ValidationError("A team needs at least one admin: make someone else admin first.")


@transaction.atomic
def membership_change_role(*, actor, membership: Membership, role: str) -> Membership:
    require(actor, membership.team, Action.MANAGE_TEAM)
    _validate_role(role)
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    if role != Role.ADMIN:
        _ensure_an_admin_remains(membership)
    changes = update_instance(membership, {"role": role})
    if changes:
        record_event(actor=actor, verb="member.role_changed", target=membership, changes=changes)
    return membership


@transaction.atomic
def membership_remove(*, actor, membership: Membership) -> None:
    team = membership.team
    if membership.user_id != actor.pk:  # anyone may leave a team; removing others is for admins
        require(actor, team, Action.MANAGE_TEAM)
    _ensure_an_admin_remains(membership)
    record_event(actor=actor, verb="member.removed", target=membership)
    membership.delete()


# --- projects and goals -----------------------------------------------------------------------

PROJECT_EDITABLE_FIELDS = ("name", "slug", "description", "problem_statement", "task_type")


@transaction.atomic
def project_create(
    *,
    actor,
    team: Team,
    name: str,
    task_type: str,
    slug: str | None = None,
    description: str = "",
    problem_statement: str = "",
) -> Project:
    require(actor, team, Action.CREATE_PROJECT)
    if not slug:
        slug = _unique_slug(name, lambda s: Project.objects.filter(team=team, slug=s).exists())
    project = Project(
        team=team,
        name=(name or "").strip(),
        slug=slug,
        description=description,
        problem_statement=problem_statement,
        task_type=task_type,
        created_by=actor,
    )
    project.full_clean()
    project.save()
    record_event(actor=actor, verb="project.created", target=project)
    return project


@transaction.atomic
def project_update(*, actor, project: Project, **updates: Any) -> Project:
    require(actor, project.team, Action.EDIT_PROJECT)
    project = Project.objects.select_for_update().get(pk=project.pk)
    changes = update_instance(
        project,
        updates,
        editable=PROJECT_EDITABLE_FIELDS,
        touch="updated_at",
        before_save=_goals_fit_the_task_type,
    )
    if changes:
        record_event(actor=actor, verb="project.updated", target=project, changes=changes)
    return project


def _goals_fit_the_task_type(project: Project, changes: dict[str, list[Any]]) -> None:
    if "task_type" not in changes:
        return
    misfits = [
        g for g in project.goals.all() if project.task_type not in metric_info(g.metric).tasks
    ]
    if misfits:
        raise ValidationError(
            {
                "task_type": "Goals on metrics that do not fit the new task type exist: "
                + ", ".join(str(g) for g in misfits)
                + ". Remove them first."
            }
        )


@transaction.atomic
def project_delete(*, actor, project: Project) -> None:
    require(actor, project.team, Action.DELETE_PROJECT)
    # project=None: the event outlives the project it is about.
    record_event(
        actor=actor,
        project=None,
        verb="project.deleted",
        target=project,
        changes={"slug": project.slug},
    )
    project.delete()


def _default_comparison(metric: str) -> str:
    try:
        return Comparison.AT_LEAST if metric_info(metric).higher_is_better else Comparison.AT_MOST
    except KeyError:
        return Comparison.AT_LEAST  # full_clean reports the unknown metric


@transaction.atomic
def goal_create(
    *,
    actor,
    project: Project,
    metric: str,
    target: float,
    comparison: str | None = None,
    split: str = "test",
    deadline: date | None = None,
) -> Goal:
    require(actor, project.team, Action.EDIT_GOALS)
    goal = Goal(
        project=project,
        metric=metric,
        target=target,
        comparison=comparison or _default_comparison(metric),
        split=split,
        deadline=deadline,
    )
    goal.full_clean()
    goal.save()
    _touch(project)
    record_event(actor=actor, verb="goal.created", target=goal)
    _measure_from_existing_evaluations(project)
    goal.refresh_from_db()
    return goal


GOAL_EDITABLE_FIELDS = ("metric", "comparison", "target", "split", "deadline")


def _forget_a_stale_measurement(goal: Goal, changes: dict[str, list[Any]]) -> list[str]:
    if not {"metric", "split"} & set(changes):
        return []
    # A measurement of another metric or split says nothing about the new goal.
    goal.measured_value = goal.measured_at = None
    goal.measured_source = ""
    return ["measured_value", "measured_at", "measured_source"]


@transaction.atomic
def goal_update(*, actor, goal: Goal, **updates: Any) -> Goal:
    require(actor, goal.project.team, Action.EDIT_GOALS)
    goal = Goal.objects.select_for_update().select_related("project__team").get(pk=goal.pk)
    changes = update_instance(
        goal, updates, editable=GOAL_EDITABLE_FIELDS, before_save=_forget_a_stale_measurement
    )
    if changes:
        _touch(goal.project)
        record_event(actor=actor, verb="goal.updated", target=goal, changes=changes)
    _measure_from_existing_evaluations(goal.project)
    goal.refresh_from_db()
    return goal


@transaction.atomic
def goal_delete(*, actor, goal: Goal) -> None:
    project = goal.project
    require(actor, project.team, Action.EDIT_GOALS)
    record_event(actor=actor, verb="goal.deleted", target=goal)
    goal.delete()
    _touch(project)


@transaction.atomic
def goal_record_measurement(*, goal: Goal, value: float, source: str) -> Goal:
    """Feed a goal the value measured by an evaluation (a system write: no actor check)."""
    Goal.objects.filter(pk=goal.pk).update(
        measured_value=value, measured_at=timezone.now(), measured_source=source[:255]
    )
    goal.refresh_from_db()
    return goal


def _measure_from_existing_evaluations(project: Project) -> None:
    """A new or changed goal is measured at once if an evaluation already answers it (the
    evaluation app registers the hook: projects never imports a later stage's services)."""
    hooks.fire(hooks.GOALS_CHANGED, project=project)


def _touch(project: Project) -> None:
    Project.objects.filter(pk=project.pk).update(updated_at=timezone.now())


# --- API tokens -------------------------------------------------------------------------------

TOKEN_PREFIX = "llmh"  # noqa: S105 - a visible label, not a secret


def hash_token(plaintext: str) -> str:
    # Tokens are 256 random bits, so a fast hash is enough (no dictionary attack to slow down).
    return hashlib.sha256(plaintext.encode()).hexdigest()


@transaction.atomic
def api_token_create(
    *, actor, name: str, expires_in_days: int | None = None
) -> tuple[ApiToken, str]:
    """Create a token; returns it with its plaintext, which is never stored or shown again."""
    # Bounded: a date past year 9999 is an OverflowError (timedelta), not a token.
    if expires_in_days is not None and not 1 <= expires_in_days <= API_TOKEN_MAX_DAYS:
        raise ValidationError(
            {"expires_in_days": f"Give 1 to {API_TOKEN_MAX_DAYS} days (or empty: never)."}
        )
    prefix = secrets.token_hex(4)
    plaintext = f"{TOKEN_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    token = ApiToken(
        user=actor,
        name=(name or "").strip(),
        prefix=prefix,
        key_hash=hash_token(plaintext),
        expires_at=timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None,
    )
    token.full_clean()
    token.save()
    return token, plaintext


@transaction.atomic
def api_token_revoke(*, actor, token: ApiToken) -> ApiToken:
    if token.user_id != actor.pk:
        raise Http404("Not found.")
    if token.revoked_at is None:
        update_instance(token, {"revoked_at": timezone.now()})
    return token


# --- health check job -------------------------------------------------------------------------


@requires_broker
@transaction.atomic
def health_check_launch(
    *, actor, project: Project, sleep_seconds: float = 0, fail_with: str = ""
) -> ProjectHealthCheck:
    """Queue a cheap job that checks the project and the job machinery end to end."""
    require(actor, project.team, Action.RUN_JOBS)
    if not 0 <= sleep_seconds <= 600:
        raise ValidationError({"sleep_seconds": "Must be between 0 and 600 seconds."})
    job = ProjectHealthCheck(
        project=project, created_by=actor, sleep_seconds=sleep_seconds, fail_with=fail_with
    )
    job.full_clean()
    job.save()
    record_event(actor=actor, verb="health_check.launched", target=job)
    enqueue_job(job)
    return job
