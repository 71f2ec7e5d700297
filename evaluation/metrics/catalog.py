"""The metrics LLMHub knows by name: what they mean, which way is better, which tasks they fit.

Plain data with no heavy imports, so goals, forms and the API can validate a metric name in the
web process; the computations live beside this module and are loaded only by workers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from llmhub.reporting import JobInputError

TASK_TYPES = ("generation", "summarization", "classification", "qa", "translation")


@dataclass(frozen=True)
class MetricInfo:
    name: str
    label: str
    description: str
    higher_is_better: bool
    tasks: tuple[str, ...]
    # Values are fractions in [0, 1] unless unbounded (perplexity, generation length, loss).
    bounded: bool = True
    # False for metrics computed from the model and its outputs alone (perplexity on the text,
    # generation length): a split without a reference column can still be scored with them.
    needs_references: bool = True


_ALL = TASK_TYPES
_GENERATIVE = ("generation", "summarization", "qa", "translation")

METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo(
            "perplexity",
            "Perplexity",
            "exp(mean token negative log-likelihood)",
            higher_is_better=False,
            tasks=_ALL,
            bounded=False,
            needs_references=False,
        ),
        MetricInfo(
            "loss",
            "Loss",
            "mean token cross-entropy",
            higher_is_better=False,
            tasks=_ALL,
            bounded=False,
            needs_references=False,
        ),
        MetricInfo(
            "bits_per_char",
            "Bits per character",
            "total NLL of the scored tokens in bits / characters of the scored text",
            higher_is_better=False,
            tasks=_ALL,
            bounded=False,
            needs_references=False,
        ),
        MetricInfo(
            "bits_per_byte",
            "Bits per byte",
            "total NLL of the scored tokens in bits / UTF-8 bytes of the scored text",
            higher_is_better=False,
            tasks=_ALL,
            bounded=False,
            needs_references=False,
        ),
        MetricInfo(
            "accuracy",
            "Accuracy",
            "share of exactly right labels",
            higher_is_better=True,
            tasks=("classification",),
        ),
        MetricInfo(
            "precision_macro",
            "Precision (macro)",
            "precision averaged over classes",
            higher_is_better=True,
            tasks=("classification",),
        ),
        MetricInfo(
            "recall_macro",
            "Recall (macro)",
            "recall averaged over classes",
            higher_is_better=True,
            tasks=("classification",),
        ),
        MetricInfo(
            "f1_macro",
            "F1 (macro)",
            "F1 averaged over classes, each class equal",
            higher_is_better=True,
            tasks=("classification",),
        ),
        MetricInfo(
            "f1_micro",
            "F1 (micro)",
            "F1 over all decisions pooled",
            higher_is_better=True,
            tasks=("classification",),
        ),
        MetricInfo(
            "f1_weighted",
            "F1 (weighted)",
            "F1 averaged over classes by support",
            higher_is_better=True,
            tasks=("classification",),
        ),
        MetricInfo(
            "bleu",
            "BLEU",
            "sacreBLEU corpus score / 100",
            higher_is_better=True,
            tasks=("translation", "summarization", "generation"),
        ),
        MetricInfo(
            "chrf",
            "chrF",
            "sacreBLEU character F-score / 100",
            higher_is_better=True,
            tasks=("translation", "summarization", "generation"),
        ),
        MetricInfo(
            "rouge1",
            "ROUGE-1",
            "unigram overlap F-measure",
            higher_is_better=True,
            tasks=("summarization", "generation", "translation"),
        ),
        MetricInfo(
            "rouge2",
            "ROUGE-2",
            "bigram overlap F-measure",
            higher_is_better=True,
            tasks=("summarization", "generation", "translation"),
        ),
        MetricInfo(
            "rougeL",
            "ROUGE-L",
            "longest-common-subsequence F-measure",
            higher_is_better=True,
            tasks=("summarization", "generation", "translation"),
        ),
        MetricInfo(
            "exact_match",
            "Exact match",
            "share of answers equal after normalization",
            higher_is_better=True,
            tasks=("qa",),
        ),
        MetricInfo(
            "token_f1", "Token F1", "SQuAD token-overlap F1", higher_is_better=True, tasks=("qa",)
        ),
        MetricInfo(
            "gen_len",
            "Generation length",
            "mean generated tokens",
            higher_is_better=False,
            tasks=_GENERATIVE,
            bounded=False,
            needs_references=False,
        ),
    )
}
# Code lengths of text in bits (the likelihood per character / UTF-8 byte of the scored
# text): comparable across tokenizers, charted together.
BITS_METRICS = ("bits_per_char", "bits_per_byte")


def metric_info(name: str) -> MetricInfo:
    """The catalog entry for ``name``; ``KeyError`` with the known names if there is none."""
    try:
        return METRICS[name]
    except KeyError:
        known = ", ".join(sorted(METRICS))
        raise KeyError(f"Unknown metric {name!r}. Known metrics: {known}.") from None


def metrics_for_task(task_type: str) -> list[MetricInfo]:
    return [m for m in METRICS.values() if task_type in m.tasks]


def check_metrics_fit(task_type: str, names: Iterable[str]) -> None:
    """Raise :class:`JobInputError` unless every metric in ``names`` is known and fits the task.

    For example BLEU on a classification task is refused, naming the metrics that do fit. An
    empty list is refused too: an evaluation needs at least one metric.
    """
    if task_type not in TASK_TYPES:
        raise JobInputError(
            f"Unknown task type {task_type!r}. Task types: {', '.join(TASK_TYPES)}."
        )
    names = list(names)
    if not names:
        raise JobInputError("Choose at least one metric.")
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise JobInputError(
            f"Unknown metric(s): {', '.join(unknown)}. Known metrics: {', '.join(sorted(METRICS))}."
        )
    unfit = [n for n in names if task_type not in METRICS[n].tasks]
    if unfit:
        fitting = ", ".join(m.name for m in metrics_for_task(task_type))
        raise JobInputError(
            f"{', '.join(METRICS[n].label for n in unfit)} does not fit a {task_type} task. "
            f"Metrics for {task_type}: {fitting}."
        )
