"""The diff between two versions of a dataset: schema changes, rows added, removed and changed
(by a key column, or by row content), through the API and on the page reached from the dataset
page; bad parameters named."""

from __future__ import annotations

import pyarrow as pa
import pytest
from django.test import Client
from django.urls import reverse

from tests.datasets_app.tables import make_version


@pytest.fixture
def versions(world):
    old = pa.table(
        {
            "id": pa.array([1, 2, 3, 4, 5, 6], pa.int64()),
            "text": ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"],
            "label": pa.array([0, 1, 0, 1, 0, 1], pa.int64()),
            "source": ["web"] * 6,
        }
    )
    v1 = make_version(world, old)
    new = pa.table(
        {
            "id": pa.array([1, 2, 4, 5, 6, 7, 8], pa.int64()),
            "text": ["alpha", "BETA", "delta", "epsilon", "zeta!", "eta", "theta"],
            "label": pa.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0]),  # int -> float
            "lang": ["en"] * 7,  # added; "source" removed
        }
    )
    v2 = make_version(world, new, dataset=v1.dataset, parent=v1)
    return v1, v2


def diff(client, a, b, **params):
    return client.get(f"/api/v1/dataset-versions/{a.pk}/diff/", {"other": b.pk, **params})


def test_by_key_rows_added_removed_changed_and_schema(world, api, versions) -> None:
    v1, v2 = versions
    body = diff(api(world.users["viewer"]), v1, v2, key="id").json()
    assert body["old"]["id"] == v1.pk and body["new"]["number"] == 2
    assert body["schema"] == {
        "added": [{"name": "lang", "type": "string"}],
        "removed": [{"name": "source", "type": "string"}],
        "type_changed": [{"name": "label", "old": "int64", "new": "double"}],
    }
    assert body["compared_columns"] == ["text", "label"]
    assert body["counts"] == {
        "old_rows": 6,
        "new_rows": 7,
        "added": 2,
        "removed": 1,
        "changed": 2,
        "unchanged": 3,  # 1, 4 and 5: 0 -> 0.0 is the same label
    }
    examples = body["examples"]
    assert [e["values"]["id"] for e in examples["added"]] == [7, 8]
    assert examples["removed"] == [
        {"row": 2, "values": {"id": 3, "text": "gamma", "label": 0, "source": "web"}}
    ]
    assert examples["changed"] == [
        {"key": 2, "old_row": 1, "new_row": 1, "columns": {"text": ["beta", "BETA"]}},
        {"key": 6, "old_row": 5, "new_row": 4, "columns": {"text": ["zeta", "zeta!"]}},
    ]


def test_by_content_edited_rows_are_removed_and_added(world, api, versions) -> None:
    v1, v2 = versions
    body = diff(api(world.users["viewer"]), v1, v2, limit=1).json()
    counts = body["counts"]
    assert counts["changed"] is None and body["key"] is None
    assert (counts["added"], counts["removed"], counts["unchanged"]) == (4, 3, 3)
    assert len(body["examples"]["added"]) == 1 and body["examples"]["added"][0]["row"] == 1
    # The same version against itself: nothing changed.
    same = diff(api(world.users["viewer"]), v2, v2).json()["counts"]
    assert (same["added"], same["removed"], same["unchanged"]) == (0, 0, 7)


def test_duplicates_count_as_rows(world, api) -> None:
    v1 = make_version(world, pa.table({"text": ["a", "a", "b"]}))
    v2 = make_version(world, pa.table({"text": ["a", "b", "b"]}), dataset=v1.dataset)
    counts = diff(api(world.users["viewer"]), v1, v2).json()["counts"]
    assert (counts["added"], counts["removed"], counts["unchanged"]) == (1, 1, 2)


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"key": "source"}, "key", "No column named 'source' in the second version"),
        ({"key": "label"}, "key", "not unique in the first version"),
        ({"limit": "0"}, "limit", "from 1 to 100"),
        ({"other": "x"}, "other", "integer"),
        ({"other": "999999"}, "other", "No version 999999"),
    ],
)
def test_bad_parameters_are_named(world, api, versions, params, field, message) -> None:
    v1, v2 = versions
    response = diff(api(world.users["viewer"]), v1, v2, **params)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert field in error["fields"] and message in str(error["fields"][field]), error


def test_other_dataset_and_other_team_are_refused(world, api, versions) -> None:
    v1, _v2 = versions
    elsewhere = make_version(world, pa.table({"text": ["x"]}), name="elsewhere")
    client = api(world.users["viewer"])
    refused = diff(client, v1, elsewhere)
    assert refused.status_code == 400 and "another dataset" in refused.json()["error"]["message"]
    assert diff(api(world.outsider), v1, elsewhere).status_code == 404


def test_page_from_the_dataset_page(world, versions) -> None:
    v1, v2 = versions
    browser = Client()
    browser.force_login(world.users["viewer"])
    dataset_page = browser.get(reverse("dataset-page", args=[v1.dataset_id])).content.decode()
    url = reverse("dataset-diff", args=[v1.dataset_id])
    assert f'action="{url}"' in dataset_page and 'id="compare-versions"' in dataset_page
    html = browser.get(url, {"a": v1.pk, "b": v2.pk, "key": "id"}).content.decode()
    assert "+2</strong> added" in html and "\u22121</strong> removed" in html
    assert 'id="diff-changed">2</strong>' in html and "zeta!" in html
    assert 'type of <span class="mono">label</span>: int64 → double' in html
    unkeyed = browser.get(url, {"a": v1.pk, "b": v2.pk, "key": "label"}).content.decode()
    assert "not unique in the first version" in unkeyed and 'id="diff-summary"' not in unkeyed
    # With no choice made, the form proposes the newest version against the one before.
    blank = browser.get(url).content.decode()
    assert f'<option value="{v1.pk}" selected>' in blank
