"""The data stage on a real Celery worker: upload -> ingest -> profile -> clean -> split."""

from __future__ import annotations

from pathlib import Path

import pytest

from datasets_app.models import DataJob, DatasetVersion
from llmhub.jobs import wait_until
from tests.datasets_app.test_data_api import upload

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"


def _settled() -> bool:
    return not DataJob.objects.filter(status__in=["queued", "running"]).exists()


def test_upload_to_split_on_a_worker(world, api, celery_worker) -> None:
    client = api(world.users["engineer"])
    dataset = client.post(
        "/api/v1/datasets/", {"project": world.project.pk, "name": "poems"}
    ).json()
    assert (
        upload(
            client, dataset["id"], "poems.csv", (FIXTURES / "poem_sample.csv").read_bytes()
        ).status_code
        == 202
    )
    assert wait_until(
        lambda: DataJob.objects.filter(kind="profile", status="succeeded").exists(), timeout=60
    ), celery_worker.log()
    v1 = DatasetVersion.objects.get(number=1)
    assert v1.row_count == 240
    profile = client.get(f"/api/v1/dataset-versions/{v1.pk}/profile/").json()["profile"]
    assert profile["columns"]["label"]["top_values"][0] == {"value": "no_impact", "count": 155}

    client.post(
        f"/api/v1/dataset-versions/{v1.pk}/clean/",
        {"steps": [{"step": "normalize_unicode"}, {"step": "exact_dedupe"}]},
    )
    client.post(f"/api/v1/dataset-versions/{v1.pk}/split/", {"stratify_column": "label"})
    assert wait_until(lambda: _settled() and DatasetVersion.objects.count() == 3, timeout=60), (
        celery_worker.log()
    )
    failed = DataJob.objects.filter(status="failed")
    assert not failed.exists(), [j.error for j in failed]
    split = DatasetVersion.objects.get(recipe__kind="split")
    assert {s.name for s in split.splits.all()} == {"train", "validation", "test"}


def test_a_worker_sweeps_upload_leftovers_when_it_starts(fresh_worker) -> None:
    import os
    import time

    from django.conf import settings

    orphan = Path(settings.MEDIA_ROOT) / "uploads" / "left-by-a-killed-upload" / "data.csv"
    orphan.parent.mkdir(parents=True)
    orphan.write_text("text\nhalf of it\n")
    old = time.time() - settings.LLMHUB_UPLOAD_LEFTOVER_SECONDS - 60
    os.utime(orphan, (old, old))
    fresh_worker.start()
    assert wait_until(lambda: not orphan.parent.exists(), timeout=30), fresh_worker.log()
    assert "Swept upload leftovers" in fresh_worker.log()
