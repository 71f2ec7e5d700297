"""The metrics as ``evaluate.Metric`` subclasses, one per family, built on summable statistics.

``evaluate.load(name)`` fetches metric scripts from a hub, so LLMHub defines its metrics here and
computes them with the libraries directly: scikit-learn (classification), sacreBLEU (BLEU, chrF),
rouge-score (ROUGE) and the SQuAD rules (exact match, token F1). Each class can be used the
``evaluate`` way (``ClassificationMetrics(...).compute(predictions=..., references=...)``; make
instances with :func:`load_metric`, which keeps everything in memory and under a temporary
folder, so nothing is written to the home directory and nothing touches the network).

Each family also exposes ``statistics(...) -> ExampleStats``: one row of *sufficient statistics*
per example (columns that add up over a corpus: n-gram matches and totals for BLEU, class counts
for F1, NLL sums and token counts for perplexity...) and a vectorized ``aggregate`` that turns the
column sums of the whole corpus, or of a thousand bootstrap resamples at once, into metric values.
That is what makes the bootstrap confidence intervals in :mod:`evaluation.metrics.compute` cheap:
corpus-level metrics such as BLEU are recomputed exactly on every resample without re-reading
any text.

Only workers import this module (numpy, evaluate, datasets at import time; scikit-learn,
sacrebleu and rouge-score inside the functions that need them).
"""

from __future__ import annotations

import functools
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, ClassVar

import datasets
import evaluate
import numpy as np

from evaluation.metrics.text import exact_match, token_f1

# A per-example score list: None where the score is undefined (no tokens scored).
Scores = list[float | None]
Aggregate = Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]


