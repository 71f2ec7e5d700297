"""Hostile input against every route of the router: a 4xx in the one JSON error shape, never a
500 or an HTML page. The routes come from walking the router (tests/api/routes.py), so a new
endpoint is covered with nobody listing it."""

from __future__ import annotations

import json

import pytest

from tests.api.conftest import assert_json_error
from tests.api.routes import integer_paths, number_fields, routes

HUGE = 10**20  # past any column, and past a signed 64-bit integer


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


def _nul_in_query_parameters(route, client, make) -> None:
    pk = _target(route, make)
    for name in ["x", *(name for name, _type in route.query_params)]:
        response = _send(client, route, pk, params=f"{name}=a%00b")
        error = assert_json_error(response, 400)
        assert f"'{name}'" in error["message"], error
        assert name in error["fields"]
    error = assert_json_error(_send(client, route, pk, params="x%00=1"), 400)
    assert "NUL" in error["message"]


def _bad_numbers_in_query_parameters(route, client, make) -> None:
    if route.method != "GET":
        return
    pk = _target(route, make)
    for name, kind in route.query_params:
        # Text parameters may still be parsed as ids or numbers ("runs=1,2"): a huge one too.
        for value in ("abc", str(HUGE)) if kind in ("integer", "number") else (str(HUGE),):
            response = _send(client, route, pk, params=f"{name}={value}")
            assert response.status_code < 500, (name, value, response.content[:300])
            if response.status_code >= 400:
                assert_json_error(response)
            elif kind == "integer" and value == "abc" and name not in ("page", "page_size"):
                # An integer parameter that ignored "abc" would silently change the answer.
                raise AssertionError(f"?{name}=abc was accepted")


def _bad_ids_in_the_url(route, client, make) -> None:
    if not route.detail:
        return
    for pk in ("abc", str(HUGE), "-1", "%C2%B2"):
        error = assert_json_error(_send(client, route, pk, data={}), 404)
        assert error["code"] == "not_found"


HOSTILE_BODIES = {
    "100,000 nested arrays": "[" * 100_000,
    "100 nested objects": '{"a":' * 100 + "1" + "}" * 100,
    "NaN literal": '{"value": NaN}',
    "Infinity literal": '{"value": [Infinity]}',
    "NUL in a string": '{"name": "l\\u0000"}',
    "NUL in a nested key": '{"params": {"k\\u0000": 1}}',
    "a 5,000-digit integer": '{"value": ' + "9" * 5000 + "}",
}


def _hostile_json_bodies(route, client, make) -> None:
    if not route.is_write:
        return
    pk = _target(route, make)
    for what, raw in HOSTILE_BODIES.items():
        if route.body_schema is None:
            pk = _target(route, make)  # a route that takes no body may act: a fresh object
        response = _send(client, route, pk, raw=raw)
        if route.body_schema is None and response.status_code < 400:
            continue  # a route that takes no body (cancel, revoke) does not read it
        error = assert_json_error(response, 400, 415)
        assert error["code"] in ("parse_error", "invalid", "unsupported_media_type"), (what, error)


def _out_of_range_integers_in_the_body(route, client, make) -> None:
    paths = integer_paths(route.body_schema) if route.is_write else []
    pk = _target(route, make) if paths else None
    for path, keys in paths:
        for value in (HUGE, -HUGE):
            response = _send(client, route, pk, data=_nest(keys, value))
            error = assert_json_error(response, 400, 403, 404)
            if len(keys) == 1 and response.status_code == 400:
                assert keys[0] in error.get("fields", {}), (path, value, error)


def _non_finite_numbers_in_the_body(route, client, make) -> None:
    names = number_fields(route.body_schema) if route.is_write else []
    pk = _target(route, make) if names else None
    for name in names:
        for value in ("Infinity", "-Infinity", "NaN", "1e999"):
            error = assert_json_error(_send(client, route, pk, data={name: value}), 400)
            assert name in error["fields"], (name, value, error)
            assert "finite" in " ".join(error["fields"][name]), error


CHECKS = (
    _nul_in_query_parameters,
    _bad_numbers_in_query_parameters,
    _bad_ids_in_the_url,
    _hostile_json_bodies,
    _out_of_range_integers_in_the_body,
    _non_finite_numbers_in_the_body,
)


@pytest.mark.parametrize("route", routes(), ids=lambda r: r.id)
def test_hostile_input_is_a_4xx_json_error_on_every_route(route, admin_client, make) -> None:
    """NUL in every query parameter (and a generic one); non-integers and huge integers in
    them; bad ids in the URL; deep, non-finite, NUL-holding JSON bodies; out-of-range integers
    and NaN/Infinity in the body's fields (from the route's OpenAPI schema)."""
    failures = []
    for check in CHECKS:
        try:
            check(route, admin_client, make)
        except AssertionError as exc:
            failures.append(f"{check.__name__}: {exc}")
    assert not failures, "\n".join(failures)


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


def test_a_token_lifetime_past_year_9999_is_refused_by_the_service_too(world) -> None:
    """The page's form reaches the service without the serializer: it bounds the days itself
    (timezone.now() + timedelta(days=3,000,000) is an OverflowError)."""
    from django.core.exceptions import ValidationError

    from projects.services import api_token_create

    with pytest.raises(ValidationError) as caught:
        api_token_create(actor=world.users["viewer"], name="ci", expires_in_days=3_000_000)
    assert "expires_in_days" in caught.value.message_dict
