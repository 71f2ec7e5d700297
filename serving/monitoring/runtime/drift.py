"""Drift between a reference (by default the model version's training data) and a recent window
of requests: the statistics, each with its threshold, and :func:`compute_drift`, which runs the
ones the data allows and says why it skipped the others. Plain Python (numpy; scipy and
scikit-learn imported inside the functions): no Django, no Celery.

Every check returns a :class:`Check` holding :class:`Statistic` rows (value, threshold, rule,
noise floor, ``drifted``) and a few top contributors (the bins, tokens, labels or examples that
moved most). Everything converts to JSON with ``to_dict()``.

How the statistics are computed (thresholds and their defaults: :mod:`.config`):

- **Lengths** (prompts, completions), in tokens of the model's tokenizer, or in words when
  there is none: the Kolmogorov-Smirnov statistic and p-value (scipy), the Wasserstein
  distance divided by the reference's standard deviation (at least one token), and the PSI over
  the reference's quantile bins: ``length_bins`` quantiles, plus a bin below the reference's
  minimum and one above its maximum, so a shift either way leaves the bins. PSI is
  ``sum((c - r) * ln(c / r))`` over the bins' shares, each share smoothed as
  ``(count + PSI_PSEUDOCOUNT) / (n + PSI_PSEUDOCOUNT * bins)`` so an empty bin stays finite.
- **Tokens**: the Jensen-Shannon distance (base 2, the square root of the divergence) between
  the token frequencies of the two samples; the top tokens are those with the largest terms of
  the divergence. The unknown-token rate: the share of tokens that are the tokenizer's unknown
  id (or that a given callable calls unknown), window minus reference.
- **Domain classifier**: hashed word 1-2-grams (TF-IDF weighted) and a logistic regression
  telling window rows from reference rows, ROC AUC of 5-fold out-of-fold scores (fixed seed),
  on at most ``classifier_max_rows`` rows per side (a random sample); the most window-like
  window rows and the most reference-like reference rows are the examples.
- **Embedding centroids**: the cosine distance between the means of the (L2-normalised)
  embeddings, at most ``embedding_max_rows`` rows per side.
- **Predicted labels**: chi-square test of the label counts (scipy, no continuity correction),
  PSI over the labels, the fall of the mean confidence.
- **Completions**: PSI of their lengths, the rise of the refusal rate (:func:`is_refusal`) and of
  the empty-answer rate over the reference's (over 0 when the reference has no completions).

**Noise floor**: on small windows, sampling noise alone pushes PSI, distances and AUC past
their thresholds. Each such statistic also gets the value noise reaches with probability
``false_alarm_rate``: analytically where the null distribution is known (PSI ~ chi2(bins - 1) /
n_eff; AUC ~ normal with the Mann-Whitney variance; differences of means and rates ~ normal),
else from ``PERMUTATIONS`` random reassignments of the pooled rows to the two sides (mean +
z * sd). A statistic drifts when it is at or past its threshold *and* above its noise floor.

Cost, 10,000 requests against 10,000 reference rows on 2 busy CPU cores (MiniLM's tokenizer):
about 4 s without embeddings (the classifier on its 4,000-row samples ~1 s), about 17 s with
the offline MiniLM embedding its 1,000-row samples (the encoder is the slow part: ~7 ms a text).
"""

from __future__ import annotations

import itertools
import math
import re
import statistics as pystats
import time
import warnings
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from serving.monitoring.runtime.config import ABOVE, DriftConfig

# Added to every bin's count (both sides) before the PSI shares are taken: an empty bin gets a
# small, sample-size aware share instead of a zero that would make ln(c / r) infinite.
PSI_PSEUDOCOUNT = 0.5
# Random reassignments of the pooled rows behind the permutation noise floors.
PERMUTATIONS = 20
TOP = 10  # bins, tokens or labels listed per check
EXAMPLES = 5  # example texts per side
EXAMPLE_CHARS = 200  # an example's text is cut here
CLASSIFIER_FOLDS = 5
HASHED_FEATURES = 2**18
# Lower-cased phrases that mark a refusal when they occur in an answer's first
# REFUSAL_WINDOW characters (curly apostrophes read as straight ones). A rate monitor, not a
# classifier: the list is short and errs towards the usual assistant phrasings.
REFUSAL_PHRASES = (
    "i'm sorry",
    "i am sorry",
    "sorry, but",
    "i apologize",
    "i cannot",
    "i can't",
    "i can not",
    "i'm unable",
    "i am unable",
    "i'm not able to",
    "i am not able to",
    "i will not",
    "as an ai",
    "as a language model",
)
REFUSAL_WINDOW = 100
_WORD = re.compile(r"\w+")

COMPUTED = "computed"
SKIPPED = "skipped"

Token = Hashable
Tokenize = Callable[[list[str]], list[list[int]]]
Embed = Callable[[list[str]], np.ndarray]


# --- results ---------------------------------------------------------------------------------


