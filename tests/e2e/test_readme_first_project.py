"""The README's "A first project in ten minutes", followed literally in a browser: the same
file, the same clicks, every default left as the form proposes it. It ends with a fine-tuned
model that meets the goal. The README's words for each step are checked too, so the README and
the product cannot drift apart again."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from evaluation.models import EvaluationRun
from llmhub.jobs import wait_until
from projects.models import Goal
from tests.e2e.test_data_stage import _shot
from training.models import TrainingJob

pytestmark = [
    pytest.mark.browser,
    pytest.mark.worker,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]
REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
WALKTHROUGH = README.split("### A first project in ten minutes", 1)[1].split("\n## ", 1)[0]
POEMS = REPO.parent / "shared" / "datasets" / "sentiment_poem.csv"

# What the README tells the reader to type and click, word for word.
STEPS = (
    "*Sign up*",
    "*Create team*",
    "*+ New project*",
    "*Poem sentiment*",
    "*Classification*",
    "*+ Add goal*",
    "F1 (macro) >= 0.7 on validation",
    "`../shared/datasets/sentiment_poem.csv`",
    "*Upload*",
    "*Split*",
    "*Base models*",
    "*Add all-MiniLM-L6-v2*",
    "*+ New training job*",
    "*Launch on the gpu queue*",
    "*Evaluate*",
    "*Met*",
)


def _tab(page, label: str) -> None:
    """Click a lifecycle tab of the project, as the README says (Data tab, Train tab ...).
    A job page reloads itself when its job ends; a click that this reload swallowed is made
    again, as a person would."""
    from playwright.sync_api import Error as PlaywrightError

    for attempt in range(3):
        link = page.locator(f"nav.stages a:has-text('{label}')")
        href = link.get_attribute("href")
        try:
            with page.expect_navigation(url=f"**{href}", timeout=20_000):
                link.click()
            return
        except PlaywrightError:
            if attempt == 2:
                raise


def test_the_readme_names_every_step_this_test_takes() -> None:
    missing = [step for step in STEPS if step not in WALKTHROUGH]
    assert not missing, f"README walk-through lacks {missing}"


def test_a_newcomer_follows_the_readme_to_a_model_that_meets_the_goal(page, celery_worker) -> None:
    started = time.monotonic()
    # 1. Define: sign up, a team, a project, a goal.
    page.goto("/")
    page.click("text=Sign up")
    page.fill("#id_username", "newcomer")
    page.fill("#id_email", "newcomer@example.com")
    page.fill("#id_password1", "a-long-passphrase-42")
    page.fill("#id_password2", "a-long-passphrase-42")
    page.click("button:has-text('Sign up')")
    page.fill("#id_name", "Poetry lab")
    page.click("button:has-text('Create team')")
    page.click("text=+ New project")
    page.fill("#id_name", "Poem sentiment")
    page.select_option("#id_task_type", "classification")
    page.click("button:has-text('Create project')")
    page.click("a:has-text('+ Add goal') >> nth=0")
    page.select_option("#id_metric", "f1_macro")
    page.fill("#id_target", "0.7")
    page.select_option("#id_split", "validation")
    page.click("button:has-text('Save goal')")
    goal_row = page.locator("#goals tbody tr")
    expect(goal_row).to_contain_text("F1 (macro)")
    expect(goal_row).to_contain_text(">= 0.7")
    expect(goal_row).to_contain_text("validation")
    expect(goal_row).to_contain_text("Not measured")

    # 2. Data: upload the file (no name typed), split by its own column (the default).
    _tab(page, "Data")
    page.set_input_files("#id_file", str(POEMS))
    page.click("form[data-upload-form] button:has-text('Upload')")
    page.wait_for_url("**/datasets/*/")
    page.wait_for_selector("#versions a:has-text('v1')", timeout=120_000)
    page.click("#versions a:has-text('v1')")
    page.wait_for_url("**/versions/*/")
    page.click("button:has-text('Split')")
    # The page follows the split job and shows the new version in the lineage when it ends.
    page.wait_for_selector("a.lineage-node:has-text('v2')", timeout=120_000)
    page.click("a.lineage-node:has-text('v2')")
    expect(page.locator("body")).to_contain_text("892 rows")

    # 3. Train: add the installed MiniLM base, launch a job with the form's defaults.
    _tab(page, "Train")
    page.click("text=Base models")
    page.click("button:has-text('Add all-MiniLM-L6-v2')")
    expect(page.locator("#base-models")).to_contain_text("all-MiniLM-L6-v2")
    _tab(page, "Train")
    page.click("text=+ New training job")
    # The estimate before launch is the base's own size (with the classifier's head).
    expect(page.locator("[data-estimate=parameters]")).to_have_text("22.7M")
    _shot(page, "readme-launch.png")
    page.click("button:has-text('Launch on the gpu queue')")
    page.wait_for_url("**/training-jobs/*/")
    job = TrainingJob.objects.get()
    assert job.kind == "classification" and job.base_source == "base_model"
    assert job.train_split == "train" and job.eval_split == "dev"
    assert wait_until(
        lambda: TrainingJob.objects.get(pk=job.pk).is_terminal, timeout=900, interval=2
    )
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert not job.warnings
    # The page follows the job: it shows the end without a reload by the test.
    expect(page.locator("[data-field=status]")).to_contain_text("Succeeded", timeout=30_000)

    # 4. Evaluate with the defaults (the new model, the split version, its dev split).
    _tab(page, "Evaluate")
    page.click("button:has-text('Evaluate')")
    assert wait_until(
        lambda: EvaluationRun.objects.filter(status="succeeded").exists(), timeout=300
    )
    run = EvaluationRun.objects.get()
    assert run.model_version_id == job.model_version_id and run.split == "dev"
    goal = Goal.objects.get()
    assert goal.measured_value is not None and goal.measured_value >= 0.7, goal.measured_value
    _tab(page, "Define")
    expect(page.locator("#goals tbody tr")).to_contain_text("Met")
    _shot(page, "readme-goal-met.png")
    minutes = (time.monotonic() - started) / 60
    print(f"README walk-through: {minutes:.1f} minutes, F1 (macro) {goal.measured_value:.3f}")
