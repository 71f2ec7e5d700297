"""Every list endpoint answers in a number of queries that does not grow with its rows.

For each list route of the router: the queries of a page with one row of its resource, then
with several, must be the same count (an N+1 adds one per row). The rows are built generically
(tests/api/objects.py), each with its own related objects, so a missing select_related or
prefetch_related in the selector shows.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.api.routes import routes_where


def _queries(client, url: str) -> tuple[int, list[str]]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, response.content[:300]
    return len(captured), [q["sql"] for q in captured.captured_queries]


@pytest.mark.parametrize("route", routes_where(action="list"), ids=lambda r: r.id)
def test_list_queries_do_not_grow_with_rows(route, world, api, make) -> None:
    client = api(world.users["admin"])
    make(route.model)
    client.get(route.url())  # warm caches that are not per row (content types, sessions)
    one, _ = _queries(client, route.url())
    for _ in range(3):
        make(route.model)
    several, sql = _queries(client, route.url())
    rows = client.get(route.url()).json()["count"]
    assert rows >= 4 or route.basename == "team", rows
    assert several == one, (
        f"{route.id}: {one} queries for 1 row, {several} for more:\n" + "\n".join(sql)
    )
