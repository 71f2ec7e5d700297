"""Pages that follow a running job refresh themselves when it finishes, but never throw away
what someone is typing: once a form has been edited, the page offers the reload instead."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from datasets_app.models import DataJob, DataJobKind, DatasetVersion
from llmhub.models import JobStatus
from tests.datasets_app.test_data_api import run_queued
from tests.frontend.test_data_pages import _upload

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def version_with_running_job(world) -> tuple[DatasetVersion, DataJob]:
    client = Client()
    client.force_login(world.users["engineer"])
    assert _upload(client, world.project.pk).status_code == 202
    run_queued()
    version = DatasetVersion.objects.get()
    # A job row the page follows; no worker runs it, the test finishes it by hand.
    job = DataJob.objects.create(
        kind=DataJobKind.SPLIT,
        project=world.project,
        dataset=version.dataset,
        source_version=version,
        created_by=world.users["engineer"],
        status=JobStatus.RUNNING,
        started_at=timezone.now(),
    )
    return version, job


def _login(page, user) -> None:
    page.goto("/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", "correct horse battery staple")
    with page.expect_navigation():
        page.click("button:has-text('Sign in')")


def _finish(job: DataJob) -> None:
    DataJob.objects.filter(pk=job.pk).update(
        status=JobStatus.SUCCEEDED, progress=1.0, finished_at=timezone.now()
    )


def test_the_page_reloads_when_its_job_finishes(page, world, version_with_running_job) -> None:
    version, job = version_with_running_job
    _login(page, world.users["engineer"])
    page.goto(f"/versions/{version.pk}/")
    page.evaluate("() => { window.beforeReload = true; }")
    _finish(job)
    # The reloaded page renders the finished job from the server, and the marker is gone.
    page.wait_for_function("() => window.beforeReload === undefined", timeout=15_000)
    assert "Succeeded" in page.inner_text(f"tr[data-job-url$='/{job.pk}/']")


def test_an_edited_form_is_kept_and_the_reload_offered(
    page, world, version_with_running_job
) -> None:
    version, job = version_with_running_job
    _login(page, world.users["engineer"])
    page.goto(f"/versions/{version.pk}/")
    page.evaluate("() => { window.beforeReload = true; }")
    page.fill("#id_name", "half-typed-name")
    _finish(job)
    notice = page.locator("#refresh-notice")
    notice.wait_for(timeout=15_000)
    assert "has finished" in notice.inner_text()
    assert page.evaluate("() => window.beforeReload") is True
    assert page.input_value("#id_name") == "half-typed-name"
    with page.expect_navigation():
        notice.locator("button:has-text('Reload')").click()
    assert page.evaluate("() => window.beforeReload") is None
