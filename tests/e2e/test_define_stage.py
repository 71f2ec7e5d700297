"""A new user signs up, creates a team, a project with two goals, and sees them."""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import expect

from projects.models import Goal, Project

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_new_user_defines_a_project_with_two_goals(page, tmp_path) -> None:
    page.goto("/")
    assert page.url.endswith("/login/?next=/")
    page.click("text=Sign up")
    page.fill("#id_username", "priya")
    page.fill("#id_email", "priya@example.com")
    page.fill("#id_password1", "a-long-passphrase-42")
    page.fill("#id_password2", "a-long-passphrase-42")
    page.click("button:has-text('Sign up')")

    page.fill("#id_name", "Support AI")
    page.click("button:has-text('Create team')")
    assert page.locator("h1").inner_text() == "Support AI"

    page.click("text=+ New project")
    page.fill("#id_name", "Ticket routing")
    page.select_option("#id_task_type", "classification")
    page.fill("#id_problem_statement", "Send each customer message to the right team.")
    page.click("button:has-text('Create project')")
    assert page.locator("h1").inner_text() == "Ticket routing"

    for metric, target in (("f1_macro", "0.85"), ("accuracy", "0.9")):
        page.click("a:has-text('+ Add goal') >> nth=0")
        page.select_option("#id_metric", metric)
        page.fill("#id_target", target)
        page.click("button:has-text('Save goal')")
    rows = page.locator("#goals tbody tr")
    assert rows.count() == 2

    # A bad target is a form error on the page, not a crash.
    page.click("a:has-text('+ Add goal') >> nth=0")
    page.select_option("#id_metric", "accuracy")
    page.fill("#id_target", "90")
    page.click("button:has-text('Save goal')")
    # Wait for the re-rendered form: reading the page mid-navigation would see nothing.
    expect(page.locator(".field .errors")).to_contain_text("for 85% write 0.85")

    page.click("nav >> text=Projects")
    card = page.locator("[data-project='ticket-routing']")
    assert "F1 (macro) >= 0.85" in card.inner_text()
    assert card.locator(".badge:has-text('Not measured')").count() == 2
    if os.environ.get("LLMHUB_SCREENSHOTS"):
        page.screenshot(
            path=os.path.join(os.environ["LLMHUB_SCREENSHOTS"], "dashboard.png"), full_page=True
        )

    project = Project.objects.get(slug="ticket-routing")
    assert Goal.objects.filter(project=project).count() == 2