@dataclass
class Statistic:
    name: str  # the DriftConfig threshold it is compared with
    value: float
    threshold: float
    rule: str  # ">=" (drift at or above) or "<" (drift below: p-values)
    drifted: bool
    noise_floor: float | None = None  # what noise alone reaches (None: not applicable)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Check:
    name: str
    status: str  # COMPUTED or SKIPPED
    reason: str = ""  # why it was skipped
    statistics: list[Statistic] = field(default_factory=list)
    top: list[dict[str, Any]] = field(default_factory=list)  # what moved most
    sizes: dict[str, int] = field(default_factory=dict)  # rows per side it was computed on
    notes: list[str] = field(default_factory=list)  # statistics left out, and why
    seconds: float = 0.0

    @property
    def drifted(self) -> bool:
        return any(s.drifted for s in self.statistics)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drifted": self.drifted}


@dataclass
class DriftReport:
    checks: list[Check]
    sizes: dict[str, int]  # rows of the reference and of the window
    config: dict[str, Any]
    seconds: float = 0.0

    @property
    def drifted(self) -> bool:
        return any(c.drifted for c in self.checks)

    @property
    def status(self) -> str:
        """'drifted', 'stable', or 'no_data' when no check could be computed."""
        if not any(c.status == COMPUTED for c in self.checks):
            return "no_data"
        return "drifted" if self.drifted else "stable"

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "drifted": self.drifted,
            "sizes": self.sizes,
            "seconds": self.seconds,
            "config": self.config,
            "checks": [c.to_dict() for c in self.checks],
        }


def skipped(name: str, reason: str, **sizes: int) -> Check:
    return Check(name, SKIPPED, reason, sizes=sizes)


def _statistic(
    config: DriftConfig,
    name: str,
    value: float,
    *,
    noise_floor: float | None = None,
    **details: Any,
) -> Statistic:
    threshold, rule = config.threshold(name)
    value = float(value)
    if rule == ABOVE:
        drifted = value >= threshold and (noise_floor is None or value > noise_floor)
    else:
        drifted = value < threshold
    floor = None if noise_floor is None else round(float(noise_floor), 6)
    return Statistic(name, value, float(threshold), rule, bool(drifted), floor, details)


def _too_few(
    name: str, n_ref: int, n_cur: int, config: DriftConfig, *, what: str = "rows"
) -> Check | None:
    """A skipped check when a side is empty or under its minimum size, else None."""
    if n_cur == 0:
        return skipped(name, "The window has no requests.", reference=n_ref, current=0)
    if n_ref == 0:
        return skipped(name, f"The reference has no {what}.", reference=0, current=n_cur)
    if n_cur < config.min_current_rows:
        return skipped(
            name,
            f"The window has {n_cur:,} rows; at least {config.min_current_rows:,} are needed.",
            reference=n_ref,
            current=n_cur,
        )
    if n_ref < config.min_reference_rows:
        return skipped(
            name,
            f"The reference has {n_ref:,} rows; at least {config.min_reference_rows:,} are needed.",
            reference=n_ref,
            current=n_cur,
        )
    return None


# --- noise -----------------------------------------------------------------------------------


def _z(config: DriftConfig) -> float:
    return pystats.NormalDist().inv_cdf(1 - config.false_alarm_rate)


def _rng(config: DriftConfig) -> np.random.Generator:
    return np.random.default_rng(config.seed)


def permutation_floor(
    statistic: Callable[[np.ndarray], float], n_ref: int, n_cur: int, config: DriftConfig
) -> float:
    """Mean + z * sd of ``statistic(is_current)`` over :data:`PERMUTATIONS` random splits of
    the pooled rows (reference first) into a reference and a window of the same sizes."""
    rng = _rng(config)
    n = n_ref + n_cur
    values = np.empty(PERMUTATIONS)
    for i in range(PERMUTATIONS):
        is_current = np.zeros(n, dtype=bool)
        is_current[rng.choice(n, n_cur, replace=False)] = True
        values[i] = statistic(is_current)
    return float(values.mean() + _z(config) * values.std(ddof=1))


def psi_noise_floor(bins: int, n_ref: int, n_cur: int, config: DriftConfig) -> float:
    """The PSI noise reaches with probability ``false_alarm_rate``: n_eff * PSI is about
    chi2(bins - 1) between two samples of one distribution (n_eff = n_ref n_cur / (n_ref +
    n_cur))."""
    from scipy.stats import chi2

    if bins < 2:
        return 0.0
    n_eff = n_ref * n_cur / (n_ref + n_cur)
    return float(chi2.isf(config.false_alarm_rate, bins - 1) / n_eff)


def auc_noise_floor(n_ref: int, n_cur: int, config: DriftConfig) -> float:
    """0.5 + z * sd of the ROC AUC of uninformative scores (the Mann-Whitney variance
    (n_ref + n_cur + 1) / (12 n_ref n_cur))."""
    return 0.5 + _z(config) * math.sqrt((n_ref + n_cur + 1) / (12 * n_ref * n_cur))


