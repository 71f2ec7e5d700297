"""The Deploy tab and the endpoint page (Django test client): endpoints with their traffic, the
new endpoint and key forms (every error at once), the key shown once, revoke, the goal gate
(every reason, then an override recorded in the history and the audit log), rollback, canary,
the playground's relay and feedback, roles, and the tab's query count."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils.html import escape

from projects.models import AuditEvent
from serving import services
from serving.models import Deployment, Endpoint, RequestLog, ResponseFeedback, ServingKey
from tests.factories import GoalFactory, ProjectFactory
from tests.serving import conftest as serving_fixtures
from tests.serving.builders import finished_evaluation, request_record, stored_version
from tests.serving.conftest import free_port

pytestmark = pytest.mark.django_db
# The deploy stage's fixtures: an endpoint serving a tiny causal LM, an in-process inference stack.
deployed = serving_fixtures.deployed
serving_stack = serving_fixtures.serving_stack
tiny_lm_dir = serving_fixtures.tiny_lm_dir


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _endpoint(world, name="Support bot", slug="support", **kwargs) -> Endpoint:
    return services.endpoint_create(
        actor=world.users["manager"], project=world.project, name=name, slug=slug, **kwargs
    )


def _promote(world, endpoint, version, **kwargs) -> Endpoint:
    services.endpoint_promote(
        actor=world.users["manager"], endpoint=endpoint, version=version, **kwargs
    )
    endpoint.refresh_from_db()
    return endpoint


def _section(html: str, element_id: str) -> str:
    start = html.index(f'id="{element_id}"')
    return html[start : start + 20_000]


# --- the Deploy tab ----------------------------------------------------------------------------


def test_the_tab_lists_endpoints_with_their_traffic_and_the_keys_with_usage(
    world, tmp_path
) -> None:
    version = stored_version(world.project, tmp_path)
    endpoint = _promote(world, _endpoint(world), version)
    key, _plaintext = services.serving_key_create(
        actor=world.users["manager"], project=world.project, name="bot key", token_budget=1000
    )
    records = [
        request_record(endpoint, key_id=key.pk, latency_ms=float(ms), status_code=200)
        for ms in range(10, 200, 10)
    ] + [request_record(endpoint, key_id=key.pk, latency_ms=500.0, status_code=500)]
    services.request_logs_ingest(records=records)

    html = _client(world.users["viewer"]).get(f"/projects/{world.project.pk}/deploy/")
    assert html.status_code == 200 and html.context["stage"] == "deploy"
    html = html.content.decode()
    row = _section(html, "endpoints")
    row = row[row.index('data-endpoint="support"') :]
    row = row[: row.index("</tr>")]
    assert "Support bot" in row and escape(str(version)) in row and "staging" in row
    # 20 requests, 1 error (5%), p95 = the 19th of 20 sorted latencies = 190 ms.
    assert ">20<" in row and "5%" in row and "190 ms" in row
    keys = _section(html, "serving-keys")
    assert "bot key" in keys and key.prefix in keys and "every endpoint" in keys
    # 20 requests of 5 + 7 tokens, in the budget period and in all.
    assert "240 <small" in keys and "of 1,000" in keys and "20 req" in keys
    # A viewer sees, but is offered no forms.
    assert 'id="new-endpoint"' not in html and "Revoke" not in keys


def test_the_pending_placeholder_is_gone_and_the_tab_starts_with_the_new_endpoint_form(
    world,
) -> None:
    html = _client(world.users["manager"]).get(f"/projects/{world.project.pk}/deploy/")
    html = html.content.decode()
    assert "not available in this version" not in html
    assert "No endpoints yet" in html
    form = _section(html, "new-endpoint")
    assert "open" in form[: form.index(">")]
    # The upstream fields show only for an external engine (forms.js).
    assert form.count('class="field" data-show-when="engine=external"') == 3


def test_the_endpoint_form_shows_every_error_at_once_and_writes_nothing(world) -> None:
    client = _client(world.users["manager"])
    url = f"/projects/{world.project.pk}/deploy/endpoints/new/"
    response = client.post(
        url,
        {"name": "", "stage": "production", "engine": "external", "log_retention_days": "0"},
    )
    assert response.status_code == 200
    errors = response.context["endpoint_form"].errors
    assert set(errors) == {"name", "upstream_url", "upstream_model", "log_retention_days"}
    assert not Endpoint.objects.exists()
    # The service's own checks land next to their fields too: a taken slug, a bad URL.
    _endpoint(world, slug="taken")
    response = client.post(
        url,
        {
            "name": "Other",
            "slug": "taken",
            "stage": "staging",
            "engine": "local",
            "log_retention_days": "30",
        },
    )
    assert "slug" in response.context["endpoint_form"].errors
    response = client.post(
        url,
        {
            "name": "GPU",
            "stage": "staging",
            "engine": "external",
            "upstream_url": "ftp://gpu/v1",
            "upstream_model": "llama",
            "log_retention_days": "30",
        },
    )
    assert "upstream_url" in response.context["endpoint_form"].errors
    assert Endpoint.objects.count() == 1
    # A good one goes to its page; a local endpoint ignores the (hidden) upstream fields.
    response = client.post(
        url,
        {
            "name": "Chat",
            "stage": "staging",
            "engine": "local",
            "upstream_url": "http://left-over/v1",
            "store_text": "on",
            "log_retention_days": "7",
        },
    )
    chat = Endpoint.objects.get(slug="chat")
    assert response.status_code == 302 and response["Location"] == f"/deploy/endpoints/{chat.pk}/"
    assert chat.upstream_url == "" and chat.store_text and chat.log_retention_days == 7


def test_a_new_key_is_shown_once_hashed_and_never_again(world) -> None:
    endpoint = _endpoint(world)
    client = _client(world.users["manager"])
    url = f"/projects/{world.project.pk}/deploy/keys/new/"
    # Every error at once, nothing written.
    response = client.post(
        url, {"name": "", "expires_in_days": "0", "requests_per_minute": "-1", "endpoint": ""}
    )
    assert response.status_code == 200
    assert set(response.context["key_form"].errors) == {
        "name",
        "expires_in_days",
        "requests_per_minute",
    }
    assert 'id="new-key" open' in response.content.decode()
    assert not ServingKey.objects.exists()

    response = client.post(
        url,
        {
            "name": "support bot",
            "endpoint": str(endpoint.pk),
            "expires_in_days": "30",
            "requests_per_minute": "60",
            "token_budget": "5000",
            "budget_period": "week",
        },
    )
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    plaintext = response.context["plaintext"]
    key = ServingKey.objects.get()
    assert plaintext.startswith(f"llmhub-sk-{key.prefix}-")
    assert key.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert (key.endpoint, key.requests_per_minute, key.token_budget, key.budget_period) == (
        endpoint,
        60,
        5000,
        "week",
    )
    html = response.content.decode()
    assert (
        plaintext in html and "shown this once" in html and 'data-copy="#serving-key-value"' in html
    )
    # Never again: not on the tab, not anywhere in the database.
    tab = client.get(f"/projects/{world.project.pk}/deploy/").content.decode()
    assert plaintext not in tab and key.prefix in tab
    page = client.get(f"/deploy/endpoints/{endpoint.pk}/").content.decode()
    assert plaintext not in page


def test_revoke_stops_a_key_and_an_engineer_may_not(world) -> None:
    key, _ = services.serving_key_create(
        actor=world.users["manager"], project=world.project, name="old"
    )
    url = f"/deploy/keys/{key.pk}/revoke/"
    assert _client(world.users["engineer"]).post(url).status_code == 403
    assert _client(world.outsider).post(url).status_code == 404
    key.refresh_from_db()
    assert key.revoked_at is None
    client = _client(world.users["manager"])
    tab = client.get(f"/projects/{world.project.pk}/deploy/").content.decode()
    assert 'data-confirm="Revoke the key old' in tab
    response = client.post(url, follow=True)
    key.refresh_from_db()
    assert key.revoked_at is not None
    keys = _section(response.content.decode(), "serving-keys")
    assert "revoked</span>" in keys and "Revoke</button>" not in keys


# --- the endpoint page: gate, override, rollback, canary -----------------------------------


@pytest.fixture
def gated(world, tmp_path):
    """Two goals; ``good`` meets both, ``bad`` misses one and is unmeasured on the other."""
    world.project.task_type = "generation"
    world.project.save()
    GoalFactory(project=world.project, metric="exact_match", target=0.5, split="test")
    GoalFactory(project=world.project, metric="token_f1", target=0.6, split="test")
    good = stored_version(world.project, tmp_path)
    bad = stored_version(world.project, tmp_path)
    finished_evaluation(world, good, metric="exact_match", value=0.8)
    finished_evaluation(world, good, metric="token_f1", value=0.9)
    finished_evaluation(world, bad, metric="exact_match", value=0.31)
    return good, bad


def test_promotion_blocked_lists_every_reason_and_an_override_goes_on_record(world, gated) -> None:
    good, bad = gated
    endpoint = _endpoint(world, stage="production")
    client = _client(world.users["manager"])
    page = client.get(f"/deploy/endpoints/{endpoint.pk}/").content.decode()
    # Best first: the version meeting both goals leads the select and the table.
    select = _section(page, "promote")
    assert select.index(f'value="{good.pk}"') < select.index(f'value="{bad.pk}"')
    assert f"{escape(str(good))} · 2/2 goals met" in select
    assert f"{escape(str(bad))} · 0/2 goals met" in select

    url = f"/deploy/endpoints/{endpoint.pk}/promote/"
    response = client.post(url, {"version": bad.pk, "reason": "try it"})
    assert response.status_code == 200
    html = _section(response.content.decode(), "promote")
    blockers = html[html.index("data-gate-blockers") : html.index("</ul>")]
    assert "Exact match on test is 0.31; the goal is &gt;= 0.50." in blockers
    assert f"No evaluation of {escape(str(bad))} measures" in blockers
    assert blockers.count("<li>") == 2
    override = html[html.index("data-gate-override") :]
    assert not override[: override.index(">")].rstrip().endswith("hidden")
    endpoint.refresh_from_db()
    assert endpoint.version is None and not Deployment.objects.exists()

    response = client.post(
        url, {"version": bad.pk, "reason": "try it", "override_reason": "Demo for the CEO."}
    )
    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.version == bad
    event = AuditEvent.objects.get(verb="endpoint.promoted_with_override")
    assert event.changes["override_reason"] == "Demo for the CEO."
    assert len(event.changes["gate_failures"]) == 2
    history = _section(client.get(response["Location"]).content.decode(), "deployments")
    assert "Demo for the CEO." in history and "Exact match on test is 0.31" in history
    assert "try it" in history


def test_the_gate_fragment_lists_the_reasons_for_the_chosen_version(world, gated, tmp_path) -> None:
    good, bad = gated
    endpoint = _endpoint(world)
    client = _client(world.users["engineer"])
    url = f"/deploy/endpoints/{endpoint.pk}/gate/"
    assert client.get(url, {"version": good.pk}).json() == {"version": good.pk, "blockers": []}
    assert len(client.get(url, {"version": bad.pk}).json()["blockers"]) == 2
    foreign = stored_version(ProjectFactory(team=world.other_team), tmp_path)
    assert client.get(url, {"version": foreign.pk}).status_code == 404
    assert client.get(url, {"version": "x"}).status_code == 404


def test_rollback_restores_the_previous_version_in_one_click(world, gated) -> None:
    good, bad = gated
    endpoint = _promote(world, _endpoint(world), good)
    endpoint = _promote(world, endpoint, bad, override_reason="checking")
    client = _client(world.users["manager"])
    page = client.get(f"/deploy/endpoints/{endpoint.pk}/").content.decode()
    button = _section(page, "serving-now")
    assert f"Roll back to {escape(str(good))}</button>" in button
    assert f'data-confirm="Roll back Support bot to {escape(str(good))}?' in button
    response = client.post(f"/deploy/endpoints/{endpoint.pk}/rollback/", follow=True)
    endpoint.refresh_from_db()
    assert endpoint.version == good
    html = response.content.decode()
    assert f"Rolled back: {escape(str(good))} serves Support bot again." in html
    history = _section(html, "deployments")
    assert history.count('data-action="rollback"') == 1
    # The rolled-back row ended; the restored one runs "now".
    rows = Deployment.objects.filter(endpoint=endpoint, role="primary").order_by("started_at")
    assert [r.version for r in rows] == [good, bad, good]
    assert all(r.ended_at for r in rows[:2]) and rows[2].ended_at is None


def test_a_canary_starts_shows_beside_the_primary_and_stops(world, gated) -> None:
    good, bad = gated
    endpoint = _promote(world, _endpoint(world), good)
    client = _client(world.users["manager"])
    url = f"/deploy/endpoints/{endpoint.pk}/canary/"
    # Out of range: the form says so; gated: the reasons, as for a promotion.
    response = client.post(url, {"version": bad.pk, "percent": "100"})
    assert "percent" in response.context["canary_form"].errors
    response = client.post(url, {"version": bad.pk, "percent": "20"})
    assert len(response.context["canary_form"].errors["version"]) == 2
    response = client.post(url, {"version": bad.pk, "percent": "20", "override_reason": "shadow"})
    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert (endpoint.canary_version, endpoint.canary_percent) == (bad, 20)
    services.request_logs_ingest(
        records=[request_record(endpoint, latency_ms=30.0)]
        + [request_record(endpoint, version_id=bad.pk, canary=True, latency_ms=80.0)] * 2
    )
    page = client.get(f"/deploy/endpoints/{endpoint.pk}/").content.decode()
    side = _section(page, "side-by-side")
    assert side.index('data-role="primary"') < side.index('data-role="canary"')
    assert "30 ms" in side and "80 ms" in side
    assert "answers 20% of the requests" in _section(page, "serving-now")
    response = client.post(url, {"stop": "1"})
    endpoint.refresh_from_db()
    assert endpoint.canary_version is None and endpoint.canary_percent == 0


def test_roles_engineers_see_but_may_not_change_raters_and_outsiders_get_404(world, gated) -> None:
    good, bad = gated
    endpoint = _promote(world, _endpoint(world), good)
    pages = [f"/projects/{world.project.pk}/deploy/", f"/deploy/endpoints/{endpoint.pk}/"]
    engineer = _client(world.users["engineer"])
    for url in pages:
        assert engineer.get(url).status_code == 200
    page = engineer.get(pages[1]).content.decode()
    assert 'id="promote"' not in page and "Roll back" not in page and 'id="playground"' in page
    writes = [
        (
            f"/projects/{world.project.pk}/deploy/endpoints/new/",
            {"name": "x", "stage": "staging", "engine": "local", "log_retention_days": "30"},
        ),
        (f"/projects/{world.project.pk}/deploy/keys/new/", {"name": "k", "budget_period": "month"}),
        (f"/deploy/endpoints/{endpoint.pk}/promote/", {"version": bad.pk, "override_reason": "x"}),
        (f"/deploy/endpoints/{endpoint.pk}/rollback/", {}),
        (f"/deploy/endpoints/{endpoint.pk}/canary/", {"version": bad.pk, "percent": "5"}),
        (
            f"/deploy/endpoints/{endpoint.pk}/settings/",
            {"name": "x", "stage": "staging", "log_retention_days": "1"},
        ),
        (f"/deploy/endpoints/{endpoint.pk}/archive/", {}),
    ]
    for url, data in writes:
        assert engineer.post(url, data).status_code == 403, url
    # A viewer may not use the playground (it runs the model: RUN_JOBS).
    viewer = _client(world.users["viewer"])
    assert viewer.get(pages[1]).status_code == 200
    assert 'id="playground"' not in viewer.get(pages[1]).content.decode()
    assert (
        viewer.post(f"/deploy/endpoints/{endpoint.pk}/playground/", {"prompt": "hi"}).status_code
        == 403
    )
    for user in ("rater", "outsider"):
        client = _client(world.users["rater"] if user == "rater" else world.outsider)
        for url in [*pages, f"/deploy/endpoints/{endpoint.pk}/gate/?version={good.pk}"]:
            assert client.get(url).status_code == 404, (user, url)
        for url, data in writes:
            assert client.post(url, data).status_code == 404, (user, url)
    endpoint.refresh_from_db()
    assert endpoint.version == good and endpoint.archived_at is None
    assert Endpoint.objects.count() == 1 and not ServingKey.objects.exists()
    # A manager archives it: it leaves the tab.
    manager = _client(world.users["manager"])
    assert manager.post(f"/deploy/endpoints/{endpoint.pk}/archive/").status_code == 302
    assert "Support bot" not in _section(
        manager.get(pages[0]).content.decode(), "serving-keys-card"
    )


def test_the_page_fits_what_the_endpoint_serves(world, tmp_path, settings) -> None:
    settings.LLMHUB_SERVING_PUBLIC_URL = "https://models.example.com"
    client = _client(world.users["manager"])
    empty = _endpoint(world, name="Empty", slug="empty")
    page = client.get(f"/deploy/endpoints/{empty.pk}/").content.decode()
    assert "Promote a model version to try it here." in page and "Roll back" not in page
    assert 'base_url="https://models.example.com/v1"' in page and 'model="empty"' in page
    assert "chat.completions.create" in page

    classifier = _promote(
        world,
        _endpoint(world, name="Triage", slug="triage"),
        stored_version(world.project, tmp_path, kind="classification", name="triage"),
    )
    page = client.get(f"/deploy/endpoints/{classifier.pk}/").content.decode()
    assert 'id="playground-form"' not in page and "call this classifier" in page
    assert "https://models.example.com/v1/predict" in page and '"model": "triage"' in page

    external = _endpoint(
        world,
        name="GPU",
        slug="gpu",
        engine="external",
        upstream_url="http://127.0.0.1:9/v1",
        upstream_model="llama-3-8b",
        upstream_api_key="sk-upstream-secret",
    )
    page = client.get(f"/deploy/endpoints/{external.pk}/").content.decode()
    # It forwards: nothing to promote, the playground goes through the inference process.
    assert 'id="promote"' not in page and 'id="playground-form"' in page
    assert "llama-3-8b" in _section(page, "serving-now")
    assert "sk-upstream-secret" not in page  # write-only


def test_settings_turn_the_privacy_switch_off(world, gated) -> None:
    good, _bad = gated
    endpoint = _promote(world, _endpoint(world), good)
    revision = endpoint.revision
    client = _client(world.users["manager"])
    url = f"/deploy/endpoints/{endpoint.pk}/settings/"
    response = client.post(url, {"name": "", "stage": "staging", "log_retention_days": "0"})
    assert set(response.context["settings_form"].errors) == {"name", "log_retention_days"}
    assert 'id="endpoint-settings" open' in response.content.decode()
    response = client.post(
        url, {"name": "Support bot", "stage": "production", "log_retention_days": "7"}
    )
    assert response.status_code == 302
    endpoint.refresh_from_db()
    good.refresh_from_db()
    assert not endpoint.store_text and endpoint.log_retention_days == 7
    assert endpoint.stage == "production" and good.stage == "production"
    assert endpoint.revision > revision  # the inference process stops storing text
    page = client.get(f"/deploy/endpoints/{endpoint.pk}/").content.decode()
    assert "no text logged (counts only), kept 7 days" in page


def _tab_queries(client, project) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(f"/projects/{project.pk}/deploy/").status_code == 200
    return len(queries)


def test_the_tab_query_count_does_not_grow_with_endpoints(world, tmp_path) -> None:
    client = _client(world.users["manager"])

    def add(n: int) -> None:
        endpoint = _endpoint(world, name=f"Endpoint {n}", slug=f"endpoint-{n}")
        first = stored_version(world.project, tmp_path)
        second = stored_version(world.project, tmp_path)
        _promote(world, endpoint, first)
        services.endpoint_set_canary(
            actor=world.users["manager"], endpoint=endpoint, version=second, percent=10
        )
        endpoint.refresh_from_db()
        key, _ = services.serving_key_create(
            actor=world.users["manager"], project=world.project, name=f"k{n}", endpoint=endpoint
        )
        services.request_logs_ingest(
            records=[request_record(endpoint, key_id=key.pk) for _ in range(3)]
        )

    add(1)
    one = _tab_queries(client, world.project)
    add(2)
    add(3)
    assert _tab_queries(client, world.project) == one


# --- the playground ----------------------------------------------------------------------------


def _events(response) -> list:
    body = b"".join(response.streaming_content).decode()
    events = []
    for block in body.split("\n\n"):
        if block.startswith("data: ") and block[6:] != "[DONE]":
            events.append(json.loads(block[6:]))
    return events


def test_the_playground_says_when_the_inference_process_is_not_running(
    world, gated, settings
) -> None:
    good, _bad = gated
    endpoint = _promote(world, _endpoint(world), good)
    settings.LLMHUB_SERVING_URL = f"http://127.0.0.1:{free_port()}"
    client = _client(world.users["engineer"])
    url = f"/deploy/endpoints/{endpoint.pk}/playground/"
    # Bad settings: every field's error, as JSON, before anything is sent.
    response = client.post(
        url,
        json.dumps(
            {"prompt": "", "max_tokens": 0, "temperature": 3, "top_p": 0, "stop": "a\nb\nc\nd\ne"}
        ),
        content_type="application/json",
    )
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {
        "prompt",
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
    }
    started = time.monotonic()
    response = client.post(
        url,
        json.dumps({"prompt": "Hello", "max_tokens": 8, "temperature": 0, "top_p": 1}),
        content_type="application/json",
    )
    assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"
    events = _events(response)
    assert time.monotonic() - started < 5
    assert events == [
        {
            "error": {
                "message": f"The inference process is not running at {settings.LLMHUB_SERVING_URL}:"
                " start it with bin/dev or manage.py serve."
            }
        }
    ]


def test_playground_feedback_is_recorded_for_the_endpoint(world, gated) -> None:
    good, _bad = gated
    endpoint = _promote(world, _endpoint(world), good)
    client = _client(world.users["engineer"])
    url = f"/deploy/endpoints/{endpoint.pk}/feedback/"
    response = client.post(
        url,
        json.dumps({"response_id": "chatcmpl-abc", "score": 1}),
        content_type="application/json",
    )
    assert response.status_code == 200 and response.json()["ok"] is True
    feedback = ResponseFeedback.objects.get()
    assert (feedback.endpoint, feedback.score, feedback.source, feedback.user) == (
        endpoint,
        1,
        "playground",
        world.users["engineer"],
    )
    response = client.post(
        url,
        json.dumps({"response_id": "chatcmpl-abc", "score": 5}),
        content_type="application/json",
    )
    assert response.status_code == 400 and "thumbs" in response.json()["error"]["message"]
    assert (
        _client(world.users["viewer"])
        .post(url, json.dumps({"response_id": "x", "score": 1}), content_type="application/json")
        .status_code
        == 403
    )


@pytest.mark.django_db(transaction=True)
def test_the_playground_streams_an_answer_from_the_inference_process(
    deployed, serving_stack, settings, monkeypatch
) -> None:
    stack = serving_stack()
    settings.LLMHUB_SERVING_URL = stack.url
    client = _client(deployed.world.users["engineer"])
    response = client.post(
        f"/deploy/endpoints/{deployed.endpoint.pk}/playground/",
        json.dumps(
            {
                "system": "Be brief.",
                "prompt": "Hello",
                "max_tokens": 6,
                "temperature": 0,
                "top_p": 1,
                "seed": 3,
            }
        ),
        content_type="application/json",
    )
    assert response.status_code == 200
    events = _events(response)
    assert not [e for e in events if "error" in e], events
    meta = events[0]["llmhub"]
    assert meta["version_id"] == str(deployed.version.pk) and meta["canary"] is False
    chunks = [e for e in events if e.get("object") == "chat.completion.chunk"]
    assert chunks and all(c["id"] == meta["request_id"] for c in chunks)
    usage = [c["usage"] for c in chunks if c.get("usage")]
    assert usage and usage[-1]["completion_tokens"] >= 1
    stack.flush()
    log = RequestLog.objects.get(response_id=meta["request_id"])
    assert (log.source, log.key, log.endpoint) == ("playground", None, deployed.endpoint)
    # An engine error (more new tokens than the tiny model's context) is its message.
    response = client.post(
        f"/deploy/endpoints/{deployed.endpoint.pk}/playground/",
        json.dumps({"prompt": "Hello", "max_tokens": 4096, "temperature": 0, "top_p": 1}),
        content_type="application/json",
    )
    events = _events(response)
    assert len(events) == 1 and "max_tokens" in events[0]["error"]["message"], events
    # A web process whose SECRET_KEY differs from the inference process's sends another
    # token: the page says what to check.
    monkeypatch.setattr("serving.runner.internal_token", lambda: "f" * 64)
    response = client.post(
        f"/deploy/endpoints/{deployed.endpoint.pk}/playground/",
        json.dumps({"prompt": "Hello", "max_tokens": 4, "temperature": 0, "top_p": 1}),
        content_type="application/json",
    )
    events = _events(response)
    assert len(events) == 1 and "SECRET_KEY" in events[0]["error"]["message"], events
