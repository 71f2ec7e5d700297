"""Campaigns: validation (every error at once), items from each source, pairing of runs by
example, edits allowed and refused after launch, raters, launch/close, and the API."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.http import Http404
from django.utils import timezone

from evaluation.feedback.models import (
    Assignment,
    AssignmentStatus,
    Campaign,
    CampaignStatus,
    Judgment,
)
from evaluation.feedback.services import campaigns as services
from evaluation.models import EvaluationExample
from projects.models import AuditEvent, Role
from serving.models import Endpoint, RequestLog, ResponseFeedback
from tests.evaluation.feedback.builders import campaign_with_items, extra_raters, model_versions
from tests.serving.builders import finished_evaluation


def _create(world, **overrides):
    values = {
        "actor": world.users[Role.MANAGER],
        "project": world.project,
        "name": "first pass",
        "task": "rating",
        "source": "upload",
        "overlap": 1,
        "raters": [world.users[Role.RATER]],
        "upload": SimpleUploadedFile("items.jsonl", b'{"prompt": "hi", "response": "hello"}\n'),
    }
    values.update(overrides)
    return services.campaign_create(**values)


def _errors(exc_info) -> dict:
    return exc_info.value.message_dict


def _run(world, version, outputs: dict[int, str], *, split: str = "test"):
    run = finished_evaluation(world, version, metric="rougeL", value=0.5, split=split)
    EvaluationExample.objects.bulk_create(
        EvaluationExample(run=run, index=i, input=f"prompt {i}", prediction=text)
        for i, text in outputs.items()
    )
    return run


# --- validation -------------------------------------------------------------------------------


def test_every_problem_is_reported_at_once(world) -> None:
    _create(world, name="taken")
    with pytest.raises(ValidationError) as exc:
        _create(
            world,
            name="taken",
            task="rating",
            criteria=[f"c{i}" for i in range(11)],
            overlap=0,
            assignment_timeout_seconds=5,
            raters=[world.users[Role.VIEWER]],
        )
    errors = _errors(exc)
    assert "already has a campaign named" in errors["name"][0]
    assert "1 to 10 criteria" in errors["criteria"][0]
    assert "between 1 and 10" in errors["overlap"][0]
    assert "between 30 and" in errors["assignment_timeout_seconds"][0]
    assert "viewer is viewer, a role that may not label" in errors["raters"][0]
    assert Campaign.objects.count() == 1


def test_fewer_raters_than_the_overlap_is_refused(world) -> None:
    with pytest.raises(ValidationError) as exc:
        _create(world, overlap=2, raters=[world.users[Role.RATER]])
    assert "fewer raters than its overlap" in _errors(exc)["raters"][0]


def test_raters_must_be_members_who_may_label(world) -> None:
    with pytest.raises(ValidationError) as exc:
        _create(world, raters=[world.outsider])
    assert "Not members of Acme AI" in _errors(exc)["raters"][0]
    campaign = _create(world, raters=[world.users[Role.RATER], world.users[Role.MANAGER].pk])
    assert set(campaign.raters.all()) == {world.users[Role.RATER], world.users[Role.MANAGER]}


def test_rating_criteria_default_and_other_tasks_take_none(world) -> None:
    campaign = _create(world)
    assert campaign.criteria == ["helpfulness", "harmlessness", "factuality"]
    with pytest.raises(ValidationError) as exc:
        _create(world, name="b", task="correction", criteria=["style"])
    assert "Only a rating campaign" in _errors(exc)["criteria"][0]
    with pytest.raises(ValidationError) as exc:
        _create(world, name="c", criteria=["style", "style"])
    assert "must differ" in _errors(exc)["criteria"][0]


def test_only_managers_create_and_outsiders_get_404(world) -> None:
    with pytest.raises(PermissionDenied):
        _create(world, actor=world.users[Role.RATER])
    with pytest.raises(PermissionDenied):
        _create(world, actor=world.users[Role.ENGINEER])
    with pytest.raises(Http404):
        _create(world, actor=world.outsider)
    assert not Campaign.objects.exists()


# --- sources ----------------------------------------------------------------------------------


def test_one_run_gives_one_response_per_item(world) -> None:
    (version,) = model_versions(world.project, 1)
    run = _run(world, version, {0: "out 0", 1: "out 1", 2: ""})
    campaign = _create(world, source="evaluation", source_params={"runs": [run.pk]}, upload=None)
    items = list(campaign.items.all())
    assert [i.prompt for i in items] == ["prompt 0", "prompt 1"]  # an empty output is left out
    assert items[0].responses == [
        {"text": "out 0", "model_version_id": version.pk, "label": str(version)}
    ]
    assert items[0].origin["example_index"] == 0
    assert campaign.source_params == {"runs": [run.pk]}


def test_two_runs_are_paired_by_example_index(world) -> None:
    a, b = model_versions(world.project, 2)
    run_a = _run(world, a, {0: "a0", 1: "a1", 3: "a3"})
    run_b = _run(world, b, {1: "b1", 3: "b3", 4: "b4"})
    campaign = _create(
        world,
        task="pairwise",
        source="evaluation",
        source_params={"runs": [run_a.pk, run_b.pk]},
        upload=None,
    )
    items = list(campaign.items.all())
    assert [i.origin["example_index"] for i in items] == [1, 3]
    assert [[r["text"] for r in i.responses] for i in items] == [["a1", "b1"], ["a3", "b3"]]
    assert [r["model_version_id"] for r in items[0].responses] == [a.pk, b.pk]


def test_evaluation_source_refusals(world) -> None:
    a, b, c = model_versions(world.project, 3)
    run_a = _run(world, a, {0: "a0"})
    run_b = _run(world, b, {0: "b0"}, split="validation")
    run_c = _run(world, c, {0: "c0"})
    with pytest.raises(ValidationError) as exc:
        _create(
            world,
            task="pairwise",
            source="evaluation",
            source_params={"runs": [run_a.pk, run_b.pk]},
            upload=None,
        )
    assert "same dataset version and split" in _errors(exc)["source_params"][0]
    with pytest.raises(ValidationError) as exc:  # 3 responses do not make a pair
        _create(
            world,
            task="pairwise",
            source="evaluation",
            source_params={"runs": [run_a.pk, run_c.pk, run_a.pk + 1000]},
            upload=None,
        )
    assert "No evaluation run" in _errors(exc)["source_params"][0]
    with pytest.raises(ValidationError) as exc:
        _create(
            world,
            task="ranking",
            source="evaluation",
            source_params={"runs": [run_a.pk, run_c.pk]},
            upload=None,
        )
    assert "3 to 8 responses" in _errors(exc)["task"][0]
    run_c.status = "running"
    run_c.save()
    with pytest.raises(ValidationError) as exc:
        _create(world, source="evaluation", source_params={"runs": [run_c.pk]}, upload=None)
    assert "Only succeeded runs" in _errors(exc)["source_params"][0]


def _log(endpoint, version, *, prompt="Q", completion="A", minutes_ago=0, **fields):
    return RequestLog.objects.create(
        response_id=f"cmpl-{RequestLog.objects.count()}-{prompt}",
        created_at=timezone.now() - timedelta(minutes=minutes_ago),
        endpoint=endpoint,
        version=version,
        route="completions",
        status_code=fields.pop("status_code", 200),
        latency_ms=10.0,
        prompt_text=prompt,
        completion_text=completion,
        **fields,
    )


def test_requests_source_filters(world) -> None:
    v1, v2 = model_versions(world.project, 2)
    endpoint = Endpoint.objects.create(project=world.project, name="bot", slug="bot", version=v1)
    old = _log(endpoint, v1, prompt="old", minutes_ago=120)
    kept = _log(endpoint, v1, prompt="kept", minutes_ago=5)
    _log(endpoint, v2, prompt="other version", minutes_ago=5)
    _log(endpoint, v1, prompt="failed", status_code=500)
    ResponseFeedback.objects.create(
        endpoint=endpoint, response_id=kept.response_id, score=-1, source="api"
    )
    campaign = _create(
        world,
        source="requests",
        upload=None,
        source_params={"endpoint": endpoint.pk, "version": v1.pk},
    )
    assert sorted(i.prompt for i in campaign.items.all()) == ["kept", "old"]
    item = campaign.items.get(prompt="old")
    assert item.origin == {"request_log": old.pk, "response_id": old.response_id}
    assert item.responses[0]["model_version_id"] == v1.pk
    recent = _create(
        world,
        name="recent thumbs down",
        source="requests",
        upload=None,
        source_params={
            "endpoint": endpoint.pk,
            "since": (timezone.now() - timedelta(hours=1)).isoformat(),
            "thumbs_down_only": True,
        },
    )
    assert [i.prompt for i in recent.items.all()] == ["kept"]


def test_requests_of_an_endpoint_storing_no_text_are_refused(world) -> None:
    endpoint = Endpoint.objects.create(
        project=world.project, name="private", slug="private", store_text=False
    )
    with pytest.raises(ValidationError) as exc:
        _create(world, source="requests", upload=None, source_params={"endpoint": endpoint.pk})
    assert "stores no prompt or completion text" in _errors(exc)["source_params"][0]
    with pytest.raises(ValidationError) as exc:
        _create(world, source="requests", upload=None, source_params={"endpoint": 999999})
    assert "endpoint of this project" in _errors(exc)["source_params"][0]


def test_upload_jsonl_and_csv_shapes(world) -> None:
    lines = [
        {"prompt": "p1", "response_a": "a1", "response_b": "b1", "model_a": "v1", "model_b": "v2"},
        {"prompt": "p2", "response_a": "a2", "response_b": "b2"},
    ]
    body = "\n".join(json.dumps(line) for line in lines).encode()
    campaign = _create(world, task="pairwise", upload=SimpleUploadedFile("pairs.jsonl", body))
    first = campaign.items.get(index=0)
    assert [r["text"] for r in first.responses] == ["a1", "b1"]
    assert [r["label"] for r in first.responses] == ["v1", "v2"]
    csv_body = b'prompt,responses\nq,"[""x"", ""y"", ""z""]"\n'
    ranked = _create(
        world, name="ranked", task="ranking", upload=SimpleUploadedFile("r.csv", csv_body)
    )
    assert [r["text"] for r in ranked.items.get().responses] == ["x", "y", "z"]


def test_upload_missing_or_empty_fields_name_the_line(world) -> None:
    body = (
        b'{"prompt": "ok", "response_a": "a", "response_b": "b"}\n'
        b'{"prompt": "", "response_a": "a", "response_b": "b"}\n'
        b'{"prompt": "p", "response_a": "a", "response_b": " "}\n'
        b'{"prompt": "p"}\n'
    )
    with pytest.raises(ValidationError) as exc:
        _create(world, task="pairwise", upload=SimpleUploadedFile("bad.jsonl", body))
    errors = _errors(exc)["upload"]
    assert errors == [
        "Line 2: the field prompt is missing or empty.",
        "Line 3: the field response_b is missing or empty.",
        "Line 4: the fields response_a/response_b, responses or response are missing.",
    ]
    with pytest.raises(ValidationError) as exc:
        _create(world, upload=SimpleUploadedFile("bad.jsonl", b"{not json\n"))
    assert "Line 1 is not valid JSON" in _errors(exc)["upload"][0]
    with pytest.raises(ValidationError) as exc:
        _create(world, upload=SimpleUploadedFile("items.parquet", b"PAR1"))
    assert "JSONL" in _errors(exc)["upload"][0]
    assert not Campaign.objects.exists()


def test_versions_source_starts_empty_and_takes_items_later(world) -> None:
    a, b = model_versions(world.project, 2)
    campaign = _create(
        world,
        task="pairwise",
        source="versions",
        upload=None,
        source_params={"versions": [a.pk, b.pk]},
    )
    assert campaign.status == CampaignStatus.DRAFT and not campaign.items.exists()
    with pytest.raises(ValidationError, match="no items"):
        services.campaign_launch(actor=world.users[Role.MANAGER], campaign=campaign)
    item = {"prompt": "p", "responses": [{"text": "x"}, {"text": "y"}]}
    assert services.items_create(campaign=campaign, items=[item, item]) == 2
    assert services.items_create(campaign=campaign, items=[item]) == 1
    assert list(campaign.items.values_list("index", flat=True)) == [0, 1, 2]
    with pytest.raises(ValidationError, match="exactly 2"):
        services.items_create(
            campaign=campaign, items=[{"prompt": "p", "responses": [{"text": "x"}]}]
        )


# --- edits after launch -----------------------------------------------------------------------


def _submit(campaign, rater, item=None):
    """A submitted judgment of ``rater`` (as the labeling service leaves it)."""
    item = item or campaign.items.first()
    assignment = Assignment.objects.create(
        item=item,
        rater=rater,
        status=AssignmentStatus.SUBMITTED,
        order=[0, 1],
        expires_at=timezone.now() + timedelta(hours=1),
    )
    Judgment.objects.create(assignment=assignment, item=item, rater=rater, value={"choice": "a"})
    item.taken += 1
    item.submitted += 1
    item.save()
    return assignment


def test_safe_edits_after_launch(world) -> None:
    manager = world.users[Role.MANAGER]
    campaign = campaign_with_items(world, overlap=2, raters=extra_raters(world, 3))
    updated = services.campaign_update(
        actor=manager,
        campaign=campaign,
        instructions="New rules.",
        assignment_timeout_seconds=600,
        overlap=3,
    )
    assert (updated.instructions, updated.assignment_timeout_seconds, updated.overlap) == (
        "New rules.",
        600,
        3,
    )
    event = AuditEvent.objects.filter(verb="feedback_campaign.updated").get()
    assert event.changes["overlap"] == [2, 3]


def test_unsafe_edits_after_launch_are_refused_with_the_reason(world) -> None:
    manager = world.users[Role.MANAGER]
    raters = extra_raters(world, 3)
    campaign = campaign_with_items(world, overlap=3, raters=raters)
    for rater in raters[:2]:
        _submit(campaign, rater)
    with pytest.raises(ValidationError) as exc:
        services.campaign_update(
            actor=manager,
            campaign=campaign,
            task="ranking",
            blind=False,
            criteria=["x"],
            overlap=1,
        )
    errors = _errors(exc)
    assert "answer the task they were asked" in errors["task"][0]
    assert "Blind mode cannot change after launch" in errors["blind"][0]
    assert "criteria cannot change after launch" in errors["criteria"][0]
    assert "already has 2 submitted judgments" in errors["overlap"][0]
    campaign.refresh_from_db()
    assert (campaign.overlap, campaign.blind) == (3, True)
    # Down to what is already submitted is fine.
    assert services.campaign_update(actor=manager, campaign=campaign, overlap=2).overlap == 2
    with pytest.raises(ValidationError) as exc:  # more than the raters there are
        services.campaign_update(actor=manager, campaign=campaign, overlap=4)
    assert "fewer raters than its overlap" in _errors(exc)["overlap"][0]


def test_draft_campaign_may_change_blind_and_criteria(world) -> None:
    campaign = campaign_with_items(world, task="rating", launch=False, overlap=1)
    updated = services.campaign_update(
        actor=world.users[Role.MANAGER], campaign=campaign, blind=False, criteria=["tone"]
    )
    assert (updated.blind, updated.criteria) == (False, ["tone"])


def test_raters_added_and_removed(world) -> None:
    manager = world.users[Role.MANAGER]
    raters = extra_raters(world, 3)
    campaign = campaign_with_items(world, overlap=2, raters=raters[:2])
    _submit(campaign, raters[0])
    active = Assignment.objects.create(
        item=campaign.items.last(),
        rater=raters[1],
        order=[1, 0],
        expires_at=timezone.now() + timedelta(hours=1),
    )
    campaign.items.filter(pk=active.item_id).update(taken=1)
    with pytest.raises(ValidationError) as exc:
        services.campaign_set_raters(
            actor=manager, campaign=campaign, raters=[raters[1], raters[2]]
        )
    assert "already submitted judgments" in _errors(exc)["raters"][0]
    services.campaign_set_raters(actor=manager, campaign=campaign, raters=[raters[0], raters[2]])
    assert set(campaign.raters.all()) == {raters[0], raters[2]}
    active.refresh_from_db()
    assert active.status == AssignmentStatus.EXPIRED
    assert campaign.items.get(pk=active.item_id).taken == 0
    with pytest.raises(ValidationError) as exc:
        services.campaign_set_raters(actor=manager, campaign=campaign, raters=[raters[0]])
    assert "fewer raters than its overlap" in _errors(exc)["raters"][0]


def test_launch_and_close(world) -> None:
    manager = world.users[Role.MANAGER]
    campaign = campaign_with_items(world, launch=False)
    launched = services.campaign_launch(actor=manager, campaign=campaign)
    assert launched.status == CampaignStatus.ACTIVE and launched.launched_at
    with pytest.raises(ValidationError, match="Only a draft"):
        services.campaign_launch(actor=manager, campaign=campaign)
    rater = campaign.raters.first()
    active = Assignment.objects.create(
        item=campaign.items.first(),
        rater=rater,
        order=[0, 1],
        expires_at=timezone.now() + timedelta(hours=1),
    )
    campaign.items.filter(pk=active.item_id).update(taken=1)
    closed = services.campaign_close(actor=manager, campaign=campaign)
    assert closed.status == CampaignStatus.CLOSED
    active.refresh_from_db()
    assert active.status == AssignmentStatus.EXPIRED
    with pytest.raises(ValidationError, match="closed"):
        services.campaign_update(actor=manager, campaign=campaign, instructions="x")
    verbs = set(AuditEvent.objects.values_list("verb", flat=True))
    assert {
        "feedback_campaign.created",
        "feedback_campaign.launched",
        "feedback_campaign.closed",
    } <= verbs


# --- API --------------------------------------------------------------------------------------


def test_api_create_with_an_upload_and_launch(world, api) -> None:
    client = api(world.users[Role.MANAGER])
    body = b'{"prompt": "p", "response_a": "a", "response_b": "b"}\n' * 3
    response = client.post(
        "/api/v1/feedback-campaigns/",
        {
            "project": world.project.pk,
            "name": "uploaded",
            "task": "pairwise",
            "source": "upload",
            "raters": json.dumps([world.users[Role.RATER].pk]),
            "upload": SimpleUploadedFile("pairs.jsonl", body),
        },
        format="multipart",
    )
    assert response.status_code == 201, response.content
    data = response.json()
    assert (data["n_items"], data["blind"], data["raters"]) == (
        3,
        True,
        [world.users[Role.RATER].pk],
    )
    response = client.post(f"/api/v1/feedback-campaigns/{data['id']}/launch/")
    assert response.json()["status"] == "active"
    response = client.patch(
        f"/api/v1/feedback-campaigns/{data['id']}/", {"blind": False}, format="json"
    )
    assert response.status_code == 400
    assert "Blind mode cannot change" in json.dumps(response.json())


def test_api_bad_upload_is_a_400_naming_the_line(world, api) -> None:
    response = api(world.users[Role.MANAGER]).post(
        "/api/v1/feedback-campaigns/",
        {
            "project": world.project.pk,
            "name": "bad",
            "task": "rating",
            "source": "upload",
            "raters": "[]",
            "upload": SimpleUploadedFile("x.jsonl", b'{"prompt": "p"}\n'),
        },
        format="multipart",
    )
    assert response.status_code == 400
    assert "Line 1" in json.dumps(response.json())
    assert not Campaign.objects.exists()


def test_api_raters_action(world, api) -> None:
    campaign = campaign_with_items(world, overlap=1, raters=[world.users[Role.RATER]])
    response = api(world.users[Role.MANAGER]).post(
        f"/api/v1/feedback-campaigns/{campaign.pk}/raters/",
        {"raters": [world.users[Role.RATER].pk, world.users[Role.ADMIN].pk]},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert sorted(response.json()["raters"]) == sorted(
        [world.users[Role.RATER].pk, world.users[Role.ADMIN].pk]
    )


def test_api_scoping(world, api) -> None:
    mine = campaign_with_items(world, name="mine")
    others = extra_raters(world, 3)[1:]
    not_mine = campaign_with_items(world, name="not mine", raters=others)
    rater = api(world.users[Role.RATER])
    listed = rater.get("/api/v1/feedback-campaigns/").json()["results"]
    assert [c["id"] for c in listed] == [mine.pk]
    # A rater reads neither the source (it names runs and versions) nor the other raters.
    assert "source_params" not in listed[0] and "raters" not in listed[0]
    assert rater.get(f"/api/v1/feedback-campaigns/{not_mine.pk}/").status_code == 404
    item = mine.items.first()
    assert rater.get(f"/api/v1/feedback-items/{item.pk}/").status_code == 404
    assert rater.get("/api/v1/feedback-items/").json()["results"] == []
    assert rater.get("/api/v1/feedback-judgments/").json()["results"] == []
    assert rater.post(f"/api/v1/feedback-campaigns/{mine.pk}/close/").status_code == 403
    outsider = api(world.outsider)
    assert outsider.get(f"/api/v1/feedback-campaigns/{mine.pk}/").status_code == 404
    assert outsider.get(f"/api/v1/feedback-items/{item.pk}/").status_code == 404
    viewer = api(world.users[Role.VIEWER])
    items = viewer.get(f"/api/v1/feedback-items/?campaign={mine.pk}").json()["results"]
    assert len(items) == 10 and items[0]["responses"][0]["label"]
    full = viewer.get(f"/api/v1/feedback-campaigns/{mine.pk}/").json()
    assert full["source_params"]["versions"] and len(full["raters"]) == 2


def test_api_judgments_filter_by_campaign(world, api) -> None:
    campaign = campaign_with_items(world)
    other = campaign_with_items(world, name="other")
    _submit(campaign, campaign.raters.first())
    _submit(other, other.raters.first())
    manager = api(world.users[Role.MANAGER])
    rows = manager.get(f"/api/v1/feedback-judgments/?campaign={campaign.pk}").json()["results"]
    assert len(rows) == 1 and rows[0]["campaign"] == campaign.pk and rows[0]["order"] == [0, 1]


def test_raters_given_as_text_are_refused(world) -> None:
    with pytest.raises(ValidationError) as exc:
        _create(world, raters="rater")
    assert "list of user ids" in _errors(exc)["raters"][0]


def test_a_refused_update_leaves_the_raters_as_they_were(world) -> None:
    raters = extra_raters(world, 3)
    campaign = campaign_with_items(world, overlap=2, raters=raters[:2])
    with pytest.raises(ValidationError):
        services.campaign_update(
            actor=world.users[Role.MANAGER], campaign=campaign, raters=raters, blind=False
        )
    assert set(campaign.raters.all()) == set(raters[:2])
