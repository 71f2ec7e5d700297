"""Profiles of real samples (SciTLDR, poem sentiment) and of tables built to check each figure."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datasets_app.cleaning import profile as profile_module
from datasets_app.cleaning.profile import profile_table
from datasets_app.cleaning.readers import convert_to_parquet, infer_column_roles
from llmhub.reporting import JobCancelled, RecordingReporter


@pytest.fixture
def poem(fixtures, tmp_path):
    return convert_to_parquet(fixtures / "poem_sample.csv", output=tmp_path / "poem.parquet").path


def test_profile_of_a_summarization_sample(fixtures, tmp_path) -> None:
    result = convert_to_parquet(fixtures / "scitldr_sample.jsonl", output=tmp_path / "s.parquet")
    reporter = RecordingReporter()
    profile = profile_table(
        result.path, column_roles=infer_column_roles(result.columns), reporter=reporter
    )
    json.dumps(profile)  # serializable as stored in a job's result
    assert (profile["row_count"], profile["rows_profiled"], profile["truncated"]) == (60, 60, False)
    document = profile["columns"]["document"]
    assert document["type"] == "string" and document["role"] == "text"
    assert document["nulls"] == 0 and document["distinct"] == 60 and document["distinct_exact"]
    texts = pq.read_table(result.path).column("document").to_pylist()
    lengths = [len(t) for t in texts]
    assert document["char_length"]["max"] == max(lengths)
    assert document["char_length"]["mean"] == pytest.approx(sum(lengths) / 60, abs=0.01)
    assert sum(document["char_length_histogram"]["counts"]) == 60
    assert len(document["char_length_histogram"]["edges"]) == 31
    assert document["token_unit"] == "whitespace"
    assert document["token_length"]["max"] == max(len(t.split()) for t in texts)
    assert document["languages"][0] == {"language": "en", "share": 1.0}
    assert document["pii"] == {
        k: 0 for k in ("email", "credit_card", "iban", "ip_address", "phone")
    }
    assert document["duplicate_rate"] == 0.0 and document["sampled"] is False
    assert profile["columns"]["summary"]["role"] == "target"
    assert profile["columns"]["source"]["type"] == "list"
    assert profile["columns"]["source"]["list_length"]["min"] >= 1
    assert "top_values" not in document  # not label-like
    assert len(profile["sample_rows"]) == 5 and set(profile["sample_rows"][0]) == set(
        profile["columns"]
    )
    assert reporter.progress_calls[-1] == (1.0, "Profiled")


def test_profile_of_a_classification_sample_counts_classes(poem) -> None:
    profile = profile_table(poem, column_roles={"text": "verse_text", "label": "label"})
    label = profile["columns"]["label"]
    whole = Counter(pq.read_table(poem).column("label").to_pylist())
    assert {v["value"]: v["count"] for v in label["top_values"]} == dict(whole)
    assert label["top_values"][0] == {"value": "no_impact", "count": 155}
    assert label["class_balance"]["no_impact"] == round(155 / 240, 4)
    raw = profile["columns"]["raw_label"]
    assert raw["type"] == "integer" and raw["summary"]["min"] == -1 and raw["distinct"] == 4
    assert {v["value"] for v in raw["top_values"]} == {-1, 0, 1, 2}
    assert profile["columns"]["verse_text"]["languages"][0]["language"] == "en"


def test_pii_duplicates_empty_and_nulls(tmp_path) -> None:
    texts = [
        "mail me at a@b.io",
        "Mail me at A@B.io!",  # a duplicate once case and punctuation are ignored
        "call 555-123-4567 now please friend",
        "   ",
        None,
    ]
    pq.write_table(pa.table({"text": texts}), tmp_path / "t.parquet")
    column = profile_table(tmp_path / "t.parquet", column_roles={"text": "text"})["columns"]["text"]
    assert column["nulls"] == 1 and column["empty"] == 1
    assert column["pii"]["email"] == 2 and column["pii"]["phone"] == 1
    assert column["pii_row_share"] == 1.0  # of the three non-empty sampled texts
    assert column["duplicate_rate"] == 0.25 and column["duplicate_rows"] == 1


def test_token_lengths_from_a_trained_tokenizer(corpus, tokenizer_dir) -> None:
    profile = profile_table(corpus, column_roles={"text": "text"}, tokenizer_dir=tokenizer_dir)
    text = profile["columns"]["text"]
    assert text["token_unit"] == "tokenizer" and text["token_length"]["mean"] > 100
    assert text["token_length"]["mean"] > text["whitespace_tokens"]["mean"]  # subwords
    assert sum(text["token_length_histogram"]["counts"]) == text["sampled_rows"]
    assert profile["tokenizer"] == tokenizer_dir.name


def test_large_tables_are_sampled_and_say_so(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(profile_module, "BATCH_ROWS", 300)  # several batches
    monkeypatch.setattr(profile_module, "EXACT_DISTINCT", 100)  # switch to hashed distinct
    texts = [f"document number {i} about the river" for i in range(1500)] + ["again"] * 500
    labels = ["a", "b", "c"] * 666 + ["a", "b"]
    pq.write_table(pa.table({"text": texts, "label": labels}), tmp_path / "big.parquet")
    profile = profile_table(
        tmp_path / "big.parquet", column_roles={"label": "label"}, sample_size=200
    )
    text = profile["columns"]["text"]
    assert profile["sampled"] and profile["sample_size"] == 200
    assert text["sampled"] and text["sampled_rows"] == 200
    assert text["distinct"] == 1501 and text["distinct_method"] == "hash"
    assert not text["distinct_exact"] and text["duplicate_rows"] == 499
    assert sum(text["char_length_histogram"]["counts"]) == 2000  # lengths use every row
    label = profile["columns"]["label"]
    assert label["distinct_method"] == "exact" and label["top_values"][0]["count"] == 667
    truncated = profile_table(tmp_path / "big.parquet", max_rows=700)
    assert truncated["truncated"] and truncated["rows_profiled"] == 700
    assert truncated["columns"]["label"]["top_values"][0]["count"] == 234


def test_profile_can_be_cancelled(poem) -> None:
    reporter = RecordingReporter()
    reporter.request_stop()
    with pytest.raises(JobCancelled):
        profile_table(poem, reporter=reporter)
