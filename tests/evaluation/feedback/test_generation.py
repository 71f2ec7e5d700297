"""Generations of two model versions (tiny random causal LMs) made into a "versions"
campaign's items, labelled by version: loaded directly, or through their endpoints on a local
serving stack (each response naming the version that answered); launch refusals."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from evaluation.feedback.services.ai_raters import generation_launch
from evaluation.feedback.services.campaigns import campaign_create
from llmhub.jobs import run_job_inline, wait_until
from projects.models import Role
from tests.evaluation.feedback.builders import extra_raters
from tests.serving.conftest import (  # noqa: F401
    deployed,
    register_version,
    serving_stack,
    tiny_lm_dir,
)
from training.models import ModelVersion


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


# --- through endpoints (a local serving stack) -------------------------------------------------


def _two_endpoints(stage, *, canary_percent: int = 0):
    """``stage``'s endpoint (a ``Deployed``: its version) and a second one serving another
    version (with a third as its canary when ``canary_percent``)."""
    from serving.services import endpoint_create, endpoint_promote, endpoint_set_canary

    manager = stage.manager
    second = endpoint_create(
        actor=manager, project=stage.world.project, name="Chat B", slug="chat-b"
    )
    endpoint_promote(actor=manager, endpoint=second, version=stage.new_version())
    if canary_percent:
        endpoint_set_canary(
            actor=manager,
            endpoint=second,
            version=stage.new_version(),
            percent=canary_percent,
        )
    second.refresh_from_db()
    return stage.endpoint, second


def _run(job, stack) -> None:
    from django.test import override_settings

    with override_settings(LLMHUB_SERVING_URL=stack.url):
        run_job_inline(job)
        assert wait_until(
            lambda: type(job).objects.get(pk=job.pk).status not in ("queued", "running"),
            timeout=120,
        )
    job.refresh_from_db()


def test_a_generation_through_endpoints_records_the_version_that_answered(
    deployed,  # noqa: F811
    serving_stack,  # noqa: F811
) -> None:
    from serving.models import RequestLog

    world, manager = deployed.world, deployed.manager
    first, second = _two_endpoints(deployed, canary_percent=50)
    campaign = _campaign(world)
    prompts = [f"Prompt number {i}:" for i in range(12)]
    stack = serving_stack()
    job = generation_launch(
        actor=manager,
        campaign=campaign,
        endpoints=[first, second],
        prompts=prompts,
        settings={"max_tokens": 4},
    )
    assert job.endpoint_ids == [first.pk, second.pk] and job.version_ids == []
    _run(job, stack)
    assert job.status == "succeeded", (job.error, job.log)
    assert job.made == 12 and "12 items made from 12 prompts x 2 endpoints" in job.progress_message
    stack.flush()
    logged = dict(RequestLog.objects.values_list("response_id", "version_id"))
    seen_second = set()
    items = list(campaign.items.order_by("index"))
    assert [i.prompt for i in items] == prompts
    for item in items:
        assert item.origin["endpoints"] == [first.pk, second.pk]
        ids = item.origin["response_ids"]
        # Each response names the version the request log says answered it: the first
        # endpoint's own; the second's primary or its canary, request by request.
        versions = [r["model_version_id"] for r in item.responses]
        assert versions == [logged[ids[0]], logged[ids[1]]]
        assert versions[0] == first.version_id
        assert versions[1] in (second.version_id, second.canary_version_id)
        assert item.origin["canary"][1] == (versions[1] == second.canary_version_id)
        assert [r["label"] for r in item.responses] == [
            str(ModelVersion.objects.get(pk=v)) for v in versions
        ]
        seen_second.add(versions[1])
    # 12 calls at 50%: both versions of the second endpoint answered (1 in 2,048 to fail).
    assert seen_second == {second.version_id, second.canary_version_id}


def test_endpoints_answer_what_the_loaded_version_would(deployed, serving_stack) -> None:  # noqa: F811
    """The prompt goes to /completions as is: the same greedy text as the job's own loading."""
    world, manager = deployed.world, deployed.manager
    first, second = _two_endpoints(deployed)
    prompts = ["Hello there.", "The quick brown fox"]
    stack = serving_stack()
    through = generation_launch(
        actor=manager,
        campaign=_campaign(world, name="through endpoints"),
        endpoints=[first, second],
        prompts=prompts,
        settings={"max_tokens": 6},
    )
    _run(through, stack)
    direct = generation_launch(
        actor=manager,
        campaign=_campaign(world, name="loaded"),
        versions=[first.version, second.version],
        prompts=prompts,
        settings={"max_tokens": 6},
    )
    _run(direct, stack)
    assert (through.status, direct.status) == ("succeeded", "succeeded"), (
        through.error,
        direct.error,
    )

    def texts(job):
        return [[r["text"] for r in i.responses] for i in job.campaign.items.order_by("index")]

    assert texts(through) == texts(direct)
    # A tiny random LM may say nothing to a prompt, but it said something to one.
    assert any(text for row in texts(through) for text in row)


