"""The cleaning steps: a registry of specs (name, parameters, kind) and their row functions.

A recipe is an ordered list of ``{"step": name, "params": {...}}``. Three kinds of step:

- ``map`` steps change text (strip HTML, normalize, lowercase, redact PII, regex replace,
  bad words with ``action="mask"``);
- ``filter`` steps keep or drop a row by looking at it alone (empty, length, language, regex,
  bad words with ``action="drop"``);
- ``dedupe`` steps need every row at once (exact and near duplicates): the recipe runner
  computes a per-row key in parallel and decides in one pass over all rows (``recipe.py``).

Steps see the row's text columns in the order given to ``run_recipe``; maps change each of
them, filters drop the row when any text column fails (``length_filter`` and
``language_filter`` look at the first, the primary text), dedupe compares them joined.

This module imports nothing heavy, so the web process can list and validate recipes with it.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datasets_app.cleaning import pii
from llmhub.reporting import JobInputError

MAX_STEPS = 50
REGEX_TIMEOUT_S = 2.0  # per row: a user's pattern that backtracks forever fails its step
# Chosen by bench/cleaning.py on real 50-word texts edited at 2-15% of their words: the highest
# threshold with recall >= 0.9 at precision >= 0.95 (0.7 caught under half of those copies).
NEAR_DEDUPE_THRESHOLD = 0.5


class StepFailed(JobInputError):
    """A step could not run: carries its 0-based ``index``, its ``step`` name and the
    ``reason``. The source is untouched and no output is written."""

    def __init__(self, index: int, step: str, reason: str) -> None:
        super().__init__(f"Step {index + 1} ({step}) failed: {reason}")
        self.index, self.step, self.reason = index, step, reason

    def __reduce__(self):  # picklable across the worker processes of num_proc > 1
        return (type(self), (self.index, self.step, self.reason))


@dataclass(frozen=True)
class Param:
    """One parameter of a step: ``type`` is int | float | str | bool | list (of strings) |
    choice (one of ``choices``); ``min``/``max`` bound numbers."""

    name: str
    type: str
    default: Any
    help: str = ""
    choices: tuple = ()
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class StepSpec:
    """A step of the catalog. ``kind`` is map (changes text), filter (drops rows) or dedupe
    (drops duplicate rows)."""

    name: str
    label: str
    kind: str
    description: str
    params: tuple[Param, ...] = field(default_factory=tuple)

    @property
    def filters_rows(self) -> bool:
        return self.kind in ("filter", "dedupe") or self.name == "bad_words"

    @property
    def changes_text(self) -> bool:
        return self.kind == "map" or self.name == "bad_words"

    def as_dict(self) -> dict:
        data = asdict(self)
        data["params"] = [asdict(p) | {"choices": list(p.choices)} for p in self.params]
        data["filters_rows"] = self.filters_rows
        data["changes_text"] = self.changes_text
        return data


STEPS: dict[str, StepSpec] = {
    s.name: s
    for s in (
        StepSpec(
            "strip_html",
            "Strip HTML and boilerplate",
            "map",
            "Remove tags, scripts, styles and navigation, decode entities (&amp; is &), and "
            "drop boilerplate lines: cookie notices, 'Share this', 'Follow us', 'All rights "
            "reserved', 'Skip to content'.",
            (Param("remove_boilerplate", "bool", True, "Drop boilerplate lines too."),),
        ),
        StepSpec(
            "normalize_unicode",
            "Normalize unicode and whitespace",
            "map",
            "Unicode normalization (NFKC: ligatures and full-width forms become plain "
            "letters), control and zero-width characters removed, runs of spaces collapsed to "
            "one, more than one blank line to one.",
            (
                Param(
                    "form",
                    "choice",
                    "NFKC",
                    "Unicode normalization form.",
                    choices=("NFKC", "NFC", "NFKD", "NFD"),
                ),
                Param("collapse_whitespace", "bool", True, "Collapse runs of whitespace."),
            ),
        ),
        StepSpec("lowercase", "Lowercase", "map", "Lowercase the text."),
        StepSpec(
            "drop_empty",
            "Drop empty rows",
            "filter",
            "Drop rows where any text column is empty or only whitespace.",
        ),
        StepSpec(
            "length_filter",
            "Length filter",
            "filter",
            "Keep rows whose primary text length is within [min_length, max_length], in "
            "characters or tokens (whitespace-separated words, or a trained tokenizer's "
            "tokens when tokenizer_dir is given).",
            (
                Param("min_length", "int", 1, "Shortest length kept.", min=0),
                Param("max_length", "int", 100_000, "Longest length kept.", min=1),
                Param(
                    "unit",
                    "choice",
                    "chars",
                    "Count characters or tokens.",
                    choices=("chars", "tokens"),
                ),
                Param(
                    "tokenizer_dir",
                    "str",
                    "",
                    "A tokenizer directory (from train_tokenizer) to count tokens with; "
                    "whitespace tokens when empty. Only with unit 'tokens'.",
                ),
            ),
        ),
        StepSpec(
            "language_filter",
            "Language filter",
            "filter",
            "Keep rows whose primary text is detected (py3langid, offline, 97 languages) as "
            "one of the given languages with at least the given confidence.",
            (
                Param("languages", "list", ["en"], "ISO 639-1 codes to keep, e.g. en, de."),
                Param(
                    "min_confidence",
                    "float",
                    0.5,
                    "Drop rows detected with less confidence than this.",
                    min=0,
                    max=1,
                ),
            ),
        ),
        StepSpec(
            "exact_dedupe",
            "Exact dedupe",
            "dedupe",
            "Keep the first of rows whose text is equal after casefolding and removing "
            "punctuation and whitespace.",
        ),
        StepSpec(
            "near_dedupe",
            "Near-duplicate removal (MinHash LSH)",
            "dedupe",
            "Keep the first of each group of rows whose word-shingle Jaccard similarity, "
            "estimated with MinHash and found with LSH banding, reaches the threshold. On "
            "~50-word texts with 3-word shingles, a threshold still catches 9 in 10 copies "
            "with up to this share of their words replaced, deleted or inserted: 0.8 about "
            "3%, 0.7 about 5%, 0.6 about 8%, 0.5 about 11%, 0.4 about 15% "
            "(bench/cleaning.py, on real text).",
            (
                Param(
                    "threshold",
                    "float",
                    NEAR_DEDUPE_THRESHOLD,
                    "Jaccard similarity of word shingles that counts as a duplicate. The "
                    "default 0.5 catches copies of a 50-word text with up to ~11% of its words "
                    "edited; 0.7 only ~5%. Lower merges more loosely related rows.",
                    min=0.1,
                    max=1.0,
                ),
                Param(
                    "num_perm",
                    "int",
                    128,
                    "MinHash permutations: more is more precise and slower.",
                    min=16,
                    max=512,
                ),
                Param("shingle_size", "int", 3, "Words per shingle.", min=1, max=10),
            ),
        ),
        StepSpec(
            "pii_redact",
            "Redact PII",
            "map",
            "Replace emails, phone numbers, credit card numbers (Luhn-checked), IPv4/IPv6 "
            "addresses and IBANs (mod-97-checked) with [EMAIL], [PHONE], [CREDIT_CARD], "
            "[IP_ADDRESS], [IBAN].",
            (
                Param(
                    "kinds",
                    "list",
                    list(pii.KINDS),
                    "Kinds to redact: " + ", ".join(pii.KINDS) + ".",
                ),
            ),
        ),
        StepSpec(
            "regex_filter",
            "Regex filter",
            "filter",
            "Drop the rows matching a regular expression in any text column, or keep only those.",
            (
                Param("pattern", "str", "", "A Python regular expression."),
                Param(
                    "action",
                    "choice",
                    "drop",
                    "Drop matching rows, or keep only matching rows.",
                    choices=("drop", "keep"),
                ),
                Param("ignore_case", "bool", True, "Match regardless of case."),
            ),
        ),
        StepSpec(
            "regex_replace",
            "Regex replace",
            "map",
            "Replace every match of a regular expression.",
            (
                Param("pattern", "str", "", "A Python regular expression."),
                Param("replacement", "str", "", "Replacement text (\\1 for a group)."),
                Param("ignore_case", "bool", False, "Match regardless of case."),
            ),
        ),
        StepSpec(
            "bad_words",
            "Bad-words filter",
            "filter",
            "Drop rows containing any listed word or phrase (whole words, any case), or mask "
            "each occurrence.",
            (
                Param("words", "list", [], "The words or phrases."),
                Param(
                    "action",
                    "choice",
                    "drop",
                    "Drop the row, or replace the word by the mask.",
                    choices=("drop", "mask"),
                ),
                Param("mask", "str", "***", "What a masked word becomes."),
            ),
        ),
    )
}

DEFAULT_RECIPE: list[dict] = [
    {"step": "strip_html", "params": {}},
    {"step": "normalize_unicode", "params": {}},
    {"step": "pii_redact", "params": {}},
    {"step": "exact_dedupe", "params": {}},
    {"step": "near_dedupe", "params": {"threshold": NEAR_DEDUPE_THRESHOLD}},
    {"step": "length_filter", "params": {"min_length": 20, "max_length": 100_000}},
]


# --- validation -----------------------------------------------------------------------------


def _coerce(step_index: int, step: str, spec: Param, value: Any) -> Any:
    where = f"Step {step_index + 1} ({step}), parameter '{spec.name}'"
    if spec.type == "bool":
        if not isinstance(value, bool):
            raise JobInputError(f"{where}: expected true or false, got {value!r}.")
    elif spec.type in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise JobInputError(f"{where}: expected a number, got {value!r}.")
        if value != value:  # NaN
            raise JobInputError(f"{where}: expected a number, got NaN.")
        if spec.type == "int":
            if int(value) != value:
                raise JobInputError(f"{where}: expected a whole number, got {value!r}.")
            value = int(value)
        else:
            value = float(value)
        if spec.min is not None and value < spec.min:
            raise JobInputError(f"{where}: must be at least {spec.min:g}, got {value!r}.")
        if spec.max is not None and value > spec.max:
            raise JobInputError(f"{where}: must be at most {spec.max:g}, got {value!r}.")
    elif spec.type == "choice":
        if value not in spec.choices:
            raise JobInputError(
                f"{where}: choose one of {', '.join(spec.choices)} (got {value!r})."
            )
    elif spec.type == "list":
        if isinstance(value, str):  # "a, b" or one per line, as a form sends it
            value = [v.strip() for v in re.split(r"[\n,]", value) if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise JobInputError(f"{where}: expected a list of strings.")
        value = [v.strip() for v in value if v.strip()]
    elif spec.type == "str" and not isinstance(value, str):
        raise JobInputError(f"{where}: expected text, got {value!r}.")
    return value


def validate_recipe(steps: list[dict]) -> list[dict]:
    """The recipe with every parameter filled in (defaults) and checked.

    Raises JobInputError naming the step (1-based) and the parameter at fault: an unknown
    step or parameter, a value of the wrong type or out of range, an invalid regular
    expression, an unknown PII kind, min_length above max_length, an empty word list.
    """
    if not isinstance(steps, list) or not steps:
        raise JobInputError("A recipe is a non-empty list of steps.")
    if len(steps) > MAX_STEPS:
        raise JobInputError(f"A recipe has at most {MAX_STEPS} steps; this one has {len(steps)}.")
    normalized = []
    for index, item in enumerate(steps):
        if not isinstance(item, dict) or "step" not in item:
            raise JobInputError(f"Step {index + 1} must be an object with a 'step' name.")
        name = item["step"]
        spec = STEPS.get(name) if isinstance(name, str) else None
        if spec is None:
            raise JobInputError(
                f"Step {index + 1}: unknown step {name!r}. Steps: {', '.join(STEPS)}."
            )
        extra = sorted(set(item) - {"step", "params"})
        if extra:
            raise JobInputError(
                f"Step {index + 1} ({name}): unexpected key(s) {', '.join(extra)}; put "
                "parameters under 'params'."
            )
        params = item.get("params") or {}
        if not isinstance(params, dict):
            raise JobInputError(f"Step {index + 1} ({name}): 'params' must be an object.")
        unknown = sorted(set(params) - {p.name for p in spec.params})
        if unknown:
            known = ", ".join(p.name for p in spec.params) or "none"
            raise JobInputError(
                f"Step {index + 1} ({name}): unknown parameter(s) {', '.join(unknown)}; "
                f"its parameters: {known}."
            )
        values = {
            p.name: _coerce(index, name, p, params.get(p.name, p.default)) for p in spec.params
        }
        _check_semantics(index, name, values)
        normalized.append({"step": name, "params": values})
    return normalized


def _check_semantics(index: int, name: str, values: dict) -> None:
    where = f"Step {index + 1} ({name})"
    if name in ("regex_filter", "regex_replace"):
        if not values["pattern"]:
            raise JobInputError(f"{where}, parameter 'pattern': give a regular expression.")
        try:
            _user_regex(values["pattern"], values["ignore_case"])
        except Exception as exc:  # regex.error and friends
            raise JobInputError(
                f"{where}, parameter 'pattern': not a valid regular expression: {exc}."
            ) from None
    if name == "length_filter":
        if values["min_length"] > values["max_length"]:
            raise JobInputError(
                f"{where}: min_length ({values['min_length']}) is above max_length "
                f"({values['max_length']})."
            )
        if values["tokenizer_dir"] and values["unit"] != "tokens":
            raise JobInputError(
                f"{where}, parameter 'tokenizer_dir': only used with unit 'tokens'."
            )
    if name == "language_filter":
        bad = [code for code in values["languages"] if not re.fullmatch(r"[a-z]{2,3}", code)]
        if bad or not values["languages"]:
            raise JobInputError(
                f"{where}, parameter 'languages': give ISO 639-1 codes such as en, de, fr"
                + (f" (not {', '.join(map(repr, bad))})." if bad else ".")
            )
    if name == "pii_redact":
        unknown = sorted(set(values["kinds"]) - set(pii.KINDS))
        if unknown or not values["kinds"]:
            problem = f"unknown PII kind(s) {', '.join(unknown)}" if unknown else "none chosen"
            raise JobInputError(
                f"{where}, parameter 'kinds': {problem}; kinds: {', '.join(pii.KINDS)}."
            )
    if name == "bad_words" and not values["words"]:
        raise JobInputError(f"{where}, parameter 'words': give at least one word.")


def step_catalog() -> dict:
    """Every step with its parameters, and the default recipe (for forms and the API)."""
    return {"steps": [s.as_dict() for s in STEPS.values()], "default_recipe": DEFAULT_RECIPE}


def step_kind(step: dict) -> str:
    """``map``, ``filter`` or ``dedupe`` for a normalized step (bad_words depends on action)."""
    if step["step"] == "bad_words":
        return "map" if step["params"]["action"] == "mask" else "filter"
    return STEPS[step["step"]].kind


# --- text functions -------------------------------------------------------------------------

# Whole boilerplate lines (short, nothing else on them) and cookie notices (a line about
# cookies that asks for consent or explains their use).
_BOILERPLATE = re.compile(
    r"^\s*(?:(?:accept|allow|reject)(?: all)?(?: cookies?)?"
    r"|cookie (?:policy|settings|preferences)|share (?:this|on)\b.*|follow us\b.*"
    r"|(?:subscribe to|sign up for) our newsletter|(?:©|\(c\)|copyright\s+(?:©\s*)?\d{4}).*"
    r"|all rights reserved|skip to (?:main )?content|privacy policy|terms (?:of|&) (?:use|service)"
    r"|back to top|advertisement|read more|continue reading|related (?:articles|posts)"
    r"|you may also like|loading\.*|(?:home|menu|login|log in|sign in|search)"
    r"(?:\s*[|·>»/]\s*[\w ]{1,30})*)[\s.!:|]*$",
    re.IGNORECASE,
)
_COOKIE_NOTICE = re.compile(
    r"\b(?:we|this (?:web)?site|our (?:web)?site)\s+uses?\s+cookies\b"
    r"|\b(?:use|usage) of cookies\b|\bcookie (?:policy|settings|preferences|consent|notice)\b"
    r"|\baccept (?:all )?cookies",
    re.IGNORECASE,
)
# Real markup, not a "<" in prose or code ("if a<b"): a tag, a comment, a doctype, or an entity.
_TAG_HINT = re.compile(
    r"<(?:[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?|/[A-Za-z][A-Za-z0-9-]*\s*|!--|!doctype)>"
    r"|<!--|&(?:[A-Za-z]{2,8}|#\d{1,7}|#[xX][0-9A-Fa-f]{1,6});",
    re.IGNORECASE,
)
_MARKUP = re.compile(r"<[A-Za-z/!]")
_BLOCK_TAG = re.compile(
    r"</?(?:br|p|div|li|ul|ol|h[1-6]|tr|td|th|table|section|article|blockquote|pre|hr|dd|dt"
    r"|header|footer|main|aside|figure|figcaption)\b[^>]*>",
    re.IGNORECASE,
)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\u2060\ufeff]")
# Only where collapsing changes something (a single space is left alone: 3x faster).
_WS = re.compile(r"[ \t\u00a0]{2,}|[\t\u00a0]")
_BLANKS = re.compile(r"\n\s*\n+")
_DEDUPE_STRIP = re.compile(r"[\W_]+", re.UNICODE)
_ASCII_NON_ALNUM = bytes(i for i in range(128) if not chr(i).isalnum())


def _is_boilerplate(line: str) -> bool:
    stripped = line.strip()
    if not stripped:
        return False
    if len(stripped) <= 120 and _BOILERPLATE.match(stripped):
        return True
    return len(stripped) <= 400 and _COOKIE_NOTICE.search(stripped) is not None


def strip_html(text: str, *, remove_boilerplate: bool = True) -> str:
    """Visible text of an HTML fragment or page, one line per block element; text without
    markup only has its boilerplate lines removed."""
    if _TAG_HINT.search(text):
        if _MARKUP.search(text):
            from selectolax.lexbor import LexborHTMLParser

            # Block elements become line breaks; inline tags (<b>, <a>) join their text.
            tree = LexborHTMLParser(_BLOCK_TAG.sub(lambda m: "\n" + m.group(0) + "\n", text))
            for node in tree.css(
                "script, style, noscript, nav, footer, header, form, iframe, svg, template, "
                "button, select"
            ):
                node.decompose()
            body = tree.body or tree.root
            text = body.text(separator="") if body is not None else ""
        else:  # entities only
            text = html.unescape(text)
        text = "\n".join(line.strip() for line in text.split("\n") if line.strip())
    if remove_boilerplate and text:
        lines = text.split("\n")
        kept = [line for line in lines if not _is_boilerplate(line)]
        if len(kept) != len(lines):
            text = "\n".join(kept)
    return text.strip()


def normalize_unicode(text: str, *, form: str = "NFKC", collapse_whitespace: bool = True) -> str:
    """Normalized text: NFKC (or ``form``), without control or zero-width characters, with
    line breaks as \\n, and (``collapse_whitespace``) single spaces, no spaces at line ends,
    at most one blank line in a row."""
    if not text.isascii():
        text = unicodedata.normalize(form, text)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    if collapse_whitespace:
        text = _WS.sub(" ", text)
        if "\n" in text:
            text = _BLANKS.sub("\n\n", text)
            text = "\n".join(line.strip() for line in text.split("\n"))
    return text.strip()


def dedupe_key(text: str) -> str:
    """The text as exact dedupe compares it: casefolded, without punctuation or whitespace."""
    folded = text.casefold()
    if folded.isascii():  # a byte translation, 5x faster than the regex, same result
        return folded.encode().translate(None, _ASCII_NON_ALNUM).decode()
    return _DEDUPE_STRIP.sub("", folded)


def _user_regex(pattern: str, ignore_case: bool):
    """A user's pattern, compiled with the ``regex`` module (re-compatible syntax), which can
    time out: a catastrophically backtracking pattern fails its step instead of hanging."""
    import regex

    return regex.compile(pattern, regex.V0 | (regex.IGNORECASE if ignore_case else 0))


def _timed(method: Callable, *args: str):
    """A user's pattern applied with the per-text time limit: one text that makes it
    backtrack for ever fails the step with a sentence, instead of hanging the worker."""
    try:
        return method(*args, timeout=REGEX_TIMEOUT_S)
    except TimeoutError:
        raise JobInputError(
            f"the regular expression took more than {REGEX_TIMEOUT_S:g} s on one text "
            "(nested repetition such as (a+)+ backtracks without end on some texts): "
            "simplify the pattern."
        ) from None


def _words_matcher(words: list[str]) -> tuple[frozenset[str], re.Pattern | None, re.Pattern]:
    """(single words casefolded, a pattern for phrases and odd words, a pattern for all).

    Single words are looked up in a set (fast for long lists); phrases and words with
    punctuation go through a regex with word boundaries."""
    entries = sorted({w.strip() for w in words if w.strip()}, key=len, reverse=True)
    single = frozenset(w.casefold() for w in entries if re.fullmatch(r"\w+", w))
    others = [w for w in entries if not re.fullmatch(r"\w+", w)]

    def compile_(items: list[str]) -> re.Pattern:
        escaped = "|".join(re.escape(w) for w in items)
        return re.compile(r"(?<!\w)(?:" + escaped + r")(?!\w)", re.IGNORECASE)

    return single, (compile_(others) if others else None), compile_(entries)


_WORD = re.compile(r"\w+")


def _has_bad_word(text: str, single: frozenset[str], phrases: re.Pattern | None) -> bool:
    if single and not single.isdisjoint(_WORD.findall(text.casefold())):
        return True
    return phrases is not None and phrases.search(text) is not None


def _load_token_counter(tokenizer_dir: str) -> Callable[[str], int]:
    directory = Path(tokenizer_dir)
    if (directory / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)
    if directory.is_dir():
        from transformers import AutoTokenizer

        auto = AutoTokenizer.from_pretrained(str(directory))
        return lambda text: len(auto(text, add_special_tokens=False)["input_ids"])
    raise JobInputError(f"The tokenizer directory {tokenizer_dir!r} does not exist.")


def make_map(name: str, params: dict) -> Callable[[str], str]:
    """The text function of a ``map`` step with its (validated) parameters bound."""
    if name == "strip_html":
        return lambda t: strip_html(t, **params)
    if name == "normalize_unicode":
        return lambda t: normalize_unicode(t, **params)
    if name == "lowercase":
        return str.lower
    if name == "pii_redact":
        kinds = tuple(params["kinds"])
        return lambda t: pii.redact(t, kinds)
    if name == "regex_replace":
        pattern = _user_regex(params["pattern"], params["ignore_case"])
        replacement = params["replacement"]
        return lambda t: _timed(pattern.sub, replacement, t)
    if name == "bad_words":  # action == "mask"
        single, phrases, everything = _words_matcher(params["words"])
        mask = params["mask"]

        def masked(text: str) -> str:
            if not _has_bad_word(text, single, phrases):
                return text
            return everything.sub(lambda _m: mask, text)

        return masked
    raise KeyError(name)


def make_filter(name: str, params: dict) -> Callable[[list[str]], bool]:
    """The keep-predicate of a ``filter`` step over a row's texts (first = primary)."""
    if name == "drop_empty":
        return lambda texts: all(t.strip() for t in texts)
    if name == "length_filter":
        low, high, unit = params["min_length"], params["max_length"], params["unit"]
        if unit == "chars":
            return lambda texts: low <= len(texts[0]) <= high
        if params["tokenizer_dir"]:
            count = _load_token_counter(params["tokenizer_dir"])
            return lambda texts: low <= count(texts[0]) <= high
        return lambda texts: low <= len(texts[0].split()) <= high
    if name == "language_filter":
        identifier = language_identifier()
        known = set(identifier.nb_classes)
        unknown = sorted(set(params["languages"]) - known)
        if unknown:
            raise JobInputError(
                f"Unknown language code(s) {', '.join(unknown)}; the detector knows "
                f"{', '.join(sorted(known))}."
            )
        keep, confidence = set(params["languages"]), params["min_confidence"]

        def detect(texts: list[str]) -> bool:
            language, probability = identifier.classify(texts[0][:2000])
            return language in keep and probability >= confidence

        return detect
    if name == "regex_filter":
        pattern = _user_regex(params["pattern"], params["ignore_case"])

        def matches(texts: list[str]) -> bool:
            return any(_timed(pattern.search, t) for t in texts)

        if params["action"] == "drop":
            return lambda texts: not matches(texts)
        return matches
    if name == "bad_words":  # action == "drop"
        single, phrases, _everything = _words_matcher(params["words"])
        return lambda texts: not any(_has_bad_word(t, single, phrases) for t in texts)
    raise KeyError(name)


def language_identifier():
    """py3langid's bundled model with normalized probabilities (offline)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
