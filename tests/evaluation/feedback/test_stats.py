"""The manager's statistics on hand-built campaigns with known answers, in a fixed number of
queries, and through the API (managers yes, raters 404)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from evaluation.feedback.models import AIRater, Assignment, AssignmentStatus, Judgment
from evaluation.feedback.stats import campaign_stats
from evaluation.metrics import agreement
from projects.models import Role
from tests.evaluation.feedback.builders import campaign_with_items, extra_raters

pytestmark = pytest.mark.django_db

# Stored choices (a = responses[0], by falcon; b = responses[1], by heron) of three raters on
# six items; the third rater mostly disagrees with the other two.
CHOICES = [
    ("a", "a", "b"),
    ("a", "a", "b"),
    ("b", "b", "b"),
    ("a", "b", "tie"),  # no majority: in disagreement
    ("a", "a", "b"),
    ("b", "b", "a"),
]
AI_CHOICES = ["a", "a", "b", "a", "a", "a"]
# Rater 1 always saw falcon first, rater 2 heron first, rater 3 falcon first.
ORDERS = ([0, 1], [1, 0], [0, 1])


def _judge(item, *, value, rater=None, ai_rater=None, order=(0, 1), seconds=None, **extra):
    now = timezone.now()
    assignment = Assignment.objects.create(
        item=item,
        rater=rater,
        ai_rater=ai_rater,
        status=extra.pop("status", AssignmentStatus.SUBMITTED),
        order=list(order),
        expires_at=now + timedelta(hours=1),
    )
    return Judgment.objects.create(
        assignment=assignment,
        item=item,
        rater=rater,
        ai_rater=ai_rater,
        value=value,
        seconds_spent=seconds,
        **extra,
    )


def _pairwise_campaign(world, *, n_items=7, choices=CHOICES):
    raters = extra_raters(world, 3)
    campaign = campaign_with_items(world, n_items=n_items, overlap=3, raters=raters)
    items = list(campaign.items.order_by("index"))
    for item, row in zip(items, choices, strict=False):
        for r, choice in enumerate(row):
            _judge(
                item,
                rater=raters[r],
                value={"choice": choice, "reason": ""},
                order=ORDERS[r],
                seconds=10.0 * (item.index + 1) if r == 0 else None,
            )
    return campaign, raters, items


def test_pairwise_campaign_stats(world) -> None:
    campaign, raters, items = _pairwise_campaign(world)
    r1, r2, r3 = raters
    # The 7th item: r1 skipped it, r2 holds it, r3 answered and withdrew (never counted).
    spare = items[6]
    now = timezone.now()
    Assignment.objects.create(
        item=spare, rater=r1, status=AssignmentStatus.SKIPPED, expires_at=now, skip_reason="x"
    )
    Assignment.objects.create(item=spare, rater=r2, expires_at=now + timedelta(hours=1))
    _judge(
        spare,
        rater=r3,
        value={"choice": "a", "reason": ""},
        status=AssignmentStatus.ACTIVE,
        withdrawn_at=now,
    )
    # Item 3 adjudicated "b": its label wherever an item's label counts.
    items[3].adjudicated = {"value": {"choice": "b", "reason": ""}, "by": 1, "at": now.isoformat()}
    items[3].save()
    judge = AIRater.objects.create(campaign=campaign, name="judge", judging_prompt="Which?")
    for item, choice in zip(items, AI_CHOICES, strict=False):
        _judge(item, ai_rater=judge, value={"choice": choice, "reason": ""}, order=(1, 0))

    stats = campaign_stats(campaign)

    progress = {row["id"]: row for row in stats["progress"]["raters"]}
    assert (progress[r1.pk]["submitted"], progress[r1.pk]["skipped"]) == (6, 1)
    assert progress[r1.pk]["median_seconds"] == 35.0  # 10, 20, ..., 60
    assert (progress[r2.pk]["active"], progress[r2.pk]["assigned"]) == (1, 7)
    assert progress[r3.pk]["submitted"] == 6  # the withdrawn one does not count
    assert progress[r3.pk]["median_seconds"] is None
    overall = stats["progress"]["overall"]
    assert overall["items"] == 7 and overall["items_complete"] == 6
    assert overall["judgments"] == 18 and overall["target"] == 21
    assert overall["ai_judgments"] == 6

    (block,) = stats["agreement"]["labels"]
    assert block["label"] == "choice" and block["raters"] == 3
    assert block["cohen_kappa"] is None
    expected = agreement.fleiss_kappa(ratings=[list(row) for row in CHOICES], n_boot=400)
    assert block["fleiss_kappa"] == expected
    assert block["krippendorff_alpha"]["value"] == pytest.approx(
        agreement.krippendorff_alpha([list(row) for row in CHOICES], n_boot=0)["value"]
    )

    # Pairwise agreement with the rest: r1 and r2 agree on 5 items, r3 with either on 1.
    others = {row["id"]: row for row in stats["raters_agreement"]["raters"]}
    assert others[r1.pk]["agreement"] == pytest.approx(6 / 12)
    assert others[r3.pk]["agreement"] == pytest.approx(2 / 12)
    assert stats["raters_agreement"]["median"] == pytest.approx(0.5)
    assert [r for r, row in others.items() if row["flagged"]] == [r3.pk]
    # Leave-one-out alpha: r1 and r2 alone have o_aa = 6, o_bb = 4, o_ab = o_ba = 1, n_a = 7,
    # n_b = 5, n = 12: alpha = 1 - 11 * 2 / (2 * 7 * 5) = 48 / 70.
    assert others[r3.pk]["alpha_without"] == pytest.approx(48 / 70)
    assert others[r3.pk]["alpha_without"] > block["krippendorff_alpha"]["value"]
    assert others[r1.pk]["alpha_without"] < block["krippendorff_alpha"]["value"]

    # The AI against the items' labels (majority, item 3 adjudicated b): 4 of 6; the humans
    # against the majority of the other two, where there is one: 3 of 7.
    (ai,) = stats["ai_raters"]["raters"]
    assert ai["name"] == "judge" and ai["judged"] == 6
    assert ai["agreement"]["value"] == pytest.approx(4 / 6) and ai["n"] == 6
    assert stats["ai_raters"]["humans"]["agreement"]["value"] == pytest.approx(3 / 7)

    # First shown chosen: r1 4 of 6, r2 3 of 6, r3 1 of 5 (a tie does not count).
    bias = stats["position_bias"]
    assert (bias["humans"]["first"], bias["humans"]["n"]) == (8, 17)
    per_rater = {row["id"]: row for row in bias["raters"]}
    assert per_rater[r1.pk]["value"] == pytest.approx(4 / 6)
    assert per_rater[r3.pk]["value"] == pytest.approx(1 / 5)
    # The AI saw heron first and chose falcon 5 times out of 6.
    assert bias["ai_raters"][0]["value"] == pytest.approx(1 / 6)

    disagreement = stats["disagreements"]
    assert disagreement["total"] == 1 and disagreement["open"] == 0
    (row,) = disagreement["items"]
    assert row["item"] == items[3].pk and row["adjudicated"]
    assert row["adjudicated_value"]["choice"] == "b"
    assert row["labels"] == {"a": 1, "b": 1, "tie": 1}

    # Win rates from the humans' 18 judgments, item 3's three taking "b": falcon 7, heron 11.
    models = stats["models"]
    assert models["comparisons"] == 18
    rates = {row["model"]: row for row in models["win_rates"]}
    falcon = next(name for name in rates if "falcon" in name)
    heron = next(name for name in rates if "heron" in name)
    assert (rates[falcon]["wins"], rates[falcon]["losses"], rates[falcon]["ties"]) == (7, 11, 0)
    assert rates[falcon]["value"] == pytest.approx(7 / 18)
    assert rates[falcon]["model_version_id"] == items[0].responses[0]["model_version_id"]
    bt = models["bradley_terry"]
    assert bt["ranking"] == [heron, falcon]
    strengths = {row["model"]: row["strength"] for row in bt["models"]}
    assert strengths[heron] / strengths[falcon] == pytest.approx(11 / 7)


def test_query_count_does_not_grow_with_judgments(world) -> None:
    small, _, _ = _pairwise_campaign(world, n_items=1, choices=CHOICES[:1])
    big, _, _ = _pairwise_campaign(world, n_items=10, choices=CHOICES + CHOICES[:4])
    counts = []
    for campaign in (small, big):
        with CaptureQueriesContext(connection) as queries:
            campaign_stats(campaign, n_boot=10)
        counts.append(len(queries))
    assert counts[0] == counts[1] == 5


def test_two_raters_rating_campaign(world) -> None:
    raters = extra_raters(world, 2)
    campaign = campaign_with_items(
        world, task="rating", n_items=3, overlap=2, raters=raters, criteria=["helpfulness"]
    )
    items = list(campaign.items.order_by("index"))
    scores = [(5, 4), (2, 2), (1, 4)]  # the third item spreads by 3
    for item, pair in zip(items, scores, strict=True):
        for rater, score in zip(raters, pair, strict=True):
            _judge(item, rater=rater, value={"ratings": [{"helpfulness": score}]}, order=(0,))
    stats = campaign_stats(campaign)
    (block,) = stats["agreement"]["labels"]
    assert (block["label"], block["level"], block["raters"]) == ("helpfulness", "ordinal", 2)
    assert block["fleiss_kappa"] is None
    assert block["cohen_kappa"] == agreement.cohen_kappa([5, 2, 1], [4, 2, 4], n_boot=400)
    assert block["krippendorff_alpha"]["value"] == pytest.approx(
        agreement.krippendorff_alpha([[5, 4], [2, 2], [1, 4]], level="ordinal", n_boot=0)["value"]
    )
    assert [d["item"] for d in stats["disagreements"]["items"]] == [items[2].pk]
    assert "spread by 3" in stats["disagreements"]["items"][0]["reasons"][0]
    assert stats["position_bias"]["humans"] is None and stats["position_bias"]["reason"]
    # One response per item: no comparison between models.
    assert stats["models"]["bradley_terry"] is None and stats["models"]["reason"]


def test_an_empty_campaign_has_reasons_not_errors(world) -> None:
    campaign = campaign_with_items(world, n_items=2, overlap=2)
    stats = campaign_stats(campaign)
    assert stats["agreement"]["reason"] == "fewer than two raters have judged items"
    (block,) = stats["agreement"]["labels"]
    assert block["krippendorff_alpha"]["value"] is None
    assert stats["position_bias"]["humans"]["value"] is None
    assert stats["ai_raters"]["humans"]["agreement"]["value"] is None
    assert stats["models"]["win_rates"] == []
    assert stats["progress"]["overall"]["fraction"] == 0.0


def test_the_api_serves_managers_not_raters(world, api) -> None:
    campaign, raters, _ = _pairwise_campaign(world, n_items=6)
    url = f"/api/v1/feedback-stats/{campaign.pk}/"
    response = api(world.users[Role.MANAGER]).get(url)
    assert response.status_code == 200, response.content[:300]
    body = response.json()
    assert body["campaign"]["id"] == campaign.pk
    assert body["progress"]["overall"]["judgments"] == 18
    assert api(raters[0]).get(url).status_code == 404
    assert api(world.outsider).get(url).status_code == 404


def test_figures_of_the_stats(world) -> None:
    import json

    from frontend.charts_feedback import feedback_figures

    campaign, _, items = _pairwise_campaign(world, n_items=6)
    AIRater.objects.create(campaign=campaign, name="judge", judging_prompt="Which?")
    judge = campaign.ai_raters.get()
    for item, choice in zip(items, AI_CHOICES, strict=True):
        _judge(item, ai_rater=judge, value={"choice": choice, "reason": ""})
    figures = feedback_figures(campaign_stats(campaign, n_boot=50))
    json.dumps(figures)  # plain data for json_script
    progress = figures["progress"]["data"]
    assert [t["name"] for t in progress] == ["submitted", "skipped", "in hand"]
    assert progress[0]["x"] == [6, 6, 6]
    (fleiss, alpha) = figures["agreement"]["data"]  # no Cohen's kappa with three raters
    assert fleiss["name"] == "Fleiss' kappa" and alpha["x"] == ["choice"]
    assert len(fleiss["error_y"]["array"]) == 1
    ai = figures["ai_agreement"]["data"][0]
    assert ai["x"] == ["humans (each vs the others)", "judge"]
    # Not adjudicated here: item 3 has no label, the AI agrees on 4 of the other 5.
    assert ai["y"][1] == pytest.approx(4 / 5)
    wins = figures["win_rates"]["data"][0]
    assert len(wins["y"]) == 2 and all("support" in name for name in wins["y"])
    bt = figures["bradley_terry"]["data"][0]
    assert bt["y"][-1].startswith("1. ")  # strongest on top (plotly draws bottom-up)


def test_figures_wait_with_the_reason(world) -> None:
    from frontend.charts_feedback import feedback_figures

    campaign = campaign_with_items(world, task="rating", n_items=2, overlap=2)
    figures = feedback_figures(campaign_stats(campaign, n_boot=10))
    for name in ("agreement", "ai_agreement", "win_rates", "bradley_terry"):
        assert figures[name]["layout"]["meta"] == {"empty": True}, name
    text = figures["win_rates"]["layout"]["annotations"][0]["text"]
    assert text == "the items' responses do not name two or more models"