def test_an_unreachable_inference_process_fails_the_job_with_the_reason(
    deployed,  # noqa: F811
) -> None:
    from django.test import override_settings

    from tests.serving.conftest import free_port

    world, manager = deployed.world, deployed.manager
    first, second = _two_endpoints(deployed)
    campaign = _campaign(world)
    job = generation_launch(
        actor=manager, campaign=campaign, endpoints=[first, second], prompts=["Hi", "Bye"]
    )
    with override_settings(LLMHUB_SERVING_URL=f"http://127.0.0.1:{free_port()}"):
        run_job_inline(job)
        assert wait_until(
            lambda: type(job).objects.get(pk=job.pk).status not in ("queued", "running"),
            timeout=120,
        )
    job.refresh_from_db()
    assert job.status == "failed"
    assert "No prompt was answered by every endpoint" in job.error
    assert "The endpoint Chat" in job.error and "ConnectError" in job.error
    assert not campaign.items.exists()


@pytest.mark.django_db
def test_generation_through_endpoints_refusals(world) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from serving.models import Endpoint
    from tests.evaluation.feedback.builders import model_versions

    manager = world.users[Role.MANAGER]
    campaign = _campaign(world)
    v1, v2 = model_versions(world.project, 2)

    def endpoint(slug, **kw):
        return Endpoint.objects.create(
            project=kw.pop("project", world.project), name=slug, slug=slug, **kw
        )

    a, b = endpoint("a", version=v1), endpoint("b", version=v2)
    same = endpoint("same", version=v1)
    empty = endpoint("empty")
    archived = endpoint("old", version=v2, archived_at=timezone.now() - timedelta(days=1))
    foreign = endpoint("theirs", project=world.other_project)
    v1.task_kind = "classification"
    v1.save(update_fields=["task_kind"])
    classifier = endpoint("classifier", version=v1)
    v1.task_kind = "sft_causal"
    v1.save(update_fields=["task_kind"])

    def refused(match: str, **kw) -> None:
        with pytest.raises(ValidationError, match=match) as caught:
            generation_launch(actor=manager, campaign=campaign, prompts=["hi"], **kw)
        assert "endpoints" in caught.value.message_dict, caught.value.message_dict

    refused("two or more different endpoints", endpoints=[a])
    refused("An endpoint is listed twice", endpoints=[a, b, a])
    refused("not both", endpoints=[a, b], versions=[v1, v2])
    refused("belongs to another project", endpoints=[a, foreign])
    refused("is archived", endpoints=[a, archived])
    refused("serves no version yet", endpoints=[a, empty])
    refused("compare a version with itself", endpoints=[a, same])
    refused("exactly two endpoints", endpoints=[a, b, empty])
    # (classifier: checked with the kind it had when it was made, now read again)
    v1.task_kind = "classification"
    v1.save(update_fields=["task_kind"])
    refused("does not generate text", endpoints=[classifier, b])
    assert not campaign.generations.exists()


