"""The Feedback stage pages (Django test client): the Feedback tab (campaigns with progress and
agreement, the new campaign form with every error at once), the manager's campaign page
(statistics, adjudication, AI raters, exports, settings and their refusals), the raters' own
pages (their campaigns only, no project tabs, no model names in blind mode), roles, and the
tab's query count."""

from __future__ import annotations

import itertools
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from evaluation.feedback.models import AIRater, Campaign, FeedbackExport, Item, Judgment
from evaluation.feedback.services.labeling import assignment_next, judgment_submit
from projects.models import Role
from tests.evaluation.feedback.builders import campaign_with_items, extra_raters

pytestmark = pytest.mark.django_db


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _section(html: str, element_id: str) -> str:
    start = html.index(f'id="{element_id}"')
    return html[start : start + 20_000]


def _judge(campaign, raters, choices) -> None:
    """Each rater judges their next item with the choice given for them (as shown)."""
    for rater, choice in zip(raters, choices, strict=True):
        assignment = assignment_next(rater=rater, campaign=campaign)
        judgment_submit(rater=rater, assignment=assignment, value={"choice": choice})


# --- the Feedback tab ----------------------------------------------------------------------------


def test_the_tab_lists_campaigns_with_progress_and_agreement(world) -> None:
    raters = extra_raters(world, 2)
    campaign = campaign_with_items(world, n_items=2, overlap=2, raters=raters, name="Support A/B")
    client = _client(world.users["manager"])
    url = f"/projects/{world.project.pk}/feedback/"
    # The fair queue gives each rater a different item first: no pair to compare yet.
    _judge(campaign, raters, ["tie", "tie"])
    row = _section(client.get(url).content.decode(), "campaigns")
    assert "Support A/B" in row and f'data-campaign="{campaign.pk}"' in row
    assert "data-progress>50% · 2 judgments" in row
    assert re.search(r"data-agreement><span class=\"muted\">", row)
    # Then the other item each ("tie" does not depend on the order shown): item 0 gets tie and
    # both bad, item 1 tie twice: one pair of two agrees.
    _judge(campaign, raters, ["tie", "both_bad"])
    html = client.get(url).content.decode()
    row = _section(html, "campaigns")
    assert "data-progress>100% · 4 judgments" in row
    assert "data-agreement>50%" in row
    assert 'id="new-campaign"' in html and 'data-show-when="source=evaluation"' in html
    # Every labeling member is offered as a rater; the engineer and the viewer may not label.
    form = _section(html, "new-campaign")
    assert "rater (rater)" in form and "manager (manager)" in form
    assert "engineer (" not in form and "viewer (" not in form


def test_the_tab_query_count_does_not_grow_with_campaigns(world) -> None:
    client = _client(world.users["manager"])
    url = f"/projects/{world.project.pk}/feedback/"
    campaign_with_items(world, n_items=2)
    client.get(url)  # warm caches (content types, sessions)
    with CaptureQueriesContext(connection) as one:
        assert client.get(url).status_code == 200
    for _ in range(3):
        campaign_with_items(world, n_items=2)
    with CaptureQueriesContext(connection) as four:
        assert client.get(url).status_code == 200
    assert len(four) == len(one), [q["sql"] for q in four.captured_queries]


def test_the_new_campaign_form_shows_every_error_at_once(world) -> None:
    client = _client(world.users["manager"])
    url = f"/projects/{world.project.pk}/feedback/campaigns/new/"
    response = client.post(
        url,
        {
            "name": "",
            "task": "rating",
            "criteria": "",
            "source": "upload",
            "overlap": "0",
            "assignment_timeout_seconds": "5",
        },
    )
    assert response.status_code == 200
    form = response.context["form"]
    assert {"name", "criteria", "upload", "overlap", "assignment_timeout_seconds"} <= set(
        form.errors
    ), form.errors
    assert not Campaign.objects.exists()
    # The service's own refusals come next to their fields too: fewer raters than the overlap.
    response = client.post(
        url,
        {
            "name": "Too few",
            "task": "pairwise",
            "source": "upload",
            "upload": SimpleUploadedFile(
                "items.jsonl", b'{"prompt": "p", "response_a": "x", "response_b": "y"}\n'
            ),
            "raters": [str(world.users["rater"].pk)],
            "overlap": "2",
            "blind": "on",
            "assignment_timeout_seconds": "600",
        },
    )
    assert response.status_code == 200
    assert "fewer raters than its overlap" in " ".join(response.context["form"].errors["raters"])
    assert not Campaign.objects.exists()


