"""A manager deploys in the browser: creates a production endpoint, sees a version that misses
the goal blocked with its reasons, promotes the best one, tries it in the playground (streamed
from a real in-process inference stack serving a tiny causal LM), gives it a thumbs up, promotes
past the gate with a written reason, rolls back in one click, and makes a serving key."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from projects.models import AuditEvent
from serving.models import Endpoint, RequestLog, ResponseFeedback
from tests.e2e.test_data_stage import _login, _shot
from tests.factories import GoalFactory
from tests.serving import conftest as serving_fixtures
from tests.serving.builders import finished_evaluation
from tests.serving.conftest import free_port, register_version

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
# The deploy stage's fixtures: a tiny causal LM directory, the in-process inference stack.
tiny_lm_dir = serving_fixtures.tiny_lm_dir
serving_stack = serving_fixtures.serving_stack


def test_manager_promotes_the_best_model_uses_the_playground_and_rolls_back(
    page, world, tiny_lm_dir, serving_stack, settings
) -> None:
    manager = world.users["manager"]
    project = world.project
    project.task_type = "generation"
    project.save()
    GoalFactory(project=project, metric="exact_match", target=0.5, split="test")
    weak = register_version(project, tiny_lm_dir, actor=manager, name="bard")
    best = register_version(project, tiny_lm_dir, actor=manager, name="bard")
    finished_evaluation(world, weak, metric="exact_match", value=0.2)
    finished_evaluation(world, best, metric="exact_match", value=0.8)
    # Nothing listens here yet: the playground must say so.
    settings.LLMHUB_SERVING_URL = f"http://127.0.0.1:{free_port()}"

    _login(page, manager)
    page.goto(f"/projects/{project.pk}/deploy/")
    page.fill("#endpoint_name", "Support bot")
    page.select_option("#endpoint_stage", "production")
    # The upstream fields follow the engine.
    expect(page.locator("#endpoint_upstream_url")).to_be_hidden()
    page.select_option("#endpoint_engine", "external")
    expect(page.locator("#endpoint_upstream_url")).to_be_visible()
    page.select_option("#endpoint_engine", "local")
    page.click("#new-endpoint button:has-text('Create endpoint')")
    page.wait_for_url("**/deploy/endpoints/*/")
    endpoint = Endpoint.objects.get(slug="support-bot")

    # Best first; choosing the weak one shows why it is blocked before anything is sent.
    options = page.locator("#promote_version option").all_text_contents()
    assert options[0] == f"{best} · 1/1 goals met" and options[1] == f"{weak} · 0/1 goals met"
    blockers = page.locator("#promote [data-gate-blockers] li")
    expect(blockers).to_have_count(0)
    page.select_option("#promote_version", str(weak.pk))
    expect(blockers).to_have_text(["Exact match on test is 0.20; the goal is >= 0.50."])
    expect(page.locator("#promote_override_reason")).to_be_visible()
    # Sent anyway without an override: refused by the server, with its reasons.
    page.click("#promote button:has-text('Promote')")
    expect(blockers).to_have_text(["Exact match on test is 0.20; the goal is >= 0.50."])
    _shot(page, "deploy-blocked.png")
    endpoint.refresh_from_db()
    assert endpoint.version is None

    page.select_option("#promote_version", str(best.pk))
    expect(blockers).to_have_count(0)
    expect(page.locator("#promote_override_reason")).to_be_hidden()
    page.click("#promote button:has-text('Promote')")
    expect(page.locator("ul.messages")).to_contain_text(f"{best} now serves Support bot.")
    expect(page.locator("#primary-version")).to_contain_text(str(best))

    # The playground: first with no inference process, then with one.
    page.fill("#playground_prompt", "Hello there")
    page.fill("#playground_max_tokens", "8")
    page.fill("#playground_temperature", "0")
    page.click("#playground-send")
    expect(page.locator("[data-answer-error]").first).to_contain_text(
        f"The inference process is not running at {settings.LLMHUB_SERVING_URL}"
    )
    stack = serving_stack()
    settings.LLMHUB_SERVING_URL = stack.url
    stack.sync()
    page.click("#playground-send")
    answer = page.locator("[data-answer]").first
    meta = answer.locator("[data-answer-meta]")
    expect(meta).to_contain_text("response chatcmpl-", timeout=30_000)
    expect(meta).to_contain_text(str(best))
    expect(meta).to_contain_text("completion tokens")
    assert answer.locator("[data-answer-text]").text_content().strip()
    response_id = meta.get_attribute("data-response-id")
    answer.locator("[data-thumbs] button[data-score='1']").click()
    expect(answer.locator("[data-thumbs]")).to_contain_text("thumbs up recorded")
    feedback = ResponseFeedback.objects.get()
    assert (feedback.response_id, feedback.score, feedback.source, feedback.endpoint) == (
        response_id,
        1,
        "playground",
        endpoint,
    )
    stack.flush()
    log = RequestLog.objects.get(response_id=response_id)
    assert (log.source, log.version, log.status_code) == ("playground", best, 200)
    _shot(page, "deploy-playground.png")

    # Past the gate with a written reason, then back in one click.
    page.select_option("#promote_version", str(weak.pk))
    page.fill("#promote_override_reason", "Trying the shorter prompt format on real traffic.")
    page.click("#promote button:has-text('Promote')")
    expect(page.locator("ul.messages")).to_contain_text("past the goal gate (override recorded)")
    assert AuditEvent.objects.filter(verb="endpoint.promoted_with_override").exists()
    history = page.locator("#deployments")
    expect(history).to_contain_text("Trying the shorter prompt format on real traffic.")
    rollback = page.locator("#rollback-button")
    expect(rollback).to_have_text(f"Roll back to {best}")
    page.once("dialog", lambda dialog: dialog.accept())
    rollback.click()
    expect(page.locator("ul.messages")).to_contain_text(f"Rolled back: {best} serves Support bot")
    expect(history.locator("tr[data-action='rollback']")).to_have_count(1)
    endpoint.refresh_from_db()
    assert endpoint.version == best
    best.refresh_from_db()
    assert best.stage == "production"
    _shot(page, "deploy-rolled-back.png")

    # A key for the application: shown once, then only its prefix.
    page.click("nav.stages a:has-text('Deploy')")
    page.click("#new-key summary")
    page.fill("#key_name", "support app")
    page.select_option("#key_endpoint", str(endpoint.pk))
    page.fill("#key_requests_per_minute", "60")
    expect(page.locator("#key_budget_period")).to_be_hidden()
    page.fill("#key_token_budget", "100000")
    page.select_option("#key_budget_period", "week")
    page.click("#new-key button:has-text('Create key')")
    plaintext = page.locator("#serving-key-value").text_content()
    assert plaintext.startswith("llmhub-sk-")
    expect(page.locator("#new-key-plaintext")).to_contain_text("shown this once")
    page.click("button[data-copy='#serving-key-value']")
    expect(page.locator("button[data-copy='#serving-key-value']")).to_have_text("Copied")
    page.click("a:has-text('Back to the Deploy tab')")
    row = page.locator("#serving-keys tr", has_text="support app")
    expect(row).to_contain_text("support-bot")
    expect(row).to_contain_text("budget 100,000 per week")
    assert plaintext not in page.content()
    _shot(page, "deploy-tab.png")
