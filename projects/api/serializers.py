from __future__ import annotations

from rest_framework import serializers

from llmhub.api.fields import ScopedPrimaryKeyRelatedField
from llmhub.api.serializers import JobSerializer, StrictSerializer
from projects.models import (
    API_TOKEN_MAX_DAYS,
    ApiToken,
    AuditEvent,
    Comparison,
    Goal,
    Membership,
    Project,
    ProjectHealthCheck,
    Role,
    Split,
    TaskType,
    Team,
)
from projects.selectors import projects_for_user, teams_for_user


class TeamSerializer(serializers.ModelSerializer):
    my_role = serializers.CharField(read_only=True)

    class Meta:
        model = Team
        fields = ("id", "name", "slug", "my_role", "created_at")
        read_only_fields = fields


class TeamCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100)
    slug = serializers.SlugField(max_length=60, required=False)


class TeamUpdateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100)


class MemberSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)
    email = serializers.CharField(source="user.email", read_only=True)

    class Meta:
        model = Membership
        fields = ("id", "team", "user", "username", "email", "role", "created_at")
        read_only_fields = fields


class MemberCreateSerializer(StrictSerializer):
    team = ScopedPrimaryKeyRelatedField(selector=teams_for_user)
    user = serializers.CharField(help_text="Username or email of an existing user.")
    role = serializers.ChoiceField(choices=Role.choices)


class MemberUpdateSerializer(StrictSerializer):
    role = serializers.ChoiceField(choices=Role.choices)


class GoalSerializer(serializers.ModelSerializer):
    metric_label = serializers.CharField(read_only=True)
    status = serializers.CharField(read_only=True)

    class Meta:
        model = Goal
        fields = (
            "id",
            "project",
            "metric",
            "metric_label",
            "comparison",
            "target",
            "split",
            "deadline",
            "status",
            "measured_value",
            "measured_at",
            "measured_source",
            "created_at",
        )
        read_only_fields = fields


class GoalCreateSerializer(StrictSerializer):
    project = ScopedPrimaryKeyRelatedField(selector=projects_for_user)
    metric = serializers.CharField(max_length=40, help_text="A metric name, e.g. f1_macro.")
    target = serializers.FloatField()
    comparison = serializers.ChoiceField(
        choices=Comparison.choices,
        required=False,
        help_text="Defaults to >= for metrics where higher is better, <= otherwise.",
    )
    split = serializers.ChoiceField(choices=Split.choices, default=Split.TEST)
    deadline = serializers.DateField(required=False, allow_null=True)


class GoalUpdateSerializer(StrictSerializer):
    metric = serializers.CharField(max_length=40)
    target = serializers.FloatField()
    comparison = serializers.ChoiceField(choices=Comparison.choices)
    split = serializers.ChoiceField(choices=Split.choices)
    deadline = serializers.DateField(allow_null=True)


class ProjectSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", default=None, read_only=True)
    goals = GoalSerializer(many=True, read_only=True)
    goal_summary = serializers.SerializerMethodField()

    class Meta:
        model = Project
        fields = (
            "id",
            "team",
            "name",
            "slug",
            "description",
            "problem_statement",
            "task_type",
            "created_by",
            "created_at",
            "updated_at",
            "goals",
            "goal_summary",
        )
        read_only_fields = fields

    def get_goal_summary(self, project: Project) -> dict[str, int]:
        summary = {"met": 0, "not_met": 0, "not_measured": 0}
        for goal in project.goals.all():  # prefetched by the selector
            summary[goal.status] += 1
        return summary


class ProjectCreateSerializer(StrictSerializer):
    team = ScopedPrimaryKeyRelatedField(selector=teams_for_user)
    name = serializers.CharField(max_length=120)
    slug = serializers.SlugField(max_length=80, required=False)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    problem_statement = serializers.CharField(required=False, allow_blank=True, default="")
    task_type = serializers.ChoiceField(choices=TaskType.choices)


class ProjectUpdateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=120)
    slug = serializers.SlugField(max_length=80)
    description = serializers.CharField(allow_blank=True)
    problem_statement = serializers.CharField(allow_blank=True)
    task_type = serializers.ChoiceField(choices=TaskType.choices)


class AuditEventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor.username", default=None, read_only=True)

    class Meta:
        model = AuditEvent
        fields = (
            "id",
            "team",
            "project",
            "actor",
            "verb",
            "target_type",
            "target_id",
            "target_repr",
            "changes",
            "created_at",
        )
        read_only_fields = fields


class ApiTokenSerializer(serializers.ModelSerializer):
    is_active = serializers.BooleanField(read_only=True)

    class Meta:
        model = ApiToken
        fields = (
            "id",
            "name",
            "prefix",
            "created_at",
            "last_used_at",
            "expires_at",
            "revoked_at",
            "is_active",
        )
        read_only_fields = fields


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    token = serializers.CharField(read_only=True, help_text="Shown once: store it now.")

    class Meta(ApiTokenSerializer.Meta):
        fields = (*ApiTokenSerializer.Meta.fields, "token")


class ApiTokenCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100)
    # It feeds a date (now + days): bounded well inside year 9999, as the service checks too.
    expires_in_days = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=API_TOKEN_MAX_DAYS
    )


class HealthCheckSerializer(JobSerializer):
    class Meta:
        model = ProjectHealthCheck
        fields = (*JobSerializer.JOB_FIELDS, "sleep_seconds", "result")
        read_only_fields = fields


class HealthCheckCreateSerializer(StrictSerializer):
    project = ScopedPrimaryKeyRelatedField(selector=projects_for_user)
    sleep_seconds = serializers.FloatField(required=False, default=0, min_value=0, max_value=600)


class MeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    email = serializers.CharField()
    teams = TeamSerializer(many=True)
