"""Every page that shows a job follows it (issue 13): a health check, an evaluation and the goal
status it changes, a slice report. No worker runs these jobs: the test finishes them through
the ORM, as a worker would, and the page must show it without a manual reload. Also: cancel
asks first, the activity feed shows whole values and a job's current status, and the training
charts wait for data and smooth the loss."""

from __future__ import annotations

import pytest
from django.utils import timezone

from evaluation.models import BiasReport, EvaluationRun
from evaluation.services import goals_refresh
from frontend import charts
from llmhub.models import JobStatus
from projects.audit import record_event
from projects.models import GoalStatus, ProjectHealthCheck
from projects.services import goal_create, goal_update
from tests.api.objects import build
from tests.e2e.test_live_refresh import _login, version_with_running_job  # noqa: F401
from training.models import TrainingJob
from training.services import metrics_ingest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

RELOAD_TIMEOUT = 15_000
WIDE_METRICS = ("accuracy", "f1_macro", "precision_macro", "recall_macro", "f1_weighted")


def _mark(page) -> None:
    """Set a marker that only a reload clears."""
    page.evaluate("() => { window.beforeReload = true; }")


def _wait_reload(page) -> None:
    page.wait_for_function("() => window.beforeReload === undefined", timeout=RELOAD_TIMEOUT)


def _finish(model, pk: int, **fields) -> None:
    model.objects.filter(pk=pk).update(
        status=JobStatus.SUCCEEDED, progress=1.0, finished_at=timezone.now(), **fields
    )


def test_a_health_check_on_the_define_page_updates_itself(page, world) -> None:
    job = build(ProjectHealthCheck, world, status=JobStatus.QUEUED)
    _login(page, world.users["engineer"])
    page.goto(f"/projects/{world.project.pk}/")
    row = page.locator(f"li[data-job-url$='/health-checks/{job.pk}/']")
    assert "Queued" in row.inner_text()
    _mark(page)
    _finish(
        ProjectHealthCheck,
        job.pk,
        result={"checks": [{"name": "storage", "ok": True, "detail": "writable"}]},
    )
    _wait_reload(page)
    text = page.locator(f"li[data-job-url$='/health-checks/{job.pk}/']").inner_text()
    assert "Succeeded" in text and "storage" in text and "writable" in text


def test_goal_status_follows_an_evaluation_that_ends(page, world) -> None:
    goal = goal_create(
        actor=world.users["manager"], project=world.project, metric="accuracy", target=0.7
    )
    run = build(
        EvaluationRun,
        world,
        status=JobStatus.RUNNING,
        split="test",
        task_type="classification",
        metrics=["accuracy"],
    )
    _login(page, world.users["engineer"])
    page.goto(f"/projects/{world.project.pk}/")
    goal_row = page.locator(f"tr[data-goal='{goal.pk}']")
    assert "Not measured" in goal_row.inner_text()
    _mark(page)
    # What the worker does: the run is recorded as succeeded, then the goals are refreshed.
    _finish(
        EvaluationRun,
        run.pk,
        results={"accuracy": {"value": 0.9, "ci_low": 0.8, "ci_high": 0.95, "n": 40}},
    )
    goals_refresh(project=world.project)
    goal.refresh_from_db()
    assert goal.status == GoalStatus.MET
    _wait_reload(page)
    assert "Met" in page.locator(f"tr[data-goal='{goal.pk}']").inner_text()

    # The evaluation's own page follows it too.
    second = build(
        EvaluationRun,
        world,
        status=JobStatus.QUEUED,
        split="test",
        task_type="classification",
        metrics=["accuracy"],
    )
    page.goto(f"/evaluation-runs/{second.pk}/")
    assert "Queued" in page.inner_text("#run-job")
    assert "No results yet" in page.inner_text("#metrics")
    _mark(page)
    _finish(
        EvaluationRun,
        second.pk,
        results={"accuracy": {"value": 0.875, "ci_low": 0.8, "ci_high": 0.95, "n": 40}},
    )
    _wait_reload(page)
    assert "Succeeded" in page.inner_text("#run-job")
    assert "0.875" in page.inner_text("#metrics")


