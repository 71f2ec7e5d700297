"""The rater screen in the browser, driven by the keyboard only (no mouse after the login
either): a rater labels three items of a blind pairwise campaign, undoes one and answers it
again, skips one with a reason; a judgment made after the session ended is not lost (kept in
the browser, the error shown, sent once the rater signs in again); nothing on the screen names
a model."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from evaluation.feedback.models import Assignment, AssignmentStatus, Judgment
from tests.e2e.test_data_stage import _shot
from tests.evaluation.feedback.builders import campaign_with_items

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _login_by_keyboard(page, user) -> None:
    page.goto("/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", "correct horse battery staple")
    page.press("#id_password", "Enter")
    page.wait_for_url(lambda url: "/login/" not in url)


def _progress(page, text: str) -> None:
    expect(page.locator("#progress-text")).to_have_text(text)


def test_a_rater_labels_with_the_keyboard_only(page, world) -> None:
    rater = world.users["rater"]
    campaign = campaign_with_items(world, n_items=5, overlap=1, raters=[rater], blind=True)
    # Texts that do not name their model (the builder's do); the labels stay on the items.
    labels = set()
    for item in campaign.items.all():
        for k, response in enumerate(item.responses):
            response["text"] = f"Reply {k} to question {item.index}."
            labels.add(response["label"])
        item.save(update_fields=["responses"])

    _login_by_keyboard(page, rater)
    page.goto("/feedback/")
    expect(page.locator("#my-campaigns")).to_contain_text(campaign.name)
    page.goto(f"/feedback/campaigns/{campaign.pk}/rate/")
    item = page.locator("#item")
    expect(item).to_be_visible()
    expect(page.locator("#instructions")).to_contain_text("Prefer the answer")
    _progress(page, "0 of 5 judged")
    expect(page.locator("#responses .response")).to_have_count(2)

    def shown_item() -> str:
        return page.locator("#prompt").inner_text()

    # 1: A is better.
    first_prompt = shown_item()
    page.keyboard.press("1")
    expect(page.locator("[data-choice='a']")).to_have_attribute("aria-pressed", "true")
    page.keyboard.press("Enter")
    _progress(page, "1 of 5 judged")
    # 2: B is better, with a reason typed after R; Enter in the reason submits.
    second_prompt = shown_item()
    assert second_prompt != first_prompt
    page.keyboard.press("ArrowRight")
    expect(page.locator("#responses .response.current")).to_have_attribute("data-position", "2")
    page.keyboard.press("2")
    page.keyboard.press("r")
    page.keyboard.type("clearer steps")
    page.keyboard.press("Enter")
    _progress(page, "2 of 5 judged")
    # U: the last judgment is withdrawn and its item is back on screen; answered again: tie.
    page.keyboard.press("u")
    expect(page.locator("#status")).to_contain_text("withdrawn")
    _progress(page, "1 of 5 judged")
    assert shown_item() == second_prompt
    page.keyboard.press("3")
    page.keyboard.press("Enter")
    _progress(page, "2 of 5 judged")
    # S: skip, with a reason (Enter with none is refused in the dialog).
    skipped_prompt = shown_item()
    page.keyboard.press("s")
    expect(page.locator("#skip-dialog")).to_be_visible()
    page.keyboard.press("Enter")
    expect(page.locator("#skip-error")).to_be_visible()
    page.keyboard.type("I cannot judge billing questions")
    page.keyboard.press("Enter")
    expect(page.locator("#skip-dialog")).to_be_hidden()
    _progress(page, "2 of 4 judged")
    assert shown_item() != skipped_prompt
    # Enter before choosing: told to choose, nothing sent.
    page.keyboard.press("Enter")
    expect(page.locator("#status")).to_contain_text("Choose first")
    # 4: both bad. Three judgments counted.
    page.keyboard.press("4")
    page.keyboard.press("Enter")
    _progress(page, "3 of 4 judged")
    _shot(page, "rater-screen.png")

    # Blind: nothing on the screen (the whole DOM, with what the script loaded) names a model.
    html = page.content()
    for label in labels:
        assert label not in html, label
    for name in ("falcon-support", "heron-support", "model_version"):
        assert name not in html

    def counted():
        return Judgment.objects.filter(item__campaign=campaign, rater=rater, withdrawn_at=None)

    assert counted().count() == 3
    by_prompt = {j.item.prompt: j for j in counted().select_related("item", "assignment")}
    assert first_prompt in by_prompt and second_prompt in by_prompt
    assert skipped_prompt not in by_prompt
    # "1" chose the response shown first: stored in the item's own order through the
    # assignment's recorded order.
    first = by_prompt[first_prompt]
    assert first.value["choice"] == ("a" if first.assignment.order[0] == 0 else "b")
    assert by_prompt[second_prompt].value["choice"] == "tie"
    assert sorted(j.value["choice"] for j in counted()) == sorted(
        [first.value["choice"], "tie", "both_bad"]
    )
    assert first.seconds_spent is not None and first.seconds_spent >= 0
    skipped = Assignment.objects.get(item__campaign=campaign, status=AssignmentStatus.SKIPPED)
    assert skipped.item.prompt == skipped_prompt
    assert skipped.skip_reason == "I cannot judge billing questions"

    # The session ends under the rater: the judgment is not lost. The error is shown, the
    # answer stays, and it is sent once they sign in again.
    current_prompt = shown_item()
    page.context.clear_cookies()
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    expect(page.locator("#status")).to_contain_text("Not saved")
    assert shown_item() == current_prompt
    assert counted().count() == 3
    _login_by_keyboard(page, rater)
    page.goto(f"/feedback/campaigns/{campaign.pk}/rate/")
    expect(page.locator("#status")).to_contain_text("now saved")
    _progress(page, "4 of 4 judged")
    assert counted().count() == 4
    assert counted().filter(item__prompt=current_prompt).exists()
    expect(page.locator("#done")).to_be_visible()


def test_ratings_and_rankings_by_keyboard(page, world) -> None:
    rater = world.users["rater"]
    rating = campaign_with_items(
        world,
        task="rating",
        n_items=1,
        overlap=1,
        raters=[rater],
        responses=2,
        criteria=["helpfulness", "factuality"],
        name="Rate them",
    )
    ranking = campaign_with_items(
        world, task="ranking", n_items=1, overlap=1, raters=[rater], name="Rank them"
    )
    _login_by_keyboard(page, rater)

    # Rating: digits rate the current criterion of the current response and move on (the
    # next criterion, then the next response); arrows move back.
    page.goto(f"/feedback/campaigns/{rating.pk}/rate/")
    expect(page.locator("#responses .response")).to_have_count(2)
    page.keyboard.press("4")  # response 1, helpfulness
    page.keyboard.press("2")  # response 1, factuality: on to response 2
    expect(page.locator("#responses .response.current")).to_have_attribute("data-position", "2")
    page.keyboard.press("Enter")  # refused: response 2 is not rated yet
    expect(page.locator("#status")).to_contain_text("Rate response 2")
    page.keyboard.press("5")  # response 2, helpfulness
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("1")  # response 2, factuality
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("3")  # response 1, helpfulness again: 3 instead of 4
    page.keyboard.press("Enter")
    expect(page.locator("#done")).to_be_visible()
    judgment = Judgment.objects.select_related("assignment").get(item__campaign=rating)
    order = judgment.assignment.order
    stored = judgment.value["ratings"]
    assert stored[order[0]] == {"helpfulness": 3, "factuality": 2}
    assert stored[order[1]] == {"helpfulness": 5, "factuality": 1}

    # Ranking: arrows choose a response, a digit gives it that rank and moves to the next
    # response without one.
    page.goto(f"/feedback/campaigns/{ranking.pk}/rate/")
    expect(page.locator("#responses .response")).to_have_count(3)
    page.keyboard.press("ArrowRight")
    page.keyboard.press("1")  # position 2 is the best
    page.keyboard.press("2")  # then position 3
    page.keyboard.press("3")  # then position 1
    expect(page.locator("#controls")).to_have_text("3 of 3 ranked")
    page.keyboard.press("Enter")
    expect(page.locator("#done")).to_be_visible()
    judgment = Judgment.objects.select_related("assignment").get(item__campaign=ranking)
    order = judgment.assignment.order
    assert judgment.value["ranking"] == [order[1], order[2], order[0]]


def test_a_correction_by_keyboard(page, world) -> None:
    rater = world.users["rater"]
    campaign = campaign_with_items(
        world, task="correction", n_items=1, overlap=1, raters=[rater], responses=2
    )
    _login_by_keyboard(page, rater)
    page.goto(f"/feedback/campaigns/{campaign.pk}/rate/")
    expect(page.locator("#responses .response")).to_have_count(2)
    second = page.locator("#responses .response[data-position='2'] .text").inner_text()
    page.keyboard.press("ArrowRight")  # correct the second response: the text starts from it
    expect(page.locator("#correction")).to_have_value(second)
    page.keyboard.press("e")
    page.keyboard.press("Control+End")
    page.keyboard.type(" Then sign in again.")
    page.keyboard.press("Enter")  # a new line in the text, not a submission
    page.keyboard.type("Done.")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#done")).to_be_visible()
    judgment = Judgment.objects.select_related("assignment").get(item__campaign=campaign)
    assert judgment.value == {
        "response": judgment.assignment.order[1],
        "text": f"{second} Then sign in again.\nDone.",
    }
