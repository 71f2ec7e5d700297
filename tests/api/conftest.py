"""Fixtures of the generic route tests: an admin client and one object of a route's model."""

from __future__ import annotations

import pytest

from tests.api.objects import build


@pytest.fixture
def admin_client(world, api):
    return api(world.users["admin"])


@pytest.fixture
def make(world):
    """``make(Model)`` -> a saved row of ``Model`` in the world's team (the team itself for
    Team)."""
    from projects.models import Team

    def make_one(model, **given):
        return world.team if model is Team and not given else build(model, world, **given)

    return make_one


def assert_json_error(response, *statuses: int) -> dict:
    """The response is the one JSON error shape, with one of ``statuses`` (never a 5xx)."""
    assert response.status_code < 500, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json"), response.content[:300]
    if statuses:
        assert response.status_code in statuses, (response.status_code, response.content[:500])
    body = response.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    return body["error"]
