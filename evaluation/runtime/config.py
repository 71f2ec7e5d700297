"""The settings of an evaluation, described once.

:data:`SETTINGS` is the one table of the generation and batching settings a user may give an
evaluation run; :func:`validate_settings` checks a dict of them (names, types, ranges, and the
rules between them) and :func:`validate_metrics` the metrics of a task. The service calls both
before it creates a run (so the API and the form refuse what the worker would), and
``EvalConfig`` calls them again on the worker with the same messages. Plain Python: no Django.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from evaluation.metrics.catalog import check_metrics_fit
from llmhub.reporting import JobInputError


@dataclass(frozen=True)
class Setting:
    name: str
    type: str  # int | float | bool
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    # The lower bound itself is refused: top_p must be above 0, not 0.
    min_exclusive: bool = False
    nullable: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting("max_new_tokens", "int", 64, "Most tokens generated per example.", 1, 4096),
    Setting("temperature", "float", 0.0, "Sampling temperature; 0 means greedy decoding.", 0, 100),
    Setting(
        "top_p",
        "float",
        1.0,
        "Nucleus sampling mass in (0, 1]; used only when sampling.",
        0,
        1,
        min_exclusive=True,
    ),
    Setting("num_beams", "int", 1, "Beam width; 1 means no beam search.", 1, 32),
    Setting(
        "do_sample",
        "bool",
        None,
        "Sample instead of greedy/beam search; empty: sample when temperature > 0.",
        nullable=True,
    ),
    Setting("batch_size", "int", 8, "Examples per forward pass or generate call.", 1, 4096),
    Setting(
        "max_examples",
        "int",
        None,
        "Evaluate only the first N rows of the split; empty: all.",
        1,
        10_000_000,
        nullable=True,
    ),
    Setting("seed", "int", 0, "Seed for sampling and for the bootstrap intervals.", 0, 2**31 - 1),
    Setting(
        "n_bootstrap",
        "int",
        1000,
        "Bootstrap resamples for the 95% intervals; 0 skips them.",
        0,
        100_000,
    ),
    # Perplexity on long text (evaluation.runtime.sliding): a window of the model's context
    # slides over the whole text, every token scored once.
    Setting(
        "stride",
        "int",
        None,
        "Tokens a perplexity window moves on long text; empty: the model's context (disjoint "
        "windows). Smaller gives each scored token at least context - stride + 1 tokens of "
        "left context, for context / stride times the work. At most the model's context.",
        1,
        524_288,
        nullable=True,
    ),
    Setting(
        "join_rows",
        "bool",
        None,
        "Perplexity of a text column: score the rows as one text joined by newlines (a corpus "
        "uploaded as lines or chunks) instead of each row as its own document; empty: join "
        "when the split's only column is the text (what a .txt upload becomes).",
        nullable=True,
    ),
    Setting(
        "score_end_token",
        "bool",
        False,
        "Perplexity of a text column: append the tokenizer's end-of-text token to each "
        "document (to the whole text when rows are joined) and score it too.",
    ),
)
_BY_NAME = {s.name: s for s in SETTINGS}


def settings_schema() -> list[dict[str, Any]]:
    """JSON-able description of every setting (for forms and the API)."""
    return [
        {
            "name": s.name,
            "type": s.type,
            "default": s.default,
            "help": s.help,
            "min": s.min,
            "max": s.max,
            "min_exclusive": s.min_exclusive,
            "nullable": s.nullable,
        }
        for s in SETTINGS
    ]


def _span(s: Setting) -> str:
    if s.min_exclusive:
        return f"above {s.min:g} and at most {s.max:g}"
    return f"between {s.min:g} and {s.max:g}"


def check_setting(s: Setting, value: Any) -> Any:
    """``value`` typed and in ``s``'s range (JobInputError naming the setting otherwise)."""
    if value is None:
        if s.nullable:
            return None
        raise JobInputError(f"{s.name} needs a value.")
    if s.type == "bool":
        if not isinstance(value, bool):
            raise JobInputError(f"{s.name} must be true or false, not {value!r}.")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = "a whole number" if s.type == "int" else "a number"
        raise JobInputError(f"{s.name} must be {kind}, not {value!r}.")
    if s.type == "int":
        if value != value or value in (float("inf"), float("-inf")) or int(value) != value:
            raise JobInputError(f"{s.name} must be a whole number, not {value!r}.")
        value = int(value)
    else:
        value = float(value)
    too_low = value <= s.min if s.min_exclusive else value < s.min
    if value != value or too_low or value > s.max:
        raise JobInputError(f"{s.name} must be {_span(s)}, not {value:g}.")
    return value


def validate_settings(values: dict[str, Any] | None) -> dict[str, Any]:
    """The settings given (unknown names refused, values typed and in range), without defaults
    filled in; JobInputError with a message a user can act on."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise JobInputError("Settings must be an object of name -> value.")
    unknown = sorted(set(values) - set(_BY_NAME))
    if unknown:
        raise JobInputError(
            f"Unknown setting(s): {', '.join(map(str, unknown))}. Settings: {', '.join(_BY_NAME)}."
        )
    checked = {name: check_setting(_BY_NAME[name], value) for name, value in values.items()}
    temperature = checked.get("temperature", _BY_NAME["temperature"].default)
    if checked.get("do_sample") and temperature == 0:
        raise JobInputError("Sampling needs a temperature above 0 (0 means greedy).")
    return checked


def validate_metrics(task_type: str, metrics: Iterable[str]) -> list[str]:
    """``metrics`` without repeats, each known and fitting the task (JobInputError otherwise)."""
    names = list(dict.fromkeys(metrics or []))
    check_metrics_fit(task_type, names)
    return names


# The parameters a user may give each bias probe (``evaluation.runtime.bias``), checked by
# the service before launch and by the probe itself on the worker.
BIAS_PARAMS: dict[str, tuple[Setting, ...]] = {
    "crows_pairs": (
        Setting(
            "max_pairs", "int", None, "Probe only the first N pairs.", 1, 100_000, nullable=True
        ),
    ),
    "bold": (
        Setting(
            "max_prompts_per_group",
            "int",
            None,
            "At most N prompts per group.",
            1,
            10_000,
            nullable=True,
        ),
        Setting("max_new_tokens", "int", 20, "Tokens generated per prompt.", 1, 256),
    ),
    "winobias": (
        Setting(
            "max_pairs", "int", None, "Probe only the first N pairs.", 1, 100_000, nullable=True
        ),
    ),
}


def validate_bias_params(kind: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """The parameters given for a probe of ``kind``, checked (JobInputError otherwise)."""
    if kind not in BIAS_PARAMS:
        raise JobInputError(f"Unknown probe kind {kind!r}; kinds: {', '.join(BIAS_PARAMS)}.")
    params = dict(params or {})
    allowed = {s.name: s for s in BIAS_PARAMS[kind]}
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise JobInputError(
            f"Unknown parameter(s): {', '.join(map(str, unknown))}. "
            f"Parameters of {kind}: {', '.join(allowed)}."
        )
    return {name: check_setting(allowed[name], value) for name, value in params.items()}
