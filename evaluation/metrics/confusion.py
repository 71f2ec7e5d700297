"""The confusion matrix of a classification evaluation, per-class precision, recall, F1 and
support, and the most confused pairs, from (reference, prediction) pairs. Plain Python.

Classes are the references' and predictions' labels, most supported first (then by name), so a
matrix of many classes shows the ones that matter at the top-left; beyond ``max_classes`` the
rest are pooled as ``OTHER`` (their counts kept, so every total still adds up). A missing
prediction is counted as the class ``NONE``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

MAX_CLASSES = 30  # a heatmap wider than this is unreadable; the rest are pooled
MAX_PAIRS = 10
OTHER = "(other classes)"
NONE = "(no prediction)"


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def _class_stats(tp: int, predicted: int, support: int) -> dict[str, Any]:
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    if precision is None or recall is None:
        f1 = None if precision is None and recall is None else 0.0
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def confusion(
    pairs: Iterable[tuple[str | None, str | None]],
    *,
    max_classes: int = MAX_CLASSES,
    max_pairs: int = MAX_PAIRS,
) -> dict[str, Any]:
    """``labels``; ``matrix[i][j]``: examples of true class i predicted as j; ``normalized``:
    each row divided by its total (the share of class i predicted as j; None for an empty row);
    ``classes``: every class (pooled ones too) with its precision, recall, f1 and support
    (true examples; None where undefined: nothing predicted, nothing true); ``pairs``: the
    largest off-diagonal cells, most examples first; ``n``, ``accuracy``, ``macro_f1``,
    ``pooled`` (how many classes went into ``OTHER``). Pairs whose reference is None are
    skipped (nothing to compare with) and counted in ``skipped``."""
    counts: Counter[tuple[str, str]] = Counter()
    skipped = 0
    for reference, prediction in pairs:
        if reference is None:
            skipped += 1
            continue
        counts[(str(reference), NONE if prediction is None else str(prediction))] += 1
    support: Counter[str] = Counter()
    predicted: Counter[str] = Counter()
    for (true, pred), count in counts.items():
        support[true] += count
        predicted[pred] += count
    every = set(support) | set(predicted)
    order = sorted(every, key=lambda label: (-support[label], -predicted[label], label))
    ranked = list(order)
    pooled = 0
    if len(ranked) > max_classes:
        keep = set(ranked[: max_classes - 1])
        pooled = len(ranked) - len(keep)
        ranked = [*ranked[: max_classes - 1], OTHER]
    else:
        keep = set(ranked)
    index = {label: i for i, label in enumerate(ranked)}
    size = len(ranked)
    matrix = [[0] * size for _ in range(size)]
    for (true, pred), count in counts.items():
        row = index[true] if true in keep else index[OTHER]
        column = index[pred] if pred in keep else index[OTHER]
        matrix[row][column] += count
    n = sum(support.values())
    # Per-class figures come from the exact counts, so pooling never changes them.
    hits = Counter({true: count for (true, pred), count in counts.items() if true == pred})
    stats = {label: _class_stats(hits[label], predicted[label], support[label]) for label in every}
    classes = [{"label": label, **stats[label]} for label in order]
    normalized = [
        [cell / total if total else None for cell in row]
        for row, total in ((row, sum(row)) for row in matrix)
    ]
    confused = sorted(
        (
            {
                "reference": ranked[i],
                "prediction": ranked[j],
                "count": matrix[i][j],
                "share": normalized[i][j],
            }
            for i in range(size)
            for j in range(size)
            if i != j and matrix[i][j] and OTHER not in (ranked[i], ranked[j])
        ),
        key=lambda pair: (-pair["count"], pair["reference"], pair["prediction"]),
    )
    # Macro-F1 over every label seen in references or predictions, as scikit-learn's
    # f1_score(average="macro") computes it: a class never predicted nor true is not a label.
    macro = [stats[label]["f1"] or 0.0 for label in every]
    return {
        "labels": ranked,
        "matrix": matrix,
        "normalized": normalized,
        "classes": classes,
        "pairs": confused[:max_pairs],
        "n": n,
        "accuracy": _ratio(sum(hits.values()), n),
        "macro_f1": sum(macro) / len(macro) if macro else None,
        "pooled": pooled,
        "skipped": skipped,
    }