def test_a_manager_creates_a_campaign_from_a_file_then_launches_it(world) -> None:
    client = _client(world.users["manager"])
    raters = extra_raters(world, 2)
    lines = b"".join(
        b'{"prompt": "q%d", "response_a": "a%d", "response_b": "b%d"}\n' % (i, i, i)
        for i in range(4)
    )
    response = client.post(
        f"/projects/{world.project.pk}/feedback/campaigns/new/",
        {
            "name": "Uploaded",
            "task": "pairwise",
            "instructions": "Prefer the helpful answer.",
            "source": "upload",
            "upload": SimpleUploadedFile("items.jsonl", lines),
            "raters": [str(u.pk) for u in raters],
            "overlap": "2",
            "blind": "on",
            "assignment_timeout_seconds": "600",
        },
    )
    campaign = Campaign.objects.get(name="Uploaded")
    assert response.status_code == 302 and response["Location"] == (
        f"/feedback/campaigns/{campaign.pk}/"
    )
    assert campaign.items.count() == 4 and campaign.status == "draft" and campaign.blind
    assert {r.pk for r in campaign.raters.all()} == {u.pk for u in raters}
    page = client.get(response["Location"]).content.decode()
    assert 'id="launch"' in page
    assert client.post(f"/feedback/campaigns/{campaign.pk}/launch/").status_code == 302
    campaign.refresh_from_db()
    assert campaign.status == "active"


# --- the campaign page ---------------------------------------------------------------------------


def test_the_campaign_page_shows_progress_agreement_models_and_disagreements(world) -> None:
    raters = extra_raters(world, 2)
    campaign = campaign_with_items(world, n_items=1, overlap=2, raters=raters, blind=False)
    _judge(campaign, raters, ["tie", "both_bad"])  # item 0: no majority
    client = _client(world.users["manager"])
    html = client.get(f"/feedback/campaigns/{campaign.pk}/").content.decode()
    progress = _section(html, "rater-progress")
    for rater in raters:
        assert f'data-rater="{rater.username}"' in progress
    assert "Krippendorff" in _section(html, "agreement")
    assert 'data-figure="fig-progress"' in html and 'id="fig-agreement"' in html
    disagreements = _section(html, "disagreements")
    item = Item.objects.get(campaign=campaign, index=0)
    assert f'data-item="{item.pk}"' in disagreements and "no majority" in disagreements
    # Adjudicated: recorded as THE label, shown as such.
    response = client.post(
        f"/feedback/campaigns/{campaign.pk}/adjudicate/", {"item": item.pk, "choice": "b"}
    )
    assert response.status_code == 302
    item.refresh_from_db()
    assert item.adjudicated["value"]["choice"] == "b"
    html = client.get(f"/feedback/campaigns/{campaign.pk}/").content.decode()
    assert "adjudicated" in _section(html, "disagreements")


def test_settings_changes_are_saved_or_refused_with_the_reason(world) -> None:
    raters = extra_raters(world, 3)
    campaign = campaign_with_items(world, n_items=1, overlap=2, raters=raters)
    _judge(campaign, raters[:2], ["tie", "tie"])  # the item has its two judgments
    client = _client(world.users["manager"])
    url = f"/feedback/campaigns/{campaign.pk}/settings/"
    base = {
        "instructions": "New instructions.",
        "raters": [str(u.pk) for u in raters],
        "overlap": "2",
        "assignment_timeout_seconds": "900",
    }
    assert client.post(url, base).status_code == 302
    campaign.refresh_from_db()
    assert campaign.instructions == "New instructions."
    assert campaign.assignment_timeout_seconds == 900
    # Lowering the overlap under what an item already has submitted is refused, with why.
    response = client.post(url, {**base, "overlap": "1"})
    assert response.status_code == 200
    assert response.context["settings_form"].errors, "the refusal is shown on the form"
    assert 'id="settings" open' in response.content.decode()
    campaign.refresh_from_db()
    assert campaign.overlap == 2


