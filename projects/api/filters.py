import django_filters

from projects.models import AuditEvent, Goal, Membership, Project, ProjectHealthCheck


class ProjectFilterSet(django_filters.FilterSet):
    class Meta:
        model = Project
        fields = {"team": ["exact"], "task_type": ["exact"], "slug": ["exact"]}


class GoalFilterSet(django_filters.FilterSet):
    class Meta:
        model = Goal
        fields = {"project": ["exact"], "metric": ["exact"], "split": ["exact"]}


class MemberFilterSet(django_filters.FilterSet):
    class Meta:
        model = Membership
        fields = {"team": ["exact"], "role": ["exact"]}


class AuditEventFilterSet(django_filters.FilterSet):
    actor = django_filters.CharFilter(field_name="actor__username")
    verb_prefix = django_filters.CharFilter(field_name="verb", lookup_expr="startswith")

    class Meta:
        model = AuditEvent
        fields = {"team": ["exact"], "project": ["exact"], "verb": ["exact"]}


class HealthCheckFilterSet(django_filters.FilterSet):
    class Meta:
        model = ProjectHealthCheck
        fields = {"project": ["exact"], "status": ["exact"]}
