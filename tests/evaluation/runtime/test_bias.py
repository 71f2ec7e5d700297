"""Bias probes on tiny models, their aggregation on known outputs, slices, probe file checks."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from evaluation.metrics.compute import compute_metrics
from evaluation.runtime import bias
from llmhub.reporting import JobCancelled, JobInputError, NullReporter, RecordingReporter

from .conftest import BOLD, CROWS, WINOBIAS

pytestmark = pytest.mark.slow


def check_report(report: dict, kind: str) -> None:
    assert report["kind"] == kind
    assert set(report) == {"kind", "summary", "groups", "explanation", "examples"}
    assert len(report["explanation"]) > 200
    assert report["groups"] and report["examples"]
    for group in report["groups"]:
        assert {"group", "n", "value", "ci_low", "ci_high"} <= set(group)
        assert group["ci_low"] <= group["value"] <= group["ci_high"]
    json.dumps(report, allow_nan=False)


# --- CrowS-Pairs --------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["causal", "masked"])
def test_crows_pairs_share_per_bias_type(tiny_models, which):
    report = bias.crows_pairs(getattr(tiny_models, which), CROWS, reporter=RecordingReporter())
    check_report(report, "crows_pairs")
    summary = report["summary"]
    assert 0 <= summary["stereotype_preferred"] <= 1
    assert summary["ci_low"] <= summary["stereotype_preferred"] <= summary["ci_high"]
    assert summary["n_pairs"] == 40
    assert summary["scoring"] == (
        "log-likelihood" if which == "causal" else "pseudo-log-likelihood"
    )
    assert {g["group"]: g["n"] for g in report["groups"]} == {
        "race-color": 10,
        "gender": 10,
        "socioeconomic": 10,
        "religion": 10,
    }
    for group in report["groups"]:
        assert 0 <= group["value"] <= 1
    # The overall share is the pair-weighted mean of the groups' shares.
    assert summary["stereotype_preferred"] == pytest.approx(
        sum(g["value"] * g["n"] for g in report["groups"]) / 40
    )
    example = report["examples"][0]
    assert example["preferred"] in ("stereotypical", "anti_stereotypical", "tie")


def test_crows_pairs_picks_the_stereotypical_side_by_direction(tiny_models, tmp_path):
    # With sent_more and sent_less swapped and the direction flipped, the outcome is the same.
    table = pd.read_csv(CROWS).head(12)
    flipped = table.copy()
    flipped["sent_more"], flipped["sent_less"] = table["sent_less"], table["sent_more"]
    flipped["stereo_antistereo"] = table["stereo_antistereo"].map(
        {"stereo": "antistereo", "antistereo": "stereo"}
    )
    path = tmp_path / "flipped.csv"
    flipped.to_csv(path, index=False)
    a = bias.crows_pairs(tiny_models.causal, CROWS, max_pairs=12, reporter=NullReporter())
    b = bias.crows_pairs(tiny_models.causal, path, reporter=NullReporter())
    assert a["summary"]["stereotype_preferred"] == b["summary"]["stereotype_preferred"]


def test_crows_pairs_needs_a_language_model(tiny_models):
    with pytest.raises(JobInputError, match="causal or masked language model"):
        bias.crows_pairs(tiny_models.classifier, CROWS, max_pairs=2, reporter=NullReporter())


# --- WinoBias -----------------------------------------------------------------------------------


def test_winobias_pairs_pro_and_anti_twins():
    table = pd.read_json(WINOBIAS, lines=True)
    pairs, unpaired = bias._winobias_pairs(table)
    assert len(pairs) == 20 and unpaired == 0
    for pro, anti in pairs:
        a, b = table.iloc[pro], table.iloc[anti]
        assert (a.stereotype, b.stereotype) == ("pro", "anti")
        assert a.line_id == b.line_id and a.type == b.type
        assert a.file.replace("pro_", "anti_") == b.file
        # Twins differ only in the pronoun.
        diff = [x for x, y in zip(a.text.split(), b.text.split(), strict=True) if x != y]
        assert len(diff) == 1


def test_winobias_on_a_causal_lm(tiny_models):
    report = bias.winobias(tiny_models.causal, WINOBIAS, reporter=NullReporter())
    check_report(report, "winobias")
    summary = report["summary"]
    assert 0 <= summary["pro_preferred"] <= 1
    assert summary["n_pairs"] == 20 and summary["n_unpaired"] == 0
    assert summary["gap"] == pytest.approx(
        summary["pro_mean_ll_per_token"] - summary["anti_mean_ll_per_token"]
    )
    assert summary["pro_mean_ll_per_token"] < 0
    assert [g["group"] for g in report["groups"]] == ["type 1", "type 2"]
    assert [g["n"] for g in report["groups"]] == [10, 10]


def test_winobias_pairs_by_order_without_file_columns(tiny_models, tmp_path):
    table = pd.read_json(WINOBIAS, lines=True)[["stereotype", "type", "text"]]
    path = tmp_path / "mine.parquet"
    table.to_parquet(path)
    report = bias.winobias(tiny_models.masked, path, max_pairs=6, reporter=NullReporter())
    assert report["summary"]["n_pairs"] == 6
    assert report["summary"]["scoring"] == "pseudo-log-likelihood"


# --- BOLD ---------------------------------------------------------------------------------------


def test_bold_on_a_causal_lm(tiny_models):
    report = bias.bold(
        tiny_models.causal,
        BOLD,
        max_prompts_per_group=3,
        max_new_tokens=6,
        reporter=RecordingReporter(),
    )
    check_report(report, "bold")
    summary = report["summary"]
    assert summary["n_prompts"] == 12
    assert -1 <= summary["mean_compound"] <= 1
    assert 0 <= summary["share_negative"] <= 1 and 0 <= summary["share_positive"] <= 1
    assert set(summary["domains"]) == {"gender", "religious_ideology"}
    assert [(g["domain"], g["group"], g["n"]) for g in report["groups"]] == [
        ("gender", "American_actors", 3),
        ("gender", "American_actresses", 3),
        ("religious_ideology", "judaism", 3),
        ("religious_ideology", "christianity", 3),
    ]
    for group in report["groups"]:
        assert -1 <= group["value"] <= 1
    assert report["examples"][0]["continuation"] is not None


def test_bold_gaps_from_known_continuations(tiny_models, monkeypatch):
    from evaluation.runtime import models

    tone = {
        "American_actors": "a wonderful, brilliant and much loved artist",
        "American_actresses": "a terrible, hated and awful failure",
        "judaism": "a scholar.",
        "christianity": "a good and kind neighbour",
    }
    prompts = pd.read_json(BOLD, lines=True)

    def fake_generate(loaded, texts, settings, *, batch_size, on_batch=None):
        by_prompt = dict(zip(prompts.prompt, prompts.category, strict=True))
        out = [tone[by_prompt[t]] for t in texts]
        return out, [len(x.split()) for x in out], 0

    monkeypatch.setattr(models, "generate", fake_generate)
    report = bias.bold(tiny_models.causal, BOLD, n_bootstrap=100, reporter=NullReporter())
    groups = {g["group"]: g for g in report["groups"]}
    assert groups["American_actors"]["value"] > 0.5
    assert groups["American_actresses"]["value"] < -0.5
    assert groups["American_actresses"]["share_negative"] == 1.0
    assert groups["judaism"]["value"] == 0.0
    gender = report["summary"]["domains"]["gender"]["largest_gap"]
    assert gender["high_group"] == "American_actors"
    assert gender["low_group"] == "American_actresses"
    assert gender["value"] == pytest.approx(
        groups["American_actors"]["value"] - groups["American_actresses"]["value"]
    )
    assert report["summary"]["largest_gap"]["domain"] == "gender"
    assert report["examples"][0]["category"] == "American_actresses"  # most negative first


def test_bold_needs_a_generative_model_and_can_be_cancelled(tiny_models):
    with pytest.raises(JobInputError, match="generates text"):
        bias.bold(tiny_models.masked, BOLD, max_prompts_per_group=1, reporter=NullReporter())
    reporter = RecordingReporter()
    reporter.request_stop()
    with pytest.raises(JobCancelled):
        bias.bold(tiny_models.causal, BOLD, max_prompts_per_group=1, reporter=reporter)


# --- slices -------------------------------------------------------------------------------------


def test_slice_metrics_per_value_with_the_largest_disparity():
    refs = ["a", "a", "b", "b", "a", "b", "a", "a", "b", "b", "a", "b"]
    preds = ["a", "a", "b", "b", "a", "b", "b", "b", "a", "b", "a", "b"]
    examples = [
        {"index": i, "input": f"row {i}", "reference": r, "prediction": p, "scores": {}}
        for i, (r, p) in enumerate(zip(refs, preds, strict=True))
    ]
    slices = ["x"] * 6 + ["y"] * 5 + [None]
    report = bias.slice_metrics(examples, slice_values=slices, metric="accuracy", min_slice_size=2)
    check_report(report, "slices")
    groups = {g["group"]: g for g in report["groups"]}
    assert groups["x"]["value"] == 1.0 and groups["x"]["n"] == 6
    assert groups["y"]["value"] == pytest.approx(2 / 5)
    assert groups["(missing)"]["small"] is True
    disparity = report["summary"]["largest_disparity"]
    assert disparity == {
        "value": pytest.approx(3 / 5),
        "high_group": "x",
        "high_value": 1.0,
        "low_group": "y",
        "low_value": pytest.approx(2 / 5),
    }
    assert report["summary"]["overall"]["value"] == pytest.approx(9 / 12)
    assert {e["group"] for e in report["examples"]} == {"y"}  # from the worst slice


def test_slice_metrics_recompute_corpus_metrics_per_slice():
    hyps = ["the cat sat on the mat", "a dog barked", "rain in the city", "models learn"]
    refs = [
        "the cat is on the mat",
        "the dog barked loudly",
        "heavy rain in the city",
        "models learn from data",
    ]
    examples = [
        {"index": i, "input": "", "reference": r, "prediction": h, "scores": {}}
        for i, (h, r) in enumerate(zip(hyps, refs, strict=True))
    ]
    report = bias.slice_metrics(examples, slice_values=[1, 1, 2, 2], metric="bleu", n_bootstrap=0)
    groups = {g["group"]: g for g in report["groups"]}
    expected = compute_metrics(["bleu"], predictions=hyps[:2], references=refs[:2], n_bootstrap=0)
    assert groups["1"]["value"] == pytest.approx(expected.metrics["bleu"]["value"])


def test_slice_metrics_on_evaluation_output(tiny_models, data_files):
    from evaluation.runtime.evaluate_model import EvalConfig, evaluate_model

    result = evaluate_model(
        EvalConfig(
            model_dir=tiny_models.causal,
            task_type="summarization",
            data_path=data_files["scitldr"],
            column_roles={"text": "document", "target": "summary"},
            metrics=["perplexity", "rougeL"],
            max_new_tokens=3,
            max_examples=6,
            n_bootstrap=50,
        ),
        reporter=NullReporter(),
    )
    values = ["short" if len(e["reference"]) < 120 else "long" for e in result.examples]
    report = bias.slice_metrics(
        result.examples, slice_values=values, metric="perplexity", min_slice_size=1
    )
    assert sum(g["n"] for g in report["groups"]) == 6
    assert report["summary"]["overall"]["value"] == pytest.approx(
        result.metrics["perplexity"]["value"]
    )
    with pytest.raises(JobInputError, match="Unknown metric"):
        bias.slice_metrics(result.examples, slice_values=values, metric="bleurt")


# --- probe files --------------------------------------------------------------------------------


def test_shipped_probe_files_are_valid():
    bias.validate_probe_file("crows_pairs", CROWS)
    bias.validate_probe_file("bold", BOLD)
    bias.validate_probe_file("winobias", WINOBIAS)


def test_probe_files_with_problems_are_refused(tmp_path):
    broken = pd.read_csv(CROWS).drop(columns=["bias_type", "sent_less"])
    path = tmp_path / "mine.csv"
    broken.to_csv(path, index=False)
    with pytest.raises(JobInputError, match="lacks the column\\(s\\) sent_less, bias_type"):
        bias.validate_probe_file("crows_pairs", path)
    wino = pd.read_json(WINOBIAS, lines=True)
    wino.loc[0, "stereotype"] = "neutral"
    path = tmp_path / "wino.jsonl"
    wino.to_json(path, orient="records", lines=True)
    with pytest.raises(JobInputError, match="'stereotype' must be one of anti, pro; found neutral"):
        bias.validate_probe_file("winobias", path)
    path = tmp_path / "probe.xlsx"
    path.write_text("x")
    with pytest.raises(JobInputError, match=r"must be \.csv, \.jsonl"):
        bias.validate_probe_file("bold", path)
    with pytest.raises(JobInputError, match="Unknown probe kind"):
        bias.validate_probe_file("stereoset", CROWS)
    with pytest.raises(JobInputError, match="No probe file"):
        bias.validate_probe_file("bold", tmp_path / "missing.jsonl")


def test_slice_metrics_average_stored_scores_when_text_is_not_enough():
    # As the Django side stores rows: one reference, the per-example scores. The second answer
    # matched, which only the stored exact_match score knows.
    examples = [
        {
            "index": 0,
            "reference": "Broncos",
            "prediction": "Denver",
            "scores": {"exact_match": 1.0},
        },
        {"index": 1, "reference": "1990", "prediction": "1991", "scores": {"exact_match": 0.0}},
        {"index": 2, "reference": "red", "prediction": "red", "scores": {"exact_match": 1.0}},
    ]
    report = bias.slice_metrics(
        examples, slice_values=["a", "a", "b"], metric="exact_match", min_slice_size=1
    )
    groups = {g["group"]: g["value"] for g in report["groups"]}
    assert groups == {"a": 0.5, "b": 1.0}
    assert report["summary"]["overall"]["value"] == pytest.approx(2 / 3)
    with pytest.raises(JobInputError, match="no likelihood statistics"):
        bias.slice_metrics(examples, slice_values=["a", "a", "b"], metric="perplexity")
