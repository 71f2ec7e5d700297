"""factory_boy factories for the models tests create most."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from projects.models import Goal, Membership, Project, Role, Team


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("correct horse battery staple")


class TeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Team

    name = factory.Sequence(lambda n: f"Team {n}")
    slug = factory.Sequence(lambda n: f"team-{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    team = factory.SubFactory(TeamFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.ENGINEER


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    team = factory.SubFactory(TeamFactory)
    name = factory.Sequence(lambda n: f"Project {n}")
    slug = factory.Sequence(lambda n: f"project-{n}")
    task_type = "classification"
    problem_statement = "Route customer messages to the right queue."


class GoalFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Goal

    project = factory.SubFactory(ProjectFactory)
    metric = "f1_macro"
    comparison = ">="
    target = 0.85
    split = "test"
