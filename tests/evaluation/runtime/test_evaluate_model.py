"""evaluate_model on tiny random-weight models: shapes, ranges, per-example scores, refusals."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest

from evaluation.runtime.evaluate_model import (
    INPUT_PREVIEW_CHARS,
    EvalConfig,
    EvalResult,
    evaluate_model,
)
from evaluation.runtime.models import detect_model_kind
from llmhub.reporting import JobCancelled, JobInputError, NullReporter, RecordingReporter

from .conftest import POEM_LABELS

pytestmark = pytest.mark.slow

POEM_ROLES = {"text": "verse_text", "label": "label"}
SUMMARY_ROLES = {"text": "document", "target": "summary"}
QA_ROLES = {"context": "context", "question": "question", "answers": "answers"}


def run(reporter=None, **kwargs) -> EvalResult:
    kwargs.setdefault("n_bootstrap", 200)
    kwargs.setdefault("batch_size", 4)
    return evaluate_model(EvalConfig(**kwargs), reporter=reporter or NullReporter())


def check_common(result: EvalResult, n: int) -> None:
    assert result.n_examples == n == len(result.examples)
    assert result.device == "cpu"
    json.dumps(result.as_dict(), allow_nan=False)  # what the Django side stores
    for m in result.metrics.values():
        assert m["n"] == n
        assert m["ci_low"] <= m["value"] <= m["ci_high"]
    for i, example in enumerate(result.examples):
        assert set(example) >= {"index", "input", "reference", "prediction", "scores"}
        assert len(example["input"]) <= INPUT_PREVIEW_CHARS
        assert example["index"] == i


def test_model_kinds_are_detected(tiny_models):
    assert detect_model_kind(tiny_models.causal) == "causal_lm"
    assert detect_model_kind(tiny_models.seq2seq) == "seq2seq"
    assert detect_model_kind(tiny_models.classifier) == "sequence_classification"
    assert detect_model_kind(tiny_models.masked) == "masked_lm"
    assert detect_model_kind(tiny_models.extractive_qa) == "extractive_qa"


def test_classifier_predicts_model_labels_and_scores_each_example(tiny_models, data_files):
    reporter = RecordingReporter()
    result = run(
        reporter,
        model_dir=tiny_models.classifier,
        task_type="classification",
        data_path=data_files["poems"],
        column_roles=POEM_ROLES,
        metrics=["accuracy", "f1_macro", "f1_weighted", "loss"],
    )
    check_common(result, 24)
    assert result.model_kind == "sequence_classification"
    for name in ("accuracy", "f1_macro", "f1_weighted"):
        assert 0 <= result.metrics[name]["value"] <= 1
    # Four classes from random weights: the label cross-entropy is near log(4).
    assert result.metrics["loss"]["value"] == pytest.approx(math.log(4), abs=0.3)
    assert {e["prediction"] for e in result.examples} <= set(POEM_LABELS)
    correct = [e["scores"]["correct"] for e in result.examples]
    assert np.mean(correct) == pytest.approx(result.metrics["accuracy"]["value"])
    assert all(
        c == float(e["prediction"] == e["reference"])
        for c, e in zip(correct, result.examples, strict=True)
    )
    fractions = [f for f, _ in reporter.progress_calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_integer_labels_are_mapped_through_id2label(tiny_models, data_files, tmp_path):
    frame = pd.read_parquet(data_files["poems"])
    frame["label_id"] = frame["label"].map({label: i for i, label in enumerate(POEM_LABELS)})
    path = tmp_path / "ids.parquet"
    frame.to_parquet(path)
    by_id = run(
        model_dir=tiny_models.classifier,
        task_type="classification",
        data_path=path,
        column_roles={"text": "verse_text", "label": "label_id"},
        metrics=["accuracy"],
    )
    by_name = run(
        model_dir=tiny_models.classifier,
        task_type="classification",
        data_path=path,
        column_roles=POEM_ROLES,
        metrics=["accuracy"],
    )
    assert by_id.metrics["accuracy"]["value"] == by_name.metrics["accuracy"]["value"]
    assert {e["reference"] for e in by_id.examples} <= set(POEM_LABELS)


def test_labels_unknown_to_the_model_are_refused(tiny_models, data_files, tmp_path):
    frame = pd.read_parquet(data_files["poems"])
    frame["label"] = "spam"
    path = tmp_path / "spam.parquet"
    frame.to_parquet(path)
    with pytest.raises(JobInputError, match="share nothing"):
        run(
            model_dir=tiny_models.classifier,
            task_type="classification",
            data_path=path,
            column_roles=POEM_ROLES,
            metrics=["accuracy"],
        )


def test_causal_lm_summarization(tiny_models, data_files):
    result = run(
        model_dir=tiny_models.causal,
        task_type="summarization",
        data_path=data_files["scitldr"],
        column_roles=SUMMARY_ROLES,
        metrics=["rougeL", "rouge1", "bleu", "chrf", "gen_len", "perplexity", "loss"],
        max_new_tokens=6,
        max_examples=8,
    )
    check_common(result, 8)
    assert result.model_kind == "causal_lm"
    for name in ("rougeL", "rouge1", "bleu", "chrf"):
        assert 0 <= result.metrics[name]["value"] <= 1
    for name in ("rougeL", "rouge1", "gen_len"):
        per = [e["scores"][name] for e in result.examples]
        assert np.mean(per) == pytest.approx(result.metrics[name]["value"])
    assert all(0 < e["stats"]["gen_len"] <= 6 for e in result.examples)
    # Perplexity pools the target tokens of all examples.
    nll = sum(e["stats"]["nll_sum"] for e in result.examples)
    tokens = sum(e["stats"]["n_tokens"] for e in result.examples)
    assert result.metrics["loss"]["value"] == pytest.approx(nll / tokens)
    assert result.metrics["perplexity"]["value"] == pytest.approx(math.exp(nll / tokens))
    assert 1 < result.metrics["perplexity"]["value"] < 5000
    # The prompt is not part of the prediction, and the reference is the summary.
    first = result.examples[0]
    assert not first["prediction"].startswith(first["input"][:20])
    assert first["reference"] == pd.read_parquet(data_files["scitldr"]).summary[0]
    assert any("truncated" in w for w in result.warnings)


def test_sampling_is_reproducible_with_a_seed(tiny_models, data_files):
    kwargs = dict(
        model_dir=tiny_models.causal,
        task_type="generation",
        data_path=data_files["scitldr"],
        column_roles={"prompt": "summary", "target": "title"},
        metrics=["gen_len"],
        temperature=0.9,
        top_p=0.9,
        max_new_tokens=5,
        max_examples=4,
        seed=5,
    )
    # 'title' is not in the file: the column check names it.
    with pytest.raises(JobInputError, match="'title' \\(role 'target'\\)"):
        run(**kwargs)
    kwargs["column_roles"] = {"prompt": "summary"}
    a, b = run(**kwargs), run(**kwargs)
    assert [e["prediction"] for e in a.examples] == [e["prediction"] for e in b.examples]


def test_seq2seq_summarization(tiny_models, data_files):
    result = run(
        model_dir=tiny_models.seq2seq,
        task_type="summarization",
        data_path=data_files["scitldr"],
        column_roles=SUMMARY_ROLES,
        metrics=["rouge2", "bleu", "gen_len", "perplexity"],
        max_new_tokens=5,
        max_examples=6,
        num_beams=2,
    )
    check_common(result, 6)
    assert result.model_kind == "seq2seq"
    assert all(e["prediction"] for e in result.examples)
    assert result.metrics["gen_len"]["value"] == 5
    assert result.metrics["perplexity"]["value"] > 1


def test_extractive_qa_picks_spans_of_the_context(tiny_models, data_files):
    result = run(
        model_dir=tiny_models.extractive_qa,
        task_type="qa",
        data_path=data_files["squad"],
        column_roles=QA_ROLES,
        metrics=["exact_match", "token_f1"],
    )
    check_common(result, 12)
    contexts = list(pd.read_parquet(data_files["squad"]).context)
    for example, context in zip(result.examples, contexts, strict=True):
        assert example["prediction"] in context
        assert example["references"] and example["reference"] == example["references"][0]
        assert example["scores"]["exact_match"] in (0.0, 1.0)
    f1 = [e["scores"]["token_f1"] for e in result.examples]
    assert np.mean(f1) == pytest.approx(result.metrics["token_f1"]["value"])


def test_generative_qa_and_answer_perplexity(tiny_models, data_files):
    result = run(
        model_dir=tiny_models.causal,
        task_type="qa",
        data_path=data_files["squad"],
        column_roles=QA_ROLES,
        metrics=["exact_match", "token_f1", "perplexity"],
        max_new_tokens=4,
        max_examples=5,
    )
    check_common(result, 5)
    assert "Question:" in result.examples[0]["input"]
    assert all("\n" not in e["prediction"] for e in result.examples)
    assert result.metrics["perplexity"]["value"] > 1


def test_masked_lm_gives_pseudo_perplexity_only(tiny_models, data_files):
    result = run(
        model_dir=tiny_models.masked,
        task_type="generation",
        data_path=data_files["scitldr"],
        column_roles={"text": "summary"},
        metrics=["perplexity"],
        max_examples=4,
    )
    check_common(result, 4)
    assert result.examples[0]["prediction"] is None
    assert result.metrics["perplexity"]["value"] > 1
    assert any("pseudo-perplexity" in w for w in result.warnings)
    with pytest.raises(JobInputError, match="masked LM cannot generate"):
        run(
            model_dir=tiny_models.masked,
            task_type="generation",
            data_path=data_files["scitldr"],
            column_roles=SUMMARY_ROLES,
            metrics=["rougeL"],
        )


# --- refusals -----------------------------------------------------------------------------------


def test_a_split_without_references_is_refused(tiny_models, data_files):
    with pytest.raises(JobInputError, match=r"no references.*'summary'.*empty in every row"):
        run(
            model_dir=tiny_models.causal,
            task_type="summarization",
            data_path=data_files["scitldr_no_refs"],
            column_roles=SUMMARY_ROLES,
            metrics=["rougeL"],
        )
    with pytest.raises(JobInputError, match="no column is mapped to the role 'target'"):
        run(
            model_dir=tiny_models.causal,
            task_type="summarization",
            data_path=data_files["scitldr"],
            column_roles={"text": "document"},
            metrics=["bleu"],
        )
    # Perplexity needs no reference: the same split can still be scored.
    ok = run(
        model_dir=tiny_models.causal,
        task_type="generation",
        data_path=data_files["scitldr_no_refs"],
        column_roles={"text": "document"},
        metrics=["perplexity"],
        max_examples=2,
    )
    assert ok.metrics["perplexity"]["value"] > 1


def test_model_directories_that_cannot_be_used_are_refused(tiny_models, data_files, tmp_path):
    common = dict(
        task_type="generation",
        data_path=data_files["scitldr"],
        column_roles={"text": "document"},
        metrics=["perplexity"],
    )
    with pytest.raises(JobInputError, match="no tokenizer files"):
        run(model_dir=tiny_models.no_tokenizer, **common)
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(JobInputError, match=r"not a model directory: it has no config\.json"):
        run(model_dir=tmp_path, **common)
    with pytest.raises(JobInputError, match="No model directory"):
        run(model_dir=tmp_path / "missing", **common)
    weightless = tmp_path / "weightless"
    shutil.copytree(tiny_models.causal, weightless)
    (weightless / "model.safetensors").unlink()
    with pytest.raises(JobInputError, match="no model weights"):
        run(model_dir=weightless, **common)


def test_config_checks(tiny_models, data_files):
    base = dict(
        model_dir=tiny_models.causal,
        task_type="summarization",
        data_path=data_files["scitldr"],
        column_roles=SUMMARY_ROLES,
        metrics=["rougeL"],
    )
    with pytest.raises(JobInputError, match="BLEU does not fit a classification task"):
        EvalConfig(**{**base, "task_type": "classification", "metrics": ["bleu"]})
    with pytest.raises(JobInputError, match="temperature"):
        EvalConfig(**base, temperature=-1)
    with pytest.raises(JobInputError, match="top_p"):
        EvalConfig(**base, top_p=0)
    with pytest.raises(JobInputError, match="Sampling needs a temperature"):
        EvalConfig(**base, do_sample=True)
    with pytest.raises(JobInputError, match="batch_size"):
        EvalConfig(**base, batch_size=0)
    with pytest.raises(JobInputError, match="Unknown device"):
        EvalConfig(**base, device="tpu")
    with pytest.raises(JobInputError, match="sequence classifier cannot be evaluated"):
        run(
            model_dir=tiny_models.classifier,
            task_type="summarization",
            data_path=data_files["scitldr"],
            column_roles=SUMMARY_ROLES,
            metrics=["rougeL"],
        )


def test_cancellation_between_batches(tiny_models, data_files):
    reporter = RecordingReporter()
    reporter.request_stop()
    with pytest.raises(JobCancelled):
        run(
            reporter,
            model_dir=tiny_models.causal,
            task_type="summarization",
            data_path=data_files["scitldr"],
            column_roles=SUMMARY_ROLES,
            metrics=["rougeL"],
            max_new_tokens=2,
        )


def test_seq2seq_qa_reads_the_question_first(tiny_models, data_files):
    result = run(
        model_dir=tiny_models.seq2seq,
        task_type="qa",
        data_path=data_files["squad"],
        column_roles=QA_ROLES,
        metrics=["token_f1", "perplexity"],
        max_new_tokens=3,
        max_examples=3,
    )
    check_common(result, 3)
    question = pd.read_parquet(data_files["squad"]).question[0]
    assert result.examples[0]["input"].startswith(f"question: {question} context: ")
    assert result.metrics["perplexity"]["value"] > 1