def test_a_slice_report_page_updates_and_shows_its_examples_as_rows(page, world) -> None:
    run = build(
        EvaluationRun,
        world,
        status=JobStatus.SUCCEEDED,
        split="test",
        task_type="classification",
        metrics=["accuracy"],
        results={"accuracy": {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 3}},
    )
    report = build(
        BiasReport,
        world,
        kind="slices",
        evaluation=run,
        model_version=run.model_version,
        status=JobStatus.RUNNING,
        params={"column": "text", "metric": "accuracy"},
    )
    _login(page, world.users["engineer"])
    # The run page lists the slice and follows it as well.
    page.goto(f"/evaluation-runs/{run.pk}/")
    assert page.locator(f"#slices li[data-job-url$='/bias-reports/{report.pk}/']").count() == 1
    page.goto(f"/bias-reports/{report.pk}/")
    assert "Running" in page.inner_text("#bias-job")
    _mark(page)
    examples = [
        {
            "group": "slow reply",
            "index": 1,
            "input": "my card never arrived",
            "prediction": "0",
            "reference": "1",
        }
    ]
    _finish(
        BiasReport,
        report.pk,
        report={
            "kind": "slices",
            "summary": {"metric": "accuracy", "overall": 0.5, "n_slices": 2},
            "groups": [{"group": "slow reply", "value": 0.0, "n": 1}],
            "explanation": "By column.",
            "examples": examples,
        },
    )
    _wait_reload(page)
    assert "Succeeded" in page.inner_text("#bias-job")
    table = page.locator("#report-examples")
    headers = table.locator("thead th").all_text_contents()
    assert headers == ["Group", "Index", "Input", "Prediction", "Reference"]
    cells = table.locator("tbody tr").first.locator("td").all_inner_texts()
    assert cells == ["slow reply", "1", "my card never arrived", "0", "1"]
    assert "input:" not in table.inner_text()


def test_cancel_asks_first_and_dismissing_cancels_nothing(page, world) -> None:
    job = build(ProjectHealthCheck, world, status=JobStatus.RUNNING)
    _login(page, world.users["engineer"])
    page.goto(f"/projects/{world.project.pk}/")
    questions: list[str] = []

    def dismiss(dialog) -> None:
        questions.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    page.locator(f"li[data-job-url$='/health-checks/{job.pk}/'] button:has-text('cancel')").click()
    page.wait_for_timeout(500)
    assert questions == ["Cancel this health check?"]
    job.refresh_from_db()
    assert job.cancel_requested_at is None and job.status == JobStatus.RUNNING

    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.locator(
            f"li[data-job-url$='/health-checks/{job.pk}/'] button:has-text('cancel')"
        ).click()
    job.refresh_from_db()
    assert job.cancel_requested_at is not None or job.status == JobStatus.CANCELLED

    # A cancel button that posts to the API (a report page) asks the same way.
    run = build(EvaluationRun, world, status=JobStatus.RUNNING, task_type="classification")
    page.goto(f"/evaluation-runs/{run.pk}/")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#run-job button:has-text('Cancel')")
    page.wait_for_timeout(500)
    run.refresh_from_db()
    assert run.cancel_requested_at is None and run.status == JobStatus.RUNNING


def test_the_activity_feed_shows_whole_values_and_the_current_status(page, world) -> None:
    engineer, manager = world.users["engineer"], world.users["manager"]
    job = build(ProjectHealthCheck, world, status=JobStatus.QUEUED)
    # A launch event stores a string; the feed once joined it letter by letter.
    record_event(
        actor=engineer, verb="health_check.launched", target=job, changes={"kind": "class"}
    )
    goal = goal_create(actor=manager, project=world.project, metric="accuracy", target=0.5)
    goal_update(actor=manager, goal=goal, target=0.8)
    _finish(ProjectHealthCheck, job.pk)
    _login(page, engineer)
    page.goto(f"/projects/{world.project.pk}/activity/")
    table = page.inner_text("#activity")
    assert "kind: class" in table
    assert "c → l" not in table
    assert "target: 0.5 → 0.8" in table
    row = page.locator("#activity tr", has_text="launched")
    assert "Succeeded" in row.inner_text()
    assert "(queued)" not in row.inner_text()


def _slide(page, value: str) -> None:
    """Move the smoothing slider as a drag does: set its value, fire ``input``."""
    page.eval_on_selector(
        "#loss-smoothing",
        "(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); }",
        value,
    )


