"""Issue 14's "done when", as one story: in the browser a manager sees a version that misses
the goal blocked with its reasons and promotes the best one to production; an application calls
it with the official ``openai`` client and a key made in the browser, streams an answer, hits
the key's rate limit and recovers by retrying; then the manager rolls back in the browser while
the application's traffic runs, and no request fails."""

from __future__ import annotations

import threading
import time
from collections import Counter

import openai
import pytest
from playwright.sync_api import expect

from llmhub.jobs import wait_until
from serving.models import Endpoint, RequestLog
from serving.services import serving_key_create
from tests.e2e.test_data_stage import _login
from tests.factories import GoalFactory
from tests.serving import conftest as serving_fixtures
from tests.serving.builders import finished_evaluation
from tests.serving.conftest import register_version

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
tiny_lm_dir = serving_fixtures.tiny_lm_dir
serving_stack = serving_fixtures.serving_stack


def _traffic(client, stop: threading.Event, seen: Counter, failures: list) -> None:
    while not stop.is_set():
        try:
            raw = client.chat.completions.with_raw_response.create(
                model="support-bot", messages=[{"role": "user", "content": "Hi"}], max_tokens=2
            )
            seen[raw.headers["x-llmhub-version"]] += 1
        except Exception as exc:  # every failure is what the test counts
            failures.append(repr(exc))


def test_promote_call_stream_hit_the_limit_recover_and_roll_back_under_traffic(
    page, world, tiny_lm_dir, serving_stack, settings, monkeypatch
) -> None:
    from serving.engine import limits

    # A 3-second window instead of a minute, so the client's wait (Retry-After) stays short.
    monkeypatch.setattr(limits, "WINDOW_SECONDS", 3.0)
    manager = world.users["manager"]
    project = world.project
    project.task_type = "generation"
    project.save()
    GoalFactory(project=project, metric="exact_match", target=0.5, split="test")
    previous = register_version(project, tiny_lm_dir, actor=manager, name="bard")
    weak = register_version(project, tiny_lm_dir, actor=manager, name="bard")
    best = register_version(project, tiny_lm_dir, actor=manager, name="bard")
    finished_evaluation(world, previous, metric="exact_match", value=0.6)
    finished_evaluation(world, weak, metric="exact_match", value=0.1)
    finished_evaluation(world, best, metric="exact_match", value=0.9)
    stack = serving_stack(sync_seconds=0.1)
    settings.LLMHUB_SERVING_URL = stack.url

    _login(page, manager)
    page.goto(f"/projects/{project.pk}/deploy/")
    page.fill("#endpoint_name", "Support bot")
    page.select_option("#endpoint_stage", "production")
    page.click("#new-endpoint button:has-text('Create endpoint')")
    page.wait_for_url("**/deploy/endpoints/*/")
    endpoint = Endpoint.objects.get(project=project, slug="support-bot")

    # The version that served before the best one.
    page.select_option("#promote_version", str(previous.pk))
    page.click("#promote button:has-text('Promote')")
    expect(page.locator("#primary-version")).to_contain_text(str(previous))
    # The failing one is blocked with its reason, and nothing changes.
    page.select_option("#promote_version", str(weak.pk))
    page.click("#promote button:has-text('Promote')")
    blockers = page.locator("#promote [data-gate-blockers] li")
    expect(blockers).to_have_text(["Exact match on test is 0.10; the goal is >= 0.50."])
    endpoint.refresh_from_db()
    assert endpoint.version == previous
    # The best one of the evaluation stage goes to production.
    page.select_option("#promote_version", str(best.pk))
    page.click("#promote button:has-text('Promote')")
    expect(page.locator("#primary-version")).to_contain_text(str(best))

    # A key for the application, at most 3 requests a minute (here: per 3 seconds).
    page.click("nav.stages a:has-text('Deploy')")
    page.click("#new-key summary")
    page.fill("#key_name", "support app")
    page.select_option("#key_endpoint", str(endpoint.pk))
    page.fill("#key_requests_per_minute", "3")
    page.click("#new-key button:has-text('Create key')")
    plaintext = page.locator("#serving-key-value").text_content().strip()
    stack.sync()

    client = openai.OpenAI(base_url=stack.base_url, api_key=plaintext, max_retries=0, timeout=30)
    assert [m.id for m in client.models.list()] == ["support-bot"]
    stream = client.chat.completions.create(
        model="support-bot",
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    # A random tiny model may end early on its end token: "stop" then, else "length" at 6.
    finish = next(c.choices[0].finish_reason for c in reversed(chunks) if c.choices)
    used = chunks[-1].usage.completion_tokens
    assert text and 1 <= used <= 6 and finish == ("length" if used == 6 else "stop")
    assert chunks[0].system_fingerprint == f"llmhub-v{best.pk}"

    # Over the limit: a 429 with Retry-After; the client's retries get through.
    with pytest.raises(openai.RateLimitError) as limited:
        for _ in range(3):
            client.completions.create(model="support-bot", prompt="x", max_tokens=1)
    assert 1 <= float(limited.value.response.headers["retry-after"]) <= 3
    raw = client.with_options(max_retries=4).completions.with_raw_response.create(
        model="support-bot", prompt="x", max_tokens=1
    )
    assert raw.retries_taken >= 1 and raw.parse().choices[0].finish_reason in ("length", "stop")

    # Live traffic on a key without limits while the manager rolls back in the browser.
    _app_key, unlimited = serving_key_create(
        actor=manager, project=project, name="load test", endpoint=endpoint
    )
    stack.sync()
    traffic_client = openai.OpenAI(
        base_url=stack.base_url, api_key=unlimited, max_retries=0, timeout=30
    )
    stop, seen, failures = threading.Event(), Counter(), []
    threads = [
        threading.Thread(target=_traffic, args=(traffic_client, stop, seen, failures))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    try:
        assert wait_until(lambda: seen[str(best.pk)] >= 5, timeout=30)
        page.goto(f"/deploy/endpoints/{endpoint.pk}/")
        rollback = page.locator("#rollback-button")
        expect(rollback).to_have_text(f"Roll back to {previous}")
        page.once("dialog", lambda dialog: dialog.accept())
        rollback.click()
        expect(page.locator("ul.messages")).to_contain_text(f"Rolled back: {previous} serves")
        rolled_back_at = time.monotonic()
        assert wait_until(lambda: seen[str(previous.pk)] >= 5, timeout=30)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert failures == []
    assert time.monotonic() - rolled_back_at < 30
    stack.flush()
    assert wait_until(lambda: RequestLog.objects.filter(version=previous).count() >= 5, timeout=10)
    served = RequestLog.objects.filter(endpoint=endpoint, key__isnull=False)
    assert served.filter(status_code__gte=500).count() == 0
    assert served.filter(status_code=429).exists()