def test_ai_raters_and_exports_from_the_page(world) -> None:
    campaign = campaign_with_items(world, n_items=2, overlap=2)
    client = _client(world.users["manager"])
    response = client.post(
        f"/feedback/campaigns/{campaign.pk}/ai-raters/new/",
        {"name": "", "via": "url", "base_url": "", "model": "", "judging_prompt": "Judge."},
    )
    assert response.status_code == 200
    assert {"name", "base_url", "model"} <= set(response.context["ai_rater_form"].errors)
    response = client.post(
        f"/feedback/campaigns/{campaign.pk}/ai-raters/new/",
        {
            "name": "Judge",
            "via": "url",
            "base_url": "http://127.0.0.1:9/v1",
            "model": "judge-model",
            "api_key": "sk-secret",
            "judging_prompt": "Judge {prompt}: {responses}",
        },
    )
    assert response.status_code == 302, response.context["ai_rater_form"].errors
    ai_rater = AIRater.objects.get(campaign=campaign)
    html = client.get(f"/feedback/campaigns/{campaign.pk}/").content.decode()
    assert f'data-ai-rater="{ai_rater.pk}"' in _section(html, "ai-raters")
    assert "sk-secret" not in html
    export_url = f"/feedback/campaigns/{campaign.pk}/export/"
    # Nothing judged yet: refused, with the reason on the page.
    response = client.post(export_url, {"format": "preference"})
    assert response.status_code == 200
    assert "no judgments yet" in str(response.context["export_form"].non_field_errors())
    assert not FeedbackExport.objects.exists()
    raters = list(campaign.raters.all())
    _judge(campaign, raters[:1], ["a"])
    response = client.post(export_url, {"format": "preference"})
    assert response.status_code == 302
    export = FeedbackExport.objects.get(campaign=campaign)
    html = client.get(f"/feedback/campaigns/{campaign.pk}/").content.decode()
    assert f'data-export="{export.pk}"' in _section(html, "exports")
    assert 'data-job-url="/api/v1/feedback-exports/' in _section(html, "exports")


# --- roles and the raters' pages ----------------------------------------------------------------


def test_roles_raters_see_only_their_campaigns_and_outsiders_nothing(world) -> None:
    mine = campaign_with_items(world, n_items=2, overlap=1, raters=[world.users["rater"]])
    other_rater = extra_raters(world, 2, prefix="other")[1]
    theirs = campaign_with_items(world, n_items=2, overlap=1, raters=[other_rater], name="Theirs")
    rater = _client(world.users["rater"])
    for url in (
        f"/projects/{world.project.pk}/feedback/",
        f"/feedback/campaigns/{mine.pk}/",
        f"/feedback/campaigns/{theirs.pk}/",
        f"/feedback/campaigns/{theirs.pk}/rate/",
    ):
        assert rater.get(url).status_code == 404, url
    for url, data in (
        (f"/feedback/campaigns/{mine.pk}/launch/", {}),
        (f"/feedback/campaigns/{mine.pk}/close/", {}),
        (f"/feedback/campaigns/{mine.pk}/export/", {"format": "preference"}),
        (f"/projects/{world.project.pk}/feedback/campaigns/new/", {"name": "x"}),
    ):
        assert rater.post(url, data).status_code == 404, url
    listed = rater.get("/feedback/").content.decode()
    assert mine.name in listed and "Theirs" not in listed
    screen = rater.get(f"/feedback/campaigns/{mine.pk}/rate/")
    assert screen.status_code == 200
    html = screen.content.decode()
    # No project tabs, nothing of the project's work on the rater's screen.
    assert 'class="stages"' not in html and "/deploy/" not in html
    assert 'data-next-url="/api/v1/feedback-labeling/' in html
    # The outsider: nothing at all.
    outsider = _client(world.outsider)
    for url in (
        f"/projects/{world.project.pk}/feedback/",
        f"/feedback/campaigns/{mine.pk}/",
        f"/feedback/campaigns/{mine.pk}/rate/",
    ):
        assert outsider.get(url).status_code == 404, url
    assert mine.name not in outsider.get("/feedback/").content.decode()
    # An engineer sees the work but changes nothing; a manager sees every campaign.
    engineer = _client(world.users["engineer"])
    assert engineer.get(f"/feedback/campaigns/{mine.pk}/").status_code == 200
    page = engineer.get(f"/projects/{world.project.pk}/feedback/").content.decode()
    assert 'id="new-campaign"' not in page
    assert engineer.post(f"/feedback/campaigns/{mine.pk}/close/").status_code == 403
    manager_page = _client(world.users["manager"]).get(f"/projects/{world.project.pk}/feedback/")
    assert mine.name in manager_page.content.decode() and "Theirs" in manager_page.content.decode()


