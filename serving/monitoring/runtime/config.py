"""The thresholds and sizes of a drift report, described once: :class:`DriftConfig`.

Each field carries its default, range and help in its metadata; :meth:`DriftConfig.from_dict`
(the one validator: the API, the endpoint form and the drift job call it) refuses unknown
names, non-numbers and out-of-range values, all of them at once, in a :class:`DriftConfigError`
whose ``fields`` map each bad name to its message. Plain Python: no Django.

Defaults, and why:

- PSI (prompt length, predicted label, completion length) >= 0.2: the usual "significant
  shift" line of the population stability index (0.1-0.2 is "moderate").
- Kolmogorov-Smirnov p-value < 0.001 (prompt length): strict, because on windows of thousands
  of rows KS notices shifts too small to matter; read it beside the Wasserstein distance.
- Wasserstein distance of prompt lengths >= 0.2 reference standard deviations (the spread is
  taken as at least one token, so a constant-length reference does not divide by zero).
- Jensen-Shannon distance (base 2, in [0, 1]) between token frequencies >= 0.1. Over a real
  vocabulary a thousand rows a side reach 0.2 by sampling alone (Banking77 halves, MiniLM's
  tokenizer), so below some ten thousand rows the noise floor decides, not this line.
- Unknown-token rate up by >= 0.02 (two tokens in a hundred) over the reference's rate.
- Domain classifier ROC AUC >= 0.55: a classifier that tells the window from the reference
  better than chance by that much. Above ~1,000 rows this is the line; below, sampling noise
  alone reaches it and the noise floor (below) takes over.
- Centroid cosine distance of sentence embeddings >= 0.02, measured with the offline MiniLM
  on Banking77 (1,000 rows a side): two halves of it 0.003 (noise floor 0.006), 30% of SQuAD
  questions mixed into the window 0.04, half of them 0.16, SQuAD alone 0.95.
- Chi-square p-value of the predicted-label counts < 0.001.
- Mean confidence of the predicted label down by >= 0.05.
- Refusal rate and empty-answer rate up by >= 0.05 (five answers in a hundred).

The noise floor: a statistic drifts only when it passes its threshold *and* what sampling
noise alone would reach at these window sizes with probability ``false_alarm_rate`` (0.001);
the report gives both. A threshold of 0 therefore means "any shift beyond noise". Thresholds
on p-values are plain significance levels (0 never flags).
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from evaluation.runtime.config import Setting, check_setting
from llmhub.reporting import JobInputError

ABOVE = ">="  # drifted when the value is at or above the threshold
BELOW = "<"  # drifted when the value is below the threshold (p-values)


class DriftConfigError(JobInputError):
    """Bad drift settings; ``fields`` maps each bad name to its message (all of them)."""

    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__(" ".join(problems.values()))
        self.fields = problems


def _setting(default: float, low: float, high: float, help: str, *, rule: str = ABOVE, **kw):
    """A field's default, with its range, help and rule in the metadata."""
    return field(default=default, metadata={"range": (low, high), "help": help, "rule": rule, **kw})


