"""AI raters: reading a judge's answer (plain unit tests), URL refusals, approval, and the
whole path against a LOCAL endpoint (the in-process inference stack serving a tiny random LM;
its answers are random text, so most are unreadable: the job must count them and go on)."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import override_settings

from evaluation.feedback.models import AIRatingJob, Assignment, Judgment
from evaluation.feedback.runtime import judge
from evaluation.feedback.services.ai_raters import (
    ai_rater_approve,
    ai_rater_create,
    ai_rating_launch,
)
from llmhub.jobs import run_job_inline, wait_until
from projects.models import Role
from tests.evaluation.feedback.builders import campaign_with_items
from tests.serving.conftest import deployed, serving_stack, tiny_lm_dir  # noqa: F401

SHORT_PROMPT = "{prompt}\n{responses}\nBest:"

# --- parsing (no Django) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "choice"),
    [
        ("A", "a"),
        (" b. ", "b"),
        ("Tie", "tie"),
        ("both bad", "both_bad"),
        ('{"choice": "B"}', "b"),
        ("After reading both, the better response is B.", "b"),
        ("Final answer: [[A]]", "a"),
        ("Response A is clearly more helpful.", "a"),
    ],
)
def test_pairwise_answers_are_read_in_shown_terms(text, choice) -> None:
    assert judge.parse_answer("pairwise", text, n=2) == {"choice": choice, "reason": ""}


@pytest.mark.parametrize("text", ["", "I cannot decide between A and B", "xqz lorem"])
def test_unreadable_pairwise_answers_are_refused(text) -> None:
    with pytest.raises(judge.UnreadableAnswer):
        judge.parse_answer("pairwise", text, n=2)


def test_rankings_ratings_and_corrections() -> None:
    assert judge.parse_answer("ranking", "B > C > A", n=3) == {"ranking": [2, 3, 1]}
    assert judge.parse_answer("ranking", '{"ranking": ["C", "A", "B"]}', n=3) == {
        "ranking": [3, 1, 2]
    }
    with pytest.raises(judge.UnreadableAnswer):
        judge.parse_answer("ranking", "B > A", n=3)  # C is missing
    ratings = judge.parse_answer(
        "rating",
        'Here: {"A": {"helpfulness": 4, "factuality": 5}, "B": {"helpfulness": 2, '
        '"factuality": 3}}',
        n=2,
        criteria=["helpfulness", "factuality"],
    )
    assert ratings == {
        "ratings": [{"helpfulness": 4, "factuality": 5}, {"helpfulness": 2, "factuality": 3}]
    }
    with pytest.raises(judge.UnreadableAnswer, match="whole number"):
        judge.parse_answer("rating", '{"A": {"helpfulness": 9}}', n=1, criteria=["helpfulness"])
    assert judge.parse_answer("correction", "  Fixed text. ", n=1) == {
        "response": 1,
        "text": "Fixed text.",
    }


def test_the_prompt_fills_placeholders_once_and_letters_the_shown_order() -> None:
    text = judge.render_prompt(
        'Rules: {instructions} | {prompt} | {responses} | {"json": 1}',
        instructions="Be fair.",
        prompt="What is {responses}?",
        shown=["second", "first"],
    )
    assert text == (
        "Rules: Be fair. | What is {responses}? | Response A:\nsecond\n\nResponse B:\nfirst"
        ' | {"json": 1}'
    )
    assert judge.missing_placeholders("no responses here") == ["responses"]
    assert set(judge.DEFAULT_PROMPTS) == {"pairwise", "ranking", "rating", "correction"}
    assert all(not judge.missing_placeholders(p) for p in judge.DEFAULT_PROMPTS.values())


# --- creation and refusals --------------------------------------------------------------------


@pytest.mark.django_db
def test_urls_that_are_not_http_or_point_at_private_addresses_are_refused(world) -> None:
    campaign = campaign_with_items(world, n_items=2)
    manager = world.users[Role.MANAGER]

    def create(**kw):
        return ai_rater_create(
            actor=manager, campaign=campaign, name="judge", judging_prompt=SHORT_PROMPT, **kw
        )

    with pytest.raises(ValidationError) as err:
        create(base_url="ftp://example.com/v1", model="m")
    assert "http" in str(err.value.message_dict["base_url"])
    with override_settings(LLMHUB_ALLOW_PRIVATE_URLS=False):
        for url in ("http://127.0.0.1:8000/v1", "http://169.254.169.254/v1", "http://10.0.0.7/v1"):
            with pytest.raises(ValidationError) as err:
                create(base_url=url, model="m")
            assert "base_url" in err.value.message_dict
    create(base_url="http://127.0.0.1:9/v1", model="m", api_key="k")  # development allows it
    with pytest.raises(ValidationError) as err:
        ai_rater_create(
            actor=manager,
            campaign=campaign,
            name="other",
            judging_prompt="Judge this.",
            base_url="http://127.0.0.1:9/v1",
            model="m",
        )
    assert "{responses}" in str(err.value.message_dict["judging_prompt"])
    assert campaign.ai_raters.count() == 1  # only the valid one
    with pytest.raises(PermissionDenied):  # a rater may not add AI raters
        ai_rater_create(
            actor=world.users[Role.RATER],
            campaign=campaign,
            name="sneaky",
            judging_prompt=SHORT_PROMPT,
            base_url="http://127.0.0.1:9/v1",
            model="m",
        )


@pytest.mark.django_db
def test_the_api_never_returns_the_key_and_hides_ai_raters_from_raters(world, api) -> None:
    campaign = campaign_with_items(world, n_items=2)
    client = api(world.users[Role.MANAGER])
    answer = client.post(
        "/api/v1/feedback-ai-raters/",
        {
            "campaign": campaign.pk,
            "name": "gpt judge",
            "judging_prompt": SHORT_PROMPT,
            "base_url": "http://127.0.0.1:9/v1",
            "model": "judge-model",
            "api_key": "sk-secret-123",
        },
        format="json",
    )
    assert answer.status_code == 201, answer.content
    assert "sk-secret-123" not in answer.content.decode()
    assert answer.json()["has_api_key"] is True
    pk = answer.json()["id"]
    listed = client.get("/api/v1/feedback-ai-raters/").content.decode()
    assert "sk-secret-123" not in listed and "gpt judge" in listed
    rater_client = api(world.users[Role.RATER])
    assert rater_client.get(f"/api/v1/feedback-ai-raters/{pk}/").status_code == 404
    assert rater_client.get("/api/v1/feedback-ai-raters/").json()["count"] == 0
    bad = client.post(
        "/api/v1/feedback-ai-raters/",
        {
            "campaign": campaign.pk,
            "name": "x",
            "judging_prompt": SHORT_PROMPT,
            "base_url": "gopher://x",
        },
        format="json",
    )
    assert bad.status_code == 400


@pytest.mark.django_db
def test_approval_is_refused_without_human_judgments_to_compare_with(world) -> None:
    campaign = campaign_with_items(world, n_items=2)
    manager = world.users[Role.MANAGER]
    rater = ai_rater_create(
        actor=manager,
        campaign=campaign,
        name="judge",
        judging_prompt=SHORT_PROMPT,
        base_url="http://127.0.0.1:9/v1",
        model="m",
    )
    from evaluation.feedback.services.labeling import ai_judgment_record

    item = campaign.items.first()
    ai_judgment_record(ai_rater=rater, item=item, value={"choice": "a"}, order=[1, 0])
    with pytest.raises(ValidationError, match="No human"):
        ai_rater_approve(actor=manager, ai_rater=rater, use_for_training=True)
    rater.refresh_from_db()
    assert rater.use_for_training is False and rater.agreement_when_approved is None

    from evaluation.feedback.services.labeling import assignment_next, judgment_submit

    human = world.users[Role.RATER]
    for _ in range(2):
        assignment = assignment_next(rater=human, campaign=campaign)
        if assignment.item_id == item.pk:
            judgment_submit(rater=human, assignment=assignment, value={"choice": "b"})
            break
        judgment_submit(rater=human, assignment=assignment, value={"choice": "a"})
    rater = ai_rater_approve(actor=manager, ai_rater=rater, use_for_training=True)
    assert rater.use_for_training is True and rater.approved_by == manager
    record = rater.agreement_when_approved
    assert record["simple"]["pairs"] >= 1
    assert record["campaign_stats"]["ai_rater"]["id"] == rater.pk
    assert "humans" in record["campaign_stats"]


# --- the whole path against a local endpoint -------------------------------------------------


def test_the_ai_rater_judges_through_a_local_endpoint(deployed, serving_stack) -> None:  # noqa: F811
    world = deployed.world
    manager = deployed.manager
    campaign = campaign_with_items(world, n_items=3)
    stack = serving_stack()
    rater = ai_rater_create(
        actor=manager,
        campaign=campaign,
        name="tiny judge",
        judging_prompt=SHORT_PROMPT,
        endpoint=deployed.endpoint,
    )
    with override_settings(LLMHUB_SERVING_URL=stack.url, LLMHUB_JUDGE_MAX_TOKENS=4):
        job = ai_rating_launch(actor=manager, ai_rater=rater)
        run_job_inline(job)
    job.refresh_from_db()
    # A random tiny LM's answers are mostly unreadable: that is counted, not a failed job.
    assert job.status == "succeeded", (job.error, job.log)
    judged = Judgment.objects.filter(ai_rater=rater).count()
    assert job.judged == judged
    assert f"{judged} of 3 items judged" in job.progress_message
    if judged < 3:
        assert f"{3 - judged} failed" in job.progress_message
    # Each AI judgment has its submitted assignment with the order it saw, and no human count.
    for assignment in Assignment.objects.filter(ai_rater=rater):
        assert sorted(assignment.order) == [0, 1] and assignment.status == "submitted"
    assert sum(campaign.items.values_list("taken", flat=True)) == 0
    # The calls reached the endpoint (the request log records the judge's requests).
    stack.flush()
    from serving.models import RequestLog

    assert RequestLog.objects.filter(endpoint=deployed.endpoint).count() == 3


def test_an_unreachable_judge_fails_the_job_with_the_reason(transactional_db, world) -> None:
    campaign = campaign_with_items(world, n_items=2)
    manager = world.users[Role.MANAGER]
    rater = ai_rater_create(
        actor=manager,
        campaign=campaign,
        name="gone",
        judging_prompt=SHORT_PROMPT,
        base_url="http://127.0.0.1:9/v1",
        model="m",
    )
    job = ai_rating_launch(actor=manager, ai_rater=rater, max_items=1)
    with pytest.raises(ValidationError, match="already judging"):
        ai_rating_launch(actor=manager, ai_rater=rater)
    run_job_inline(job)
    # In a transactional test the launch's message really goes to the broker: a worker of the
    # test session may have claimed the job first (then run_job_inline finds it taken), so wait
    # for whichever run it was to end.
    assert wait_until(
        lambda: AIRatingJob.objects.get(pk=job.pk).status not in ("queued", "running"), timeout=60
    )
    job.refresh_from_db()
    assert job.status == "failed" and "Every call to the judge failed" in job.error
    assert not AIRatingJob.objects.filter(pk=job.pk, judged__gt=0).exists()


@pytest.mark.django_db
def test_run_approve_and_cancel_through_the_api(world, api) -> None:
    campaign = campaign_with_items(world, n_items=2)
    manager = world.users[Role.MANAGER]
    rater = ai_rater_create(
        actor=manager,
        campaign=campaign,
        name="judge",
        judging_prompt=SHORT_PROMPT,
        base_url="http://127.0.0.1:9/v1",
        model="m",
    )
    client = api(manager)
    refused = client.post(
        f"/api/v1/feedback-ai-raters/{rater.pk}/approve/", {"use_for_training": True}, format="json"
    )
    assert refused.status_code == 400 and "judged nothing" in refused.content.decode()
    started = client.post(
        f"/api/v1/feedback-ai-raters/{rater.pk}/run/", {"max_items": 1}, format="json"
    )
    assert started.status_code == 201, started.content
    job_id = started.json()["id"]
    assert started.json()["status"] == "queued" and started.json()["max_items"] == 1
    cancelled = client.post(f"/api/v1/feedback-ai-rating-jobs/{job_id}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert (
        api(world.users[Role.RATER])
        .post(f"/api/v1/feedback-ai-raters/{rater.pk}/run/", {}, format="json")
        .status_code
        == 404
    )
    defaults = client.get("/api/v1/feedback-ai-raters/default-prompts/").json()
    assert "{responses}" in defaults["pairwise"]
