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
    with pytest.raises(ValidationError, match="approved for training"):
        feedback_export_launch(
            actor=world.users["manager"], campaign=campaign, format="unpaired", include_ai=True
        )


def test_a_rating_campaign_exports_preference_pairs_by_mean_rating(world) -> None:
    campaign = _campaign(
        world,
        "rating",
        [
            ("clear", ["best", "worst", "middle"]),  # means 4.5, 1.5, 3: best over both
            ("tied top", ["t1", "t2", "low"]),  # 4, 4, 2: each top over low, not each other
            ("all equal", ["e1", "e2"]),  # 3, 3: a tie, no pair
            ("single", ["only"]),  # one response: nothing to pair
            ("adjudicated", ["x", "y"]),  # the raters say x, the manager y
        ],
    )
    r = _raters(world, 2)
    clear, tied, equal, single, adjudicated = campaign.items.order_by("index")

    def rate(item, rater, *scores) -> None:
        _judge(item, rater, {"ratings": [{"helpfulness": s, "harmlessness": s} for s in scores]})

    rate(clear, r[0], 5, 1, 3)
    rate(clear, r[1], 4, 2, 3)
    rate(tied, r[0], 4, 4, 2)
    rate(equal, r[0], 3, 3)
    rate(equal, r[1], 3, 3)
    rate(single, r[0], 5)
    rate(adjudicated, r[0], 5, 1)
    Item.objects.filter(pk=adjudicated.pk).update(
        adjudicated={"ratings": [{"helpfulness": 2}, {"helpfulness": 4}]}
    )
    job, rows = _export(world, campaign, "preference")
    assert rows == [
        {"prompt": "clear", "chosen": "best", "rejected": "worst"},
        {"prompt": "clear", "chosen": "best", "rejected": "middle"},
        {"prompt": "tied top", "chosen": "t1", "rejected": "low"},
        {"prompt": "tied top", "chosen": "t2", "rejected": "low"},
        {"prompt": "adjudicated", "chosen": "y", "rejected": "x"},
    ]
    assert job.dataset_version.recipe["task"] == "rating"
    assert job.dataset_version.column_roles == {
        "prompt": "prompt",
        "chosen": "chosen",
        "rejected": "rejected",
    }


def test_a_rating_export_without_any_pair_fails_saying_why(world) -> None:
    campaign = _campaign(world, "rating", [("single", ["only"]), ("equal", ["a", "b"])])
    single, equal = campaign.items.order_by("index")
    (rater,) = _raters(world, 1)
    _judge(single, rater, {"ratings": [{"helpfulness": 5}]})
    _judge(equal, rater, {"ratings": [{"helpfulness": 3}, {"helpfulness": 3}]})
    job = feedback_export_launch(
        actor=world.users["manager"], campaign=campaign, format="preference"
    )
    run_job_inline(job)
    job.refresh_from_db()
    assert job.status == "failed" and "ratings of one response per item" in job.error
    assert job.dataset_version is None


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
    # A small file is checked row by row before it is accepted: refused, nothing stored.
    with pytest.raises(ValidationError, match="Line 2 \\(row 2\\): 'chosen' is empty"):
        preference_import(
            actor=world.users["manager"],
            project=world.project,
            name="bad",
            uploaded_file=SimpleUploadedFile("bad.jsonl", bad),
        )
    assert not DataJob.objects.filter(dataset__name="bad").exists()
