"""Hostile input against every route of the router: a 4xx in the one JSON error shape, never a
500 or an HTML page. The routes come from walking the router (tests/api/routes.py), so a new
endpoint is covered with nobody listing it."""

from __future__ import annotations

import json

import pytest

from tests.api.conftest import assert_json_error
from tests.api.routes import integer_paths, number_fields, routes, routes_where

HUGE = 10**20  # past any column, and past a signed 64-bit integer
BODY_ROUTES = [r for r in routes() if r.is_write]


def _target(route, make):
    return make(route.model).pk if route.detail else None


def _nest(keys: list, value: object) -> object:
    """``["points", 0, "step"]`` -> ``{"points": [{"step": value}]}``."""
    if not keys:
        return value
    inner = _nest(keys[1:], value)
    return [inner] if keys[0] == 0 else {keys[0]: inner}


def _send(client, route, pk=None, *, data=None, params=None, raw: str | None = None):
    method = getattr(client, route.method.lower())
    url = route.url(pk)
    if params is not None:
        return client.generic(route.method, url, QUERY_STRING=params)
    if raw is not None:
        return method(url, data=raw, content_type="application/json")
    return method(url, data=data, format="json")


@pytest.mark.parametrize("route", routes(), ids=lambda r: r.id)
def test_a_nul_byte_in_any_query_parameter_is_a_400_naming_it(route, admin_client, make) -> None:
    pk = _target(route, make)
    for name in ["x", *(name for name, _type in route.query_params)]:
        response = _send(admin_client, route, pk, params=f"{name}=a%00b")
        error = assert_json_error(response, 400)
        assert f"'{name}'" in error["message"], error
        assert name in error["fields"]
    error = assert_json_error(_send(admin_client, route, pk, params="x%00=1"), 400)
    assert "NUL" in error["message"]


@pytest.mark.parametrize("route", routes_where(method="GET"), ids=lambda r: r.id)
def test_non_integers_and_huge_integers_in_query_parameters_are_4xx(
    route, admin_client, make
) -> None:
    pk = _target(route, make)
    for name, kind in route.query_params:
        for value in ("abc", str(HUGE), "1,abc"):
            response = _send(admin_client, route, pk, params=f"{name}={value}")
            assert response.status_code < 500, (name, value, response.content[:300])
            if response.status_code >= 400:
                assert_json_error(response)
            elif kind == "integer" and value == "abc" and name not in ("page", "page_size"):
                # An integer parameter that ignored "abc" would silently change the answer.
                raise AssertionError(f"{route.id}: ?{name}=abc was accepted")


@pytest.mark.parametrize("route", routes_where(detail=True), ids=lambda r: r.id)
def test_a_non_integer_or_out_of_range_id_in_the_url_is_a_404(route, admin_client) -> None:
    for pk in ("abc", str(HUGE), "-1", "1.5", "0x10", "%C2%B2"):
        error = assert_json_error(_send(admin_client, route, pk, data={}), 404)
        assert error["code"] == "not_found"


@pytest.mark.parametrize("route", BODY_ROUTES, ids=lambda r: r.id)
def test_hostile_json_bodies_are_400(route, admin_client, make) -> None:
    pk = _target(route, make)
    hostile = {
        "100,000 nested arrays": "[" * 100_000,
        "100 nested objects": '{"a":' * 100 + "1" + "}" * 100,
        "NaN literal": '{"value": NaN}',
        "Infinity literal": '{"value": [Infinity]}',
        "NUL in a string": '{"name": "l\\u0000"}',
        "NUL in a nested key": '{"params": {"k\\u0000": 1}}',
        "a 5,000-digit integer": '{"value": ' + "9" * 5000 + "}",
    }
    for what, raw in hostile.items():
        if route.body_schema is None:
            pk = _target(route, make)  # a route that takes no body may act: a fresh object
        response = _send(admin_client, route, pk, raw=raw)
        if route.body_schema is None and response.status_code < 400:
            continue  # a route that takes no body (cancel, revoke) does not read it
        error = assert_json_error(response, 400, 415)
        assert error["code"] in ("parse_error", "invalid", "unsupported_media_type"), (what, error)


@pytest.mark.parametrize(
    "route", [r for r in BODY_ROUTES if integer_paths(r.body_schema)], ids=lambda r: r.id
)
def test_out_of_range_integers_in_a_body_are_400_naming_the_field(
    route, admin_client, make
) -> None:
    pk = _target(route, make)
    for path, keys in integer_paths(route.body_schema):
        for value in (HUGE, -HUGE):
            body = _nest(keys, value)
            response = _send(admin_client, route, pk, data=body)
            error = assert_json_error(response, 400, 403, 404)
            if len(keys) == 1 and response.status_code == 400:
                assert keys[0] in error.get("fields", {}), (path, value, error)


@pytest.mark.parametrize(
    "route", [r for r in BODY_ROUTES if number_fields(r.body_schema)], ids=lambda r: r.id
)
def test_nan_and_infinity_as_strings_in_number_fields_are_400(route, admin_client, make) -> None:
    pk = _target(route, make)
    for name in number_fields(route.body_schema):
        for value in ("Infinity", "-Infinity", "NaN", "1e999"):
            error = assert_json_error(_send(admin_client, route, pk, data={name: value}), 400)
            assert name in error["fields"], (name, value, error)
            assert "finite" in " ".join(error["fields"][name]), error


def test_the_cases_found_by_hand(world, admin_client, make) -> None:
    """The requests of issue 12, one by one."""
    from datasets_app.models import DatasetVersion
    from evaluation.models import EvaluationRun
    from training.models import TrainingJob

    version = make(DatasetVersion)
    job = make(TrainingJob)
    runs = [make(EvaluationRun).pk, make(EvaluationRun).pk]
    for url in (
        f"/api/v1/dataset-versions/{version.pk}/download/?split=%00",
        f"/api/v1/dataset-versions/{version.pk}/rows/?split=%00",
        f"/api/v1/training-jobs/{job.pk}/curves/?names=%00",
        f"/api/v1/evaluation-runs/compare/?runs={runs[0]},{runs[1]}&baseline=%00",
    ):
        assert_json_error(admin_client.get(url), 400)
    for baseline in ("abc", str(HUGE), "1.5"):
        url = f"/api/v1/evaluation-runs/compare/?runs={runs[0]},{runs[1]}&baseline={baseline}"
        error = assert_json_error(admin_client.get(url), 400)
        assert "baseline" in error["fields"]
    assert (
        admin_client.get(
            f"/api/v1/evaluation-runs/compare/?runs={runs[0]},{runs[1]}&baseline={runs[1]}"
        ).json()["baseline"]
        == runs[1]
    )
    error = assert_json_error(
        admin_client.post(
            "/api/v1/tokens/", {"name": "x", "expires_in_days": 3_000_000}, format="json"
        ),
        400,
    )
    assert "expires_in_days" in error["fields"]
    assert_json_error(
        admin_client.post("/api/v1/projects/", data="[" * 100_000, content_type="application/json"),
        400,
    )


def test_well_formed_json_still_parses(admin_client, world) -> None:
    """The checks cost nothing to ordinary bodies: brackets in strings, escapes, many objects."""
    body = {"team": world.team.pk, "name": "[[[{{{ \\u0000 not a NUL", "task_type": "qa"}
    response = admin_client.post(
        "/api/v1/projects/", data=json.dumps(body), content_type="application/json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["name"] == body["name"]