def test_the_blind_rater_screen_names_no_model(world) -> None:
    campaign = campaign_with_items(world, n_items=2, overlap=1, raters=[world.users["rater"]])
    # Response texts of their own (the builder's name their model), the labels kept.
    for item in campaign.items.all():
        for k, response in enumerate(item.responses):
            response["text"] = f"Reply {k} to item {item.index}."
        item.save(update_fields=["responses"])
    labels = {r["label"] for item in campaign.items.all() for r in item.responses if r.get("label")}
    assert labels
    names = {"falcon-support", "heron-support"}
    client = _client(world.users["rater"])
    html = client.get(f"/feedback/campaigns/{campaign.pk}/rate/").content.decode()
    # What the script loads too: the item as the API gives it to this rater.
    answer = client.post(f"/api/v1/feedback-labeling/{campaign.pk}/next/").content.decode()
    for text in (html, answer):
        for name in labels | names:
            assert name not in text, name
        assert "model_version" not in text
    assert "Reply 0 to item" in answer  # the responses themselves are there
    assert Judgment.objects.count() == 0


def test_the_nav_offers_my_campaigns(world) -> None:
    html = _client(world.users[Role.RATER]).get("/").content.decode()
    assert 'href="/feedback/"' in html


def test_a_campaign_of_generations_is_made_with_its_job_or_not_at_all(world) -> None:
    from evaluation.feedback.models import GenerationJob
    from tests.evaluation.feedback.builders import model_versions

    first, second = model_versions(world.project, 2)
    raters = extra_raters(world, 2)
    client = _client(world.users["manager"])
    data = {
        "name": "v1 against v2",
        "task": "pairwise",
        "source": "versions",
        "versions": [str(first.pk), str(second.pk)],
        "prompts": "How do I reset my password?\nWhere is my invoice?",
        "max_tokens": "32",
        "raters": [str(u.pk) for u in raters],
        "overlap": "2",
        "blind": "on",
        "assignment_timeout_seconds": "600",
    }
    # The versions have no tokenizer files: the generation is refused next to the versions,
    # and the campaign is not left behind empty.
    response = client.post(f"/projects/{world.project.pk}/feedback/campaigns/new/", data)
    assert response.status_code == 200
    assert "no tokenizer files" in " ".join(response.context["form"].errors["versions"])
    assert not Campaign.objects.exists() and not GenerationJob.objects.exists()
    for version in (first, second):
        version.files = ["tokenizer.json", "model.safetensors"]
        version.save(update_fields=["files"])
    response = client.post(f"/projects/{world.project.pk}/feedback/campaigns/new/", data)
    assert response.status_code == 302
    campaign = Campaign.objects.get(name="v1 against v2")
    job = GenerationJob.objects.get(campaign=campaign)
    assert job.version_ids == [first.pk, second.pk] and len(job.prompts) == 2
    html = client.get(response["Location"]).content.decode()
    assert f'data-generation="{job.pk}"' in html and 'data-job-url="/api/v1/feedback-gen' in html


def _project_routes(project_pk: int) -> list[tuple[str, str]]:
    """``(name, url)`` of every page route under ``projects/<pk>/``, read from the URL conf
    (a page added later is walked too), other ids filled with 1 and a stage with one that has
    no page of its own."""
    from django.urls import URLPattern

    from frontend import urls
    from frontend.views.helpers import PROJECT_PAGES_PREFIX

    routes = []
    for pattern in urls.urlpatterns:
        route = str(pattern.pattern)
        if not isinstance(pattern, URLPattern) or not route.startswith(PROJECT_PAGES_PREFIX):
            continue
        url = "/" + route
        for name in pattern.pattern.converters:
            value = project_pk if name == "pk" else "monitor" if name == "stage" else 1
            url = re.sub(rf"<\w+:{name}>", str(value), url)
        routes.append((pattern.name, url))
    return routes


def test_a_rater_gets_nothing_of_the_project_on_any_project_page(world) -> None:
    from projects.models import AuditEvent

    project = world.project
    project.description = "The team's secret plan for the triage model."
    project.save(update_fields=["description"])
    rater = _client(world.users["rater"])
    routes = _project_routes(project.pk)
    assert len(routes) > 20 and "project-detail" in dict(routes), routes
    events = AuditEvent.objects.count()
    for name, url in routes:
        for method in ("get", "post"):
            response = getattr(rater, method)(url, {"name": "x"} if method == "post" else None)
            html = response.content.decode()
            if name == "project-detail" and method == "get":
                # The project's own page sends the rater to their campaigns in it.
                assert response.status_code == 302, url
                assert response["Location"] == f"/feedback/?project={project.pk}"
            else:
                assert response.status_code == 404, (method, url, response.status_code)
            assert "secret plan" not in html and 'class="stages"' not in html, (method, url)
    assert AuditEvent.objects.count() == events  # nothing was done either
    # The other roles still get the pages (a viewer sees the work).
    viewer = _client(world.users["viewer"])
    for url in (f"/projects/{project.pk}/", f"/projects/{project.pk}/data/"):
        assert viewer.get(url).status_code == 200, url


