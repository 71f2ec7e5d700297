"""Under /api/ every error is the one JSON shape, including crashes and errors raised before
DRF runs (Django's 400/404/500 handlers); pages keep their HTML error pages."""

from __future__ import annotations

import logging

import pytest
from django.test import Client, override_settings

from tests.api.conftest import assert_json_error


@pytest.fixture
def crash_urls():
    with override_settings(ROOT_URLCONF="tests.api.crash_urls"):
        yield


def test_an_unexpected_error_in_an_api_view_is_a_logged_json_500(
    world, api, crash_urls, caplog
) -> None:
    with caplog.at_level(logging.ERROR, logger="llmhub.api"):
        response = api(world.users["viewer"]).get("/api/v1/_crash/")
    assert response.status_code == 500
    assert response["Content-Type"].startswith("application/json")
    assert response.json() == {
        "error": {
            "code": "server_error",
            "message": "The server failed to handle this request; the error has been logged.",
        }
    }
    [record] = [r for r in caplog.records if r.name == "llmhub.api"]
    assert record.exc_info and "a bug in a view" in str(record.exc_info[1])  # the traceback


def test_a_crash_outside_drf_under_api_is_json_and_a_page_crash_is_html(db, crash_urls) -> None:
    client = Client(raise_request_exception=False)
    response = client.get("/api/v1/_plain-crash/")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "server_error"
    page = client.get("/_page-crash/")
    assert page.status_code == 500 and not page["Content-Type"].startswith("application/json")


def test_an_unknown_api_path_is_a_json_404(world, api) -> None:
    error = assert_json_error(api(world.users["admin"]).get("/api/v1/no-such-thing/"), 404)
    assert "/api/v1/no-such-thing/" in error["message"]
    page = Client().get("/no-such-page/")
    assert page.status_code == 404 and not page["Content-Type"].startswith("application/json")


def test_a_nul_in_a_page_query_is_a_400_page(db) -> None:
    response = Client().get("/accounts/login/?next=%00")
    assert response.status_code == 400
    assert not response["Content-Type"].startswith("application/json")


def test_a_nul_in_the_path_is_a_400(world, api) -> None:
    error = assert_json_error(api(world.users["admin"]).get("/api/v1/projects/1%00/"), 400)
    assert "NUL" in error["message"]
