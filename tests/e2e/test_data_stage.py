"""A manager uploads a summarization set in the browser, reads its profile, cleans it with a
saved recipe, reads the report, splits it, trains a tokenizer and fills the data card."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from datasets_app.models import DataCard, DatasetVersion, Tokenizer
from llmhub.jobs import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"


def _shot(page, name: str) -> None:
    if os.environ.get("LLMHUB_SCREENSHOTS"):
        page.screenshot(path=os.path.join(os.environ["LLMHUB_SCREENSHOTS"], name), full_page=True)


def _login(page, user) -> None:
    page.goto("/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", "correct horse battery staple")
    page.click("button:has-text('Sign in')")


def test_manager_prepares_data_in_the_browser(page, world, celery_worker) -> None:
    _login(page, world.users["manager"])
    page.goto(f"/projects/{world.project.pk}/data/")
    page.fill("#id_name", "SciTLDR")
    page.set_input_files("#id_file", str(FIXTURES / "scitldr_sample.jsonl"))
    page.click("form[data-upload-form] button:has-text('Upload')")
    page.wait_for_url("**/datasets/*/")
    # The page follows the ingest and profile jobs and reloads when they finish.
    page.wait_for_selector("#versions a:has-text('v1')", timeout=60_000)
    assert wait_until(lambda: DatasetVersion.objects.filter(number=1).exists(), timeout=5)
    page.click("#versions a:has-text('v1')")
    page.wait_for_selector("#profile .chart .main-svg", timeout=60_000)
    _shot(page, "version.png")
    assert "document" in page.inner_text("#profile")

    # Each form below is filled only once its page has loaded: the version page has a "name"
    # field of its own (the tokenizer's), so filling too early would type into the old page.
    with page.expect_navigation():
        page.click("text=Create one")
    page.fill("#id_name", "standard")
    with page.expect_navigation():
        page.click("button:has-text('Save recipe')")
    v1 = DatasetVersion.objects.get(number=1)
    page.goto(f"/versions/{v1.pk}/")
    with page.expect_navigation():
        page.click("button:has-text('Run recipe')")
    assert wait_until(lambda: DatasetVersion.objects.filter(number=2).exists(), timeout=60), (
        celery_worker.log()
    )
    v2 = DatasetVersion.objects.get(number=2)
    page.goto(f"/versions/{v2.pk}/")
    report = page.inner_text("#cleaning-report")
    assert "strip_html" in report and "near_dedupe" in report
    _shot(page, "cleaned.png")

    with page.expect_navigation():
        page.click("button:has-text('Split')")
    assert "Splitting started" in page.inner_text(".messages")
    assert wait_until(
        lambda: DatasetVersion.objects.filter(recipe__kind="split").exists(), timeout=60
    ), celery_worker.log()
    page.goto(f"/versions/{v2.pk}/")
    page.fill("#id_name", "sci-bpe")
    page.fill("#id_vocab_size", "400")
    with page.expect_navigation():
        page.click("button:has-text('Train')")
    assert "Tokenizer training started" in page.inner_text(".messages")
    assert wait_until(lambda: Tokenizer.objects.filter(name="sci-bpe").exists(), timeout=60), (
        celery_worker.log()
    )

    page.goto(f"/datasets/{v1.dataset_id}/")
    for field, value in (
        ("source", "SciTLDR, allenai/scitldr"),
        ("license", "Apache-2.0"),
        ("collection_method", "author TLDRs of OpenReview papers"),
        ("consent", "public papers"),
        ("personal_data", "author names"),
    ):
        page.fill(f"#id_{field}", value)
    page.click("button:has-text('Save data card')")
    page.wait_for_selector("#data-card .badge:has-text('complete')")
    _shot(page, "dataset.png")
    assert DataCard.objects.get(dataset=v1.dataset).is_complete
