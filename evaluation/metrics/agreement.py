"""Agreement between raters, position bias, win rates and Bradley-Terry strengths. Plain Python
and numpy: no Django, so the feedback stats, notebooks and tests all call the same code.

Every statistic comes back as a dict ``{"value", "ci_low", "ci_high", "n", "reason", ...}``:
``value`` is None, with ``reason`` saying why, where it is undefined (fewer than two items, or
every label the same category, so chance agreement is already perfect). Confidence intervals
are percentile bootstraps over items (pairs for Bradley-Terry), seeded, so the same data gives
the same interval; proportions use Wilson score intervals.

Missing labels are ``None``. Labels are any hashable values; ``ordinal`` and ``interval``
levels need values that sort (and, for ``interval``, numbers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

DEFAULT_BOOT = 1000
DEFAULT_CONFIDENCE = 0.95
LEVELS = ("nominal", "ordinal", "interval")
# Choices of a pairwise judgment that name a response (a = responses[0], b = responses[1]).
CHOICE_INDEX = {"a": 0, "b": 1}
TIE_RESULTS = ("tie", "both_bad")

TOO_FEW = "fewer than two items labelled by two or more raters"
ONE_CATEGORY = "every label is the same category, so chance agreement is already perfect"


def _result(
    value: float | None,
    *,
    n: int,
    ci: tuple[float | None, float | None] = (None, None),
    reason: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "value": None if value is None else float(value),
        "ci_low": None if ci[0] is None else float(ci[0]),
        "ci_high": None if ci[1] is None else float(ci[1]),
        "n": n,
        "reason": reason,
        **extra,
    }


def _bootstrap(
    n: int,
    statistic: Callable[[np.ndarray], float | None],
    *,
    n_boot: int,
    seed: int,
    confidence: float,
) -> tuple[float | None, float | None]:
    """Percentile interval of ``statistic(weights)`` where ``weights`` counts how often each of
    the ``n`` items was drawn (resampling with replacement). Replicates where the statistic is
    undefined (a resample of one category) are left out; with fewer than half defined, no
    interval."""
    if n_boot <= 0 or n < 2:
        return None, None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        weights = np.bincount(rng.integers(0, n, size=n), minlength=n).astype(float)
        value = statistic(weights)
        if value is not None and math.isfinite(value):
            values.append(value)
    if len(values) < n_boot / 2:
        return None, None
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def _codes(values: Iterable[Hashable], categories: list) -> np.ndarray:
    index = {c: i for i, c in enumerate(categories)}
    return np.array([index[v] for v in values], dtype=np.int64)


def _sorted_categories(values: Iterable[Hashable]) -> list:
    distinct = set(values)
    try:
        return sorted(distinct)
    except TypeError:  # mixed types: a stable order is all nominal statistics need
        return sorted(distinct, key=repr)


# --- Cohen's kappa -------------------------------------------------------------------------


def cohen_kappa(
    a: Sequence[Hashable | None],
    b: Sequence[Hashable | None],
    *,
    n_boot: int = DEFAULT_BOOT,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict[str, Any]:
    """Cohen's kappa of two raters' labels on the same items (``a[i]``, ``b[i]``: item i).

    Items either rater left out (None) do not count. ``observed`` is the raw agreement."""
    if len(a) != len(b):
        raise ValueError("Both raters' label lists must have one entry per item.")
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    n = len(pairs)
    if n < 2:
        return _result(None, n=n, reason=TOO_FEW, observed=None)
    categories = _sorted_categories([v for pair in pairs for v in pair])
    k = len(categories)
    cells = _codes([x for x, _ in pairs], categories) * k + _codes(
        [y for _, y in pairs], categories
    )

    def kappa(weights: np.ndarray) -> tuple[float | None, float]:
        table = np.bincount(cells, weights=weights, minlength=k * k).reshape(k, k)
        total = table.sum()
        observed = np.trace(table) / total
        expected = float(table.sum(axis=1) @ table.sum(axis=0)) / total**2
        if expected >= 1 - 1e-12:
            return None, observed
        return (observed - expected) / (1 - expected), observed

    value, observed = kappa(np.ones(n))
    if value is None:
        return _result(None, n=n, reason=ONE_CATEGORY, observed=float(observed))
    ci = _bootstrap(n, lambda w: kappa(w)[0], n_boot=n_boot, seed=seed, confidence=confidence)
    return _result(value, n=n, ci=ci, observed=float(observed))


# --- Fleiss' kappa -------------------------------------------------------------------------


def counts_table(ratings: Sequence[Sequence[Hashable | None]]) -> tuple[np.ndarray, list]:
    """Ratings per item (the labels the item got, None for missing) as an items x categories
    table of counts, with the categories in the columns' order."""
    categories = _sorted_categories(v for row in ratings for v in row if v is not None)
    index = {c: i for i, c in enumerate(categories)}
    table = np.zeros((len(ratings), len(categories)), dtype=float)
    for i, row in enumerate(ratings):
        for value in row:
            if value is not None:
                table[i, index[value]] += 1
    return table, categories