def _rate_rise_floor(hits_ref: int, n_ref: int, hits_cur: int, n_cur: int, z: float) -> float:
    """z * the standard error of a difference of two rates (pooled); of one rate when the
    reference is a baseline of 0 (n_ref == 0)."""
    if n_ref == 0:
        p = hits_cur / n_cur
        return z * math.sqrt(p * (1 - p) / n_cur)
    p = (hits_ref + hits_cur) / (n_ref + n_cur)
    return z * math.sqrt(p * (1 - p) * (1 / n_ref + 1 / n_cur))


# --- distributions -------------------------------------------------------------------------


def psi_from_counts(reference: np.ndarray, current: np.ndarray) -> tuple[float, np.ndarray]:
    """PSI of two count vectors over the same bins, and each bin's term (smoothed shares, see
    :data:`PSI_PSEUDOCOUNT`)."""
    ref, cur = _smoothed_shares(reference), _smoothed_shares(current)
    terms = (cur - ref) * np.log(cur / ref)
    return float(terms.sum()), terms


def _smoothed_shares(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=float)
    return (counts + PSI_PSEUDOCOUNT) / (counts.sum() + PSI_PSEUDOCOUNT * len(counts))


def quantile_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """Bin edges: just below the reference's minimum, its ``bins`` quantiles, its maximum
    (duplicates merged). A value v lands in bin ``searchsorted(edges, v)``: bin 0 holds what is
    below the reference's range, the last bin what is above it."""
    reference = np.asarray(reference, dtype=float)
    quantiles = np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1])
    low = np.nextafter(reference.min(), -np.inf)
    return np.unique(np.concatenate([[low], quantiles, [reference.max()]]))


def _bin_names(edges: np.ndarray) -> list[str]:
    low = _num(np.nextafter(edges[0], np.inf))  # the reference's minimum
    names = [f"< {low}"] + [f"({_num(a)}, {_num(b)}]" for a, b in itertools.pairwise(edges)]
    names[1] = f"[{low}, {_num(edges[1])}]"  # the minimum itself is in the first inner bin
    return [*names, f"> {_num(edges[-1])}"]


def _num(x: float) -> str:
    return f"{x:.4g}"


def binned_psi(
    reference: Sequence[float], current: Sequence[float], *, bins: int
) -> tuple[float, list[dict[str, Any]], int]:
    """PSI of ``current`` against ``reference`` over :func:`quantile_edges`: the value, the
    bins (name, shares, term) by decreasing term, and the number of bins."""
    ref, cur = np.asarray(reference, dtype=float), np.asarray(current, dtype=float)
    edges = quantile_edges(ref, bins)
    k = len(edges) + 1
    ref_counts = np.bincount(np.searchsorted(edges, ref), minlength=k)
    cur_counts = np.bincount(np.searchsorted(edges, cur), minlength=k)
    value, terms = psi_from_counts(ref_counts, cur_counts)
    rows = _share_rows(_bin_names(edges), ref_counts, cur_counts, terms, key="bin")
    return value, rows, k


def _share_rows(
    names: Sequence[Any], ref_counts: np.ndarray, cur_counts: np.ndarray, terms, *, key: str
) -> list[dict[str, Any]]:
    ref_total, cur_total = max(int(ref_counts.sum()), 1), max(int(cur_counts.sum()), 1)
    order = np.argsort(-np.asarray(terms), kind="stable")[:TOP]
    return [
        {
            key: names[i],
            "reference_share": round(float(ref_counts[i]) / ref_total, 6),
            "current_share": round(float(cur_counts[i]) / cur_total, 6),
            "contribution": round(float(terms[i]), 6),
        }
        for i in order
    ]


def js_terms(reference_counts: np.ndarray, current_counts: np.ndarray) -> np.ndarray:
    """Each category's term of the Jensen-Shannon divergence (base 2) between two count
    vectors; the terms sum to the divergence, whose square root is the JS distance."""
    p = reference_counts / reference_counts.sum()
    q = current_counts / current_counts.sum()
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = 0.5 * (
            np.where(p > 0, p * np.log2(p / m), 0) + np.where(q > 0, q * np.log2(q / m), 0)
        )
    return terms