@dataclass(frozen=True)
class DriftConfig:
    # --- thresholds, one per statistic ----------------------------------------------------------
    prompt_length_psi: float = _setting(
        0.2, 0, 10, "PSI of prompt lengths over the reference's quantile bins."
    )
    prompt_length_ks_p_value: float = _setting(
        0.001, 0, 1, "Kolmogorov-Smirnov p-value of prompt lengths (drift below it).", rule=BELOW
    )
    prompt_length_wasserstein: float = _setting(
        0.2, 0, 100, "Wasserstein distance of prompt lengths, in reference standard deviations."
    )
    token_js_distance: float = _setting(
        0.1, 0, 1, "Jensen-Shannon distance (base 2) between token frequencies."
    )
    token_oov_rate_increase: float = _setting(
        0.02, 0, 1, "Rise of the unknown-token rate over the reference's (0.02: 2 in 100)."
    )
    classifier_auc: float = _setting(
        0.55, 0.5, 1, "ROC AUC of a classifier telling the window from the reference."
    )
    centroid_cosine_distance: float = _setting(
        0.02, 0, 2, "Cosine distance between the mean embeddings of the reference and window."
    )
    label_chi2_p_value: float = _setting(
        0.001,
        0,
        1,
        "Chi-square p-value of the predicted-label counts (drift below it).",
        rule=BELOW,
    )
    label_psi: float = _setting(0.2, 0, 10, "PSI of the predicted-label distribution.")
    confidence_drop: float = _setting(
        0.05, 0, 1, "Fall of the mean confidence of the predicted label."
    )
    completion_length_psi: float = _setting(
        0.2, 0, 10, "PSI of completion lengths over the reference's quantile bins."
    )
    refusal_rate_increase: float = _setting(
        0.05, 0, 1, "Rise of the share of answers that are refusals."
    )
    empty_rate_increase: float = _setting(0.05, 0, 1, "Rise of the share of empty answers.")
    # --- sizes and noise ------------------------------------------------------------------------
    min_reference_rows: int = _setting(
        100, 1, 10_000_000, "Fewest reference rows a statistic is computed on."
    )
    min_current_rows: int = _setting(
        100, 1, 10_000_000, "Fewest window rows a statistic is computed on."
    )
    length_bins: int = _setting(10, 2, 100, "Quantile bins of the length PSIs.")
    false_alarm_rate: float = _setting(
        0.001,
        0,
        0.5,
        "Chance that noise alone passes a statistic's noise floor at the window's size.",
        min_exclusive=True,
    )
    classifier_max_rows: int = _setting(
        4000, 100, 1_000_000, "Rows per side the domain classifier trains on (a random sample)."
    )
    embedding_max_rows: int = _setting(
        1000, 10, 1_000_000, "Rows per side embedded for the centroid distance (a random sample)."
    )
    seed: int = _setting(0, 0, 2**31 - 1, "Seed of the samples, folds and permutations.")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise DriftConfigError naming every field that is not a number in its range."""
        _checked(asdict(self))

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> DriftConfig:
        """The config of ``values`` (absent names keep their defaults); unknown names, wrong
        types and out-of-range values are refused together in one DriftConfigError."""
        return cls(**_checked(values))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def threshold(self, name: str) -> tuple[float, str]:
        """``name``'s threshold and its rule (:data:`ABOVE` or :data:`BELOW`)."""
        return getattr(self, name), _RULES[name]


def _settings() -> dict[str, Setting]:
    out = {}
    for f in fields(DriftConfig):
        low, high = f.metadata["range"]
        kind = "int" if f.type in ("int", int) else "float"
        default = f.default if f.default is not MISSING else None
        out[f.name] = Setting(
            f.name,
            kind,
            default,
            f.metadata["help"],
            low,
            high,
            min_exclusive=f.metadata.get("min_exclusive", False),
        )
    return out


SETTINGS: dict[str, Setting] = _settings()
_RULES = {f.name: f.metadata["rule"] for f in fields(DriftConfig)}


def settings_schema() -> list[dict[str, Any]]:
    """JSON-able description of every field (for the endpoint form and the API)."""
    return [{**asdict(s), "rule": _RULES[s.name]} for s in SETTINGS.values()]


def _checked(values: dict[str, Any] | None) -> dict[str, Any]:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise DriftConfigError({"config": "Drift settings must be an object of name -> value."})
    problems: dict[str, str] = {}
    unknown = sorted(str(name) for name in values if name not in SETTINGS)
    if unknown:
        problems["config"] = (
            f"Unknown drift setting(s): {', '.join(unknown)}. Settings: {', '.join(SETTINGS)}."
        )
    checked = {}
    for name, value in values.items():
        if name in SETTINGS:
            try:
                checked[name] = check_setting(SETTINGS[name], value)
            except JobInputError as exc:
                problems[name] = str(exc)
    if problems:
        raise DriftConfigError(problems)
    return checked