def test_a_rater_lands_on_their_campaigns_in_the_project(world) -> None:
    from tests.factories import ProjectFactory

    rater = world.users["rater"]
    here = campaign_with_items(world, n_items=1, overlap=1, raters=[rater], name="Rate here")
    elsewhere = ProjectFactory(team=world.team, name="Billing bot", slug="billing")
    world.project, original = elsewhere, world.project
    campaign_with_items(world, n_items=1, overlap=1, raters=[rater], name="Rate there")
    world.project = original
    client = _client(rater)
    response = client.get(f"/projects/{original.pk}/", follow=True)
    assert response.redirect_chain == [(f"/feedback/?project={original.pk}", 302)]
    html = response.content.decode()
    assert "My campaigns in Support triage" in html
    assert f'data-campaign="{here.pk}"' in html and "Rate there" not in html
    assert 'class="stages"' not in html
    # The dashboard leads the rater straight there, without the goals of a project they rate.
    dashboard = client.get("/").content.decode()
    assert f'href="/feedback/?project={original.pk}"' in dashboard
    assert f'href="/projects/{original.pk}/"' not in dashboard
    # Another team's project is a 404, as everywhere.
    assert client.get(f"/feedback/?project={world.other_project.pk}").status_code == 404
    assert client.get("/feedback/?project=nope").status_code == 404
    # A manager's project page is the project page.
    manager = _client(world.users["manager"])
    assert 'class="stages"' in manager.get(f"/projects/{original.pk}/").content.decode()


@pytest.mark.parametrize("task", ["ranking", "rating", "correction"])
def test_every_task_has_its_pages(world, task) -> None:
    campaign = campaign_with_items(world, task=task, n_items=2, overlap=2)
    manager = _client(world.users["manager"])
    html = manager.get(f"/feedback/campaigns/{campaign.pk}/").content.decode()
    assert 'id="disagreements"' in html and 'id="settings"' in html
    screen = _client(world.users["rater"]).get(f"/feedback/campaigns/{campaign.pk}/rate/")
    assert screen.status_code == 200 and f'data-task="{task}"' in screen.content.decode()


# --- the tab's raw agreement: one aggregate query -------------------------------------------------


def _bulk_judgments(campaign, raters, value_for) -> int:
    """Submitted assignments and judgments of every rater on every item, written in bulk (the
    figures only read them): ``value_for(item_index, rater_index)`` gives each value."""
    from datetime import timedelta

    from django.utils import timezone

    from evaluation.feedback.models import Assignment, AssignmentStatus

    now = timezone.now()
    items = list(campaign.items.order_by("index"))
    assignments = Assignment.objects.bulk_create(
        Assignment(
            item=item,
            rater=rater,
            status=AssignmentStatus.SUBMITTED,
            order=list(range(len(item.responses))),
            expires_at=now + timedelta(hours=1),
        )
        for item in items
        for rater in raters
    )
    Judgment.objects.bulk_create(
        Judgment(
            assignment=assignment,
            item=assignment.item,
            rater=assignment.rater,
            value=value_for(assignment.item.index, raters.index(assignment.rater)),
        )
        for assignment in assignments
    )
    Item.objects.filter(campaign=campaign).update(taken=len(raters), submitted=len(raters))
    return len(assignments)


