"""The manager's campaign page in the browser: a ranking campaign of three model versions that
two raters judged shows its agreement (Cohen's kappa, Krippendorff's alpha), the models' win
rates drawn as a Plotly chart, and an item the raters disagree on is adjudicated through the
ranking's own inputs (a select per place): a response chosen twice is refused with the reason,
in the item's row, then the corrected ranking counts."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.test_data_stage import _login, _shot
from tests.evaluation.feedback.builders import campaign_with_items, extra_raters
from tests.frontend.test_feedback_pages import _bulk_judgments

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_manager_reads_agreement_and_win_rates_and_adjudicates_a_ranking(page, world):
    raters = extra_raters(world, 2)
    campaign = campaign_with_items(
        world, task="ranking", n_items=4, overlap=2, raters=raters, blind=True, name="Three bots"
    )
    # The raters agree on items 0-2 (response 1 first), not on item 3 (each puts another first).
    rankings = {3: [[2, 0, 1], [1, 2, 0]]}
    _bulk_judgments(
        campaign, raters, lambda i, r: {"ranking": rankings.get(i, [[0, 1, 2], [0, 1, 2]])[r]}
    )
    disputed = campaign.items.get(index=3)

    _login(page, world.users["manager"])
    page.goto(f"/feedback/campaigns/{campaign.pk}/")
    agreement = page.locator("#agreement")
    expect(agreement).to_contain_text("Krippendorff")
    expect(agreement.locator("tr[data-label='top choice']")).to_contain_text("2 raters")
    # Plotly drew the win rates: one bar per model, the first response's model ahead.
    chart = page.locator("[data-figure='fig-win-rates']")
    chart.locator(".main-svg").first.wait_for()
    bars = page.evaluate(
        "() => document.querySelector(\"[data-figure='fig-win-rates']\").data[0].y.length"
    )
    assert bars == 3
    expect(page.locator("#win-rates tbody tr")).to_have_count(3)
    expect(page.locator("#win-rates tbody tr").first).to_contain_text("falcon-support")

    # The disputed item: one select per place, best first.
    row = page.locator(f"#disagreements tr[data-item='{disputed.pk}']")
    expect(row).to_contain_text("no majority")
    form = row.locator("form.adjudicate")
    expect(form.locator("select")).to_have_count(3)
    form.locator("select[name='rank_1']").select_option("3")
    form.locator("select[name='rank_2']").select_option("3")
    form.locator("select[name='rank_3']").select_option("1")
    _shot(page, "feedback-manager-adjudicate.png")
    form.locator("button[type='submit']").click()
    # Refused by the one validator, in the row, the choices kept.
    row = page.locator(f"#disagreements tr[data-item='{disputed.pk}']")
    expect(row.locator(".form-errors")).to_contain_text("each position once")
    expect(row.locator("select[name='rank_1']")).to_have_value("3")
    row.locator("select[name='rank_2']").select_option("2")
    row.locator("button[type='submit']").click()
    expect(page.locator(".messages")).to_contain_text("the adjudicated label now counts")
    row = page.locator(f"#disagreements tr[data-item='{disputed.pk}']")
    expect(row).to_contain_text("adjudicated")
    expect(row.locator("select[name='rank_1']")).to_have_value("3")
    expect(row.locator("button[type='submit']")).to_have_text("Change")
    _shot(page, "feedback-manager-adjudicated.png")
    disputed.refresh_from_db()
    assert disputed.adjudicated["value"] == {"ranking": [2, 1, 0]}
