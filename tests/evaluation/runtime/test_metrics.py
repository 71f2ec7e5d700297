"""The metrics against hand-computed values and the reference libraries, and their intervals."""

from __future__ import annotations

import math
import tempfile
import time

import numpy as np
import pytest

from evaluation.metrics.catalog import METRICS, check_metrics_fit
from evaluation.metrics.compute import compute_metrics
from evaluation.metrics.definitions import (
    Bleu,
    ChrF,
    ClassificationMetrics,
    bleu_from_stats,
    load_metric,
)
from evaluation.metrics.text import exact_match, normalize_answer, token_f1
from llmhub.reporting import JobInputError

CLASSIFICATION = [
    "accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "f1_micro",
    "f1_weighted",
]

HYPS = [
    "The cat sat on the mat.",
    "A quick brown dog jumps over the lazy fox",
    "It is raining heavily in the city today",
    "Models learn from data",
    "short",
]
REFS = [
    "The cat is sitting on the mat.",
    "The quick brown fox jumps over the lazy dog",
    "Heavy rain is falling in the city today",
    "Machine learning models learn patterns from data",
    "a much longer reference sentence",
]


def values(result, names=None):
    return {k: v["value"] for k, v in result.metrics.items() if names is None or k in names}


# --- classification -----------------------------------------------------------------------------


def test_classification_metrics_match_hand_computed_values():
    refs = ["a", "a", "b", "c"]
    preds = ["a", "b", "b", "c"]
    got = values(compute_metrics(CLASSIFICATION, predictions=preds, references=refs))
    # Per class (precision, recall, F1): a (1, 1/2, 2/3), b (1/2, 1, 2/3), c (1, 1, 1).
    assert got["accuracy"] == pytest.approx(3 / 4)
    assert got["precision_macro"] == pytest.approx(5 / 6)
    assert got["recall_macro"] == pytest.approx(5 / 6)
    assert got["f1_macro"] == pytest.approx(7 / 9)
    assert got["f1_micro"] == pytest.approx(3 / 4)
    assert got["f1_weighted"] == pytest.approx((2 * 2 / 3 + 2 / 3 + 1) / 4)


def test_per_example_correct_averages_to_accuracy():
    refs = ["x", "y", "y", "z", "x"]
    preds = ["x", "y", "z", "z", "y"]
    result = compute_metrics(["f1_macro", "accuracy"], predictions=preds, references=refs)
    assert result.per_example["correct"] == [1.0, 1.0, 0.0, 1.0, 0.0]
    assert np.mean(result.per_example["correct"]) == pytest.approx(
        result.metrics["accuracy"]["value"]
    )
    assert "f1_macro" not in result.per_example


def test_vectorized_classification_equals_scikit_learn_on_resamples():
    from sklearn.metrics import f1_score, precision_score, recall_score

    rng = np.random.default_rng(3)
    labels = ["a", "b", "c", "d", "e"]
    refs = [labels[i] for i in rng.integers(0, 5, 300)]
    preds = [r if rng.random() < 0.5 else labels[rng.integers(0, 5)] for r in refs]
    stats = ClassificationMetrics.statistics(CLASSIFICATION, predictions=preds, references=refs)
    for _ in range(5):
        # A small resample, so some classes vanish from it as they do in the bootstrap.
        idx = rng.integers(0, 300, 20)
        counts = np.bincount(idx, minlength=300).astype(float)
        got = stats.aggregate((counts @ stats.matrix)[None], np.array([20.0]))
        r = [refs[i] for i in idx]
        p = [preds[i] for i in idx]
        for average in ("macro", "weighted"):
            assert got[f"f1_{average}"][0] == pytest.approx(
                f1_score(r, p, average=average, zero_division=0)
            )
        assert got["precision_macro"][0] == pytest.approx(
            precision_score(r, p, average="macro", zero_division=0)
        )
        assert got["recall_macro"][0] == pytest.approx(
            recall_score(r, p, average="macro", zero_division=0)
        )


# --- QA -----------------------------------------------------------------------------------------


def test_exact_match_normalizes_case_punctuation_and_articles():
    assert normalize_answer("  The  Eiffel Tower! ") == "eiffel tower"
    assert exact_match("The Eiffel Tower!", ["eiffel tower"]) == 1.0
    assert exact_match("Eiffel", ["eiffel tower"]) == 0.0
    assert exact_match("Paris", ["Lyon", "paris."]) == 1.0  # best over the references


def test_token_f1_of_a_known_pair():
    # Normalized: [cat, sat, on, mat] vs [cat, on, mat]: 3 shared, P = 3/4, R = 1.
    assert token_f1("the cat sat on the mat", ["a cat on a mat"]) == pytest.approx(6 / 7)
    assert token_f1("cat", ["dog", "the cat"]) == 1.0
    assert token_f1("", [""]) == 1.0
    assert token_f1("cat", ["dog"]) == 0.0


