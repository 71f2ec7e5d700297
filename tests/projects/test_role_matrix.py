"""Every role against every write and read of the foundation API, plus an outsider.

A row is an action; the expected statuses say who may do it. A member whose role does not allow
an action gets 403 with a message naming the role; someone outside the team gets 404, the same
answer as for an id that does not exist. A rater does not see the team's work (members, goals,
activity, jobs): addressing one of those is a 404 for them too, and its lists are empty.

These are the success paths with real bodies; tests/api/test_route_permissions.py checks every
route of the router against the role table generically.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from projects.models import AuditEvent, Goal, Membership, ProjectHealthCheck
from tests.factories import GoalFactory, MembershipFactory, UserFactory

ALL_ROLES = ("admin", "manager", "engineer", "rater", "viewer")


@dataclass
class Case:
    name: str
    allowed: tuple[str, ...]
    request: Callable  # (client, world, extras) -> response
    success: int
    hidden: tuple[str, ...] = ()  # roles that may not see the object: 404 (lists: empty)


def _extras(world):
    goal = GoalFactory(project=world.project)
    newcomer = UserFactory(username="newcomer")
    membership = MembershipFactory(
        team=world.team, user=UserFactory(username="member2"), role="viewer"
    )
    job = ProjectHealthCheck.objects.create(project=world.project)
    return {"goal": goal, "newcomer": newcomer, "membership": membership, "job": job}


WORKERS = ("admin", "manager", "engineer", "viewer")  # every role that sees the team's work
RATER = ("rater",)

CASES = [
    Case(
        "view project", ALL_ROLES, lambda c, w, x: c.get(f"/api/v1/projects/{w.project.pk}/"), 200
    ),
    Case(
        "view goals",
        WORKERS,
        lambda c, w, x: c.get(f"/api/v1/goals/{x['goal'].pk}/"),
        200,
        hidden=RATER,
    ),
    Case(
        "view activity",
        ALL_ROLES,
        lambda c, w, x: c.get(f"/api/v1/activity/?project={w.project.pk}"),
        200,
        hidden=RATER,
    ),
    Case("view team", ALL_ROLES, lambda c, w, x: c.get(f"/api/v1/teams/{w.team.pk}/"), 200),
    Case(
        "view member",
        WORKERS,
        lambda c, w, x: c.get(f"/api/v1/members/{x['membership'].pk}/"),
        200,
        hidden=RATER,
    ),
    Case(
        "create project",
        ("admin", "manager"),
        lambda c, w, x: c.post(
            "/api/v1/projects/",
            {"team": w.team.pk, "name": "New one", "task_type": "summarization"},
        ),
        201,
    ),
    Case(
        "edit project",
        ("admin", "manager"),
        lambda c, w, x: c.patch(f"/api/v1/projects/{w.project.pk}/", {"description": "x"}),
        200,
    ),
    Case(
        "delete project",
        ("admin",),
        lambda c, w, x: c.delete(f"/api/v1/projects/{w.project.pk}/"),
        204,
    ),
    Case(
        "create goal",
        ("admin", "manager"),
        lambda c, w, x: c.post(
            "/api/v1/goals/", {"project": w.project.pk, "metric": "accuracy", "target": 0.9}
        ),
        201,
    ),
    Case(
        "edit goal",
        ("admin", "manager"),
        lambda c, w, x: c.patch(f"/api/v1/goals/{x['goal'].pk}/", {"target": 0.7}),
        200,
        hidden=RATER,
    ),
    Case(
        "delete goal",
        ("admin", "manager"),
        lambda c, w, x: c.delete(f"/api/v1/goals/{x['goal'].pk}/"),
        204,
        hidden=RATER,
    ),
    Case(
        "rename team",
        ("admin",),
        lambda c, w, x: c.patch(f"/api/v1/teams/{w.team.pk}/", {"name": "Acme Labs"}),
        200,
    ),
    Case(
        "add member",
        ("admin",),
        lambda c, w, x: c.post(
            "/api/v1/members/", {"team": w.team.pk, "user": "newcomer", "role": "rater"}
        ),
        201,
    ),
    Case(
        "change role",
        ("admin",),
        lambda c, w, x: c.patch(f"/api/v1/members/{x['membership'].pk}/", {"role": "rater"}),
        200,
        hidden=RATER,
    ),
    Case(
        "remove member",
        ("admin",),
        lambda c, w, x: c.delete(f"/api/v1/members/{x['membership'].pk}/"),
        204,
        hidden=RATER,
    ),
    Case(
        "launch job",
        ("admin", "manager", "engineer"),
        lambda c, w, x: c.post("/api/v1/health-checks/", {"project": w.project.pk}),
        201,
    ),
    Case(
        "cancel job",
        ("admin", "manager", "engineer"),
        lambda c, w, x: c.post(f"/api/v1/health-checks/{x['job'].pk}/cancel/"),
        200,
        hidden=RATER,
    ),
]


@pytest.mark.parametrize("role", ALL_ROLES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_role_may_or_may_not(case: Case, role: str, world, api) -> None:
    extras = _extras(world)
    events_before = AuditEvent.objects.count()
    response = case.request(api(world.users[role]), world, extras)
    if role in case.hidden and response.status_code == 200:
        assert response.json()["count"] == 0  # a list: the team's rows are not among theirs
    elif role in case.hidden:
        assert response.status_code == 404, response.content
        assert response.json()["error"]["code"] == "not_found"
        assert AuditEvent.objects.count() == events_before
    elif role in case.allowed:
        assert response.status_code == case.success, response.content
    else:
        assert response.status_code == 403, response.content
        body = response.json()["error"]
        assert body["code"] == "permission_denied"
        assert f"is {role}" in body["message"]
        # A refused write leaves no trace of itself.
        assert AuditEvent.objects.count() == events_before


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_outsider_cannot_reach_the_team(case: Case, world, api) -> None:
    extras = _extras(world)
    goals_before, members_before = Goal.objects.count(), Membership.objects.count()
    response = case.request(api(world.outsider), world, extras)
    if case.name == "view activity":
        assert response.status_code == 200 and response.json()["count"] == 0
        return
    # Creates that name the team's objects fail validation (400: unknown id); everything that
    # addresses an object directly is 404.
    assert response.status_code in (400, 404), response.content
    if response.status_code == 400:
        assert "among those you can see" in response.json()["error"]["message"]
    assert (Goal.objects.count(), Membership.objects.count()) == (goals_before, members_before)


def test_anonymous_is_refused_everywhere(world, api) -> None:
    for url in ("/api/v1/projects/", "/api/v1/teams/", "/api/v1/goals/", "/api/v1/me/"):
        response = api().get(url)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "not_authenticated"


def test_a_rater_may_leave_the_team(world, api) -> None:
    """Raters cannot see the member list, but they see (and may remove) their own membership."""
    rater = world.users["rater"]
    client = api(rater)
    listed = client.get("/api/v1/members/").json()["results"]
    assert [m["username"] for m in listed] == ["rater"]
    response = client.delete(f"/api/v1/members/{listed[0]['id']}/")
    assert response.status_code == 204, response.content
    assert not Membership.objects.filter(user=rater, team=world.team).exists()


def test_pages_follow_the_rater_role(world, client) -> None:
    """Pages read through the same selectors: a rater sees the team and the dashboard, none of
    the team's work on them; the project's page sends them to their campaigns in it, its stage
    pages and a dataset, job or model page are a 404."""
    from datasets_app.models import Dataset
    from tests.api.objects import build
    from training.models import ModelVersion, TrainingJob

    dataset = build(Dataset, world, name="Support tickets")
    job, model = build(TrainingJob, world), build(ModelVersion, world)
    for role in ("rater", "viewer"):
        client.force_login(world.users[role])
        for url in (
            "/",
            f"/teams/{world.team.slug}/",
            f"/projects/{world.project.pk}/",
            f"/projects/{world.project.pk}/data/",
            f"/projects/{world.project.pk}/train/",
            f"/projects/{world.project.pk}/evaluate/",
        ):
            response = client.get(url)
            if role == "rater" and url.startswith("/projects/"):
                expected = 302 if url == f"/projects/{world.project.pk}/" else 404
                assert response.status_code == expected, (role, url)
                assert b"Support tickets" not in response.content
                continue
            assert response.status_code == 200, (role, url)
            assert (b"Support tickets" in response.content) == (
                role == "viewer" and url.endswith("/data/")
            ), (role, url)
        for url in (
            f"/datasets/{dataset.pk}/",
            f"/training-jobs/{job.pk}/",
            f"/model-versions/{model.pk}/",
        ):
            assert client.get(url).status_code == (404 if role == "rater" else 200), (role, url)


def test_collection_reads_naming_a_project_follow_the_role(world, api) -> None:
    """A read that names its project in the query (goal progress) is a 404 for a rater, as the
    goals are; the project itself stays visible to them."""
    GoalFactory(project=world.project)
    url = f"/api/v1/evaluation-runs/goals/?project={world.project.pk}"
    assert len(api(world.users["viewer"]).get(url).json()) == 1
    response = api(world.users["rater"]).get(url)
    assert response.status_code == 404, response.content
    rater_project = api(world.users["rater"]).get(f"/api/v1/projects/{world.project.pk}/").json()
    assert rater_project["name"] == "Support triage" and rater_project["goals"] == []
    viewer_project = api(world.users["viewer"]).get(f"/api/v1/projects/{world.project.pk}/")
    assert len(viewer_project.json()["goals"]) == 1
