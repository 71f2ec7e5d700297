"""Generations of two model versions (tiny random causal LMs, loaded directly) made into a
"versions" campaign's items, labelled by version; launch refusals."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from evaluation.feedback.services.ai_raters import generation_launch
from evaluation.feedback.services.campaigns import campaign_create
from llmhub.jobs import run_job_inline, wait_until
from projects.models import Role
from tests.evaluation.feedback.builders import extra_raters
from tests.serving.conftest import register_version, tiny_lm_dir  # noqa: F401


def _campaign(world, **kw):
    return campaign_create(
        actor=world.users[Role.MANAGER],
        project=world.project,
        name=kw.pop("name", "v1 vs v2"),
        task="pairwise",
        source="versions",
        overlap=1,
        raters=extra_raters(world, 2),
        **kw,
    )


def test_a_generation_job_makes_one_item_per_prompt_with_each_versions_answer(
    transactional_db,
    world,
    tiny_lm_dir,  # noqa: F811
) -> None:
    manager = world.users[Role.MANAGER]
    v1 = register_version(world.project, tiny_lm_dir, actor=manager, name="one")
    v2 = register_version(world.project, tiny_lm_dir, actor=manager, name="two")
    campaign = _campaign(world)
    prompts = ["Hello there.", "How are you today?", "The quick brown fox"]
    job = generation_launch(
        actor=manager,
        campaign=campaign,
        versions=[v1, v2],
        prompts=prompts,
        settings={"max_tokens": 4},
    )
    assert job.queue == "gpu" and job.settings == {"max_tokens": 4, "temperature": 0.0}
    run_job_inline(job)
    # The launch's message really reaches the broker in a transactional test: a worker of the
    # test session may have claimed the job first, so wait for whichever run it was to end.
    assert wait_until(
        lambda: type(job).objects.get(pk=job.pk).status not in ("queued", "running"), timeout=120
    )
    job.refresh_from_db()
    assert job.status == "succeeded", (job.error, job.log)
    assert job.made == 3 and "3 items made" in job.progress_message
    items = list(campaign.items.order_by("index"))
    assert [i.prompt for i in items] == prompts
    for item in items:
        assert [r["model_version_id"] for r in item.responses] == [v1.pk, v2.pk]
        assert [r["label"] for r in item.responses] == [str(v1), str(v2)]
        assert all(isinstance(r["text"], str) for r in item.responses)
        assert item.origin["generation_job"] == job.pk
    # Same weights, greedy decoding: both versions say the same thing (the model really ran).
    assert items[0].responses[0]["text"] == items[0].responses[1]["text"]


@pytest.mark.django_db
def test_generation_launch_refusals(world) -> None:
    from tests.evaluation.feedback.builders import model_versions

    manager = world.users[Role.MANAGER]
    campaign = _campaign(world)
    v1, v2 = model_versions(world.project, 2)
    with pytest.raises(ValidationError, match="two or more"):
        generation_launch(actor=manager, campaign=campaign, versions=[v1], prompts=["hi"])
    with pytest.raises(ValidationError, match="tokenizer"):
        generation_launch(actor=manager, campaign=campaign, versions=[v1, v2], prompts=["hi"])
    v1.files = v2.files = ["config.json", "tokenizer.json"]
    with pytest.raises(ValidationError, match="empty"):
        generation_launch(actor=manager, campaign=campaign, versions=[v1, v2], prompts=[" "])
    with pytest.raises(ValidationError, match="Unknown setting"):
        generation_launch(
            actor=manager,
            campaign=campaign,
            versions=[v1, v2],
            prompts=["hi"],
            settings={"top_k": 3},
        )
    with pytest.raises(ValidationError, match="max_tokens"):
        generation_launch(
            actor=manager,
            campaign=campaign,
            versions=[v1, v2],
            prompts=["hi"],
            settings={"max_tokens": 0},
        )
    upload = _campaign(world, name="uploaded", source_params={})
    upload.source = "upload"
    with pytest.raises(ValidationError, match="source is model versions"):
        generation_launch(actor=manager, campaign=upload, versions=[v1, v2], prompts=["hi"])
    assert not campaign.generations.exists()


@pytest.mark.django_db
def test_generation_through_the_api(world, api) -> None:
    from tests.evaluation.feedback.builders import model_versions

    campaign = _campaign(world)
    v1, v2 = model_versions(world.project, 2)
    for v in (v1, v2):
        v.files = ["config.json", "tokenizer.json"]
        v.save(update_fields=["files"])
    client = api(world.users[Role.MANAGER])
    body = {"campaign": campaign.pk, "versions": [v1.pk, v2.pk], "prompts": ["Hi", "Bye"]}
    made = client.post("/api/v1/feedback-generations/", body, format="json")
    assert made.status_code == 201, made.content
    assert made.json()["version_ids"] == [v1.pk, v2.pk] and made.json()["status"] == "queued"
    one = client.post("/api/v1/feedback-generations/", {**body, "versions": [v1.pk]}, format="json")
    assert one.status_code == 400
    # A rater sees no generation (they name versions) and cannot launch one.
    rater = api(world.users[Role.RATER])
    assert rater.get("/api/v1/feedback-generations/").json()["count"] == 0
    assert rater.post("/api/v1/feedback-generations/", body, format="json").status_code in (
        400,
        403,
        404,
    )
    assert campaign.generations.count() == 1
