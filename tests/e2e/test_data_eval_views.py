"""In a real browser: the row browser pages, searches and filters a version's rows; the diff
page compares two versions picked on the dataset page; an evaluation run page shows the
confusion matrix with its counts / normalised toggle. Data and runs are made through the ORM
and the services (no worker needed)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from evaluation.models import EvaluationExample, EvaluationRun
from llmhub.models import JobStatus
from tests.api.objects import build
from tests.datasets_app.tables import make_version

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

N = 120


def _login(page, user) -> None:
    page.goto("/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", "correct horse battery staple")
    with page.expect_navigation():
        page.click("button:has-text('Sign in')")


def _reviews() -> pa.Table:
    moods = ["happy", "sad", "calm"]
    return pa.table(
        {
            "id": pa.array(range(N), pa.int64()),
            "text": [
                f"Review {i}: {'a quick fox' if i % 10 == 0 else 'a slow dog'}" for i in range(N)
            ],
            "mood": [moods[i % 3] for i in range(N)],
            "score": [i / 10 for i in range(N)],
        }
    )


def test_row_browser_pages_searches_and_filters(page, world) -> None:
    version = make_version(world, _reviews(), row_group_size=50)
    _login(page, world.users["viewer"])
    page.goto(f"/versions/{version.pk}/")
    with page.expect_navigation():
        page.click("#browse-rows")
    assert "120 rows · page 1 of 3" in page.inner_text("#rows-summary")
    assert page.locator("#rows-table tbody tr").count() == 50
    with page.expect_navigation():
        page.click("#row-pages a:has-text('Next')")
    first = page.locator("#rows-table tbody tr").first.inner_text()
    assert first.startswith("50") and "Review 50" in first

    page.fill("#id_search", "QUICK FOX")
    with page.expect_navigation():
        page.click("button:has-text('Show rows')")
    # A new search starts on its first page.
    assert "12 of 120 rows match · page 1 of 1" in page.inner_text("#rows-summary")
    texts = page.locator("#rows-table tbody tr").all_inner_texts()
    assert len(texts) == 12 and all("a quick fox" in t for t in texts)

    page.fill("#id_search", "")
    page.select_option("#id_column", "score")
    page.select_option("#id_op", "gte")
    page.fill("#id_value", "11.5")
    with page.expect_navigation():
        page.click("button:has-text('Show rows')")
    assert "5 of 120 rows match" in page.inner_text("#rows-summary")
    assert page.locator("#rows-table tbody tr").first.inner_text().startswith("115")

    page.fill("#id_value", "lots")
    with page.expect_navigation():
        page.click("button:has-text('Show rows')")
    error = page.locator(".field:has(#id_value) .errors").inner_text()
    assert "'lots' is not a double value" in error


def test_diff_page_from_the_dataset_page(page, world) -> None:
    v1 = make_version(world, _reviews())
    edited = _reviews().to_pylist()
    edited[3]["text"] = "Review 3: edited"
    del edited[7]
    edited.append({"id": 500, "text": "Review 500: new", "mood": "calm", "score": 1.0})
    make_version(world, pa.Table.from_pylist(edited), dataset=v1.dataset, parent=v1)
    _login(page, world.users["viewer"])
    page.goto(f"/datasets/{v1.dataset_id}/")
    with page.expect_navigation():
        page.click("#compare-versions button:has-text('Compare versions')")
    # The defaults compare the newest version with the one before, by row content.
    assert "reviews v1 → reviews v2" in page.inner_text("#diff-summary")
    assert page.inner_text("#diff-added") == "+2" and page.inner_text("#diff-removed") == "\u22122"
    page.select_option("#id_key", "id")
    with page.expect_navigation():
        page.click("button:has-text('Compare')")
    assert page.inner_text("#diff-changed") == "1"
    assert "Review 3: edited" in page.inner_text("#diff-changed-rows")
    assert "Review 500: new" in page.inner_text("#diff-added-rows")
    assert "Review 7:" in page.inner_text("#diff-removed-rows")


def test_confusion_matrix_on_the_run_page(page, world) -> None:
    run = build(
        EvaluationRun,
        world,
        task_type="classification",
        status=JobStatus.SUCCEEDED,
        metrics=["accuracy"],
        results={"accuracy": {"value": 0.85, "ci_low": 0.7, "ci_high": 0.95, "n": 20}},
    )
    pairs = [("cat", "cat")] * 8 + [("cat", "dog")] * 2 + [("dog", "dog")] * 6
    EvaluationExample.objects.bulk_create(
        EvaluationExample(run=run, index=i, input=f"x{i}", reference=r, prediction=p)
        for i, (r, p) in enumerate(pairs)
    )
    _login(page, world.users["viewer"])
    page.goto(f"/evaluation-runs/{run.pk}/")
    page.wait_for_selector("#confusion .chart .main-svg")
    cell = page.locator("#confusion-matrix tbody tr").first.locator("td").nth(1)
    assert cell.inner_text() == "2"
    assert "cat predicted as dog: 2 (20% of cat)" in page.inner_text("#confused-pairs")
    assert "0.8" in page.locator("#per-class tbody tr").first.inner_text()
    page.check("input[value=normalised]")
    assert cell.inner_text() == "20%"
    visible = page.evaluate(
        "() => document.querySelector('#confusion [data-figure]').data.map((t) => t.visible)"
    )
    assert visible == [False, True]
    page.check("input[value=counts]")
    assert cell.inner_text() == "2"
