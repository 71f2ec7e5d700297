"""Feedback exports (rows per format, majority / adjudication / ties, lineage, the job) and the
preference import's refusals."""

from __future__ import annotations

from datetime import timedelta

import pyarrow.parquet as pq
import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from datasets_app.models import DataJob
from evaluation.feedback.models import Assignment, Campaign, FeedbackExport, Item, Judgment
from evaluation.feedback.services.exports import feedback_export_launch, preference_import
from llmhub import storage
from llmhub.jobs import run_job_inline
from projects.models import Role
from tests.conftest import SHARED_DATASETS
from tests.factories import MembershipFactory, UserFactory


def _campaign(world, task: str, items: list[tuple[str, list[str]]]) -> Campaign:
    campaign = Campaign.objects.create(
        project=world.project,
        name=f"{task} campaign",
        task=task,
        source="upload",
        overlap=3,
        status="active",
    )
    for index, (prompt, texts) in enumerate(items):
        Item.objects.create(
            campaign=campaign,
            index=index,
            prompt=prompt,
            responses=[{"text": t, "model_version_id": None, "label": "upload"} for t in texts],
        )
    return campaign


def _raters(world, n: int) -> list:
    users = []
    for i in range(n):
        user = UserFactory(username=f"rater{i}")
        MembershipFactory(team=world.team, user=user, role=Role.RATER)
        users.append(user)
    return users


def _judge(item: Item, rater, value: dict) -> Judgment:
    assignment = Assignment.objects.create(
        item=item, rater=rater, status="submitted", expires_at=timezone.now() + timedelta(hours=1)
    )
    return Judgment.objects.create(assignment=assignment, item=item, rater=rater, value=value)


def _export(world, campaign, fmt: str) -> tuple[FeedbackExport, list[dict]]:
    job = feedback_export_launch(actor=world.users["manager"], campaign=campaign, format=fmt)
    run_job_inline(job)
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    return job, pq.read_table(storage.local_copy(job.dataset_version.file)).to_pylist()


def test_pairwise_preference_rows_majority_adjudication_ties_and_lineage(world) -> None:
    campaign = _campaign(
        world,
        "pairwise",
        [("p0", ["A0", "B0"]), ("p1", ["A1", "B1"]), ("p2", ["A2", "B2"]), ("p3", ["A3", "B3"])],
    )
    r = _raters(world, 3)
    i0, i1, i2, i3 = campaign.items.order_by("index")
    for rater, choice in zip(r, ["b", "b", "a"], strict=True):  # majority b
        _judge(i0, rater, {"choice": choice})
    _judge(i1, r[0], {"choice": "a"})  # a tie of a against b: no row
    _judge(i1, r[1], {"choice": "b"})
    _judge(i2, r[0], {"choice": "tie"})  # ties give no row
    _judge(i3, r[0], {"choice": "a"})  # adjudicated b wins
    Item.objects.filter(pk=i3.pk).update(adjudicated={"choice": "b"})
    withdrawn = _judge(i2, r[1], {"choice": "a"})
    Judgment.objects.filter(pk=withdrawn.pk).update(withdrawn_at=timezone.now())

    job, rows = _export(world, campaign, "preference")
    assert rows == [
        {"prompt": "p0", "chosen": "B0", "rejected": "A0"},
        {"prompt": "p3", "chosen": "B3", "rejected": "A3"},
    ]
    version = job.dataset_version
    assert job.rows == 2 and version.row_count == 2
    assert version.recipe["kind"] == "feedback_export"
    assert version.recipe["campaign"] == campaign.pk
    assert version.column_roles == {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}

    job2, unpaired = _export(world, campaign, "unpaired")
    assert unpaired[:2] == [
        {"prompt": "p0", "completion": "B0", "label": True},
        {"prompt": "p0", "completion": "A0", "label": False},
    ]
    assert job2.dataset_version.dataset_id == version.dataset_id  # same dataset, new version


def test_ratings_and_corrections_unpaired_and_bad_launches(world) -> None:
    campaign = _campaign(world, "rating", [("q", ["good", "bad", "meh"])])
    (item,) = campaign.items.all()
    r = _raters(world, 1)
    _judge(item, r[0], {"ratings": [{"helpfulness": 5}, {"helpfulness": 1}, {"helpfulness": 3}]})
    _job, rows = _export(world, campaign, "unpaired")
    assert rows == [
        {"prompt": "q", "completion": "good", "label": True},
        {"prompt": "q", "completion": "bad", "label": False},
    ]
    with pytest.raises(ValidationError, match="cannot be exported as preference"):
        feedback_export_launch(actor=world.users["manager"], campaign=campaign, format="preference")
    with pytest.raises(ValidationError, match="approved for training"):
        feedback_export_launch(
            actor=world.users["manager"], campaign=campaign, format="unpaired", include_ai=True
        )


def test_import_hh_rlhf_and_refusals_naming_the_line(world) -> None:
    lines = (SHARED_DATASETS / "preference_hh_rlhf_harmless.jsonl").read_bytes().splitlines()[:20]
    job = preference_import(
        actor=world.users["manager"],
        project=world.project,
        name="hh",
        uploaded_file=SimpleUploadedFile("hh.jsonl", b"\n".join(lines) + b"\n"),
        column_roles={"chosen": "chosen_response", "rejected": "rejected_response"},
    )
    run_job_inline(job)
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert job.result_version.row_count == 20
    assert job.result_version.column_roles["chosen"] == "chosen_response"

    bad = b'{"prompt": "p", "chosen": "c", "rejected": "r"}\n{"prompt": "p", "chosen": ""}\n'
    job = preference_import(
        actor=world.users["manager"],
        project=world.project,
        name="bad",
        uploaded_file=SimpleUploadedFile("bad.jsonl", bad),
    )
    run_job_inline(job)
    job.refresh_from_db()
    assert job.status == "failed"
    assert "Line 2" in job.error and "chosen" in job.error
    assert not DataJob.objects.filter(dataset__name="bad", result_version__isnull=False).exists()
