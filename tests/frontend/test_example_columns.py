"""Report example tables have the same columns in the same order on every database (jsonb
reorders an object's keys; SQLite keeps them as written)."""

from __future__ import annotations

from frontend.templatetags.llmhub_ui import example_columns


def test_columns_follow_the_reading_order_whatever_the_key_order() -> None:
    as_written = [{"group": "a", "index": 1, "input": "x", "prediction": "0", "reference": "1"}]
    as_jsonb = [{"index": 1, "group": "a", "input": "x", "reference": "1", "prediction": "0"}]
    expected = ["group", "index", "input", "prediction", "reference"]
    assert example_columns(as_written) == example_columns(as_jsonb) == expected
    # Keys outside the reading order follow, by name; rows may differ in their keys.
    mixed = [{"zeta": 1, "group": "a"}, {"alpha": 2, "score": 0.5}]
    assert example_columns(mixed) == ["group", "score", "alpha", "zeta"]
    assert example_columns(None) == [] and example_columns(["not a row"]) == []