def fleiss_kappa(
    table: Sequence[Sequence[float]] | np.ndarray | None = None,
    *,
    ratings: Sequence[Sequence[Hashable | None]] | None = None,
    n_boot: int = DEFAULT_BOOT,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict[str, Any]:
    """Fleiss' kappa from an items x categories ``table`` of counts, or from ``ratings`` per
    item (the labels each item got). Items may have different numbers of raters (the usual
    generalisation: each item's agreement over its own pairs, category shares over all labels);
    items with fewer than two labels do not count."""
    if (table is None) == (ratings is None):
        raise ValueError("Give either a table of counts or ratings per item, not both.")
    counts = counts_table(ratings)[0] if ratings is not None else np.asarray(table, dtype=float)
    if counts.ndim != 2 or (counts.size and counts.min() < 0):
        raise ValueError("The table must be items x categories of non-negative counts.")
    per_item = counts.sum(axis=1) if counts.size else np.zeros(0)
    counts = counts[per_item >= 2]
    per_item = per_item[per_item >= 2]
    n = len(counts)
    if n < 2:
        return _result(None, n=n, reason=TOO_FEW)
    # Each item's share of agreeing ordered pairs of labels.
    agreement = ((counts**2).sum(axis=1) - per_item) / (per_item * (per_item - 1))

    def kappa(weights: np.ndarray) -> float | None:
        observed = weights @ agreement / weights.sum()
        shares = weights @ counts / (weights @ per_item)
        expected = float(shares @ shares)
        if expected >= 1 - 1e-12:
            return None
        return (observed - expected) / (1 - expected)

    value = kappa(np.ones(n))
    observed = float(agreement.mean())
    if value is None:
        return _result(None, n=n, reason=ONE_CATEGORY, observed=observed)
    ci = _bootstrap(n, kappa, n_boot=n_boot, seed=seed, confidence=confidence)
    return _result(value, n=n, ci=ci, observed=observed)


# --- Krippendorff's alpha ------------------------------------------------------------------


def _delta(level: str, categories: list, marginals: np.ndarray) -> np.ndarray:
    """Squared distances between categories (Krippendorff 2011, section E)."""
    k = len(categories)
    if level == "nominal":
        return 1.0 - np.eye(k)
    if level == "interval":
        values = np.asarray(categories, dtype=float)
        return (values[:, None] - values[None, :]) ** 2
    # Ordinal: the marginals between two ranks, minus half of each end's.
    cumulative = np.concatenate([[0.0], np.cumsum(marginals)])
    low = np.minimum.outer(np.arange(k), np.arange(k))
    high = np.maximum.outer(np.arange(k), np.arange(k))
    between = cumulative[high + 1] - cumulative[low]
    return (between - (marginals[:, None] + marginals[None, :]) / 2) ** 2


def krippendorff_alpha(
    data: Sequence[Sequence[Hashable | None]],
    *,
    level: str = "nominal",
    n_boot: int = DEFAULT_BOOT,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict[str, Any]:
    """Krippendorff's alpha with missing values: ``data`` has one row per item (unit) holding
    the values its raters gave, None where a rater gave none (rows may differ in length; the
    transpose of Krippendorff's raters x units matrix). ``level``: nominal, ordinal (values
    ordered by sorting them) or interval (numbers). Items with fewer than two values are not
    pairable and do not count."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {level!r}.")
    rows = [[v for v in row if v is not None] for row in data]
    rows = [row for row in rows if len(row) >= 2]
    n = len(rows)
    if n < 2:
        return _result(None, n=n, reason=TOO_FEW)
    if level == "interval" and not all(
        isinstance(v, int | float) and not isinstance(v, bool) for row in rows for v in row
    ):
        raise ValueError("Interval alpha needs numeric values.")
    counts, categories = counts_table(rows)
    per_item = counts.sum(axis=1)
    # Each item's coincidences: every ordered pair of its values, weighted 1 / (m_u - 1).
    coincidences = (
        counts[:, :, None] * counts[:, None, :]
        - np.einsum("ij,jk->ijk", counts, np.eye(len(categories)))
    ) / (per_item - 1)[:, None, None]
    flat = coincidences.reshape(n, -1)
    k = len(categories)

    def alpha(weights: np.ndarray) -> float | None:
        observed = (weights @ flat).reshape(k, k)
        marginals = observed.sum(axis=1)
        total = marginals.sum()
        delta = _delta(level, categories, marginals)
        disagreement_observed = float((observed * delta).sum())
        disagreement_expected = float((np.outer(marginals, marginals) * delta).sum())
        if disagreement_expected <= 1e-12:
            return None
        return 1 - (total - 1) * disagreement_observed / disagreement_expected

    value = alpha(np.ones(n))
    if value is None:
        return _result(None, n=n, reason=ONE_CATEGORY, level=level)
    ci = _bootstrap(n, alpha, n_boot=n_boot, seed=seed, confidence=confidence)
    return _result(value, n=n, ci=ci, level=level)


# --- proportions: position bias, win rates -------------------------------------------------


def wilson_interval(
    successes: float, n: float, *, confidence: float = DEFAULT_CONFIDENCE
) -> tuple[float | None, float | None]:
    """The Wilson score interval of a proportion (sound near 0 and 1, unlike the normal one)."""
    if n <= 0:
        return None, None
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = successes / n
    denominator = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denominator
    # At 0 or n successes the bound is exactly 0 or 1 (rounding would leave 1e-17).
    low = 0.0 if successes <= 0 else max(0.0, centre - half)
    high = 1.0 if successes >= n else min(1.0, centre + half)
    return low, high


def proportion(successes: int, n: int, *, confidence: float = DEFAULT_CONFIDENCE) -> dict[str, Any]:
    """A proportion with its Wilson interval, as the other statistics (None when n is 0)."""
    if n <= 0:
        return _result(None, n=0, reason="nothing to count")
    return _result(successes / n, n=n, ci=wilson_interval(successes, n, confidence=confidence))


def _choice_index(choice: Any) -> int | None:
    if isinstance(choice, bool):
        return None
    if isinstance(choice, int):
        return choice
    return CHOICE_INDEX.get(choice) if isinstance(choice, str) else None


def position_bias(
    judgments: Iterable[tuple[Sequence[int], Any]], *, confidence: float = DEFAULT_CONFIDENCE
) -> dict[str, Any]:
    """How often the response shown first was chosen, from ``(order, choice)`` per judgment:
    ``order`` the response indexes as shown, ``choice`` the chosen response ("a"/"b" for
    responses 0/1, or an index; a ranking's top choice). Ties, "both bad" and judgments without
    a recorded order do not count. An unbiased rater is near 0.5 with two responses shown."""
    first = decided = 0
    shown = []
    for order, choice in judgments:
        index = _choice_index(choice)
        if index is None or not order:
            continue
        decided += 1
        first += int(index == order[0])
        shown.append(len(order))
    if decided == 0:
        return _result(None, n=0, reason="no judgment with a recorded order chose a response")
    # With k responses shown, an unbiased rater picks the first one 1/k of the time.
    expected = float(np.mean([1 / k for k in shown]))
    return _result(
        first / decided,
        n=decided,
        ci=wilson_interval(first, decided, confidence=confidence),
        first=first,
        expected=expected,
    )


def _outcome(result: Any) -> str | None:
    if result in ("a", 0):
        return "a"
    if result in ("b", 1):
        return "b"
    if result in TIE_RESULTS:
        return "tie"
    return None


def _games(pairs: Iterable[tuple[Hashable, Hashable, Any]]) -> list[tuple[Hashable, Hashable, str]]:
    games = []
    for model_a, model_b, result in pairs:
        outcome = _outcome(result)
        if outcome is None or model_a is None or model_b is None or model_a == model_b:
            continue
        games.append((model_a, model_b, outcome))
    return games


def win_rates(
    pairs: Iterable[tuple[Hashable, Hashable, Any]], *, confidence: float = DEFAULT_CONFIDENCE
) -> dict[str, Any]:
    """Wins, losses and ties per model from ``(model_a, model_b, result)`` comparisons, result
    "a", "b", "tie" or "both_bad" (a tie too). ``value`` is the win rate with ties as half a
    win, with its Wilson interval; ``head_to_head`` gives each pair of models the same. Pairs of
    a model with itself, or without a result, do not count."""
    games = _games(pairs)
    per_model: dict[Hashable, dict[str, int]] = {}
    pairs_seen: dict[tuple, dict[str, int]] = {}
    for model_a, model_b, outcome in games:
        for model in (model_a, model_b):
            per_model.setdefault(model, {"wins": 0, "losses": 0, "ties": 0})
        if outcome == "tie":
            per_model[model_a]["ties"] += 1
            per_model[model_b]["ties"] += 1
        else:
            winner, loser = (model_a, model_b) if outcome == "a" else (model_b, model_a)
            per_model[winner]["wins"] += 1
            per_model[loser]["losses"] += 1
        first, second = sorted((model_a, model_b), key=repr)
        row = pairs_seen.setdefault((first, second), {"wins": 0, "losses": 0, "ties": 0})
        if outcome == "tie":
            row["ties"] += 1
        elif (outcome == "a") == (model_a == first):
            row["wins"] += 1
        else:
            row["losses"] += 1

    def rate(counts: dict[str, int]) -> dict[str, Any]:
        games_n = counts["wins"] + counts["losses"] + counts["ties"]
        score = counts["wins"] + counts["ties"] / 2
        return {
            **counts,
            "games": games_n,
            "value": score / games_n,
            **dict(
                zip(
                    ("ci_low", "ci_high"),
                    wilson_interval(score, games_n, confidence=confidence),
                    strict=True,
                )
            ),
        }

    models = [{"model": model, **rate(counts)} for model, counts in per_model.items()]
    models.sort(key=lambda row: (-row["value"], repr(row["model"])))
    head_to_head = [
        {"model": first, "opponent": second, **rate(counts)}
        for (first, second), counts in sorted(pairs_seen.items(), key=repr)
    ]
    return {"models": models, "head_to_head": head_to_head, "n": len(games)}


# --- Bradley-Terry -------------------------------------------------------------------------


def _mm(
    wins: np.ndarray, start: np.ndarray | None = None, *, max_iter: int, tol: float
) -> tuple[np.ndarray, int, bool]:
    """Hunter's (2004) MM iterations for Bradley-Terry strengths: ``wins[i, j]`` is how often
    i beat j. Strengths are normalised to a geometric mean of 1."""
    games = wins + wins.T
    total_wins = wins.sum(axis=1)
    p = np.ones(len(wins)) if start is None else start.copy()
    for iteration in range(1, max_iter + 1):
        denominator = (games / (p[:, None] + p[None, :])).sum(axis=1)
        new = total_wins / denominator
        new = new / math.exp(np.log(new).mean())
        if np.max(np.abs(np.log(new) - np.log(p))) < tol:
            return new, iteration, True
        p = new
    return p, max_iter, False


def _strongly_connected(wins: np.ndarray) -> bool:
    """Every model beat, through some chain, every other: the condition for a finite MLE."""
    beats = wins > 0
    k = len(wins)
    for adjacency in (beats, beats.T):
        reached = {0}
        frontier = [0]
        while frontier:
            i = frontier.pop()
            for j in np.nonzero(adjacency[i])[0]:
                if int(j) not in reached:
                    reached.add(int(j))
                    frontier.append(int(j))
        if len(reached) < k:
            return False
    return True


def bradley_terry(
    pairs: Iterable[tuple[Hashable, Hashable, Any]],
    *,
    n_boot: int = DEFAULT_BOOT,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
    max_iter: int = 10_000,
    tol: float = 1e-10,
) -> dict[str, Any]:
    """Bradley-Terry strengths from ``(model_a, model_b, result)`` comparisons (as
    :func:`win_rates`; ties count half a win to each side), fitted by MM.

    Each model gets ``strength`` (geometric mean 1: P(i beats j) = s_i / (s_i + s_j)),
    ``score`` = log strength with its bootstrap interval over comparisons, and ``rank``. Where
    the MLE does not exist (a model never won, or never lost), every pair that met gets one
    virtual tie and ``regularized`` says so."""
    games = _games(pairs)
    models = sorted({m for game in games for m in game[:2]}, key=repr)
    if len(models) < 2:
        return {
            "models": [],
            "n": len(games),
            "reason": "fewer than two models compared",
            "regularized": False,
            "converged": None,
        }
    index = {m: i for i, m in enumerate(models)}
    k = len(models)
    # The distinct comparison cells (i, j, outcome) and how many games fell in each: the
    # bootstrap redraws games as a multinomial over the cells.
    cells: dict[tuple[int, int, str], int] = {}
    for model_a, model_b, outcome in games:
        key = (index[model_a], index[model_b], outcome)
        cells[key] = cells.get(key, 0) + 1
    keys = list(cells)
    counts = np.array([cells[key] for key in keys], dtype=float)

    met = np.zeros((k, k), dtype=bool)
    for i, j, _ in keys:
        met[i, j] = met[j, i] = True

    def win_matrix(weights: np.ndarray) -> np.ndarray:
        wins = np.zeros((k, k))
        for (i, j, outcome), w in zip(keys, weights, strict=True):
            if outcome == "a":
                wins[i, j] += w
            elif outcome == "b":
                wins[j, i] += w
            else:
                wins[i, j] += w / 2
                wins[j, i] += w / 2
        return wins

    wins = win_matrix(counts)
    regularized = not _strongly_connected(wins)
    prior = 0.5 * met if regularized else 0.0
    if not _strongly_connected(wins + prior):
        return {
            "models": [],
            "n": len(games),
            "reason": "the models do not form one connected set of comparisons",
            "regularized": regularized,
            "converged": None,
        }
    strengths, iterations, converged = _mm(wins + prior, max_iter=max_iter, tol=tol)

    low = high = [None] * k
    if n_boot > 0 and len(games) >= 2:
        rng = np.random.default_rng(seed)
        draws = rng.multinomial(len(games), counts / counts.sum(), size=n_boot)
        scores = []
        for draw in draws:
            resampled = win_matrix(draw.astype(float)) + prior
            if not _strongly_connected(resampled):
                # A resample where one model never won: one virtual tie per pair, as above.
                resampled = resampled + 0.5 * met
            fitted, _, _ = _mm(resampled, strengths, max_iter=max_iter, tol=1e-8)
            scores.append(np.log(fitted))
        if len(scores) >= n_boot / 2:
            tail = (1 - confidence) / 2 * 100
            low, high = np.percentile(np.array(scores), [tail, 100 - tail], axis=0)
    rows = [
        {
            "model": model,
            "strength": float(strengths[i]),
            "score": float(math.log(strengths[i])),
            "ci_low": None if low[i] is None else float(low[i]),
            "ci_high": None if high[i] is None else float(high[i]),
        }
        for i, model in enumerate(models)
    ]
    rows.sort(key=lambda row: (-row["strength"], repr(row["model"])))
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return {
        "models": rows,
        "ranking": [row["model"] for row in rows],
        "n": len(games),
        "reason": None,
        "regularized": regularized,
        "converged": converged,
        "iterations": iterations,
    }