@pytest.mark.django_db
def test_generation_through_endpoints_via_the_api(world, api) -> None:
    from serving.models import Endpoint
    from tests.evaluation.feedback.builders import model_versions

    campaign = _campaign(world)
    v1, v2 = model_versions(world.project, 2)
    a = Endpoint.objects.create(project=world.project, name="A", slug="a", version=v1)
    b = Endpoint.objects.create(project=world.project, name="B", slug="b", version=v2)
    client = api(world.users[Role.MANAGER])
    body = {"campaign": campaign.pk, "endpoints": [a.pk, b.pk], "prompts": ["Hi", "Bye"]}
    made = client.post("/api/v1/feedback-generations/", body, format="json")
    assert made.status_code == 201, made.content
    assert made.json()["endpoint_ids"] == [a.pk, b.pk] and made.json()["version_ids"] == []
    both = client.post(
        "/api/v1/feedback-generations/", {**body, "versions": [v1.pk, v2.pk]}, format="json"
    )
    assert both.status_code == 400 and "endpoints" in both.json()["error"]["fields"]
    other = Endpoint.objects.create(project=world.other_project, name="X", slug="x", version=v1)
    hidden = client.post(
        "/api/v1/feedback-generations/", {**body, "endpoints": [a.pk, other.pk]}, format="json"
    )
    assert hidden.status_code == 400 and "among those you can see" in hidden.content.decode()
    assert campaign.generations.count() == 1


@pytest.mark.django_db
def test_the_campaign_form_generates_through_endpoints(world, client) -> None:
    from evaluation.feedback.models import Campaign, GenerationJob
    from serving.models import Endpoint
    from tests.evaluation.feedback.builders import model_versions

    v1, v2 = model_versions(world.project, 2)
    a = Endpoint.objects.create(project=world.project, name="Chat A", slug="chat-a", version=v1)
    b = Endpoint.objects.create(project=world.project, name="Chat B", slug="chat-b", version=v1)
    client.force_login(world.users[Role.MANAGER])
    url = f"/projects/{world.project.pk}/feedback/campaigns/new/"
    data = {
        "name": "a against b",
        "task": "pairwise",
        "source": "versions",
        "endpoints": [str(a.pk), str(b.pk)],
        "prompts": "How do I reset my password?\nWhere is my invoice?",
        "max_tokens": "16",
        "raters": [str(u.pk) for u in extra_raters(world, 2)],
        "overlap": "2",
        "blind": "on",
        "assignment_timeout_seconds": "600",
    }
    page = client.get(f"/projects/{world.project.pk}/feedback/").content.decode()
    assert 'name="endpoints"' in page and "Chat B (chat-b)" in page
    # Both serve v1: refused next to the endpoints, and no campaign is left behind.
    refused = client.post(url, data)
    assert refused.status_code == 200
    assert "compare a version with itself" in " ".join(refused.context["form"].errors["endpoints"])
    both = client.post(url, {**data, "versions": [str(v1.pk), str(v2.pk)]})
    assert "not both" in " ".join(both.context["form"].errors["endpoints"])
    assert not Campaign.objects.exists() and not GenerationJob.objects.exists()
    Endpoint.objects.filter(pk=b.pk).update(version=v2)
    made = client.post(url, data)
    assert made.status_code == 302, made.context["form"].errors if made.context else made
    job = GenerationJob.objects.get(campaign__name="a against b")
    assert job.endpoint_ids == [a.pk, b.pk] and job.version_ids == [] and len(job.prompts) == 2
    assert job.campaign.source_params["endpoints"] == [a.pk, b.pk]
    html = client.get(made["Location"]).content.decode()
    assert "2 endpoints" in html and f'data-generation="{job.pk}"' in html