def test_loss_chart_waits_for_data_then_smooths(page, world) -> None:
    engineer = world.users["engineer"]
    job = build(TrainingJob, world, status=JobStatus.RUNNING, started_at=timezone.now())
    _login(page, engineer)
    page.goto(f"/training-jobs/{job.pk}/")
    chart = page.locator("#chart-loss")
    page.wait_for_function("() => document.getElementById('chart-loss').dataset.empty === 'true'")
    assert "Waiting for data" in chart.inner_text()
    assert page.locator("#system-card").is_hidden()

    losses = [2.0, 1.2, 1.6, 0.9, 1.1, 0.7, 0.8, 0.5]
    points = [{"step": i + 1, "name": "loss", "value": v} for i, v in enumerate(losses)]
    points += [
        {"step": 4, "name": "eval_loss", "value": 1.0},
        {"step": 8, "name": "eval_loss", "value": 0.8},
    ]
    points += [
        {"step": i + 1, "name": "system/cpu_percent", "value": 50.0 + i} for i in range(8)
    ] + [{"step": i + 1, "name": "system/memory_mb", "value": 900.0 + i} for i in range(8)]
    metrics_ingest(actor=engineer, job=job, points=points)
    page.wait_for_function(
        "() => document.getElementById('chart-loss').dataset.empty === 'false'", timeout=10_000
    )
    traces = lambda: page.evaluate(  # noqa: E731
        "() => document.getElementById('chart-loss').data.map("
        "t => ({name: t.name, meta: t.meta, mode: t.mode, y: Array.from(t.y), opacity: t.opacity}))"
    )
    drawn = {t["meta"]: t for t in traces()}
    # Smoothed with the default weight, the raw curve faint behind, eval loss with markers.
    default = float(page.input_value("#loss-smoothing"))
    assert default == charts.DEFAULT_SMOOTHING
    assert drawn["raw"]["y"] == losses and drawn["raw"]["opacity"] < 0.5
    assert drawn["smoothed"]["y"] == pytest.approx(charts.ema(losses, default))
    assert drawn["eval"]["mode"] == "lines+markers" and drawn["eval"]["y"] == [1.0, 0.8]
    # System metrics have their own chart and stay out of the loss chart.
    assert page.locator("#system-card").is_visible()
    assert not any(t["name"].startswith("system/") or "CPU" in t["name"] for t in traces())
    system = page.evaluate("() => document.getElementById('chart-system').data.map(t => t.name)")
    assert system == ["CPU %", "memory (MB)"]

    # Moving the slider redraws: 0.9 is smoother, 0 draws the raw curve alone.
    _slide(page, "0.9")
    drawn = {t["meta"]: t for t in traces()}
    assert drawn["smoothed"]["y"] == pytest.approx(charts.ema(losses, 0.9))
    assert page.inner_text("[data-field=smoothing]") == "0.90"
    _slide(page, "0")
    metas = [t["meta"] for t in traces()]
    assert "smoothed" not in metas and metas.count("raw") == 1


def test_wide_tables_scroll_or_fit_instead_of_clipping(
    page,
    world,
    version_with_running_job,  # noqa: F811 (the fixture, imported above)
) -> None:
    version = version_with_running_job[0]
    for _ in range(2):
        build(
            EvaluationRun,
            world,
            status=JobStatus.SUCCEEDED,
            split="test",
            task_type="classification",
            metrics=list(WIDE_METRICS),
            results={
                m: {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 3} for m in WIDE_METRICS
            },
        )
    _login(page, world.users["engineer"])
    # The jobs on a version sit in the narrow side column: they fit it, last column included.
    page.goto(f"/versions/{version.pk}/")
    wrap = "document.querySelector('#data-jobs').closest('.table-wrap')"
    width, full = page.evaluate(f"() => [{wrap}.clientWidth, {wrap}.scrollWidth]")
    assert full <= width
    # A table wider than its card (many metric columns) scrolls inside its wrapper, and its
    # last column can be scrolled fully into view.
    page.goto(f"/projects/{world.project.pk}/evaluate/")
    wrap = "document.querySelector('#evaluation-runs').closest('.table-wrap')"
    assert page.evaluate(f"() => getComputedStyle({wrap}).overflowX") == "auto"
    page.evaluate(f"() => {{ {wrap}.scrollLeft = 100000; }}")
    right_edges = page.evaluate(
        f"() => [{wrap}.getBoundingClientRect().right, "
        "document.querySelector('#evaluation-runs thead th:last-child')"
        ".getBoundingClientRect().right]"
    )
    assert right_edges[1] <= right_edges[0] + 1
