"""The row browser: pages of a version's rows, a case-insensitive search over the text columns,
a filter on any column, bad parameters refused with a 400 naming them; the same validator on
the page (errors next to their fields)."""

from __future__ import annotations

import pyarrow as pa
import pytest
from django.urls import reverse

from datasets_app.cleaning.browse import MATCHES, RowQuery, browse
from datasets_app.cleaning.options import OptionError
from llmhub import storage
from tests.datasets_app.tables import make_version

N = 230


def _table() -> pa.Table:
    moods = ["Happy", "sad", "calm"]
    return pa.table(
        {
            "id": pa.array(range(N), pa.int64()),
            "text": [
                f"Review {i}: the {'Quick brown FOX' if i % 7 == 0 else 'slow dog'}"
                for i in range(N)
            ],
            "mood": [moods[i % 3] for i in range(N)],
            "score": [i / 10 for i in range(N)],
            "flag": [i % 2 == 0 for i in range(N)],
            "note": [None if i % 5 else f"note {i}" for i in range(N)],
            "tags": [[f"t{i % 4}"] for i in range(N)],
        }
    )


@pytest.fixture
def version(world):
    MATCHES.clear()
    # Small row groups, so pages and matches span several of them.
    return make_version(world, _table(), row_group_size=40)


@pytest.fixture
def client(world, api):
    return api(world.users["viewer"])


def rows(client, version, **params):
    return client.get(f"/api/v1/dataset-versions/{version.pk}/rows/", params)


def test_pages_cover_every_row_once_in_order(client, version) -> None:
    seen = []
    for page in range(1, 6):
        body = rows(client, version, page=page, page_size=50).json()
        assert body["total"] == body["matched"] == N and body["pages"] == 5
        assert [r["id"] for r in body["rows"]] == body["row_numbers"]
        seen.extend(body["row_numbers"])
    assert seen == list(range(N))
    last = rows(client, version, page=5, page_size=50).json()
    assert len(last["rows"]) == 30 and last["rows"][-1]["text"].startswith("Review 229")
    beyond = rows(client, version, page=6, page_size=50).json()
    assert beyond["rows"] == [] and beyond["matched"] == N
    # The old preview parameters still work (the version page's preview uses them).
    old = rows(client, version, offset=225, limit=10).json()
    assert old["total"] == N and [r["id"] for r in old["rows"]] == [225, 226, 227, 228, 229]


def test_search_is_case_insensitive_over_text_columns_and_pages(client, version) -> None:
    expected = [i for i in range(N) if i % 7 == 0]
    body = rows(client, version, search="quick BROWN fox", page_size=20).json()
    assert body["matched"] == len(expected) == 33 and body["pages"] == 2
    assert body["row_numbers"] == expected[:20]
    second = rows(client, version, search="quick BROWN fox", page_size=20, page=2).json()
    assert second["row_numbers"] == expected[20:]
    # Every text column is searched (mood, note), not only the first.
    assert rows(client, version, search="HAPPY").json()["matched"] == len(range(0, N, 3))
    assert rows(client, version, search="note 15").json()["row_numbers"] == [15, 150, 155]
    assert rows(client, version, search="no such words").json()["matched"] == 0


@pytest.mark.parametrize(
    ("column", "op", "value", "expected"),
    [
        ("mood", "equals", "sad", [i for i in range(N) if i % 3 == 1]),
        ("mood", "contains", "APP", [i for i in range(N) if i % 3 == 0]),
        ("score", "gte", "22.5", [i for i in range(N) if i / 10 >= 22.5]),
        ("score", "<=", "0.3", [0, 1, 2, 3]),
        ("id", ">=", "227", [227, 228, 229]),
        ("id", "equals", "42", [42]),
        ("id", "contains", "19", [i for i in range(N) if "19" in str(i)]),
        ("flag", "equals", "false", [i for i in range(N) if i % 2]),
        ("note", "equals", "note 10", [10]),
    ],
)
def test_filter_on_any_column(client, version, column, op, value, expected) -> None:
    body = rows(client, version, column=column, op=op, value=value, page_size=200).json()
    assert body["row_numbers"] == expected and body["matched"] == len(expected)
    assert all(r["id"] == n for r, n in zip(body["rows"], body["row_numbers"], strict=True))


