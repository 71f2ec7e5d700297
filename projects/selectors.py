"""Reads scoped to what a user may see: the teams they belong to, and everything in them.

Every app scopes its querysets with :func:`visible_to`, and fetches one object by id with
:func:`get_visible`, so "not found" and "not yours" give the same 404, by design: an outsider
learns nothing about which ids exist.
"""

from __future__ import annotations

from typing import TypeVar

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Model, OuterRef, Prefetch, QuerySet, Subquery
from django.http import Http404

from projects.models import (
    ApiToken,
    AuditEvent,
    Goal,
    Membership,
    Project,
    ProjectHealthCheck,
    Team,
)

M = TypeVar("M", bound=Model)
User = AbstractBaseUser | AnonymousUser


def visible_to(
    queryset: QuerySet[M], user: User, *, team_path: str = "project__team"
) -> QuerySet[M]:
    """Restrict ``queryset`` to objects in teams ``user`` belongs to.

    ``team_path`` is the lookup from the model to its Team ("" for Team itself, "team" for a
    Project, "project__team" for anything that belongs to a project).
    """
    if not user.is_authenticated:
        return queryset.none()
    lookup = f"{team_path}__id__in" if team_path else "id__in"
    team_ids = Membership.objects.filter(user=user).values("team_id")
    return queryset.filter(**{lookup: team_ids})


def get_visible(queryset: QuerySet[M], user: User, pk, *, team_path: str = "project__team") -> M:
    """One object by primary key among those ``user`` may see, else Http404."""
    try:
        return visible_to(queryset, user, team_path=team_path).get(pk=pk)
    except (queryset.model.DoesNotExist, ValueError, TypeError):
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
    return visible_to(Team.objects.all(), user, team_path="").annotate(my_role=_my_role(user))


def get_team_by_slug_for_user(user: User, slug: str) -> Team:
    team = teams_for_user(user).filter(slug=slug).first()
    if team is None:
        raise Http404(f"No team '{slug}' was found.")
    return team


def members_for_user(user: User) -> QuerySet[Membership]:
    return visible_to(Membership.objects.select_related("user", "team"), user, team_path="team")


def projects_for_user(user: User) -> QuerySet[Project]:
    return visible_to(
        Project.objects.select_related("team", "created_by").prefetch_related(
            Prefetch("goals", queryset=Goal.objects.order_by("id"))
        ),
        user,
        team_path="team",
    )


def get_project_for_user(user: User, pk) -> Project:
    return get_visible(projects_for_user(user), user, pk, team_path="team")


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