def test_qa_metrics_average_their_per_example_scores():
    preds = ["Denver Broncos", "the 1990s", "blue"]
    refs = [["Denver Broncos", "Broncos"], ["1990s"], ["red", "green"]]
    result = compute_metrics(["exact_match", "token_f1"], predictions=preds, references=refs)
    assert result.per_example["exact_match"] == [1.0, 1.0, 0.0]
    assert result.metrics["exact_match"]["value"] == pytest.approx(2 / 3)
    assert result.metrics["token_f1"]["value"] == pytest.approx(
        np.mean(result.per_example["token_f1"])
    )


# --- BLEU, chrF, ROUGE --------------------------------------------------------------------------


def test_bleu_and_chrf_equal_sacrebleu():
    import sacrebleu

    result = compute_metrics(["bleu", "chrf"], predictions=HYPS, references=REFS)
    assert result.metrics["bleu"]["value"] == pytest.approx(
        sacrebleu.corpus_bleu(HYPS, [REFS]).score / 100, abs=1e-12
    )
    assert result.metrics["chrf"]["value"] == pytest.approx(
        sacrebleu.corpus_chrf(HYPS, [REFS]).score / 100, abs=1e-12
    )
    for i, (h, r) in enumerate(zip(HYPS, REFS, strict=True)):
        assert result.per_example["bleu"][i] == pytest.approx(
            sacrebleu.sentence_bleu(h, [r]).score / 100, abs=1e-12
        )
        assert result.per_example["chrf"][i] == pytest.approx(
            sacrebleu.sentence_chrf(h, [r]).score / 100, abs=1e-12
        )


def test_bleu_with_several_and_uneven_references_equals_sacrebleu():
    import sacrebleu

    refs = [[r, r.upper()] for r in REFS[:3]] + [[REFS[3]], [REFS[4], "short one"]]
    streams = [[r[0] for r in refs], [r[1] if len(r) > 1 else None for r in refs]]
    got = compute_metrics(["bleu"], predictions=HYPS, references=refs, n_bootstrap=0)
    assert got.metrics["bleu"]["value"] == pytest.approx(
        sacrebleu.corpus_bleu(HYPS, streams).score / 100, abs=1e-12
    )


def test_vectorized_bleu_equals_sacrebleu_on_random_statistics():
    from sacrebleu.metrics import BLEU

    rng = np.random.default_rng(0)
    bleu, sentence = BLEU(), BLEU(effective_order=True)
    for _ in range(200):
        total = rng.integers(0, 6, 4)
        total = np.sort(total)[::-1]  # higher orders never have more n-grams
        correct = np.minimum(rng.integers(0, 6, 4), total)
        row = np.array([total[0], rng.integers(0, 8), *correct, *total], dtype=float)
        stats = [int(x) for x in row]
        expected = bleu._compute_score_from_stats(list(stats)).score / 100
        assert bleu_from_stats(row)[0] == pytest.approx(expected, abs=1e-12)
        expected = sentence._compute_score_from_stats(list(stats)).score / 100
        assert bleu_from_stats(row, effective_order=True)[0] == pytest.approx(expected, abs=1e-12)


def test_rouge_equals_rouge_score_with_stemming():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    result = compute_metrics(["rouge1", "rouge2", "rougeL"], predictions=HYPS, references=REFS)
    for name in ("rouge1", "rouge2", "rougeL"):
        expected = [scorer.score(r, h)[name].fmeasure for h, r in zip(HYPS, REFS, strict=True)]
        assert result.per_example[name] == pytest.approx(expected)
        assert result.metrics[name]["value"] == pytest.approx(np.mean(expected))
    multi = compute_metrics(
        ["rougeL"], predictions=HYPS[:2], references=[[REFS[1], REFS[0]], [REFS[0], REFS[1]]]
    )
    best = [
        scorer.score_multi([REFS[1], REFS[0]], HYPS[0])["rougeL"].fmeasure,
        scorer.score_multi([REFS[0], REFS[1]], HYPS[1])["rougeL"].fmeasure,
    ]
    assert multi.per_example["rougeL"] == pytest.approx(best)


# --- perplexity, generation length --------------------------------------------------------------


def test_perplexity_pools_tokens():
    nll, tokens = [2.0, 6.0, 1.5], [2, 3, 0]
    result = compute_metrics(
        ["perplexity", "loss"],
        predictions=None,
        references=None,
        per_example_extra={"nll_sum": nll, "n_tokens": tokens},
    )
    assert result.metrics["loss"]["value"] == pytest.approx(9.5 / 5)
    assert result.metrics["perplexity"]["value"] == pytest.approx(math.exp(9.5 / 5))
    assert result.per_example["perplexity"][:2] == pytest.approx([math.e, math.exp(2.0)])
    assert result.per_example["perplexity"][2] is None  # no token scored


def test_gen_len_uses_the_runner_counts_or_words():
    extra = compute_metrics(
        ["gen_len"],
        predictions=["a b", "c"],
        references=None,
        per_example_extra={"gen_len": [4, 6]},
    )
    assert extra.metrics["gen_len"]["value"] == 5
    words = compute_metrics(["gen_len"], predictions=["a b", "c d e f"], references=None)
    assert words.metrics["gen_len"]["value"] == 3