def test_raw_agreement_is_one_query_and_matches_hand_counts(world) -> None:
    from frontend.selectors import raw_agreement

    raters = extra_raters(world, 3)
    ranking = campaign_with_items(world, task="ranking", n_items=2, overlap=3, raters=raters)
    # Item 0: tops 0, 0, 1 (one agreeing pair of three); item 1: tops 2, 2, 2 (three of three).
    tops = {0: [0, 0, 1], 1: [2, 2, 2]}
    _bulk_judgments(
        ranking,
        raters,
        lambda i, r: {"ranking": [tops[i][r], *[p for p in range(3) if p != tops[i][r]]]},
    )
    rating = campaign_with_items(
        world, task="rating", n_items=1, overlap=3, raters=raters, criteria=["tone", "facts"]
    )
    # The same ratings twice, a different one once: one pair of three agrees.
    scores = [{"tone": 4, "facts": 5}, {"tone": 4, "facts": 5}, {"tone": 4, "facts": 4}]
    _bulk_judgments(rating, raters, lambda i, r: {"ratings": [scores[r]]})
    correction = campaign_with_items(world, task="correction", n_items=1, overlap=3, raters=raters)
    _bulk_judgments(correction, raters, lambda i, r: {"response": 0, "text": f"fixed {r}"})
    empty = campaign_with_items(world, n_items=1, overlap=2)
    # A withdrawn judgment never counts: item 1's third rater withdraws, two pairs fewer.
    Judgment.objects.filter(item__campaign=ranking, item__index=1, rater=raters[2]).update(
        withdrawn_at="2026-01-01T00:00:00Z"
    )
    campaigns = [ranking, rating, correction, empty]
    with CaptureQueriesContext(connection) as queries:
        result = raw_agreement(campaigns, world.users["manager"])
    assert len(queries) == 1
    assert result[ranking.pk] == pytest.approx((1 + 1) / (3 + 1))
    assert result[rating.pk] == pytest.approx(1 / 3)
    assert result[correction.pk] is None and result[empty.pk] is None
    # Raters see no judgments: nothing is counted for them.
    assert raw_agreement(campaigns, raters[0])[ranking.pk] is None


def test_the_tab_query_count_does_not_grow_with_judgments(world) -> None:
    raters = extra_raters(world, 3)
    few = campaign_with_items(world, n_items=2, overlap=3, raters=raters)
    _bulk_judgments(few, raters, lambda i, r: {"choice": "a" if r else "b", "reason": ""})
    client = _client(world.users["manager"])
    url = f"/projects/{world.project.pk}/feedback/"
    client.get(url)  # warm caches (content types, sessions)
    with CaptureQueriesContext(connection) as one:
        assert client.get(url).status_code == 200
    many = campaign_with_items(world, n_items=600, overlap=3, raters=raters)
    _bulk_judgments(
        many, raters, lambda i, r: {"choice": "a" if (i + r) % 3 else "b", "reason": ""}
    )
    few.delete()
    with CaptureQueriesContext(connection) as lots:
        html = client.get(url).content.decode()
    assert len(lots) == len(one), [q["sql"] for q in lots.captured_queries]
    # 600 items of three judgments: each item has two "a" and one "b", one pair of three agrees.
    assert "data-agreement>33%" in _section(html, "campaigns")
    # No query reads the judgments' rows: the agreement is summed in the database.
    assert not any(
        '"evaluation_judgment"."value"' in q["sql"] and "SUM(" not in q["sql"]
        for q in lots.captured_queries
    )


# --- adjudication: the task's own inputs, one validator, every error at once --------------------


def test_adjudicating_a_ranking_with_a_select_per_place(world) -> None:
    raters = extra_raters(world, 2)
    campaign = campaign_with_items(world, task="ranking", n_items=1, overlap=2, raters=raters)
    # Two raters, two different top choices: no majority.
    tops = [[0, 1, 2], [2, 1, 0]]
    _bulk_judgments(campaign, raters, lambda i, r: {"ranking": tops[r]})
    item = campaign.items.get()
    client = _client(world.users["manager"])
    url = f"/feedback/campaigns/{campaign.pk}/adjudicate/"
    row = _section(
        client.get(f"/feedback/campaigns/{campaign.pk}/").content.decode(), "disagreements"
    )
    assert f'data-adjudicate="{item.pk}"' in row
    for place in (1, 2, 3):
        assert f'name="rank_{place}"' in row
    assert "Response 3" in row and "value_json" not in row
    # A place left empty and a value that is no response: both said at once, nothing stored.
    response = client.post(url, {"item": item.pk, "rank_1": "2", "rank_2": "7"})
    assert response.status_code == 200
    errors = response.context["adjudicate_form"].errors
    assert {"rank_2", "rank_3"} <= set(errors), errors
    html = response.content.decode()
    assert html.count('class="errors"') >= 2 and f'data-adjudicate="{item.pk}"' in html
    # Every input there, one response twice: the service's validator refuses it, in the row.
    response = client.post(url, {"item": item.pk, "rank_1": "2", "rank_2": "2", "rank_3": "1"})
    assert response.status_code == 200
    assert "name each position once" in str(response.context["adjudicate_form"].non_field_errors())
    item.refresh_from_db()
    assert item.adjudicated is None
    response = client.post(url, {"item": item.pk, "rank_1": "2", "rank_2": "3", "rank_3": "1"})
    assert response.status_code == 302
    item.refresh_from_db()
    assert item.adjudicated["value"] == {"ranking": [1, 2, 0]}
    # The adjudicated ranking fills the selects when the page shows the row again.
    row = _section(
        client.get(f"/feedback/campaigns/{campaign.pk}/").content.decode(), "disagreements"
    )
    form = row[row.index(f'data-adjudicate="{item.pk}"') :]
    chosen = re.findall(r'name="rank_(\d)"[^>]*>.*?<option value="(\d)" selected>', form, re.S)
    assert chosen == [("1", "2"), ("2", "3"), ("3", "1")], chosen


