"""Reads scoped to what a user may see: the teams they belong to, and everything in them.

Every app scopes its querysets with :func:`visible_to`, and fetches one object by id with
:func:`get_visible`, so "not found" and "not yours" give the same 404, by design: an outsider
learns nothing about which ids exist.

Visibility also follows the role: ``visible_to(..., action=...)`` keeps only the teams where
the user's role allows that action. The default is ``Action.VIEW_WORK`` (the team's work:
data, jobs, models, evaluations, members, activity), so a new resource is hidden from raters
unless its selector says otherwise; the team and its projects use ``Action.VIEW``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TypeVar

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Model, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.http import Http404

from llmhub.models import Job, JobStatus
from projects.models import (
    ApiToken,
    AuditEvent,
    Goal,
    Membership,
    Project,
    ProjectHealthCheck,
    Team,
)
from projects.permissions import Action, roles_allowed

M = TypeVar("M", bound=Model)
User = AbstractBaseUser | AnonymousUser


def team_ids_for(user: User, action: Action = Action.VIEW_WORK) -> QuerySet[Membership]:
    """A subquery of the ids of the teams where ``user``'s role allows ``action``."""
    if not user.is_authenticated:
        return Membership.objects.none().values("team_id")
    return Membership.objects.filter(user=user, role__in=roles_allowed(action)).values("team_id")


def visible_to(
    queryset: QuerySet[M],
    user: User,
    *,
    team_path: str = "project__team",
    action: Action = Action.VIEW_WORK,
) -> QuerySet[M]:
    """Restrict ``queryset`` to objects in teams where ``user``'s role allows ``action``.

    ``team_path`` is the lookup from the model to its Team ("" for Team itself, "team" for a
    Project, "project__team" for anything that belongs to a project).
    """
    if not user.is_authenticated:
        return queryset.none()
    lookup = f"{team_path}__id__in" if team_path else "id__in"
    return queryset.filter(**{lookup: team_ids_for(user, action)})


def get_visible(
    queryset: QuerySet[M],
    user: User,
    pk,
    *,
    team_path: str = "project__team",
    action: Action = Action.VIEW_WORK,
) -> M:
    """One object by primary key among those ``user`` may see, else Http404."""
    try:
        return visible_to(queryset, user, team_path=team_path, action=action).get(pk=pk)
    except (queryset.model.DoesNotExist, ValueError, TypeError, OverflowError):
        raise Http404(f"No {queryset.model._meta.verbose_name} with id {pk} was found.") from None


def role_in_team(user: User, team: Team | int) -> str | None:
    if not user.is_authenticated:
        return None
    team_id = team.pk if isinstance(team, Team) else team
    return (
        Membership.objects.filter(user=user, team_id=team_id).values_list("role", flat=True).first()
    )


def _my_role(user: User) -> Subquery:
    return Subquery(Membership.objects.filter(team=OuterRef("pk"), user=user).values("role")[:1])


def teams_for_user(user: User) -> QuerySet[Team]:
    """The user's teams, each annotated with ``my_role``."""
    if not user.is_authenticated:
        return Team.objects.none()
    return visible_to(Team.objects.all(), user, team_path="", action=Action.VIEW).annotate(
        my_role=_my_role(user)
    )


def get_team_by_slug_for_user(user: User, slug: str) -> Team:
    team = teams_for_user(user).filter(slug=slug).first()
    if team is None:
        raise Http404(f"No team '{slug}' was found.")
    return team


def members_for_user(user: User) -> QuerySet[Membership]:
    """Members (with their e-mails) of the teams whose work the user may see, and the user's
    own memberships in every team (so anyone may see and leave their own)."""
    if not user.is_authenticated:
        return Membership.objects.none()
    return Membership.objects.select_related("user", "team").filter(
        Q(team__id__in=team_ids_for(user)) | Q(user=user)
    )


def projects_for_user(user: User) -> QuerySet[Project]:
    """Projects of the user's teams (every role); their goals only where the role may see the
    team's work (a rater's projects carry no goals)."""
    goals = Goal.objects.filter(project__team__id__in=team_ids_for(user)).order_by("id")
    return visible_to(
        Project.objects.select_related("team", "created_by").prefetch_related(
            Prefetch("goals", queryset=goals)
        ),
        user,
        team_path="team",
        action=Action.VIEW,
    )


def get_project_for_user(user: User, pk) -> Project:
    return get_visible(projects_for_user(user), user, pk, team_path="team", action=Action.VIEW)


def goals_for_user(user: User) -> QuerySet[Goal]:
    return visible_to(Goal.objects.select_related("project__team"), user)


def audit_events_for_user(user: User) -> QuerySet[AuditEvent]:
    return visible_to(
        AuditEvent.objects.select_related("actor", "project", "team"), user, team_path="team"
    )


def api_tokens_for_user(user: User) -> QuerySet[ApiToken]:
    if not user.is_authenticated:
        return ApiToken.objects.none()
    return ApiToken.objects.filter(user=user)


def health_checks_for_user(user: User) -> QuerySet[ProjectHealthCheck]:
    return visible_to(ProjectHealthCheck.objects.select_related("project", "created_by"), user)


# The activity feed. An event keeps the text of its target as it was then ("health check #3
# (queued)"); for jobs the feed shows the job's status now instead, so a finished job never
# reads "(queued)".
_STATUS_SUFFIX = re.compile(rf" \((?:{'|'.join(JobStatus.values)})\)$")


def _job_models() -> dict[str, type]:
    from django.apps import apps

    return {m._meta.model_name: m for m in apps.get_models() if issubclass(m, Job)}


def events_with_job_status(events: Iterable[AuditEvent]) -> list[AuditEvent]:
    """The events, each with ``target_label`` (its target's text) and, for a job, ``job``
    and ``job_status`` (its current status): one query per kind of job in the list."""
    events = list(events)
    models = _job_models()
    wanted: dict[str, set[int]] = {}
    for event in events:
        event.target_label = event.target_repr
        event.job = event.job_status = None
        if event.target_type in models and event.target_id.isdigit():
            wanted.setdefault(event.target_type, set()).add(int(event.target_id))
    jobs: dict[tuple[str, int], object] = {}
    projects = {e.project_id for e in events if e.project_id is not None}
    for name, ids in wanted.items():
        # Only jobs of the events' own projects: the events are already scoped to the user.
        rows = models[name].objects.filter(pk__in=ids, project_id__in=projects)
        jobs.update(((name, job.pk), job) for job in rows.only("pk", "status", "project_id"))
    for event in events:
        if event.target_type in models and event.target_id.isdigit():
            job = jobs.get((event.target_type, int(event.target_id)))
            if job is not None:
                event.target_label = _STATUS_SUFFIX.sub("", event.target_repr)
                event.job = job
                event.job_status = job.status
    return events
