"""REST endpoints for teams, members, projects, goals, activity, tokens and health checks."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from llmhub.api.viewsets import (
    CreateMixin,
    DestroyMixin,
    ListRetrieveMixin,
    ScopedViewSet,
    UpdateMixin,
)
from llmhub.services import job_cancel
from projects import selectors, services
from projects.api import filters
from projects.api import serializers as s
from projects.permissions import Action


@extend_schema_view(
    create=extend_schema(request=s.TeamCreateSerializer, responses={201: s.TeamSerializer}),
    partial_update=extend_schema(request=s.TeamUpdateSerializer, responses=s.TeamSerializer),
)
class TeamViewSet(ListRetrieveMixin, CreateMixin, UpdateMixin, ScopedViewSet):
    """Teams you belong to, with your role in each. Creating a team makes you its admin."""

    serializer_class = s.TeamSerializer
    read_action = Action.VIEW
    required_actions = {"create": None, "partial_update": Action.MANAGE_TEAM}
    create_serializer_class = s.TeamCreateSerializer
    update_serializer_class = s.TeamUpdateSerializer
    search_fields = ("name", "slug")
    ordering_fields = ("name", "created_at")

    def scoped_queryset(self, user):
        return selectors.teams_for_user(user)

    def perform_service_create(self, data):
        return services.team_create(actor=self.request.user, **data)

    def perform_service_update(self, instance, data):
        return services.team_update(actor=self.request.user, team=instance, **data)


@extend_schema_view(
    create=extend_schema(request=s.MemberCreateSerializer, responses={201: s.MemberSerializer}),
    partial_update=extend_schema(request=s.MemberUpdateSerializer, responses=s.MemberSerializer),
)
class MemberViewSet(ListRetrieveMixin, CreateMixin, UpdateMixin, DestroyMixin, ScopedViewSet):
    """Members of your teams and their roles; admins add, change and remove members."""

    serializer_class = s.MemberSerializer
    # Anyone may leave a team (the service checks MANAGE_TEAM for removing someone else).
    required_actions = {
        "create": Action.MANAGE_TEAM,
        "partial_update": Action.MANAGE_TEAM,
        "destroy": None,
    }
    create_serializer_class = s.MemberCreateSerializer
    update_serializer_class = s.MemberUpdateSerializer
    filterset_class = filters.MemberFilterSet
    search_fields = ("user__username", "user__email")

    def scoped_queryset(self, user):
        return selectors.members_for_user(user)

    def perform_service_create(self, data):
        return services.membership_add(
            actor=self.request.user,
            team=data["team"],
            user_identifier=data["user"],
            role=data["role"],
        )

    def perform_service_update(self, instance, data):
        return services.membership_change_role(
            actor=self.request.user, membership=instance, role=data["role"]
        )

    def perform_service_destroy(self, instance):
        services.membership_remove(actor=self.request.user, membership=instance)


@extend_schema_view(
    create=extend_schema(request=s.ProjectCreateSerializer, responses={201: s.ProjectSerializer}),
    partial_update=extend_schema(request=s.ProjectUpdateSerializer, responses=s.ProjectSerializer),
)
class ProjectViewSet(ListRetrieveMixin, CreateMixin, UpdateMixin, DestroyMixin, ScopedViewSet):
    """Projects of your teams, each with its goals and their status."""

    serializer_class = s.ProjectSerializer
    read_action = Action.VIEW
    required_actions = {
        "create": Action.CREATE_PROJECT,
        "partial_update": Action.EDIT_PROJECT,
        "destroy": Action.DELETE_PROJECT,
    }
    create_serializer_class = s.ProjectCreateSerializer
    update_serializer_class = s.ProjectUpdateSerializer
    filterset_class = filters.ProjectFilterSet
    search_fields = ("name", "slug", "description")
    ordering_fields = ("name", "created_at", "updated_at")

    def scoped_queryset(self, user):
        return selectors.projects_for_user(user)

    def perform_service_create(self, data):
        return services.project_create(actor=self.request.user, **data)

    def perform_service_update(self, instance, data):
        return services.project_update(actor=self.request.user, project=instance, **data)

    def perform_service_destroy(self, instance):
        services.project_delete(actor=self.request.user, project=instance)


@extend_schema_view(
    create=extend_schema(request=s.GoalCreateSerializer, responses={201: s.GoalSerializer}),
    partial_update=extend_schema(request=s.GoalUpdateSerializer, responses=s.GoalSerializer),
)
class GoalViewSet(ListRetrieveMixin, CreateMixin, UpdateMixin, DestroyMixin, ScopedViewSet):
    """Measurable goals such as "f1_macro >= 0.85 on test"; status is derived from the latest
    measurement."""

    serializer_class = s.GoalSerializer
    required_actions = {
        "create": Action.EDIT_GOALS,
        "partial_update": Action.EDIT_GOALS,
        "destroy": Action.EDIT_GOALS,
    }
    create_serializer_class = s.GoalCreateSerializer
    update_serializer_class = s.GoalUpdateSerializer
    filterset_class = filters.GoalFilterSet

    def scoped_queryset(self, user):
        return selectors.goals_for_user(user)

    def perform_service_create(self, data):
        return services.goal_create(actor=self.request.user, **data)

    def perform_service_update(self, instance, data):
        return services.goal_update(actor=self.request.user, goal=instance, **data)

    def perform_service_destroy(self, instance):
        services.goal_delete(actor=self.request.user, goal=instance)


class ActivityViewSet(ListRetrieveMixin, ScopedViewSet):
    """The audit log of your teams: who did what to which object, newest first."""

    serializer_class = s.AuditEventSerializer
    filterset_class = filters.AuditEventFilterSet

    def scoped_queryset(self, user):
        return selectors.audit_events_for_user(user)


@extend_schema_view(
    create=extend_schema(
        request=s.ApiTokenCreateSerializer, responses={201: s.ApiTokenCreatedSerializer}
    ),
)
class ApiTokenViewSet(ListRetrieveMixin, CreateMixin, ScopedViewSet):
    """Your personal API tokens. The secret is returned once, at creation."""

    serializer_class = s.ApiTokenSerializer
    read_action = Action.VIEW  # one's own tokens, whatever one's roles
    required_actions = {"create": None, "revoke": None}
    create_serializer_class = s.ApiTokenCreateSerializer

    def scoped_queryset(self, user):
        return selectors.api_tokens_for_user(user)

    def create(self, request: Request, *args, **kwargs) -> Response:
        data = self._validated(self.create_serializer_class, request.data)
        token, plaintext = services.api_token_create(actor=request.user, **data)
        token.token = plaintext
        return Response(s.ApiTokenCreatedSerializer(token).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=s.ApiTokenSerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk=None) -> Response:
        token = services.api_token_revoke(actor=request.user, token=self.get_object())
        return Response(self.get_serializer(token).data)


@extend_schema_view(
    create=extend_schema(
        request=s.HealthCheckCreateSerializer, responses={201: s.HealthCheckSerializer}
    ),
)
class HealthCheckViewSet(ListRetrieveMixin, CreateMixin, ScopedViewSet):
    """Project health checks: a cheap background job (goals, storage, worker)."""

    serializer_class = s.HealthCheckSerializer
    required_actions = {"create": Action.RUN_JOBS, "cancel": Action.RUN_JOBS}
    create_serializer_class = s.HealthCheckCreateSerializer
    filterset_class = filters.HealthCheckFilterSet

    def scoped_queryset(self, user):
        return selectors.health_checks_for_user(user)

    def perform_service_create(self, data):
        return services.health_check_launch(actor=self.request.user, **data)

    @extend_schema(request=None, responses=s.HealthCheckSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk=None) -> Response:
        job = job_cancel(actor=request.user, job=self.get_object())
        return self.respond(job)


class MeView(APIView):
    """Who you are and the teams you belong to."""

    @extend_schema(responses=s.MeSerializer)
    def get(self, request: Request) -> Response:
        user = request.user
        data = {
            "id": user.pk,
            "username": user.get_username(),
            "email": user.email,
            "teams": selectors.teams_for_user(user),
        }
        return Response(s.MeSerializer(data).data)
