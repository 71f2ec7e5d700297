"""``?ordering=`` on every list: an unknown field is a 400 naming the fields the list sorts by,
as an unknown body field is refused; each field it names really sorts.

Before, DRF's OrderingFilter dropped unknown terms silently (a typo answered 200 in the default
order). Every list route of the router is walked; none is listed by hand.
"""

from __future__ import annotations

import re

import pytest
from django.core.exceptions import FieldDoesNotExist

from tests.api.conftest import assert_json_error
from tests.api.routes import routes_where

LISTS = [r for r in routes_where(action="list") if "ordering" in dict(r.query_params)]
ALLOWED = re.compile(r"Allowed: (.*) \(prefix with - for descending\)\.$")


def _allowed(error: dict) -> list[str]:
    [message] = error["fields"]["ordering"]
    match = ALLOWED.search(message)
    assert match, message
    return match.group(1).split(", ")


def test_every_list_declares_ordering() -> None:
    # The schema documents the parameter on each list; a list without it is not walked below.
    assert {r.id for r in routes_where(action="list")} == {r.id for r in LISTS}


@pytest.mark.parametrize("route", LISTS, ids=lambda r: r.id)
def test_an_unknown_ordering_field_is_refused_naming_the_allowed_ones(
    route, world, admin_client, make
) -> None:
    make(route.model)
    error = assert_json_error(admin_client.get(f"{route.url()}?ordering=nonexistent"), 400)
    assert error["code"] == "invalid"
    [message] = error["fields"]["ordering"]
    assert message.startswith("Unknown ordering field(s): nonexistent. Allowed: "), message
    allowed = _allowed(error)
    assert allowed and "nonexistent" not in allowed

    # A known field among unknown ones, or descending, is refused all the same.
    mixed = admin_client.get(f"{route.url()}?ordering={allowed[0]},-nonexistent")
    assert "-nonexistent" in assert_json_error(mixed, 400)["fields"]["ordering"][0]


def _sort_key(route, name: str) -> tuple[str, bool]:
    """The lookup whose values ``?ordering=name`` sorts by, and whether it is reversed: a
    foreign key sorts by its model's own ordering, as Django does."""
    try:
        field = route.model._meta.get_field(name)
    except FieldDoesNotExist:  # an annotation of the list's queryset
        return name, False
    if not field.is_relation:
        return name, False
    ordering = field.related_model._meta.ordering or ["pk"]
    return f"{name}__{ordering[0].removeprefix('-')}", ordering[0].startswith("-")


def _values(route, user, ids: list, name: str) -> list:
    """The values ``?ordering=name`` sorts rows ``ids`` by, in that order, read from the list's
    own queryset (annotations included); nulls left out (their place differs by database)."""
    lookup, reverse = _sort_key(route, name)
    queryset = route.view().scoped_queryset(user).filter(pk__in=ids)
    by_pk = dict(queryset.values_list("pk", lookup))
    values = [by_pk[pk] for pk in ids if by_pk[pk] is not None]
    return values[::-1] if reverse else values


@pytest.mark.parametrize("route", LISTS, ids=lambda r: r.id)
def test_every_allowed_ordering_field_sorts(route, world, admin_client, make) -> None:
    for _ in range(3):
        make(route.model)
    refused = admin_client.get(f"{route.url()}?ordering=nonexistent")
    for name in _allowed(assert_json_error(refused, 400)):
        ascending = admin_client.get(f"{route.url()}?ordering={name}")
        descending = admin_client.get(f"{route.url()}?ordering=-{name}")
        assert ascending.status_code == 200, (name, ascending.content[:300])
        assert descending.status_code == 200, (name, descending.content[:300])
        up = [row["id"] for row in ascending.json()["results"]]
        down = [row["id"] for row in descending.json()["results"]]
        assert sorted(up) == sorted(down) and (len(up) >= 2 or route.basename == "team"), up
        admin = world.users["admin"]
        assert _values(route, admin, up, name) == sorted(_values(route, admin, up, name)), name
        on_the_way_down = _values(route, admin, down, name)
        assert on_the_way_down == sorted(on_the_way_down, reverse=True), name
    # Blank terms are no ordering at all, not an error.
    assert admin_client.get(f"{route.url()}?ordering=").status_code == 200
