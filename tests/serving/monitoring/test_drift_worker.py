"""The periodic drift check on a real Celery worker: the scheduler claims the period and
queues the job after its commit, the worker runs it and the alert opens."""

from __future__ import annotations

import pytest

from llmhub.jobs import wait_until
from llmhub.models import JobStatus
from serving.monitoring import services
from serving.monitoring.models import Alert, DriftJob
from tests.serving.monitoring.drift_world import log_requests, monitored_endpoint, texts

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_a_scheduled_drift_job_runs_on_the_worker(world, tiny_lm_dir, celery_worker) -> None:
    m = monitored_endpoint(world, tiny_lm_dir)
    log_requests(m.endpoint, texts("cooking", 150, 0))
    assert services.drift_schedule_due() == 1
    job = DriftJob.objects.get()

    def ended() -> bool:
        return DriftJob.objects.filter(pk=job.pk, status__in=["succeeded", "failed"]).exists()

    assert wait_until(ended, timeout=180), celery_worker.log()[-5000:]
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.scheduled and job.result == "drifted" and job.celery_task_id
    assert Alert.objects.filter(endpoint=m.endpoint, drift_job=job).exists()
    assert services.drift_schedule_due() == 0  # this period is taken
