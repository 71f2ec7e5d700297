"""The deploy stage's REST API: happy paths and the errors a client sees (the generic route
tests in tests/api/ cover roles, hostile input, ordering and query counts)."""

from __future__ import annotations

import time

import pytest

from projects.models import AuditEvent
from serving import services
from serving.models import Endpoint, ServingKey
from tests.api.conftest import assert_json_error
from tests.factories import GoalFactory
from tests.serving.builders import finished_evaluation, request_record, stored_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(world, api):
    return api(world.users["manager"])


@pytest.fixture
def endpoint(world) -> Endpoint:
    return services.endpoint_create(
        actor=world.users["manager"], project=world.project, name="Support bot"
    )


def _post(client, url: str, body: dict | None = None):
    return client.post(url, body or {}, format="json")


def test_create_read_update_and_archive_an_endpoint(world, client, api) -> None:
    response = _post(
        client,
        "/api/v1/endpoints/",
        {
            "project": world.project.pk,
            "name": "vLLM box",
            "engine": "external",
            "upstream_url": "http://127.0.0.1:8000/v1",
            "upstream_model": "llama",
            "upstream_api_key": "sk-upstream-secret",
        },
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["slug"] == "vllm-box" and body["serve_kind"] == "upstream"
    assert body["has_upstream_api_key"] is True
    assert "upstream_api_key" not in body and b"sk-upstream-secret" not in response.content
    pk = body["id"]

    listed = client.get(f"/api/v1/endpoints/?project={world.project.pk}").json()
    assert [row["id"] for row in listed["results"]] == [pk]
    assert listed["results"][0]["requests_24h"] == 0

    patched = client.patch(f"/api/v1/endpoints/{pk}/", {"store_text": False}, format="json")
    assert patched.status_code == 200 and patched.json()["store_text"] is False
    assert patched.json()["revision"] == 2
    assert_json_error(client.patch(f"/api/v1/endpoints/{pk}/", {"slug": "x"}, format="json"), 400)

    engineer = api(world.users["engineer"])
    assert_json_error(engineer.delete(f"/api/v1/endpoints/{pk}/"), 403)
    assert client.delete(f"/api/v1/endpoints/{pk}/").status_code == 204
    assert client.get(f"/api/v1/endpoints/{pk}/").json()["archived_at"] is not None
    archived = client.get("/api/v1/endpoints/?archived=true").json()["results"]
    assert [row["id"] for row in archived] == [pk]
    assert client.get("/api/v1/endpoints/?archived=false").json()["count"] == 0


def test_bad_endpoint_bodies_list_every_field(world, client) -> None:
    error = assert_json_error(
        _post(
            client,
            "/api/v1/endpoints/",
            {"project": world.project.pk, "name": "x", "engine": "external"},
        ),
        400,
    )
    assert {"upstream_url", "upstream_model"} <= set(error["fields"])
    error = assert_json_error(
        _post(client, "/api/v1/endpoints/", {"project": world.other_project.pk, "name": "x"}),
        400,
    )
    assert "among those you can see" in error["fields"]["project"][0]


def test_promote_gated_then_overridden_then_rolled_back(world, client, endpoint, tmp_path) -> None:
    first = stored_version(world.project, tmp_path)
    second = stored_version(world.project, tmp_path)
    url = f"/api/v1/endpoints/{endpoint.pk}"
    assert _post(client, f"{url}/promote/", {"version": first.pk}).status_code == 200

    GoalFactory(project=world.project, metric="f1_macro", target=0.70, split="test")
    finished_evaluation(world, second, metric="f1_macro", value=0.62)
    gate = client.get(f"{url}/gate/?version={second.pk}").json()
    assert gate["allowed"] is False and gate["refused"] is None
    assert gate["blockers"] == ["F1 (macro) on test is 0.62; the goal is >= 0.70."]

    error = assert_json_error(_post(client, f"{url}/promote/", {"version": second.pk}), 400)
    assert error["fields"]["version"] == gate["blockers"]
    response = _post(
        client,
        f"{url}/promote/",
        {"version": second.pk, "override_reason": "Stale test set", "reason": "hotfix"},
    )
    assert response.status_code == 200, response.content
    assert response.json()["version"] == second.pk and response.json()["revision"] == 3
    history = client.get(f"{url}/deployments/").json()
    assert [(row["version"], row["ended_at"] is None) for row in history] == [
        (second.pk, True),
        (first.pk, False),
    ]
    assert history[0]["gate_failures"] == gate["blockers"]
    assert history[0]["override_reason"] == "Stale test set"
    assert AuditEvent.objects.filter(verb="endpoint.promoted_with_override").exists()

    response = _post(client, f"{url}/rollback/", {"reason": "errors"})
    assert response.status_code == 200 and response.json()["version"] == first.pk
    assert client.get(f"{url}/deployments/").json()[0]["action"] == "rollback"


def test_another_teams_version_is_not_findable(world, client, endpoint, tmp_path) -> None:
    rival = stored_version(world.other_project, tmp_path)
    url = f"/api/v1/endpoints/{endpoint.pk}"
    error = assert_json_error(_post(client, f"{url}/promote/", {"version": rival.pk}), 400)
    assert "among those you can see" in error["fields"]["version"][0]
    assert_json_error(client.get(f"{url}/gate/?version={rival.pk}"), 404)
    assert_json_error(client.get(f"{url}/gate/"), 400)
    qa = stored_version(world.project, tmp_path, kind="qa")
    gate = client.get(f"{url}/gate/?version={qa.pk}").json()
    assert gate["allowed"] is False and "does not serve yet" in gate["refused"]


def test_rollback_without_history_and_canary_routes(world, client, endpoint, tmp_path) -> None:
    url = f"/api/v1/endpoints/{endpoint.pk}"
    error = assert_json_error(_post(client, f"{url}/rollback/"), 400)
    assert "no previous version" in error["message"]
    primary = stored_version(world.project, tmp_path)
    candidate = stored_version(world.project, tmp_path)
    _post(client, f"{url}/promote/", {"version": primary.pk})
    error = assert_json_error(
        _post(client, f"{url}/canary/", {"version": candidate.pk, "percent": 100}), 400
    )
    assert "percent" in error["fields"]
    response = _post(client, f"{url}/canary/", {"version": candidate.pk, "percent": 10})
    assert response.status_code == 200, response.content
    assert (response.json()["canary_version"], response.json()["canary_percent"]) == (
        candidate.pk,
        10,
    )
    stopped = _post(client, f"{url}/canary/", {"version": None})
    assert stopped.json()["canary_version"] is None and stopped.json()["canary_percent"] == 0


def test_stats_per_version(world, client, endpoint, tmp_path) -> None:
    version = stored_version(world.project, tmp_path)
    services.endpoint_promote(actor=world.users["manager"], endpoint=endpoint, version=version)
    endpoint.refresh_from_db()
    services.request_logs_ingest(
        records=[request_record(endpoint, latency_ms=float(ms)) for ms in (10, 20, 30)]
    )
    body = client.get(f"/api/v1/endpoints/{endpoint.pk}/stats/?hours=1").json()
    assert body["hours"] == 1
    [row] = body["versions"]
    assert (row["version_id"], row["requests"], row["p50_latency_ms"]) == (version.pk, 3, 20.0)
    assert_json_error(client.get(f"/api/v1/endpoints/{endpoint.pk}/stats/?hours=0"), 400)


def test_keys_show_their_plaintext_once(world, client, endpoint, api) -> None:
    response = _post(
        client,
        "/api/v1/serving-keys/",
        {
            "project": world.project.pk,
            "name": "mobile app",
            "endpoint": endpoint.pk,
            "expires_in_days": 7,
            "requests_per_minute": 30,
            "token_budget": 1000,
            "budget_period": "day",
        },
    )
    assert response.status_code == 201, response.content
    body = response.json()
    plaintext = body["key"]
    assert plaintext.startswith(f"llmhub-sk-{body['prefix']}-")
    assert body["status"] == "active" and body["usage"]["period_tokens"] == 0
    assert body["endpoint_slug"] == endpoint.slug
    detail = client.get(f"/api/v1/serving-keys/{body['id']}/")
    assert "key" not in detail.json() and plaintext.encode() not in detail.content
    listed = client.get("/api/v1/serving-keys/")
    assert plaintext.encode() not in listed.content
    assert ServingKey.objects.get(pk=body["id"]).key_hash != plaintext

    key = ServingKey.objects.get(pk=body["id"])
    services.request_logs_ingest(records=[request_record(endpoint, key_id=key.pk)])
    usage = client.get(f"/api/v1/serving-keys/{key.pk}/").json()["usage"]
    assert (usage["period_tokens"], usage["total_requests"]) == (12, 1)
    days = client.get(f"/api/v1/serving-keys/{key.pk}/usage/").json()["days"]
    assert days[0]["total_tokens"] == 12

    assert_json_error(
        api(world.users["engineer"]).post(f"/api/v1/serving-keys/{key.pk}/revoke/"), 403
    )
    revoked = client.post(f"/api/v1/serving-keys/{key.pk}/revoke/")
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    error = assert_json_error(
        _post(
            client,
            "/api/v1/serving-keys/",
            {"project": world.project.pk, "name": "x", "expires_in_days": 10**6},
        ),
        400,
    )
    assert "expires_in_days" in error["fields"]


def test_request_logs_filter_and_order(world, client, endpoint, tmp_path) -> None:
    now = time.time()
    services.request_logs_ingest(
        records=[
            request_record(endpoint, latency_ms=30.0, created_at=now - 7200),
            request_record(endpoint, latency_ms=10.0, status_code=429, cache_hit=False),
            request_record(endpoint, latency_ms=20.0, cache_hit=True),
        ]
    )
    base = f"/api/v1/request-logs/?endpoint={endpoint.pk}"
    rows = client.get(f"{base}&ordering=latency_ms").json()["results"]
    assert [r["latency_ms"] for r in rows] == [10.0, 20.0, 30.0]
    assert client.get(f"{base}&status=429").json()["count"] == 1
    assert client.get(f"{base}&cache_hit=true").json()["results"][0]["latency_ms"] == 20.0
    since = "2000-01-01T00:00:00Z"
    assert client.get(f"{base}&since={since}").json()["count"] == 3
    assert client.get(f"{base}&until={since}").json()["count"] == 0
    assert_json_error(client.get(f"{base}&since=yesterday"), 400)
    assert rows[0]["prompt_text"] == "Hello" and rows[0]["version"] is None
    assert client.get(f"/api/v1/request-logs/{rows[0]['id']}/").json()["id"] == rows[0]["id"]


def test_feedback_by_response_id(world, client, endpoint, api) -> None:
    error = assert_json_error(
        _post(
            client,
            "/api/v1/response-feedback/",
            {"endpoint": endpoint.pk, "response_id": "chatcmpl-1", "score": 0},
        ),
        400,
    )
    assert "score" in error["fields"]
    response = _post(
        api(world.users["engineer"]),
        "/api/v1/response-feedback/",
        {"endpoint": endpoint.pk, "response_id": "chatcmpl-1", "score": -1, "comment": "off"},
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["score"], body["source"], body["user"]) == (-1, "api", "engineer")
    assert client.get("/api/v1/response-feedback/?response_id=chatcmpl-1").json()["count"] == 1
    viewer = api(world.users["viewer"])
    assert_json_error(
        _post(
            viewer,
            "/api/v1/response-feedback/",
            {"endpoint": endpoint.pk, "response_id": "x", "score": 1},
        ),
        403,
    )
