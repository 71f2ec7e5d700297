"""Projects, teams and members through the API: the happy path, bad input and scoping."""

from __future__ import annotations

from projects.models import AuditEvent, Membership, Project, Team
from tests.factories import UserFactory


def test_a_new_user_sets_up_a_team_and_a_project_with_two_goals(db, api) -> None:
    client = api(UserFactory(username="maria"))
    team = client.post("/api/v1/teams/", {"name": "Data Science"}).json()
    assert team["my_role"] == "admin" and team["slug"] == "data-science"

    project = client.post(
        "/api/v1/projects/",
        {
            "team": team["id"],
            "name": "Paper TLDRs",
            "task_type": "summarization",
            "problem_statement": "Summarize abstracts in one sentence.",
        },
    )
    assert project.status_code == 201, project.content
    project_id = project.json()["id"]
    assert project.json()["slug"] == "paper-tldrs"
    for metric, target in (("rougeL", 0.4), ("bleu", 0.2)):
        goal = client.post(
            "/api/v1/goals/", {"project": project_id, "metric": metric, "target": target}
        )
        assert goal.status_code == 201, goal.content

    listed = client.get("/api/v1/projects/").json()
    assert listed["count"] == 1
    assert listed["results"][0]["goal_summary"] == {"met": 0, "not_met": 0, "not_measured": 2}
    verbs = set(AuditEvent.objects.values_list("verb", flat=True))
    assert {"team.created", "project.created", "goal.created"} <= verbs


