"""Tenancy and roles on every route of the router, against the role table.

Each viewset declares what its routes need (``read_action``, ``required_actions``); these tests
walk the router and check, for every route: an outsider gets 404 for the team's objects; a
role that may not see the resource gets 404 too (a rater and the team's datasets, jobs...), and
empty lists; a role that sees it but may not do the action gets 403 naming the role, before its
body is validated; every other role gets past the permission check.
"""

from __future__ import annotations

import pytest

from projects.api.permissions import (
    UndeclaredAction,
    read_action_of,
    required_action,
    team_path_for,
)
from projects.models import Role
from projects.permissions import role_allows
from tests.api.conftest import assert_json_error
from tests.api.routes import routes, routes_where

ROLES = list(Role.values)
GENERIC_404 = ("matches the given query", "was found", "Not found.")


def _call(client, route, pk=None, data=None):
    return getattr(client, route.method.lower())(route.url(pk), data=data or {}, format="json")


def _is_permission_404(response) -> bool:
    """A 404 from scoping (the object is not among the user's), not one a view says itself
    ("this version has no profile yet")."""
    if response.status_code != 404:
        return False
    message = response.json()["error"]["message"]
    return any(part in message for part in GENERIC_404)


@pytest.mark.parametrize("route", routes(), ids=lambda r: r.id)
def test_every_route_declares_the_action_it_needs(route, api) -> None:
    try:
        action = required_action(route.view, route.action, route.method)
    except UndeclaredAction as exc:
        pytest.fail(f"{route.id}: {exc} Add it to {route.view.__name__}.required_actions.")
    if route.is_write:
        declared = route.view.required_actions
        assert route.action in declared or f"{route.action}.{route.method.lower()}" in declared, (
            f"{route.id}: a write must declare its action, not inherit the read one"
        )
    assert action is None or action in {a for actions in _table() for a in actions}
    error = assert_json_error(_call(api(), route, 1), 401)  # anonymous: refused everywhere
    assert error["code"] == "not_authenticated"


def _table():
    from projects.permissions import ROLE_ACTIONS

    return ROLE_ACTIONS.values()


@pytest.mark.parametrize("route", routes_where(detail=True), ids=lambda r: r.id)
def test_detail_routes_follow_the_role_table(route, world, api, make) -> None:
    read = read_action_of(route.view)
    action = required_action(route.view, route.action, route.method)
    outsider = api(world.outsider)
    error = assert_json_error(_call(outsider, route, make(route.model).pk), 404)
    assert error["code"] == "not_found"
    for role in ROLES:
        obj = make(route.model)  # a fresh object: an allowed role may delete or change it
        response = _call(api(world.users[role]), route, obj.pk)
        if team_path_for(route.model) is None:  # the user's own (API tokens): theirs only
            if obj.user != world.users[role]:
                assert_json_error(response, 404)
            else:
                assert not _is_permission_404(response), response.content[:300]
            continue
        if not role_allows(role, read):
            error = assert_json_error(response, 404)
        elif action is None:
            # No team action declared: the service decides (anyone may leave a team, only an
            # admin removes others), so only the absence of a 5xx is generic.
            assert response.status_code < 500, (role, response.content[:300])
        elif action is not None and not role_allows(role, action):
            error = assert_json_error(response, 403)
            assert error["code"] == "permission_denied"
            assert f"is {role}" in error["message"], error
        else:
            assert response.status_code != 403, (role, response.content[:300])
            assert not _is_permission_404(response), (role, response.content[:300])


def _team_body(route, world) -> dict | None:
    """A body naming the world's team or project, for collection writes that take one."""
    properties = (route.body_schema or {}).get("properties", {})
    if "team" in properties:
        return {"team": world.team.pk}
    if "project" in properties:
        return {"project": world.project.pk}
    return None


@pytest.mark.parametrize(
    "route", [r for r in routes_where(detail=False) if r.is_write], ids=lambda r: r.id
)
def test_collection_writes_follow_the_role_table(route, world, api) -> None:
    action = required_action(route.view, route.action, route.method)
    body = _team_body(route, world)
    for role in ROLES:
        response = _call(api(world.users[role]), route, data=body)
        assert response.status_code < 500, (role, response.content[:300])
        refused = body is not None and action is not None and not role_allows(role, action)
        if refused:
            error = assert_json_error(response, 403)
            assert f"is {role}" in error["message"], error
        else:
            assert response.status_code != 403, (role, response.content[:300])
    if body is not None:  # another team's id is "not found among those you can see"
        error = assert_json_error(_call(api(world.outsider), route, data=body), 400, 404)
        if error["code"] == "invalid":
            assert "among those you can see" in error["message"], error


@pytest.mark.parametrize("route", routes_where(action="list"), ids=lambda r: r.id)
def test_lists_hold_what_the_role_may_see(route, world, api, make) -> None:
    obj = make(route.model)
    read = read_action_of(route.view)
    owned_by_user = team_path_for(route.model) is None  # API tokens: the user's own
    for role in [*ROLES, "outsider"]:
        user = world.outsider if role == "outsider" else world.users[role]
        response = _call(api(user), route)
        assert response.status_code == 200, (role, response.content[:300])
        ids = {row["id"] for row in response.json()["results"]}
        if owned_by_user:
            visible = user == obj.user
        else:
            visible = role != "outsider" and role_allows(role, read)
        assert (obj.pk in ids) == visible, (role, ids)