def js_distance(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    return math.sqrt(max(float(js_terms(reference_counts, current_counts).sum()), 0.0))


# --- the checks ----------------------------------------------------------------------------


def length_drift(
    reference: Sequence[float],
    current: Sequence[float],
    config: DriftConfig,
    *,
    unit: str = "tokens",
) -> Check:
    """Prompt lengths: KS statistic and p-value, normalised Wasserstein distance, PSI."""
    from scipy.stats import ks_2samp, wasserstein_distance

    ref, cur = np.asarray(reference, dtype=float), np.asarray(current, dtype=float)
    if found := _too_few("prompt_length", len(ref), len(cur), config, what="prompts"):
        return found
    ks = ks_2samp(ref, cur)
    pooled = np.concatenate([ref, cur])

    def wasserstein(is_current: np.ndarray) -> float:
        r, c = pooled[~is_current], pooled[is_current]
        return wasserstein_distance(r, c) / max(float(r.std()), 1.0)

    is_current = np.arange(len(pooled)) >= len(ref)
    psi, bins, k = binned_psi(ref, cur, bins=config.length_bins)
    means = {"reference_mean": float(ref.mean()), "current_mean": float(cur.mean()), "unit": unit}
    return Check(
        "prompt_length",
        COMPUTED,
        statistics=[
            _statistic(
                config,
                "prompt_length_psi",
                psi,
                noise_floor=psi_noise_floor(k, len(ref), len(cur), config),
                **means,
            ),
            _statistic(
                config, "prompt_length_ks_p_value", ks.pvalue, ks_statistic=float(ks.statistic)
            ),
            _statistic(
                config,
                "prompt_length_wasserstein",
                wasserstein(is_current),
                noise_floor=permutation_floor(wasserstein, len(ref), len(cur), config),
            ),
        ],
        top=bins,
        sizes={"reference": len(ref), "current": len(cur)},
    )


def token_drift(
    reference: Sequence[Sequence[Token]],
    current: Sequence[Sequence[Token]],
    config: DriftConfig,
    *,
    unknown: Token | Callable[[Token], bool] | None = None,
    token_label: Callable[[Token], str] | None = None,
    unit: str = "tokens",
) -> Check:
    """Token frequencies: Jensen-Shannon distance with the top tokens, and the rise of the
    unknown-token rate when ``unknown`` (the tokenizer's unknown id, or a predicate) is given."""
    n_ref, n_cur = len(reference), len(current)
    if found := _too_few("tokens", n_ref, n_cur, config, what="texts"):
        return found
    rows = [*reference, *current]
    row_of_token = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
    index: dict[Token, int] = {}  # token -> a dense id (works for ids and words alike)
    ids = np.fromiter(
        (index.setdefault(t, len(index)) for r in rows for t in r),
        dtype=np.int64,
        count=int(row_of_token.size),
    )
    vocabulary = list(index)
    size = len(vocabulary)
    is_unknown = _unknown_mask(vocabulary, unknown) if unknown is not None else None

    def counts(is_current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        on_current = is_current[row_of_token]
        return (
            np.bincount(ids[~on_current], minlength=size).astype(float),
            np.bincount(ids[on_current], minlength=size).astype(float),
        )

    actual = np.arange(len(rows)) >= n_ref
    ref_counts, cur_counts = counts(actual)
    if not ref_counts.sum() or not cur_counts.sum():
        side = "reference" if not ref_counts.sum() else "window"
        return skipped("tokens", f"The {side} has no tokens.", reference=n_ref, current=n_cur)

    def distance(is_current: np.ndarray) -> float:
        r, c = counts(is_current)
        return js_distance(r, c) if r.sum() and c.sum() else 0.0

    terms = js_terms(ref_counts, cur_counts)
    label = token_label or str
    names = [label(t) for t in vocabulary]
    top = _share_rows(names, ref_counts, cur_counts, terms, key="token")
    stats = [
        _statistic(
            config,
            "token_js_distance",
            math.sqrt(max(float(terms.sum()), 0.0)),
            noise_floor=permutation_floor(distance, n_ref, n_cur, config),
            reference_tokens=int(ref_counts.sum()),
            current_tokens=int(cur_counts.sum()),
            vocabulary=size,
            unit=unit,
        )
    ]
    notes = []
    if is_unknown is None:
        notes.append("No unknown-token id was given, so the unknown-token rate is not computed.")
    else:

        def rate_rise(is_current: np.ndarray) -> float:
            r, c = counts(is_current)
            return _unknown_rate(c, is_unknown) - _unknown_rate(r, is_unknown)

        stats.append(
            _statistic(
                config,
                "token_oov_rate_increase",
                rate_rise(actual),
                noise_floor=permutation_floor(rate_rise, n_ref, n_cur, config),
                reference_rate=_unknown_rate(ref_counts, is_unknown),
                current_rate=_unknown_rate(cur_counts, is_unknown),
            )
        )
    return Check(
        "tokens",
        COMPUTED,
        statistics=stats,
        top=top,
        notes=notes,
        sizes={"reference": n_ref, "current": n_cur},
    )


def _unknown_mask(vocabulary: list[Token], unknown: Any) -> np.ndarray:
    test = unknown if callable(unknown) else (lambda token: token == unknown)
    return np.array([bool(test(t)) for t in vocabulary], dtype=bool)


def _unknown_rate(counts: np.ndarray, is_unknown: np.ndarray) -> float:
    total = counts.sum()
    return float(counts[is_unknown].sum() / total) if total else 0.0


def domain_classifier_drift(
    reference: Sequence[str], current: Sequence[str], config: DriftConfig
) -> Check:
    """ROC AUC of a classifier telling window texts from reference texts (out-of-fold scores),
    with the most window-like and most reference-like examples."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    if found := _too_few("domain_classifier", len(reference), len(current), config, what="texts"):
        return found
    rng = _rng(config)
    ref_rows = sample_indices(len(reference), config.classifier_max_rows, rng)
    cur_rows = sample_indices(len(current), config.classifier_max_rows, rng)
    texts = [reference[i] for i in ref_rows] + [current[i] for i in cur_rows]
    is_current = np.r_[np.zeros(len(ref_rows), int), np.ones(len(cur_rows), int)]
    folds = min(CLASSIFIER_FOLDS, len(ref_rows), len(cur_rows))
    if folds < 2:
        return skipped(
            "domain_classifier",
            "Each side needs at least 2 rows.",
            reference=len(ref_rows),
            current=len(cur_rows),
        )
    hashed = HashingVectorizer(
        ngram_range=(1, 2), n_features=HASHED_FEATURES, alternate_sign=False, norm=None
    ).transform(texts)
    features = TfidfTransformer(sublinear_tf=True).fit_transform(hashed)  # no labels: no leak
    with warnings.catch_warnings():
        # An approximate optimum ranks the rows as well as an exact one: the AUC is the same.
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_val_predict(
            # saga: steady on sparse rows; lbfgs took 10x longer on separable samples.
            LogisticRegression(solver="saga", max_iter=200, tol=1e-3, random_state=config.seed),
            features,
            is_current,
            cv=StratifiedKFold(folds, shuffle=True, random_state=config.seed),
            method="predict_proba",
        )[:, 1]
    auc = float(roc_auc_score(is_current, scores))
    n_ref, n_cur = len(ref_rows), len(cur_rows)
    ref_scores, cur_scores = scores[:n_ref], scores[n_ref:]
    top = _examples("current", texts[n_ref:], cur_scores, "p_current", highest=True)
    top += _examples("reference", texts[:n_ref], ref_scores, "p_current", highest=False)
    return Check(
        "domain_classifier",
        COMPUTED,
        statistics=[
            _statistic(
                config,
                "classifier_auc",
                auc,
                noise_floor=auc_noise_floor(n_ref, n_cur, config),
                folds=folds,
            )
        ],
        top=top,
        sizes={"reference": n_ref, "current": n_cur},
    )


def centroid_drift(
    reference: np.ndarray,
    current: np.ndarray,
    config: DriftConfig,
    *,
    reference_texts: Sequence[str] | None = None,
    current_texts: Sequence[str] | None = None,
) -> Check:
    """Cosine distance between the mean L2-normalised embeddings; with the texts, the examples
    furthest along the shift (window) and against it (reference)."""
    ref, cur = _unit_rows(reference), _unit_rows(current)
    if found := _too_few("embedding_centroid", len(ref), len(cur), config, what="embeddings"):
        return found
    if ref.shape[1] != cur.shape[1]:
        raise ValueError(f"Embeddings of {ref.shape[1]} and {cur.shape[1]} dimensions differ.")
    pooled = np.concatenate([ref, cur])

    def distance(is_current: np.ndarray) -> float:
        return cosine_distance(pooled[~is_current].mean(axis=0), pooled[is_current].mean(axis=0))

    value = cosine_distance(ref.mean(axis=0), cur.mean(axis=0))
    shift = cur.mean(axis=0) - ref.mean(axis=0)
    top: list[dict[str, Any]] = []
    if current_texts is not None:
        top += _examples("current", current_texts, cur @ shift, "along_shift", highest=True)
    if reference_texts is not None:
        top += _examples("reference", reference_texts, ref @ shift, "along_shift", highest=False)
    return Check(
        "embedding_centroid",
        COMPUTED,
        statistics=[
            _statistic(
                config,
                "centroid_cosine_distance",
                value,
                noise_floor=permutation_floor(distance, len(ref), len(cur), config),
                dimensions=int(ref.shape[1]),
            )
        ],
        top=top,
        sizes={"reference": len(ref), "current": len(cur)},
    )


def _unit_rows(embeddings: np.ndarray) -> np.ndarray:
    rows = np.asarray(embeddings, dtype=np.float64)
    if rows.ndim != 2:
        raise ValueError("Embeddings must be a 2-d array (rows x dimensions).")
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 - cos(a, b); 1 when either vector is zero (no direction to compare)."""
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return 1.0 - float(a @ b) / norms if norms > 0 else 1.0


def label_drift(
    reference: Sequence[str],
    current: Sequence[str],
    config: DriftConfig,
    *,
    reference_confidences: Sequence[float] | None = None,
    current_confidences: Sequence[float] | None = None,
) -> Check:
    """Predicted labels: chi-square p-value and PSI of the label counts, and the fall of the
    mean confidence when both sides have confidences."""
    from scipy.stats import chi2_contingency

    if found := _too_few("predicted_labels", len(reference), len(current), config, what="labels"):
        return found
    labels = sorted({str(x) for x in reference} | {str(x) for x in current})
    index = {label: i for i, label in enumerate(labels)}
    ref_counts = np.bincount([index[str(x)] for x in reference], minlength=len(labels))
    cur_counts = np.bincount([index[str(x)] for x in current], minlength=len(labels))
    if len(labels) > 1:
        test = chi2_contingency(np.vstack([ref_counts, cur_counts]), correction=False)
        chi2, p_value = float(test.statistic), float(test.pvalue)
    else:
        chi2, p_value = 0.0, 1.0
    psi, terms = psi_from_counts(ref_counts, cur_counts)
    n_ref, n_cur = len(reference), len(current)
    stats = [
        _statistic(config, "label_chi2_p_value", p_value, chi2=chi2, labels=len(labels)),
        _statistic(
            config, "label_psi", psi, noise_floor=psi_noise_floor(len(labels), n_ref, n_cur, config)
        ),
    ]
    notes = []
    if (
        reference_confidences is None
        or current_confidences is None
        or not len(reference_confidences)
    ):
        notes.append("The reference has no confidences, so the mean confidence is not compared.")
    else:
        ref_conf = np.asarray(reference_confidences, dtype=float)
        cur_conf = np.asarray(current_confidences, dtype=float)
        error = (
            math.sqrt(ref_conf.var(ddof=1) / len(ref_conf) + cur_conf.var(ddof=1) / len(cur_conf))
            if len(ref_conf) > 1 and len(cur_conf) > 1
            else 0.0
        )
        stats.append(
            _statistic(
                config,
                "confidence_drop",
                ref_conf.mean() - cur_conf.mean(),
                noise_floor=_z(config) * error,
                reference_mean=float(ref_conf.mean()),
                current_mean=float(cur_conf.mean()),
            )
        )
    return Check(
        "predicted_labels",
        COMPUTED,
        statistics=stats,
        top=_share_rows(labels, ref_counts, cur_counts, terms, key="label"),
        sizes={"reference": n_ref, "current": n_cur},
        notes=notes,
    )


def is_refusal(text: str) -> bool:
    """Whether an answer opens (first :data:`REFUSAL_WINDOW` characters) with one of
    :data:`REFUSAL_PHRASES`."""
    head = text[:REFUSAL_WINDOW].lower().replace("\u2019", "'")
    return any(phrase in head for phrase in REFUSAL_PHRASES)


def completion_drift(
    reference: Sequence[str] | None,
    current: Sequence[str],
    config: DriftConfig,
    *,
    reference_lengths: Sequence[float] | None = None,
    current_lengths: Sequence[float] | None = None,
    unit: str = "words",
) -> Check:
    """Generated answers: PSI of their lengths (given, else in words), and the rise of the
    refusal and empty-answer rates over the reference's (over 0 without reference answers)."""
    n_cur = len(current)
    reference = list(reference or [])
    n_ref = len(reference)
    if n_cur == 0:
        return skipped("completions", "The window has no requests.", reference=n_ref, current=0)
    if n_cur < config.min_current_rows:
        return skipped(
            "completions",
            f"The window has {n_cur:,} rows; at least {config.min_current_rows:,} are needed.",
            reference=n_ref,
            current=n_cur,
        )
    notes = []
    if 0 < n_ref < config.min_reference_rows:
        notes.append(
            f"The reference has {n_ref:,} answers (fewer than {config.min_reference_rows:,}): "
            "the rates are compared with 0 and the lengths are not compared."
        )
        reference, n_ref = [], 0
    elif n_ref == 0:
        notes.append(
            "The reference has no answers: the rates are compared with 0 and the lengths are "
            "not compared."
        )
    stats: list[Statistic] = []
    top: list[dict[str, Any]] = []
    if n_ref:
        ref_len = reference_lengths if reference_lengths is not None else _word_counts(reference)
        cur_len = current_lengths if current_lengths is not None else _word_counts(current)
        psi, bins, k = binned_psi(ref_len, cur_len, bins=config.length_bins)
        stats.append(
            _statistic(
                config,
                "completion_length_psi",
                psi,
                noise_floor=psi_noise_floor(k, n_ref, n_cur, config),
                reference_mean=float(np.mean(ref_len)),
                current_mean=float(np.mean(cur_len)),
                unit=unit if reference_lengths is not None else "words",
            )
        )
        top += bins
    z = _z(config)
    for name, test, kind in (
        ("refusal_rate_increase", is_refusal, "refusal"),
        ("empty_rate_increase", _is_empty, "empty"),
    ):
        hits_ref = sum(map(test, reference))
        cur_hits = [i for i, text in enumerate(current) if test(text)]
        ref_rate = hits_ref / n_ref if n_ref else 0.0
        cur_rate = len(cur_hits) / n_cur
        stats.append(
            _statistic(
                config,
                name,
                cur_rate - ref_rate,
                noise_floor=_rate_rise_floor(hits_ref, n_ref, len(cur_hits), n_cur, z),
                reference_rate=ref_rate,
                current_rate=cur_rate,
            )
        )
        if kind == "refusal":
            top += [{"kind": kind, "text": _cut(current[i])} for i in cur_hits[:EXAMPLES]]
    return Check(
        "completions",
        COMPUTED,
        statistics=stats,
        top=top,
        notes=notes,
        sizes={"reference": n_ref, "current": n_cur},
    )


def _is_empty(text: str) -> bool:
    return not text.strip()


def _word_counts(texts: Sequence[str]) -> list[int]:
    return [len(_WORD.findall(t)) for t in texts]


def words(text: str) -> list[str]:
    """The lower-cased words of ``text``: the tokens when no tokenizer is given."""
    return _WORD.findall(text.lower())


def sample_indices(n: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    """All of ``range(n)`` when n <= cap, else ``cap`` of them drawn without replacement
    (sorted, so the rows keep their order)."""
    if n <= cap:
        return np.arange(n)
    return np.sort(rng.choice(n, cap, replace=False))


def _examples(
    side: str, texts: Sequence[str], scores: np.ndarray, key: str, *, highest: bool
) -> list[dict[str, Any]]:
    """The :data:`EXAMPLES` texts of one side with the highest (or lowest) scores."""
    order = np.argsort(-scores if highest else scores, kind="stable")[:EXAMPLES]
    return [{"side": side, "text": _cut(texts[i]), key: round(float(scores[i]), 4)} for i in order]


def _cut(text: str) -> str:
    return text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 1] + "\u2026"


# --- the report ------------------------------------------------------------------------------


@dataclass
class Sample:
    """One side: the rows' prompts and, where known, their token ids (aligned with the texts),
    embeddings, predicted labels and confidences, and generated answers."""

    texts: Sequence[str] | None = None
    token_ids: Sequence[Sequence[int]] | None = None
    embeddings: np.ndarray | None = None
    labels: Sequence[str] | None = None
    confidences: Sequence[float] | None = None
    completions: Sequence[str] | None = None

    def __post_init__(self) -> None:
        sizes = {
            name: len(value)
            for name, value in (
                ("texts", self.texts),
                ("token_ids", self.token_ids),
                ("labels", self.labels),
                ("confidences", self.confidences),
            )
            if value is not None
        }
        if len(set(sizes.values())) > 1:
            raise ValueError(f"A sample's columns must have one length each row: {sizes}.")
        if (
            self.embeddings is not None
            and self.texts is not None
            and len(self.embeddings) != len(self.texts)
        ):
            raise ValueError("A sample's embeddings must have one row per text.")

    @property
    def rows(self) -> int:
        for value in (self.texts, self.token_ids, self.labels, self.completions, self.embeddings):
            if value is not None:
                return len(value)
        return 0

    @property
    def has_text(self) -> bool:
        return self.texts is not None and any(t and t.strip() for t in self.texts)


def compute_drift(
    reference: Sample,
    current: Sample,
    config: DriftConfig | None = None,
    *,
    tokenizer: Any = None,
    embed: Embed | None = None,
) -> DriftReport:
    """Every check the two samples allow, in order: prompt length, tokens, domain classifier,
    embedding centroid, then the outputs the window has (predicted labels, completions).

    ``tokenizer`` (a transformers tokenizer) gives token ids, the unknown id and token names;
    without it (and without ``token_ids``) lengths and tokens are in words. ``embed`` turns
    texts into embeddings (see :func:`.embeddings.embed_texts`) when the samples hold none.
    A check without data is skipped with its reason; nothing here raises for missing data.
    """
    config = config or DriftConfig()
    started = time.perf_counter()
    checks: list[Check] = []
    n_ref, n_cur = reference.rows, current.rows
    sizes = {"reference": n_ref, "current": n_cur}
    input_checks = ("prompt_length", "tokens", "domain_classifier", "embedding_centroid")
    if n_cur == 0:
        checks += [skipped(n, "The window has no requests.", **sizes) for n in input_checks]
    elif not reference.has_text and reference.token_ids is None:
        checks += [
            skipped(n, "The reference has no text to compare the prompts with.", **sizes)
            for n in input_checks
        ]
    elif current.texts is None and current.token_ids is None:
        checks += [
            skipped(n, "The window's prompts were not given.", **sizes) for n in input_checks
        ]
    else:
        checks += _input_checks(reference, current, config, tokenizer, embed)
    if current.labels is not None:
        checks.append(
            _timed(
                lambda: label_drift(
                    reference.labels or [],
                    current.labels,
                    config,
                    reference_confidences=reference.confidences,
                    current_confidences=current.confidences,
                )
            )
        )
    if current.completions is not None:
        checks.append(_timed(lambda: _completion_check(reference, current, config, tokenizer)))
    if current.labels is None and current.completions is None:
        checks.append(
            skipped(
                "outputs",
                "The window has no answers (no predicted labels, no completions)."
                if n_cur
                else "The window has no requests.",
                **sizes,
            )
        )
    return DriftReport(
        checks, sizes, config.to_dict(), seconds=round(time.perf_counter() - started, 3)
    )


def _timed(run: Callable[[], Check]) -> Check:
    started = time.perf_counter()
    check = run()
    check.seconds = round(time.perf_counter() - started, 3)
    return check


def _tokens(sample: Sample, tokenizer: Any) -> list[list[Token]] | None:
    if sample.token_ids is not None:
        return [list(ids) for ids in sample.token_ids]
    if sample.texts is None:
        return None
    if tokenizer is not None:
        return list(tokenizer(list(sample.texts), add_special_tokens=False)["input_ids"])
    return [words(t) for t in sample.texts]


def _input_checks(
    reference: Sample, current: Sample, config: DriftConfig, tokenizer: Any, embed: Embed | None
) -> list[Check]:
    checks = []
    by_tokens = tokenizer is not None or (
        reference.token_ids is not None and current.token_ids is not None
    )
    # Both sides in one unit: token ids when both have them (or a tokenizer makes them).
    ref_tokens = _tokens(reference if by_tokens else Sample(texts=reference.texts), tokenizer)
    cur_tokens = _tokens(current if by_tokens else Sample(texts=current.texts), tokenizer)
    unit = "tokens" if by_tokens else "words"
    if ref_tokens is None or cur_tokens is None:
        reason = "Token ids or texts are needed on both sides."
        checks += [
            skipped(n, reason, **_sizes(reference, current)) for n in ("prompt_length", "tokens")
        ]
    else:
        checks.append(
            _timed(
                lambda: length_drift(
                    [len(t) for t in ref_tokens], [len(t) for t in cur_tokens], config, unit=unit
                )
            )
        )
        unknown = getattr(tokenizer, "unk_token_id", None) if tokenizer is not None else None
        label = _token_namer(tokenizer)
        checks.append(
            _timed(
                lambda: token_drift(
                    ref_tokens, cur_tokens, config, unknown=unknown, token_label=label, unit=unit
                )
            )
        )
    ref_texts = _nonempty(reference.texts)
    cur_texts = _nonempty(current.texts)
    if not ref_texts or not cur_texts:
        reason = (
            "The reference has no text." if not ref_texts else "The window's prompts have no text."
        )
        checks.append(skipped("domain_classifier", reason, **_sizes(reference, current)))
    else:
        checks.append(_timed(lambda: domain_classifier_drift(ref_texts, cur_texts, config)))
    checks.append(_timed(lambda: _embedding_check(reference, current, config, embed)))
    return checks


def _nonempty(texts: Sequence[str] | None) -> list[str]:
    return [t for t in texts or [] if t and t.strip()]


def _sizes(reference: Sample, current: Sample) -> dict[str, int]:
    return {"reference": reference.rows, "current": current.rows}


def _token_namer(tokenizer: Any) -> Callable[[Token], str] | None:
    convert = getattr(tokenizer, "convert_ids_to_tokens", None)
    if convert is None:
        return None
    return lambda token: str(convert(int(token)))


def _embedding_check(
    reference: Sample, current: Sample, config: DriftConfig, embed: Embed | None
) -> Check:
    """Given embeddings on both sides, else the encoder's on both (one space, never a mix)."""
    rng = _rng(config)
    cap = config.embedding_max_rows
    if reference.embeddings is not None and current.embeddings is not None:
        sides = []
        for sample in (reference, current):
            rows = sample_indices(len(sample.embeddings), cap, rng)
            texts = [sample.texts[i] for i in rows] if sample.texts is not None else None
            sides.append((np.asarray(sample.embeddings)[rows], texts))
        (ref_vectors, ref_texts), (cur_vectors, cur_texts) = sides
    elif embed is not None and reference.texts and current.texts:
        ref_texts = [reference.texts[i] for i in sample_indices(len(reference.texts), cap, rng)]
        cur_texts = [current.texts[i] for i in sample_indices(len(current.texts), cap, rng)]
        if found := _too_few("embedding_centroid", len(ref_texts), len(cur_texts), config):
            return found
        ref_vectors, cur_vectors = embed(ref_texts), embed(cur_texts)
    else:
        return skipped(
            "embedding_centroid",
            "No encoder was given (and the samples hold no embeddings).",
            **_sizes(reference, current),
        )
    return centroid_drift(
        ref_vectors, cur_vectors, config, reference_texts=ref_texts, current_texts=cur_texts
    )


def _completion_check(
    reference: Sample, current: Sample, config: DriftConfig, tokenizer: Any
) -> Check:
    ref_lengths = cur_lengths = None
    unit = "words"
    if tokenizer is not None and reference.completions:
        count = lambda texts: [  # noqa: E731
            len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        ]
        ref_lengths, cur_lengths, unit = (
            count(reference.completions),
            count(current.completions),
            "tokens",
        )
    return completion_drift(
        reference.completions,
        current.completions,
        config,
        reference_lengths=ref_lengths,
        current_lengths=cur_lengths,
        unit=unit,
    )