@dataclass
class ExampleStats:
    """Per-example sufficient statistics of one metric family over a set of examples.

    ``matrix`` has one row per example; its columns add up over examples. ``aggregate(sums,
    counts)`` takes column sums of shape ``(B, k)`` and example counts of shape ``(B,)`` and
    returns ``{metric name: values of shape (B,)}`` (NaN where undefined). ``point`` holds the
    values on all examples as the reference library computes them. ``per_example`` holds the
    per-example scores where they mean something (see each family).
    """

    names: tuple[str, ...]
    matrix: np.ndarray
    aggregate: Aggregate
    point: dict[str, float | None]
    per_example: dict[str, Scores] = field(default_factory=dict)

    def aggregate_all(self) -> dict[str, float | None]:
        """``aggregate`` on the whole corpus: equals ``point`` up to float rounding."""
        sums = self.matrix.sum(axis=0, keepdims=True)
        counts = np.array([float(len(self.matrix))])
        return {k: _finite(v[0]) for k, v in self.aggregate(sums, counts).items()}


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den is 0 (scikit-learn's zero_division=0)."""
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _mean_aggregate(names: Sequence[str]) -> Aggregate:
    def aggregate(sums: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            return {name: sums[:, i] / counts for i, name in enumerate(names)}

    return aggregate


def _mean_stats(names: tuple[str, ...], columns: dict[str, Scores]) -> ExampleStats:
    """Statistics for metrics that are plain means of per-example scores."""
    matrix = np.array([columns[name] for name in names], dtype=np.float64).T.reshape(-1, len(names))
    point = {
        name: (_finite(matrix[:, i].mean()) if len(matrix) else None)
        for i, name in enumerate(names)
    }
    return ExampleStats(names, matrix, _mean_aggregate(names), point, dict(columns))


def as_reference_lists(references: Sequence[Any]) -> list[list[str]]:
    """Each example's references as a list of non-empty strings (one string, a list, or None)."""
    out = []
    for ref in references:
        if ref is None:
            out.append([])
        elif isinstance(ref, str):
            out.append([ref] if ref.strip() else [])
        else:
            out.append([str(r) for r in ref if r is not None and str(r).strip()])
    return out


def _info(description: str, features: dict[str, Any], inputs: str) -> evaluate.MetricInfo:
    return evaluate.MetricInfo(
        description=description,
        citation="",
        inputs_description=inputs,
        features=datasets.Features(features),
    )


_STRINGS = datasets.Value("string")
_REFERENCE_LISTS = datasets.Sequence(datasets.Value("string"))


class MetricFamily(evaluate.Metric):
    """A family of metrics computed together from the same per-example statistics."""

    NAMES: ClassVar[tuple[str, ...]]
    # What statistics() takes: "labels" (one label per example), "texts" (predictions and
    # reference lists), "likelihood" (nll_sum, n_tokens) or "lengths".
    INPUTS: ClassVar[str] = "texts"

    def _compute(self, **inputs: Any) -> dict[str, float | None]:
        return self.statistics(self.NAMES, **inputs).point

    @classmethod
    def statistics(cls, names: Sequence[str], **inputs: Any) -> ExampleStats:
        raise NotImplementedError


# --- classification ---------------------------------------------------------------------------


class ClassificationMetrics(MetricFamily):
    """Accuracy, macro precision and recall, and F1 (macro, micro, weighted) over string labels.

    Labels are compared as strings. As in scikit-learn, the classes are those that occur among
    the references or the predictions, and a class never predicted has precision 0
    (``zero_division=0``). Per-example score: ``correct`` (1.0 or 0.0), whose mean is accuracy.
    """

    NAMES = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_micro", "f1_weighted")
    INPUTS = "labels"

    def _info(self) -> evaluate.MetricInfo:
        return _info(
            self.__doc__ or "",
            {"predictions": _STRINGS, "references": _STRINGS},
            "predictions: predicted labels (str); references: true labels (str).",
        )

    @classmethod
    def statistics(
        cls, names: Sequence[str], *, predictions: Sequence[Any], references: Sequence[Any]
    ) -> ExampleStats:
        from sklearn.metrics import accuracy_score, precision_recall_fscore_support

        preds = [str(p) for p in predictions]
        refs = [str(r) for r in references]
        labels = sorted(set(refs) | set(preds))
        index = {label: i for i, label in enumerate(labels)}
        k, n = len(labels), len(refs)
        p_idx = np.array([index[p] for p in preds], dtype=np.int64)
        r_idx = np.array([index[r] for r in refs], dtype=np.int64)
        correct = (p_idx == r_idx).astype(np.float64)
        # Columns: correct | one-hot reference class | one-hot predicted class | one-hot hit.
        matrix = np.zeros((n, 1 + 3 * k))
        rows = np.arange(n)
        matrix[:, 0] = correct
        matrix[rows, 1 + r_idx] = 1.0
        matrix[rows, 1 + k + p_idx] = 1.0
        matrix[rows[correct > 0], 1 + 2 * k + r_idx[correct > 0]] = 1.0

        def aggregate(sums: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
            ref, pred, hit = sums[:, 1 : 1 + k], sums[:, 1 + k : 1 + 2 * k], sums[:, 1 + 2 * k :]
            present = (ref + pred) > 0
            n_present = present.sum(axis=1)
            precision = _divide(hit, pred)
            recall = _divide(hit, ref)
            f1 = _divide(2 * hit, ref + pred)
            with np.errstate(invalid="ignore", divide="ignore"):
                accuracy = sums[:, 0] / counts
                out = {
                    "accuracy": accuracy,
                    "precision_macro": (precision * present).sum(axis=1) / n_present,
                    "recall_macro": (recall * present).sum(axis=1) / n_present,
                    "f1_macro": (f1 * present).sum(axis=1) / n_present,
                    # Single-label: every example is one decision, so pooled F1 is accuracy.
                    "f1_micro": accuracy,
                    "f1_weighted": _divide((f1 * ref).sum(axis=1), ref.sum(axis=1)),
                }
            return {name: out[name] for name in names}

        point: dict[str, float | None] = {}
        if n:
            for name in names:
                if name == "accuracy":
                    point[name] = float(accuracy_score(refs, preds))
                    continue
                kind, average = name.split("_")
                p, r, f, _ = precision_recall_fscore_support(
                    refs, preds, average=average, zero_division=0
                )
                point[name] = float({"precision": p, "recall": r, "f1": f}[kind])
        else:
            point = dict.fromkeys(names)
        return ExampleStats(tuple(names), matrix, aggregate, point, {"correct": correct.tolist()})


# --- BLEU and chrF (sacreBLEU) ----------------------------------------------------------------


def _reference_streams(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """sacreBLEU wants one stream per reference position, None where an example has fewer."""
    width = max((len(r) for r in references), default=1)
    return [[r[j] if j < len(r) else None for r in references] for j in range(width)]


_MY_LOG_ZERO = -9999999999.0  # sacrebleu.utils.my_log(0)


def bleu_from_stats(stats: np.ndarray, *, effective_order: bool = False) -> np.ndarray:
    """sacreBLEU's ``BLEU.compute_bleu`` (exp smoothing, 4-grams) vectorized over rows, as 0..1.

    ``stats`` rows are ``[hyp_len, ref_len, correct_1..4, total_1..4]`` (sums over a corpus or a
    resample). ``effective_order=True`` is the sentence-level variant (``sentence_bleu``).
    """
    stats = np.atleast_2d(stats)
    sys_len, ref_len = stats[:, 0], stats[:, 1]
    correct, total = stats[:, 2:6], stats[:, 6:10]
    rows = len(stats)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        safe_sys = np.where(sys_len > 0, sys_len, 1.0)
        bp = np.where(
            sys_len < ref_len, np.where(sys_len > 0, np.exp(1 - ref_len / safe_sys), 0.0), 1.0
        )
        log_sum = np.zeros(rows)
        smooth = np.ones(rows)
        used = np.zeros(rows)
        active = np.ones(rows, dtype=bool)
        for n in range(4):
            # sacreBLEU stops at the first order with no n-grams at all (a short sentence).
            active &= total[:, n] > 0
            safe_total = np.where(total[:, n] > 0, total[:, n], 1.0)
            # exp smoothing: each order with no match gets 1 / (2^k * total), k counting them.
            smooth = np.where(active & (correct[:, n] == 0), smooth * 2, smooth)
            precision = np.where(
                correct[:, n] > 0, 100.0 * correct[:, n] / safe_total, 100.0 / (smooth * safe_total)
            )
            log_sum += np.where(active, np.log(np.where(active, precision, 1.0)), 0.0)
            used += active
        if effective_order:
            # Only the orders reached enter the mean (the sentence-level variant).
            order = np.where(used > 0, used, 4.0)
            log_sum = np.where(used > 0, log_sum, _MY_LOG_ZERO * 4)
        else:
            # Orders never reached keep precision 0, which sacreBLEU's my_log maps to -1e10.
            order = np.full(rows, 4.0)
            log_sum = log_sum + (4 - used) * _MY_LOG_ZERO
        score = bp * np.exp(log_sum / order)
        score = np.where(correct.sum(axis=1) > 0, score, 0.0)
    return score / 100.0


class Bleu(MetricFamily):
    """sacreBLEU corpus BLEU (13a tokenization, exp smoothing, up to 4-grams) as a fraction 0..1.

    Equals ``sacrebleu.corpus_bleu(predictions, reference_streams).score / 100``. Each example
    may have several references. Per-example score: sentence BLEU (``sacrebleu.sentence_bleu``,
    effective order) / 100; corpus BLEU is not the mean of sentence BLEU.
    """

    NAMES = ("bleu",)

    def _info(self) -> evaluate.MetricInfo:
        return _info(
            self.__doc__ or "",
            {"predictions": _STRINGS, "references": _REFERENCE_LISTS},
            "predictions: list of str; references: list of lists of str (one or more each).",
        )

    @classmethod
    def statistics(
        cls, names: Sequence[str], *, predictions: Sequence[str], references: Sequence[Any]
    ) -> ExampleStats:
        from sacrebleu.metrics import BLEU

        refs = as_reference_lists(references)
        bleu = BLEU()
        if predictions:
            raw = bleu._extract_corpus_statistics(list(predictions), _reference_streams(refs))
            point = {"bleu": bleu._aggregate_and_compute(raw).score / 100.0}
        else:
            raw, point = [], {"bleu": None}
        matrix = np.array(raw, dtype=np.float64).reshape(-1, 10)
        per_example = bleu_from_stats(matrix, effective_order=True).tolist() if raw else []

        def aggregate(sums: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
            return {"bleu": bleu_from_stats(sums)}

        return ExampleStats(("bleu",), matrix, aggregate, point, {"bleu": per_example})


def chrf_from_stats(stats: np.ndarray, *, beta: float = 2.0) -> np.ndarray:
    """sacreBLEU's ``CHRF._compute_f_score`` (no eps smoothing) vectorized over rows, as 0..1.

    ``stats`` rows are ``[hyp, ref, match]`` counts for each character n-gram order.
    """
    stats = np.atleast_2d(stats)
    hyp, ref, match = stats[:, 0::3], stats[:, 1::3], stats[:, 2::3]
    valid = (hyp > 0) & (ref > 0)
    n_valid = valid.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(valid, match / np.where(hyp > 0, hyp, 1), 0.0).sum(axis=1)
        recall = np.where(valid, match / np.where(ref > 0, ref, 1), 0.0).sum(axis=1)
        precision = np.where(n_valid > 0, precision / np.maximum(n_valid, 1), 0.0)
        recall = np.where(n_valid > 0, recall / np.maximum(n_valid, 1), 0.0)
        factor = beta**2
        denom = factor * precision + recall
        score = np.where(
            precision + recall > 0,
            (1 + factor) * precision * recall / np.where(denom > 0, denom, 1),
            0.0,
        )
    return score


class ChrF(MetricFamily):
    """sacreBLEU corpus chrF (character 6-grams, beta 2) as a fraction 0..1.

    Equals ``sacrebleu.corpus_chrf(predictions, reference_streams).score / 100``. Per-example
    score: sentence chrF / 100.
    """

    NAMES = ("chrf",)

    def _info(self) -> evaluate.MetricInfo:
        return _info(
            self.__doc__ or "",
            {"predictions": _STRINGS, "references": _REFERENCE_LISTS},
            "predictions: list of str; references: list of lists of str (one or more each).",
        )

    @classmethod
    def statistics(
        cls, names: Sequence[str], *, predictions: Sequence[str], references: Sequence[Any]
    ) -> ExampleStats:
        from sacrebleu.metrics import CHRF

        refs = as_reference_lists(references)
        chrf = CHRF()
        width = 3 * chrf.order
        if predictions:
            raw = chrf._extract_corpus_statistics(list(predictions), _reference_streams(refs))
            point = {"chrf": chrf._aggregate_and_compute(raw).score / 100.0}
        else:
            raw, point = [], {"chrf": None}
        matrix = np.array(raw, dtype=np.float64).reshape(-1, width)
        per_example = chrf_from_stats(matrix, beta=chrf.beta).tolist() if raw else []

        def aggregate(sums: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
            return {"chrf": chrf_from_stats(sums, beta=chrf.beta)}

        return ExampleStats(("chrf",), matrix, aggregate, point, {"chrf": per_example})


# --- ROUGE (rouge-score) ----------------------------------------------------------------------


@functools.cache
def _rouge_tokenizer() -> Any:
    """rouge-score's default tokenizer with stemming, with the Porter stems memoized.

    Stemming is about three quarters of rouge-score's time and texts repeat words, so caching
    the stem of each word gives the same tokens several times faster.
    """
    from nltk.stem import porter
    from rouge_score import tokenize, tokenizers

    stem = functools.lru_cache(maxsize=200_000)(porter.PorterStemmer().stem)
    stemmer = SimpleNamespace(stem=stem)

    class CachedStemTokenizer(tokenizers.Tokenizer):
        def tokenize(self, text: str) -> list[str]:
            return tokenize.tokenize(text, stemmer)

    return CachedStemTokenizer()


class Rouge(MetricFamily):
    """ROUGE-1, ROUGE-2 and ROUGE-L F-measures (rouge-score, Porter stemming), mean over examples.

    With several references an example takes its best one (``RougeScorer.score_multi``). The
    rouge-score tokenizer keeps only ASCII letters and digits, so text in other scripts scores 0.
    Per-example scores: each example's F-measure; their mean is the metric.
    """

    NAMES = ("rouge1", "rouge2", "rougeL")

    def _info(self) -> evaluate.MetricInfo:
        return _info(
            self.__doc__ or "",
            {"predictions": _STRINGS, "references": _REFERENCE_LISTS},
            "predictions: list of str; references: list of lists of str (one or more each).",
        )

    @classmethod
    def statistics(
        cls, names: Sequence[str], *, predictions: Sequence[str], references: Sequence[Any]
    ) -> ExampleStats:
        from rouge_score import rouge_scorer

        names = tuple(n for n in cls.NAMES if n in names)
        scorer = rouge_scorer.RougeScorer(list(names), tokenizer=_rouge_tokenizer())
        columns: dict[str, Scores] = {name: [] for name in names}
        for prediction, refs in zip(predictions, as_reference_lists(references), strict=True):
            scores = scorer.score_multi(refs, prediction) if refs else None
            for name in names:
                columns[name].append(scores[name].fmeasure if scores else 0.0)
        return _mean_stats(names, columns)


# --- QA (SQuAD rules) -------------------------------------------------------------------------


class Squad(MetricFamily):
    """Exact match and token F1 with SQuAD answer normalization, best over the references.

    Normalization lower-cases, removes punctuation and the articles a/an/the, and collapses
    spaces. Per-example scores: each example's EM (0/1) and F1; their means are the metrics.
    """

    NAMES = ("exact_match", "token_f1")

    def _info(self) -> evaluate.MetricInfo:
        return _info(
            self.__doc__ or "",
            {"predictions": _STRINGS, "references": _REFERENCE_LISTS},
            "predictions: list of str; references: list of lists of acceptable answers.",
        )

    @classmethod
    def statistics(
        cls, names: Sequence[str], *, predictions: Sequence[str], references: Sequence[Any]
    ) -> ExampleStats:
        names = tuple(n for n in cls.NAMES if n in names)
        refs = as_reference_lists(references)
        fns = {"exact_match": exact_match, "token_f1": token_f1}
        columns = {
            name: [fns[name](p, r) for p, r in zip(predictions, refs, strict=True)]
            for name in names
        }
        return _mean_stats(names, columns)


# --- generation length, perplexity -----------------------------------------------------------


class GenLen(MetricFamily):
    """Mean generation length in tokens (the runner passes the generated token counts)."""

    NAMES = ("gen_len",)
    INPUTS = "lengths"

    def _info(self) -> evaluate.MetricInfo:
        return _info(
            self.__doc__ or "",
            {"lengths": datasets.Value("int64")},
            "lengths: number of generated tokens per example.",
        )

    @classmethod
    def statistics(cls, names: Sequence[str], *, lengths: Sequence[float]) -> ExampleStats:
        return _mean_stats(("gen_len",), {"gen_len": [float(x) for x in lengths]})


class Perplexity(MetricFamily):
    """Perplexity exp(sum NLL / tokens), loss (sum NLL / tokens), and the code length per
    character and per byte: sum NLL / (ln 2 * characters or UTF-8 bytes of the scored text),
    all pooled over every scored token.

    Inputs are per-example sums of token negative log-likelihoods (natural log), the number of
    tokens scored, and (for the bits metrics) the characters and UTF-8 bytes of the text those
    tokens cover. Pooling weights each token equally, so long examples weigh more; bits per
    character do not depend on the tokenizer, so models with different vocabularies compare.
    Per-example scores: that example's own values (None when it has no scored token or text);
    corpus values are not their mean.
    """

    NAMES = ("perplexity", "loss", "bits_per_char", "bits_per_byte")
    INPUTS = "likelihood"

    def _info(self) -> evaluate.MetricInfo:
        return _info(
            self.__doc__ or "",
            {"nll_sum": datasets.Value("float64"), "n_tokens": datasets.Value("int64")},
            "nll_sum: summed token NLL per example; n_tokens: tokens scored per example; "
            "optional n_chars / n_bytes (lists, passed to compute): characters / UTF-8 bytes of "
            "the text they cover, for bits_per_char / bits_per_byte.",
        )

    def _compute(self, **inputs: Any) -> dict[str, float | None]:
        # The bits metrics come with the counts they divide by, and only then.
        names = [
            n
            for n in self.NAMES
            if {"bits_per_char": "n_chars", "bits_per_byte": "n_bytes"}.get(n, "nll_sum") in inputs
        ]
        return self.statistics(names, **inputs).point

    @classmethod
    def statistics(
        cls,
        names: Sequence[str],
        *,
        nll_sum: Sequence[float],
        n_tokens: Sequence[int],
        n_chars: Sequence[int] | None = None,
        n_bytes: Sequence[int] | None = None,
    ) -> ExampleStats:
        names = tuple(n for n in cls.NAMES if n in names)
        if "bits_per_char" in names and n_chars is None:
            raise ValueError("bits_per_char needs n_chars.")
        if "bits_per_byte" in names and n_bytes is None:
            raise ValueError("bits_per_byte needs n_bytes.")
        zeros = np.zeros(len(nll_sum))
        matrix = np.column_stack(
            [
                np.asarray(nll_sum, dtype=np.float64),
                np.asarray(n_tokens, dtype=np.float64),
                zeros if n_chars is None else np.asarray(n_chars, dtype=np.float64),
                zeros if n_bytes is None else np.asarray(n_bytes, dtype=np.float64),
            ]
        ).reshape(-1, 4)
        if (matrix[:, 1:] < 0).any() or not np.isfinite(matrix).all():
            raise ValueError("nll_sum must be finite and the counts non-negative.")

        def values(sums: np.ndarray) -> dict[str, np.ndarray]:
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                loss = sums[:, 0] / sums[:, 1]
                out = {
                    "loss": loss,
                    "perplexity": np.exp(loss),
                    # No scored token means no code length at all, not 0 bits.
                    "bits_per_char": np.where(
                        sums[:, 1] > 0, sums[:, 0] / (math.log(2) * sums[:, 2]), np.nan
                    ),
                    "bits_per_byte": np.where(
                        sums[:, 1] > 0, sums[:, 0] / (math.log(2) * sums[:, 3]), np.nan
                    ),
                }
            return {name: out[name] for name in names}

        def aggregate(sums: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
            return values(sums)

        point = {k: _finite(v[0]) for k, v in values(matrix.sum(0, keepdims=True)).items()}
        per_example = {name: [_finite(x) for x in v] for name, v in values(matrix).items()}
        return ExampleStats(names, matrix, aggregate, point, per_example)


FAMILIES: tuple[type[MetricFamily], ...] = (
    ClassificationMetrics,
    Bleu,
    ChrF,
    Rouge,
    Squad,
    GenLen,
    Perplexity,
)
FAMILY_OF: dict[str, type[MetricFamily]] = {name: fam for fam in FAMILIES for name in fam.NAMES}


def load_metric(name: str) -> evaluate.Metric:
    """An ``evaluate.Metric`` instance of the family computing ``name``, usable offline.

    ``keep_in_memory`` avoids the Arrow cache files, and the folder ``evaluate`` insists on
    creating lives under the system temporary directory, not ``~/.cache``.
    """
    try:
        family = FAMILY_OF[name]
    except KeyError:
        raise KeyError(f"Unknown metric {name!r}. Known: {', '.join(sorted(FAMILY_OF))}.") from None
    return family(keep_in_memory=True, cache_dir=_cache_dir())


@functools.cache
def _cache_dir() -> str:
    return tempfile.mkdtemp(prefix="llmhub-evaluate-")