def test_adjudicating_ratings_with_a_number_per_criterion_and_response(world) -> None:
    raters = extra_raters(world, 2)
    campaign = campaign_with_items(
        world,
        task="rating",
        n_items=1,
        overlap=2,
        raters=raters,
        criteria=["tone", "facts"],
        responses=2,
    )
    scores = [
        [{"tone": 1, "facts": 2}, {"tone": 3, "facts": 3}],
        [{"tone": 5, "facts": 2}, {"tone": 3, "facts": 3}],
    ]
    _bulk_judgments(campaign, raters, lambda i, r: {"ratings": scores[r]})
    item = campaign.items.get()
    client = _client(world.users["manager"])
    row = _section(
        client.get(f"/feedback/campaigns/{campaign.pk}/").content.decode(), "disagreements"
    )
    for name in ("rating_1_tone", "rating_1_facts", "rating_2_tone", "rating_2_facts"):
        assert f'name="{name}"' in row, name
    url = f"/feedback/campaigns/{campaign.pk}/adjudicate/"
    response = client.post(
        url,
        {"item": item.pk, "rating_1_tone": "9", "rating_1_facts": "0", "rating_2_tone": "3"},
    )
    assert response.status_code == 200
    errors = response.context["adjudicate_form"].errors
    assert {"rating_1_tone", "rating_1_facts", "rating_2_facts"} == set(errors), errors
    assert "less than or equal to 5" in errors["rating_1_tone"][0]
    item.refresh_from_db()
    assert item.adjudicated is None
    response = client.post(
        url,
        {
            "item": item.pk,
            "rating_1_tone": "3",
            "rating_1_facts": "2",
            "rating_2_tone": "3",
            "rating_2_facts": "4",
        },
    )
    assert response.status_code == 302
    item.refresh_from_db()
    assert item.adjudicated["value"] == {
        "ratings": [{"tone": 3, "facts": 2}, {"tone": 3, "facts": 4}]
    }


def test_adjudicating_a_correction_with_a_textarea(world) -> None:
    campaign = campaign_with_items(world, task="correction", n_items=1, overlap=2)
    item = campaign.items.get()
    client = _client(world.users["manager"])
    url = f"/feedback/campaigns/{campaign.pk}/adjudicate/"
    # Blank text passes the form (it is text) and is refused by the validator, with its reason.
    response = client.post(url, {"item": item.pk, "text": "   "})
    assert response.status_code == 200
    assert "not empty" in response.content.decode()
    assert 'id="adjudicate-errors"' in response.content.decode()
    response = client.post(url, {"item": item.pk, "text": "Open Settings, then Reset."})
    assert response.status_code == 302
    item.refresh_from_db()
    assert item.adjudicated["value"] == {"response": 0, "text": "Open Settings, then Reset."}
    # An item of another campaign (or no item) is refused, not adjudicated.
    other = campaign_with_items(world, task="correction", n_items=1, overlap=2).items.get()
    for raw in (other.pk, "", "1" * 40):
        response = client.post(url, {"item": raw, "text": "x"})
        assert response.status_code == 200
        assert "not in this campaign" in response.content.decode(), raw
    other.refresh_from_db()
    assert other.adjudicated is None


# --- the project page's feedback loop -------------------------------------------------------------


_loops = itertools.count(1)


