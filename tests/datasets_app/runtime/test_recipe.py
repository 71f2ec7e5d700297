"""Running recipes: per-step reports, parallel equals serial, near duplicates across shards,
failures that name their step and leave nothing behind."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datasets_app.cleaning import recipe as recipe_module
from datasets_app.cleaning.recipe import DEFAULT_RECIPE, StepFailed, run_recipe
from llmhub.reporting import JobCancelled, JobInputError, RecordingReporter

_WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
    "oscar papa quebec romeo sierra tango uniform victor whiskey xray"
)
WORDS = _WORDS.split()


def _doc(rng: random.Random, words: int = 60) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def _near(text: str, position: int = 10, word: str = "zulu") -> str:
    words = text.split()
    words[position] = word
    return " ".join(words)


def _table(tmp_path: Path, texts: list, name: str = "in.parquet", **extra) -> Path:
    path = tmp_path / name
    pq.write_table(pa.table({"text": texts, **extra}), path)
    return path


def _run(source: Path, tmp_path: Path, steps: list[dict], **kwargs):
    return run_recipe(
        source,
        output=tmp_path / kwargs.pop("name", "out.parquet"),
        steps=steps,
        text_columns=kwargs.pop("text_columns", ["text"]),
        **kwargs,
    )


def _left(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.name != "in.parquet")


def test_default_recipe_report(tmp_path) -> None:
    rng = random.Random(3)
    originals = [_doc(rng) for _ in range(300)]
    near = [_near(text) for text in originals[:20]]
    texts = (
        originals
        + [text.upper() + "!" for text in originals[:15]]  # exact after normalization
        + near
        + ["<p>Please write to <b>ann@example.com</b> today</p>", "tiny", "   "]
    )
    labels = [str(i % 3) for i in range(len(texts))]
    source = _table(tmp_path, texts, label=labels)
    before = source.read_bytes()
    reporter = RecordingReporter()
    report = _run(source, tmp_path, DEFAULT_RECIPE, reporter=reporter)
    by_step = {s.step: s for s in report.steps}
    assert by_step["strip_html"].changed == 2  # the HTML row and the blank one (stripped)
    assert by_step["strip_html"].changed_examples[0] == {
        "before": "<p>Please write to <b>ann@example.com</b> today</p>",
        "after": "Please write to ann@example.com today",
    }
    assert by_step["pii_redact"].changed == 1
    assert by_step["pii_redact"].changed_examples == [
        {
            "before": "Please write to ann@example.com today",
            "after": "Please write to [EMAIL] today",
        }
    ]
    assert by_step["exact_dedupe"].removed == 15
    assert by_step["exact_dedupe"].removed_examples == [t.upper() + "!" for t in originals[:5]]
    assert by_step["near_dedupe"].removed == 20
    assert by_step["near_dedupe"].removed_examples == near[:5]
    assert by_step["length_filter"].removed == 2  # "tiny" and the blank row
    assert report.rows_in == len(texts) and report.rows_out == len(texts) - 37
    for first, second in zip(report.steps, report.steps[1:], strict=False):
        assert first.rows_out == second.rows_in
    assert [s.index for s in report.steps] == list(range(6))
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column_names == ["text", "label"]  # other columns kept, internals dropped
    assert table.num_rows == report.rows_out and report.path == tmp_path / "out.parquet"
    assert "Please write to [EMAIL] today" in table.column("text").to_pylist()
    kept_labels = table.column("label").to_pylist()
    assert kept_labels[:300] == labels[:300]  # rows keep their order and their other columns
    assert source.read_bytes() == before  # the source is never touched
    assert report.columns == [
        {"name": "text", "type": "string"},
        {"name": "label", "type": "string"},
    ]
    fractions = [f for f, _m in reporter.progress_calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert _left(tmp_path) == ["out.parquet"]  # no cache or partial files left
    stored = json.loads(json.dumps(report.to_dict()))  # as the job keeps it
    assert stored["steps"][3]["removed"] == 15 and "path" not in stored
    assert stored["content_sha256"] == report.content_sha256


def test_two_processes_give_the_same_table(tmp_path) -> None:
    rng = random.Random(5)
    texts = [_doc(rng) for _ in range(2500)]
    texts += texts[:100] + [_near(t, 30, "yankee") for t in texts[1000:1050]]
    source = _table(tmp_path, texts)
    one = _run(source, tmp_path, DEFAULT_RECIPE, name="one.parquet", batch_size=500)
    two = _run(source, tmp_path, DEFAULT_RECIPE, name="two.parquet", num_proc=2, batch_size=500)
    assert one.content_sha256 == two.content_sha256 and one.rows_out == 2500
    assert [s.removed for s in one.steps] == [s.removed for s in two.steps]
    assert [s.removed_examples for s in one.steps] == [s.removed_examples for s in two.steps]


def test_near_duplicates_are_found_across_shards(tmp_path) -> None:
    rng = random.Random(7)
    texts = [_doc(rng) for _ in range(1200)]
    texts.append(_near(texts[3], 20, "yankee"))  # its twin is in the other worker's shard
    texts.append(_doc(rng))  # a different document is kept
    report = _run(
        _table(tmp_path, texts),
        tmp_path,
        [{"step": "near_dedupe", "params": {"threshold": 0.8}}],
        num_proc=2,
        batch_size=300,
    )
    assert report.steps[0].removed == 1
    assert report.steps[0].removed_examples == [texts[-2]]


def test_near_dedupe_threshold_decides(tmp_path) -> None:
    rng = random.Random(11)
    base = _doc(rng, 40)
    words = base.split()
    light = _near(base, 5)  # one word changed: Jaccard of 3-shingles about 0.86
    heavy = " ".join(words[:20] + [rng.choice(WORDS) + "x" for _ in range(20)])  # ~0.3
    source = _table(tmp_path, [base, light, heavy])
    strict = _run(source, tmp_path, [{"step": "near_dedupe", "params": {"threshold": 0.95}}])
    loose = _run(
        source,
        tmp_path,
        [{"step": "near_dedupe", "params": {"threshold": 0.7, "num_perm": 256}}],
        name="loose.parquet",
    )
    assert strict.steps[0].removed == 0
    assert loose.steps[0].removed_examples == [light]


def test_steps_apply_in_order_to_surviving_rows(tmp_path) -> None:
    texts = ["Same text here", "SAME text, here!", "x"]
    report = _run(
        _table(tmp_path, texts),
        tmp_path,
        [
            {"step": "length_filter", "params": {"min_length": 5}},
            {"step": "exact_dedupe"},
            {"step": "lowercase"},
        ],
    )
    assert [(s.rows_in, s.removed, s.changed) for s in report.steps] == [
        (3, 1, 0),
        (2, 1, 0),
        (1, 0, 1),
    ]
    assert pq.read_table(tmp_path / "out.parquet").column("text").to_pylist() == ["same text here"]


def test_several_text_columns_and_nulls(tmp_path) -> None:
    source = _table(
        tmp_path,
        ["Doc ONE", "Doc two", None, "Doc four"],
        summary=["First", None, "third", "darn it"],
    )
    report = _run(
        source,
        tmp_path,
        [{"step": "lowercase"}, {"step": "bad_words", "params": {"words": ["darn"]}}],
        text_columns=["text", "summary"],
    )
    table = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert table == [
        {"text": "doc one", "summary": "first"},
        {"text": "doc two", "summary": None},  # a null stays null
        {"text": None, "summary": "third"},
    ]
    assert report.steps[1].removed_examples == ["Doc four"]  # the original primary text


def test_chunked_runs_report_progress_and_match_one_pass(tmp_path, monkeypatch) -> None:
    rng = random.Random(13)
    texts = [_doc(rng) for _ in range(900)]
    texts += texts[100:150] + [_near(t) for t in texts[200:230]]
    source = _table(tmp_path, texts)
    whole = _run(source, tmp_path, DEFAULT_RECIPE, name="whole.parquet", batch_size=100)
    monkeypatch.setattr(recipe_module, "CHUNK_ROWS", 250)
    reporter = RecordingReporter()
    chunked = _run(
        source, tmp_path, DEFAULT_RECIPE, name="chunked.parquet", batch_size=100, reporter=reporter
    )
    assert chunked.content_sha256 == whole.content_sha256
    assert sum("Cleaned" in m and "of 980 rows" in m for _f, m in reporter.progress_calls) == 4


def test_bad_columns_and_steps_write_nothing(tmp_path) -> None:
    source = _table(tmp_path, ["a", "b"], number=[1, 2])
    cases = [
        ({"text_columns": ["body"]}, "No column named body"),
        ({"text_columns": ["number"]}, "does not hold text"),
        ({"text_columns": []}, "at least one text column"),
        ({"steps": [{"step": "nope"}]}, "unknown step"),
        ({"num_proc": 0}, "num_proc must be"),
    ]
    for overrides, message in cases:
        kwargs = {"steps": DEFAULT_RECIPE, "text_columns": ["text"], **overrides}
        with pytest.raises(JobInputError, match=message):
            run_recipe(source, output=tmp_path / "o.parquet", **kwargs)
    with pytest.raises(JobInputError, match="new file, not the source"):
        run_recipe(source, output=source, steps=DEFAULT_RECIPE, text_columns=["text"])
    assert _left(tmp_path) == []


def test_a_crashing_step_fails_with_its_name_and_row(tmp_path, monkeypatch) -> None:
    from datasets_app.cleaning import steps as steps_module

    def explode(text: str, **kwargs) -> str:
        if "boom" in text:
            raise RuntimeError("parser exploded")
        return text

    monkeypatch.setattr(steps_module, "normalize_unicode", explode)
    with pytest.raises(
        StepFailed, match=r"Step 2 \(normalize_unicode\) failed: row 3: Runtime"
    ) as e:
        _run(
            _table(tmp_path, ["<p>x</p>", "fine", "boom"]),
            tmp_path,
            [{"step": "strip_html"}, {"step": "normalize_unicode"}, {"step": "lowercase"}],
        )
    assert (e.value.index, e.value.step) == (1, "normalize_unicode")
    assert _left(tmp_path) == []


def test_a_failing_step_in_a_worker_process_names_itself(tmp_path, monkeypatch) -> None:
    from datasets_app.cleaning import steps as steps_module

    monkeypatch.setattr(steps_module, "REGEX_TIMEOUT_S", 0.1)
    texts = ["a" * 3000 + "!"] * 4 + ["plain"] * 4
    with pytest.raises(
        StepFailed, match=r"Step 1 \(regex_filter\) failed: row \d: the regular expression took"
    ):
        _run(
            _table(tmp_path, texts),
            tmp_path,
            [{"step": "regex_filter", "params": {"pattern": "(a|aa)+$"}}],
            num_proc=2,
            batch_size=2,
        )
    assert _left(tmp_path) == []


def test_a_step_that_cannot_start_fails_before_any_work(tmp_path) -> None:
    steps = [
        {"step": "lowercase"},
        {"step": "length_filter", "params": {"unit": "tokens", "tokenizer_dir": "/no/such/dir"}},
    ]
    with pytest.raises(StepFailed, match=r"Step 2 \(length_filter\) failed: .*does not exist"):
        _run(_table(tmp_path, ["a b c"]), tmp_path, steps)
    assert _left(tmp_path) == []


def test_cancel_is_honoured(tmp_path) -> None:
    reporter = RecordingReporter()
    reporter.request_stop()
    with pytest.raises(JobCancelled):
        _run(_table(tmp_path, ["a b c"]), tmp_path, DEFAULT_RECIPE, reporter=reporter)
    assert _left(tmp_path) == []


def test_a_recipe_can_remove_every_row(tmp_path) -> None:
    report = _run(
        _table(tmp_path, ["short", "tiny"]),
        tmp_path,
        [{"step": "length_filter", "params": {"min_length": 100}}],
    )
    assert report.rows_out == 0 and pq.read_table(tmp_path / "out.parquet").num_rows == 0