# --- evaluate.Metric subclasses -----------------------------------------------------------------


def test_evaluate_metric_classes_compute_offline_and_agree():
    bleu = load_metric("bleu")
    assert isinstance(bleu, Bleu)
    assert str(bleu.data_dir).startswith(tempfile.gettempdir())
    got = bleu.compute(predictions=HYPS, references=[[r] for r in REFS])
    assert got["bleu"] == pytest.approx(
        compute_metrics(["bleu"], predictions=HYPS, references=REFS).metrics["bleu"]["value"]
    )
    chrf = load_metric("chrf")
    assert isinstance(chrf, ChrF)
    assert 0 < chrf.compute(predictions=HYPS, references=[[r] for r in REFS])["chrf"] < 1
    cls = load_metric("f1_macro").compute(
        predictions=["a", "b", "b", "c"], references=["a", "a", "b", "c"]
    )
    assert cls["accuracy"] == 0.75 and cls["f1_macro"] == pytest.approx(7 / 9)
    ppl = load_metric("perplexity").compute(nll_sum=[2.0, 4.0], n_tokens=[1, 3])
    assert ppl["perplexity"] == pytest.approx(math.exp(1.5))


def test_every_catalog_metric_has_a_definition():
    from evaluation.metrics.definitions import FAMILY_OF

    assert set(METRICS) == set(FAMILY_OF)


# --- confidence intervals -----------------------------------------------------------------------


def test_intervals_contain_the_value_and_narrow_with_more_data():
    rng = np.random.default_rng(1)

    def width(n):
        refs = ["yes"] * n
        preds = ["yes" if x < 0.7 else "no" for x in rng.random(n)]
        m = compute_metrics(["accuracy"], predictions=preds, references=refs).metrics["accuracy"]
        assert m["ci_low"] <= m["value"] <= m["ci_high"]
        assert m["n"] == n
        return m["ci_high"] - m["ci_low"]

    small, large = width(50), width(5000)
    assert large < small / 4


def test_corpus_bleu_interval_contains_the_value_and_is_reproducible():
    hyps, refs = HYPS * 20, REFS * 20
    a = compute_metrics(["bleu", "rougeL"], predictions=hyps, references=refs, seed=7)
    b = compute_metrics(["bleu", "rougeL"], predictions=hyps, references=refs, seed=7)
    assert a.metrics == b.metrics
    for m in a.metrics.values():
        assert m["ci_low"] <= m["value"] <= m["ci_high"]
        assert m["ci_low"] < m["ci_high"]
    none = compute_metrics(["bleu"], predictions=hyps, references=refs, n_bootstrap=0)
    assert none.metrics["bleu"]["ci_low"] is None


def test_bootstrap_over_ten_thousand_examples_takes_seconds():
    rng = np.random.default_rng(2)
    words = [f"w{i}" for i in range(300)]
    refs = [" ".join(rng.choice(words, 12)) for _ in range(10_000)]
    hyps = [" ".join(r.split()[:8] + list(rng.choice(words, 3))) for r in refs]
    labels = [r.split()[0] for r in refs]
    start = time.perf_counter()
    result = compute_metrics(["bleu", "rouge1"], predictions=hyps, references=refs)
    compute_metrics(CLASSIFICATION, predictions=[h.split()[0] for h in hyps], references=labels)
    elapsed = time.perf_counter() - start
    assert result.metrics["bleu"]["n"] == 10_000
    # Measured about 2 s on 2 shared cores; a per-resample Python loop would take minutes.
    assert elapsed < 20


# --- refusals -----------------------------------------------------------------------------------


def test_check_metrics_fit_rejects_bleu_on_classification():
    with pytest.raises(JobInputError, match=r"BLEU does not fit a classification task.*accuracy"):
        check_metrics_fit("classification", ["accuracy", "bleu"])
    with pytest.raises(JobInputError, match="Unknown metric"):
        check_metrics_fit("summarization", ["rougeZ"])
    with pytest.raises(JobInputError, match="Unknown task type"):
        check_metrics_fit("poetry", ["bleu"])
    with pytest.raises(JobInputError, match="at least one metric"):
        check_metrics_fit("qa", [])
    check_metrics_fit("summarization", ["rougeL", "bleu", "perplexity", "gen_len"])


def test_compute_metrics_refuses_missing_references_and_unknown_names():
    with pytest.raises(JobInputError, match="1 of 2 examples have no reference"):
        compute_metrics(["rougeL"], predictions=["a", "b"], references=["a", ""])
    with pytest.raises(JobInputError, match="Unknown metric"):
        compute_metrics(["bleurt"], predictions=["a"], references=["a"])
    with pytest.raises(JobInputError, match="no examples"):
        compute_metrics(["bleu"], predictions=[], references=[])
    with pytest.raises(ValueError, match="different lengths"):
        compute_metrics(["bleu"], predictions=["a", "b"], references=["a"])