def test_duplicate_slug_in_a_team_is_a_400(world, api) -> None:
    response = api(world.users["admin"]).post(
        "/api/v1/projects/",
        {"team": world.team.pk, "name": "Again", "slug": "support-triage", "task_type": "qa"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["slug"] == [
        "A project with the slug 'support-triage' already exists in this team."
    ]
    assert Project.objects.filter(team=world.team).count() == 1


def test_the_same_slug_is_fine_in_another_team(world, api) -> None:
    response = api(world.outsider).post(
        "/api/v1/projects/",
        {
            "team": world.other_team.pk,
            "name": "Support",
            "slug": "support-triage",
            "task_type": "qa",
        },
    )
    assert response.status_code == 201


def test_malformed_bodies_get_clear_errors(world, api) -> None:
    client = api(world.users["admin"])
    wrong_type = client.post(
        "/api/v1/projects/", {"team": "acme", "name": "X", "task_type": "classification"}
    )
    assert wrong_type.status_code == 400
    assert "team" in wrong_type.json()["error"]["fields"]

    bad_choice = client.post(
        "/api/v1/projects/", {"team": world.team.pk, "name": "X", "task_type": "poetry"}
    )
    assert bad_choice.json()["error"]["fields"]["task_type"] == ['"poetry" is not a valid choice.']

    unknown = client.patch(f"/api/v1/projects/{world.project.pk}/", {"colour": "blue"})
    assert unknown.status_code == 400
    assert unknown.json()["error"]["message"] == "colour: Unknown field."

    not_json = client.generic(
        "POST", "/api/v1/projects/", "{not json", content_type="application/json"
    )
    assert not_json.status_code == 400
    assert "JSON parse error" in not_json.json()["error"]["message"]

    put = client.put(f"/api/v1/projects/{world.project.pk}/", {"name": "Y"})
    assert put.status_code == 405


def test_changing_the_task_type_is_refused_while_goals_would_not_fit(world, api) -> None:
    client = api(world.users["manager"])
    client.post(
        "/api/v1/goals/", {"project": world.project.pk, "metric": "accuracy", "target": 0.9}
    )
    response = client.patch(f"/api/v1/projects/{world.project.pk}/", {"task_type": "summarization"})
    assert response.status_code == 400
    assert "Remove them first" in response.json()["error"]["message"]
    world.project.refresh_from_db()
    assert world.project.task_type == "classification"


def test_lists_only_show_the_users_teams(world, api) -> None:
    client = api(world.users["viewer"])
    assert [p["slug"] for p in client.get("/api/v1/projects/").json()["results"]] == [
        "support-triage"
    ]
    assert [t["slug"] for t in client.get("/api/v1/teams/").json()["results"]] == ["acme"]
    members = client.get("/api/v1/members/").json()["results"]
    assert {m["username"] for m in members} == {"admin", "manager", "engineer", "rater", "viewer"}
    # Filtering by another team's id finds nothing rather than leaking.
    assert client.get(f"/api/v1/projects/?team={world.other_team.pk}").json()["count"] == 0


def test_project_list_query_count_does_not_grow_with_projects(
    world, api, django_assert_max_num_queries
) -> None:
    from tests.factories import GoalFactory, ProjectFactory

    for _ in range(15):
        GoalFactory(project=ProjectFactory(team=world.team))
    client = api(world.users["viewer"])
    with django_assert_max_num_queries(6):
        response = client.get("/api/v1/projects/?page_size=100")
    assert response.json()["count"] == 16


def test_members_are_managed_by_admins(world, api) -> None:
    admin = api(world.users["admin"])
    UserFactory(username="newbie", email="newbie@example.com")
    added = admin.post(
        "/api/v1/members/", {"team": world.team.pk, "user": "NEWBIE@example.com", "role": "rater"}
    )
    assert added.status_code == 201 and added.json()["username"] == "newbie"
    again = admin.post(
        "/api/v1/members/", {"team": world.team.pk, "user": "newbie", "role": "viewer"}
    )
    assert again.status_code == 400 and "already a member" in again.json()["error"]["message"]
    ghost = admin.post(
        "/api/v1/members/", {"team": world.team.pk, "user": "ghost", "role": "viewer"}
    )
    assert ghost.json()["error"]["fields"]["user"] == [
        "No user with the username or email 'ghost'."
    ]


def test_the_last_admin_cannot_leave_or_be_demoted(world, api) -> None:
    admin_membership = Membership.objects.get(team=world.team, user=world.users["admin"])
    client = api(world.users["admin"])
    demote = client.patch(f"/api/v1/members/{admin_membership.pk}/", {"role": "viewer"})
    assert demote.status_code == 400 and "at least one admin" in demote.json()["error"]["message"]
    leave = client.delete(f"/api/v1/members/{admin_membership.pk}/")
    assert leave.status_code == 400
    assert Membership.objects.filter(pk=admin_membership.pk, role="admin").exists()


def test_anyone_may_leave_a_team(world, api) -> None:
    viewer_membership = Membership.objects.get(team=world.team, user=world.users["viewer"])
    assert (
        api(world.users["viewer"]).delete(f"/api/v1/members/{viewer_membership.pk}/").status_code
        == 204
    )


def test_team_slug_clash_is_a_400(world, api) -> None:
    response = api(world.users["admin"]).post("/api/v1/teams/", {"name": "X", "slug": "acme"})
    assert response.status_code == 400
    assert Team.objects.filter(slug="acme").count() == 1


def test_activity_records_who_changed_what(world, api) -> None:
    client = api(world.users["manager"])
    client.patch(f"/api/v1/projects/{world.project.pk}/", {"name": "Ticket triage"})
    events = client.get(f"/api/v1/activity/?project={world.project.pk}").json()["results"]
    assert events[0]["verb"] == "project.updated"
    assert events[0]["actor"] == "manager"
    assert events[0]["changes"] == {"name": ["Support triage", "Ticket triage"]}
    assert client.get("/api/v1/activity/?actor=nobody").json()["count"] == 0


def test_deleting_a_project_keeps_its_audit_trail(world, api) -> None:
    api(world.users["admin"]).delete(f"/api/v1/projects/{world.project.pk}/")
    event = AuditEvent.objects.get(verb="project.deleted")
    assert event.team == world.team and event.target_repr == "Support triage"


def test_an_empty_update_is_a_400_not_a_crash(world, api) -> None:
    from projects.models import Membership

    client = api(world.users["admin"])
    membership = Membership.objects.get(team=world.team, user=world.users["viewer"])
    for url in (
        f"/api/v1/teams/{world.team.pk}/",
        f"/api/v1/members/{membership.pk}/",
        f"/api/v1/projects/{world.project.pk}/",
    ):
        response = client.patch(url, {})
        assert response.status_code == 400, url
        assert response.json()["error"]["message"] == "Give at least one field to change."
