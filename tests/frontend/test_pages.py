"""The browser pages: they render for members, refuse outsiders, and their forms work."""

from __future__ import annotations

import pytest
from django.test import Client

from projects.models import Goal, Membership, Project, Team
from projects.services import goal_create
from tests.factories import UserFactory


@pytest.fixture
def browser(world):
    def login(role: str) -> Client:
        client = Client()
        client.force_login(world.users[role] if role != "outsider" else world.outsider)
        return client

    return login


def test_every_page_renders_for_a_member(world, browser) -> None:
    goal = goal_create(
        actor=world.users["admin"], project=world.project, metric="accuracy", target=0.9
    )
    client = browser("viewer")
    pages = [
        "/",
        "/account/",
        "/teams/new/",
        f"/teams/{world.team.slug}/",
        f"/projects/{world.project.pk}/",
        f"/projects/{world.project.pk}/activity/",
        f"/projects/{world.project.pk}/deploy/",
        f"/projects/{world.project.pk}/monitor/",
        f"/projects/{world.project.pk}/feedback/",
        "/api/v1/docs/",
    ]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
    dashboard = client.get("/").content.decode()
    assert "Support triage" in dashboard and "Accuracy &gt;= 0.9" in dashboard
    assert "Not measured" in dashboard
    assert str(goal.target) in client.get(f"/projects/{world.project.pk}/").content.decode()


def test_anonymous_visitors_are_sent_to_sign_in(db) -> None:
    response = Client().get("/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert Client().get("/login/").status_code == 200


def test_outsiders_get_404_for_the_teams_pages(world, browser) -> None:
    client = browser("outsider")
    for url in (
        f"/projects/{world.project.pk}/",
        f"/teams/{world.team.slug}/",
        f"/projects/{world.project.pk}/edit/",
        f"/projects/{world.project.pk}/data/",
    ):
        assert client.get(url).status_code == 404, url
    assert client.post(f"/projects/{world.project.pk}/delete/").status_code == 404
    assert Project.objects.filter(pk=world.project.pk).exists()


def test_viewers_see_no_edit_buttons_and_cannot_post(world, browser) -> None:
    client = browser("viewer")
    page = client.get(f"/projects/{world.project.pk}/").content.decode()
    assert "Edit project" not in page and "Add goal" not in page
    response = client.post(
        f"/projects/{world.project.pk}/goals/new/",
        {"metric": "accuracy", "target": "0.9", "split": "test"},
    )
    assert response.status_code == 403
    assert "may not edit goals" in response.content.decode()
    assert not Goal.objects.exists()


def test_sign_up_create_team_project_and_goals_through_forms(db) -> None:
    client = Client()
    response = client.post(
        "/signup/",
        {
            "username": "nina",
            "email": "nina@example.com",
            "password1": "a-long-passphrase-1",
            "password2": "a-long-passphrase-1",
        },
    )
    assert response.status_code == 302 and response["Location"] == "/teams/new/"
    response = client.post("/teams/new/", {"name": "Research"})
    team = Team.objects.get(name="Research")
    assert Membership.objects.get(team=team).role == "admin"
    response = client.post(
        "/projects/new/", {"team": str(team.pk), "name": "Abstracts", "task_type": "summarization"}
    )
    project = Project.objects.get(team=team)
    assert response["Location"] == f"/projects/{project.pk}/"
    for metric in ("rougeL", "bleu"):
        client.post(
            f"/projects/{project.pk}/goals/new/",
            {"metric": metric, "target": "0.3", "split": "test"},
        )
    assert project.goals.count() == 2
    page = client.get("/").content.decode()
    assert "ROUGE-L &gt;= 0.3" in page and "BLEU &gt;= 0.3" in page


def test_form_errors_are_shown_not_500(world, browser) -> None:
    client = browser("manager")
    response = client.post(
        f"/projects/{world.project.pk}/goals/new/",
        {"metric": "accuracy", "target": "85", "split": "test"},
    )
    assert response.status_code == 200
    assert "for 85% write 0.85" in response.content.decode()
    response = client.post(
        "/projects/new/",
        {
            "team": str(world.team.pk),
            "name": "Dup",
            "slug": "support-triage",
            "task_type": "classification",
        },
    )
    assert "already exists in this team" in response.content.decode()


def test_forms_require_a_csrf_token(world) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.users["admin"])
    response = client.post("/teams/new/", {"name": "Sneaky"})
    assert response.status_code == 403
    assert not Team.objects.filter(name="Sneaky").exists()


def test_team_page_manages_members(world, browser) -> None:
    UserFactory(username="zoe")
    client = browser("admin")
    client.post(f"/teams/{world.team.slug}/", {"user": "zoe", "role": "rater"})
    membership = Membership.objects.get(user__username="zoe")
    assert membership.role == "rater"
    client.post(f"/members/{membership.pk}/role/", {"role": "engineer"})
    membership.refresh_from_db()
    assert membership.role == "engineer"
    client.post(f"/members/{membership.pk}/remove/")
    assert not Membership.objects.filter(pk=membership.pk).exists()


def test_account_page_shows_a_new_token_once(world, browser) -> None:
    client = browser("engineer")
    page = client.post("/account/", {"name": "laptop"}).content.decode()
    assert "llmh_" in page and "copy it now" in page
    assert "llmh_" not in client.get("/account/").content.decode()


def test_plotly_is_served_locally(db, client) -> None:
    from django.contrib.staticfiles import finders

    assert finders.find("plotly/plotly.min.js")