def _loop(world, *, campaigns: int = 1):
    """v1 served, a blind pairwise campaign of v1 against v2 with its judgments, its export as a
    dataset version and a DPO job trained on it (its version registered): the issue's loop.
    ``campaigns`` more campaigns, exports and jobs add rows, not queries."""
    from datasets_app.models import DatasetVersion
    from serving.models import Endpoint
    from tests.api.objects import build
    from training.models import ModelVersion, TrainingJob

    raters = extra_raters(world, 3)
    # Item 0: a, b, b; item 1: b, b, tie: the newer (response B) wins 4, loses 1, ties 1.
    choices = {0: ["a", "b", "b"], 1: ["b", "b", "tie"]}
    made = []
    for _ in range(campaigns):
        campaign = campaign_with_items(
            world, n_items=2, overlap=3, raters=raters, name=f"v1 against v2 #{next(_loops)}"
        )
        older, newer = (r["model_version_id"] for r in campaign.items.first().responses)
        _bulk_judgments(campaign, raters, lambda i, r: {"choice": choices[i][r], "reason": ""})
        data = build(DatasetVersion, world)
        export = build(
            FeedbackExport,
            world,
            campaign=campaign,
            status="succeeded",
            dataset_version=data,
            format="preference",
            rows=6,
        )
        trained = build(ModelVersion, world, task_kind="dpo", dataset_version=data)
        job = build(
            TrainingJob,
            world,
            kind="dpo",
            name=f"dpo on {campaign.name}",
            status="succeeded",
            train_version=data,
            model_version=trained,
        )
        made.append((campaign, export, job, trained))
    served = ModelVersion.objects.get(pk=older)
    endpoint = build(Endpoint, world, name="Support bot", version=served, canary_version=None)
    return {"made": made, "older": older, "newer": newer, "endpoint": endpoint}


def test_the_project_page_shows_the_feedback_loop(world) -> None:
    loop = _loop(world)
    campaign, export, job, trained = loop["made"][0]
    client = _client(world.users["viewer"])
    html = client.get(f"/projects/{world.project.pk}/").content.decode()
    panel = _section(html, "feedback-loop")
    served = panel[panel.index('data-loop="served"') :]
    assert f'href="/model-versions/{loop["older"]}/"' in served.split("</dd>")[0]
    assert f'href="/deploy/endpoints/{loop["endpoint"].pk}/"' in served
    assert f'data-campaign="{campaign.pk}"' in panel and "6 judgments" in panel
    assert f'data-export="{export.pk}"' in panel
    assert f'href="/versions/{export.dataset_version_id}/"' in panel
    trained_row = panel[panel.index(f'data-trained="{job.pk}"') :]
    assert f'href="/model-versions/{trained.pk}/"' in trained_row.split("</div>")[0]
    # The newer version's win rate over the older one: (4 + 1/2) / 6.
    win = panel[panel.index('data-loop="win-rate"') :].split("</dd>")[0]
    assert "data-win-rate>75%" in win and "4 won, 1 lost, 1 tied" in win
    newer = training_version_label(loop["newer"])
    older = training_version_label(loop["older"])
    assert win.index(newer) < win.index(" over ") < win.index(older)
    # Adjudicated: an item's label replaces its raters' (item 0 becomes b, b, b).
    item = campaign.items.get(index=0)
    item.adjudicated = {"value": {"choice": "b", "reason": ""}, "by": None, "at": ""}
    item.save(update_fields=["adjudicated"])
    html = client.get(f"/projects/{world.project.pk}/").content.decode()
    assert "5 won, 0 lost, 1 tied" in _section(html, "feedback-loop")


def training_version_label(pk: int) -> str:
    from training.models import ModelVersion

    return str(ModelVersion.objects.select_related("registered_model").get(pk=pk))


def test_the_feedback_loop_is_a_one_line_hint_when_empty(world) -> None:
    html = _client(world.users["viewer"]).get(f"/projects/{world.project.pk}/").content.decode()
    panel = _section(html, "feedback-loop")
    panel = panel[: panel.index("</div>\n", panel.index("data-loop-hint"))]
    assert "data-loop-hint" in panel and 'data-loop="served"' not in panel


def test_the_feedback_loop_reads_a_fixed_number_of_queries(world) -> None:
    from frontend.selectors import feedback_loop

    _loop(world)
    manager = world.users["manager"]
    client = _client(manager)
    url = f"/projects/{world.project.pk}/"
    client.get(url)  # warm caches (content types, sessions)
    with CaptureQueriesContext(connection) as queries:
        loop = feedback_loop(manager, world.project)
    # Endpoints, campaigns, exports, their training jobs, the pairwise counts, their versions.
    assert len(queries) == 6, [q["sql"] for q in queries.captured_queries]
    assert loop["win_rate"]["games"] == 6
    with CaptureQueriesContext(connection) as one:
        assert client.get(url).status_code == 200
    _loop(world, campaigns=3)
    with CaptureQueriesContext(connection) as more:
        assert client.get(url).status_code == 200
    assert len(more) == len(one), [q["sql"] for q in more.captured_queries]