def test_search_and_filter_combine(client, version) -> None:
    body = rows(client, version, search="fox", column="mood", value="calm").json()
    assert body["row_numbers"] == [i for i in range(N) if i % 7 == 0 and i % 3 == 2]


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"page": "0"}, "page", "from 1"),
        ({"page": "two"}, "page", "integer"),
        ({"page_size": "500"}, "page_size", "from 1 to 200"),
        ({"column": "mood", "op": "like", "value": "x"}, "op", "equals, contains, gte, lte"),
        ({"column": "colour", "value": "red"}, "column", "No column named 'colour'"),
        ({"column": "mood"}, "value", "Give a value"),
        ({"value": "sad"}, "column", "Choose the column"),
        ({"column": "score", "op": "gte", "value": "high"}, "value", "not a double value"),
        ({"column": "flag", "value": "maybe"}, "value", "true or false"),
        ({"column": "flag", "op": "gte", "value": "true"}, "op", "use equals"),
        ({"column": "tags", "value": "t1"}, "column", "list<"),
        ({"search": "x" * 201}, "search", "at most 200"),
        ({"page": "1", "split": "test"}, "split", "No split named 'test'"),
    ],
)
def test_bad_parameters_are_400_naming_them(client, version, params, field, message) -> None:
    response = rows(client, version, **params)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert field in error["fields"] and message in error["fields"][field][0], error


def test_outsider_cannot_browse(world, api, version) -> None:
    assert rows(api(world.outsider), version, search="fox").status_code == 404


def test_matches_are_cached_per_table_and_query(version) -> None:
    path = storage.local_copy(version.file)
    first = browse(path, RowQuery(search="fox", page_size=5), cache_key=version.file)
    assert first["matched"] == 33
    # Pages of the same query reuse the cached positions: no second scan.
    positions = MATCHES.get((version.file, "fox", None, "equals", None))
    assert positions is not None and len(positions) == 33
    second = browse(path, RowQuery(search="FOX", page=2, page_size=5), cache_key=version.file)
    assert second["row_numbers"] == [35, 42, 49, 56, 63]


def test_validator_refuses_before_reading() -> None:
    with pytest.raises(OptionError) as caught:
        RowQuery(page_size=0)
    assert caught.value.field == "page_size"
    assert RowQuery(op=">=", column="a", value="1").op == "gte"
    assert RowQuery(page=3, page_size=20).offset == 40


def test_page_searches_filters_and_shows_errors_by_their_fields(world, client, version) -> None:
    from django.test import Client

    browser = Client()
    browser.force_login(world.users["viewer"])
    url = reverse("version-rows", args=[version.pk])
    page = browser.get(url, {"search": "fox", "page_size": 25, "page": 2})
    assert page.status_code == 200
    html = page.content.decode()
    assert "33 of 230 rows match" in html and "page 2 of 2" in html
    assert "Review 175: the Quick brown FOX" in html and "Review 168" not in html
    filtered = browser.get(url, {"column": "score", "op": "gte", "value": "oops"}).content.decode()
    assert "is not a double value" in filtered and "Fix the parameters" in filtered
    version_page = browser.get(reverse("version-page", args=[version.pk])).content.decode()
    assert url in version_page
    assert Client().get(url).status_code == 302  # sign in first
    outsider = Client()
    outsider.force_login(world.outsider)
    assert outsider.get(url).status_code == 404


def test_pages_inside_a_large_row_group_read_in_batches(tmp_path, monkeypatch) -> None:
    import pyarrow.parquet as pq

    from datasets_app.cleaning import browse as runtime

    monkeypatch.setattr(runtime, "BATCH_ROWS", 64)  # many batches per group
    path = tmp_path / "one-group.parquet"
    pq.write_table(pa.table({"n": list(range(1000)), "text": [f"t{i}" for i in range(1000)]}), path)
    page = browse(path, RowQuery(page=7, page_size=30))
    assert page["row_numbers"] == list(range(180, 210))
    assert [r["n"] for r in page["rows"]] == list(range(180, 210))
    runtime.MATCHES.clear()
    runtime.COLUMNS.clear()
    found = browse(path, RowQuery(search="T99", page_size=20), cache_key="one-group")
    assert found["row_numbers"] == [99, *range(990, 1000)]
    assert [r["n"] for r in found["rows"]] == found["row_numbers"]
    # The text column a search read stays decoded for the next query on the table.
    assert runtime.COLUMNS.get(("one-group", "text")) is not None
    again = browse(path, RowQuery(search="t5", page_size=5), cache_key="one-group")
    assert again["matched"] == 111 and again["row_numbers"] == [5, 50, 51, 52, 53]
