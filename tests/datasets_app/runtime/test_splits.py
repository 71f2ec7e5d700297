"""Splits by ratios (random and stratified) and by a column: sizes, proportions, determinism."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datasets_app.cleaning.readers import convert_to_parquet
from datasets_app.cleaning.splits import split_table
from llmhub.reporting import JobInputError


@pytest.fixture
def poem(fixtures, tmp_path):
    return convert_to_parquet(fixtures / "poem_sample.csv", output=tmp_path / "poem.parquet").path


def _labels(result) -> Counter:
    return Counter(pq.read_table(result.path).column("label").to_pylist())


def test_stratified_split_keeps_class_proportions(poem, tmp_path) -> None:
    splits = split_table(poem, output_dir=tmp_path / "a", stratify_column="label", seed=1)
    assert list(splits) == ["train", "validation", "test"]
    assert {n: s.rows for n, s in splits.items()} == {"train": 192, "validation": 24, "test": 24}
    whole = Counter(pq.read_table(poem).column("label").to_pylist())
    assert whole == {"no_impact": 155, "negative": 42, "positive": 35, "mixed": 8}
    for name, fraction in (("train", 0.8), ("validation", 0.1), ("test", 0.1)):
        counts = _labels(splits[name])
        for label, total in whole.items():
            assert abs(counts[label] - total * fraction) <= 1, (name, label)
            if total * fraction >= 1:  # enough rows: the class is in this split
                assert counts[label] >= 1, (name, label)
    ids = [set(pq.read_table(s.path).column("id").to_pylist()) for s in splits.values()]
    assert sum(map(len, ids)) == 240 and len(set.union(*ids)) == 240  # a partition
    first = pq.read_table(splits["train"].path).column("id").to_pylist()
    assert first == sorted(first)  # rows keep their order


def test_splits_are_deterministic_for_a_seed(poem, tmp_path) -> None:
    for stratify in (None, "label"):
        one = split_table(poem, output_dir=tmp_path / "one", stratify_column=stratify, seed=7)
        two = split_table(poem, output_dir=tmp_path / "two", stratify_column=stratify, seed=7)
        other = split_table(poem, output_dir=tmp_path / "three", stratify_column=stratify, seed=8)
        assert {n: s.sha256 for n, s in one.items()} == {n: s.sha256 for n, s in two.items()}
        assert one["test"].sha256 != other["test"].sha256


def test_a_rare_class_with_enough_rows_reaches_every_split(tmp_path) -> None:
    labels = ["common"] * 980 + ["rare"] * 20
    pq.write_table(
        pa.table({"text": [f"t{i}" for i in range(1000)], "label": labels}), tmp_path / "t.parquet"
    )
    for seed in range(5):
        splits = split_table(
            tmp_path / "t.parquet",
            output_dir=tmp_path / str(seed),
            ratios={"train": 0.9, "validation": 0.05, "test": 0.05},
            stratify_column="label",
            seed=seed,
        )
        assert [_labels(s)["rare"] for s in splits.values()] == [18, 1, 1]
        assert [s.rows for s in splits.values()] == [900, 50, 50]


def test_random_split_sizes_follow_the_ratios(poem, tmp_path) -> None:
    splits = split_table(poem, output_dir=tmp_path, ratios={"train": 0.7, "test": 0.3})
    assert {n: s.rows for n, s in splits.items()} == {"train": 168, "test": 72}
    assert splits["train"].path == tmp_path / "train.parquet"
    assert pq.read_schema(splits["train"].path).names == pq.read_schema(poem).names


def test_split_by_column_values(poem, tmp_path) -> None:
    table = pq.read_table(poem)
    parts = ["train", "dev", "train", "test"] * (table.num_rows // 4)
    pq.write_table(table.append_column("part", pa.array(parts)), tmp_path / "parts.parquet")
    splits = split_table(tmp_path / "parts.parquet", output_dir=tmp_path / "p", by_column="part")
    assert {n: s.rows for n, s in splits.items()} == {"train": 120, "dev": 60, "test": 60}
    assert set(pq.read_table(splits["dev"].path).column("part").to_pylist()) == {"dev"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ratios": {"train": 0.8, "test": 0.1}}, "add up to 1; these add up to 0.9"),
        ({"ratios": {"train": 1.2, "test": -0.2}}, "must be a positive number"),
        ({"ratios": {"train": "0.5", "test": 0.5}}, "must be a positive number"),
        ({"ratios": {"../x": 0.5, "test": 0.5}}, "Split name '../x'"),
        ({"ratios": {}}, "Give split ratios"),
        ({"ratios": {"train": 0.999, "test": 0.001}}, "'test' split would be empty"),
        ({"stratify_column": "colour"}, "No column named 'colour' to stratify by"),
        ({"by_column": "colour"}, "No column named 'colour' to split by"),
        ({"by_column": "verse_text"}, "distinct values"),
        ({"by_column": "split", "ratios": {"a": 1.0}}, "not both"),
        ({"seed": "x"}, "seed must be a whole number"),
    ],
)
def test_bad_split_requests_are_refused(poem, tmp_path, kwargs, message) -> None:
    with pytest.raises(JobInputError, match=message):
        split_table(poem, output_dir=tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists() or list((tmp_path / "x").iterdir()) == []


def test_rows_without_a_split_name_are_refused(tmp_path) -> None:
    pq.write_table(pa.table({"text": ["a", "b"], "part": ["train", None]}), tmp_path / "t.parquet")
    with pytest.raises(JobInputError, match="1 rows have no value in 'part'"):
        split_table(tmp_path / "t.parquet", output_dir=tmp_path / "x", by_column="part")
