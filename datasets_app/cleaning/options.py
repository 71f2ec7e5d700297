"""The one validator of every data job's inputs: upload (ingest) options and the parameters of
profile, clean, split and tokenizer jobs.

Each is a dataclass that checks itself in ``__post_init__``; the service builds it before it
queues a job (a bad value is a 400 naming the field), and the worker builds it again from the
job's params before it runs, so the two can never disagree. Plain Python, no Django.
"""

from __future__ import annotations

import codecs
from dataclasses import asdict, dataclass, fields
from typing import Any

from datasets_app.columns import ROLES
from llmhub.reporting import JobInputError

FORMATS = ("csv", "tsv", "json", "jsonl", "txt", "parquet")
ENCODING_ERRORS = ("strict", "replace")
TXT_MODES = ("lines", "chunks")
TOKENIZER_ALGORITHMS = ("bpe", "wordpiece", "unigram", "char")
SPLIT_STRATEGIES = ("random", "position")
TEXT_ROLES = ("text", "target", "prompt", "chosen", "rejected", "context", "question")
UTF16 = ("utf-16", "utf-16-le", "utf-16-be")  # converted to UTF-8 before parsing
MAX_SEED = 2**32 - 1  # numpy's seeds
MAX_SPLIT_NAME = 40  # DatasetSplit.name
MAX_NAME = 120  # Tokenizer.name


class OptionError(JobInputError):
    """A bad option: ``field`` names it (the service answers 400 with ``{field: message}``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class _Options:
    """from_params / to_params for the dataclasses below."""

    @classmethod
    def from_params(cls, params: dict[str, Any]):
        """Build (and so validate) from a job's params; keys of other kinds are ignored."""
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in params.items() if k in names})

    def to_params(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_between(field: str, value: Any, low: int, high: int) -> int:
    if not _is_int(value) or not low <= value <= high:
        raise OptionError(field, f"{field} must be a whole number from {low:,} to {high:,}.")
    return value


def _choice(field: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise OptionError(field, f"{field} must be one of {', '.join(choices)}.")
    return value


def _column_list(field: str, value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(c, str) and c for c in value):
        raise OptionError(field, "Give a list of column names.")
    return list(dict.fromkeys(value))


def _column_name(field: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise OptionError(field, "Give a column name.")
    return value


def check_column_roles(column_roles: Any) -> dict[str, str]:
    """A role -> column mapping of known roles (which columns exist is checked on the table)."""
    if column_roles is None:
        return {}
    if not isinstance(column_roles, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in column_roles.items()
    ):
        raise OptionError("column_roles", "Give an object mapping role -> column name.")
    unknown = sorted(set(column_roles) - set(ROLES))
    if unknown:
        raise OptionError(
            "column_roles", f"Unknown role(s): {', '.join(unknown)}. Roles: {', '.join(ROLES)}."
        )
    return dict(column_roles)


def check_columns(field: str, columns: list[str] | None, available: list[str]) -> None:
    """OptionError unless every one of ``columns`` is among ``available``."""
    missing = [c for c in columns or [] if c not in available]
    if missing:
        raise OptionError(
            field,
            f"No column named {', '.join(map(repr, missing))}. Columns: {', '.join(available)}.",
        )


def default_text_columns(schema: list[dict], column_roles: dict[str, str]) -> list[str]:
    """The columns holding text that cleaning and tokenizers work on, from the roles (else the
    first string column)."""
    string_columns = {c["name"] for c in schema if c.get("type") == "string"}
    columns = [column_roles[r] for r in TEXT_ROLES if r in column_roles]
    columns = [c for c in dict.fromkeys(columns) if c in string_columns]
    return columns or sorted(string_columns)[:1]


# --- ingest -------------------------------------------------------------------------------------


@dataclass
class IngestOptions(_Options):
    """How to read an upload. ``file_format`` None: from the file name. ``encoding``: any
    codec that encodes ASCII as itself (utf-8, latin-1, cp1252...), or UTF-16 (converted).
    ``encoding_errors``: "strict" (an invalid byte is an error saying where) or "replace".
    ``txt_mode``: "lines" (a row per line) or "chunks" of about ``chunk_chars`` characters.
    ``column_roles``: role -> column, inferred when empty. ``layout``: None, or a table layout
    every row must have (``preference``, ``unpaired``: see ``datasets_app.cleaning.layouts``)."""

    file_format: str | None = None
    encoding: str = "utf-8"
    encoding_errors: str = "strict"
    txt_mode: str = "lines"
    chunk_chars: int = 2000
    column_roles: dict[str, str] | None = None
    layout: str | None = None

    def __post_init__(self) -> None:
        if self.file_format in ("", None):
            self.file_format = None
        else:
            _choice("file_format", self.file_format, FORMATS)
        if not isinstance(self.encoding, str) or not self.encoding.strip():
            raise OptionError("encoding", "Give an encoding such as utf-8 or latin-1.")
        try:
            name = codecs.lookup(self.encoding.strip()).name
        except LookupError:
            raise OptionError(
                "encoding", f"Unknown encoding {self.encoding!r}: use utf-8, latin-1, cp1252..."
            ) from None
        if name not in UTF16 and not _ascii_compatible(name):
            raise OptionError(
                "encoding",
                f"The encoding {self.encoding!r} is not supported (it does not encode ASCII as "
                "itself): convert the file to UTF-8 first.",
            )
        self.encoding = self.encoding.strip()
        _choice("encoding_errors", self.encoding_errors, ENCODING_ERRORS)
        _choice("txt_mode", self.txt_mode, TXT_MODES)
        _int_between("chunk_chars", self.chunk_chars, 100, 1_000_000)
        self.column_roles = check_column_roles(self.column_roles) or None
        if self.layout in ("", None):
            self.layout = None
        else:
            from datasets_app.cleaning.layouts import LAYOUTS

            _choice("layout", self.layout, tuple(LAYOUTS))
            if self.file_format in ("txt", "parquet"):
                raise OptionError(
                    "file_format", f"{self.layout.capitalize()} data is read from JSONL or CSV."
                )

    @property
    def codec(self) -> str:
        """The codec's canonical name (``utf-8``, ``utf-16-le``, ``cp1252``...)."""
        return codecs.lookup(self.encoding).name


def _ascii_compatible(encoding: str) -> bool:
    try:
        return "a,\n".encode(encoding) == b"a,\n"
    except (LookupError, UnicodeError):
        return False


# --- data jobs ----------------------------------------------------------------------------------


@dataclass
class ProfileParams(_Options):
    """``tokenizer``: the id of a tokenizer to count tokens with, or None."""

    tokenizer: int | None = None

    def __post_init__(self) -> None:
        if self.tokenizer is not None and not _is_int(self.tokenizer):
            raise OptionError("tokenizer", "Give a tokenizer id.")


@dataclass
class CleanParams(_Options):
    """The recipe's ``steps`` (normalized by ``validate_recipe``), the ``text_columns`` to clean
    (None: from the version's roles) and ``num_proc`` worker processes (1-16)."""

    steps: list[dict]
    text_columns: list[str] | None = None
    num_proc: int = 1
    recipe_name: str | None = None

    def __post_init__(self) -> None:
        from datasets_app.cleaning.steps import validate_recipe

        if not isinstance(self.steps, list) or not self.steps:
            raise OptionError("steps", "Give a non-empty list of steps: [{step, params}, ...].")
        try:
            self.steps = validate_recipe(self.steps)
        except OptionError:
            raise
        except JobInputError as exc:
            raise OptionError("steps", str(exc)) from None
        self.text_columns = _column_list("text_columns", self.text_columns)
        _int_between("num_proc", self.num_proc, 1, 16)


@dataclass
class SplitParams(_Options):
    """Split by ``ratios`` (name -> share, adding up to 1; default 80/10/10), optionally
    stratified by ``stratify_column``, or by the values of ``by_column``; ``seed`` shuffles.
    ``strategy="position"``: the ratios take the rows in file order, the first split first.

    One name with ratio 1 (``{"test": 1.0}``) names the whole version as that split: a test
    file uploaded on its own becomes a ``test`` split that evaluations and goals count."""

    ratios: dict[str, float] | None = None
    seed: int = 42
    stratify_column: str | None = None
    by_column: str | None = None
    # "position": the ratios cut the rows in file order (the first 90% / the last 10%), as
    # language-model corpora are split, so validation text never sits between training rows.
    strategy: str = "random"

    def __post_init__(self) -> None:
        self.stratify_column = _column_name("stratify_column", self.stratify_column)
        self.by_column = _column_name("by_column", self.by_column)
        _choice("strategy", self.strategy, SPLIT_STRATEGIES)
        if self.strategy == "position" and (self.by_column or self.stratify_column):
            raise OptionError(
                "strategy",
                "A split by position cuts the rows in order by the ratios: without a column "
                "to split or stratify by.",
            )
        if self.ratios is None and self.by_column is None:
            self.ratios = {"train": 0.8, "validation": 0.1, "test": 0.1}
        if self.ratios is not None and self.by_column is not None:
            raise OptionError("by_column", "Split by ratios or by a column, not both.")
        if self.ratios is not None:
            ratios = self.ratios
            if (
                not isinstance(ratios, dict)
                or not ratios
                or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= 1
                    for v in ratios.values()
                )
            ):
                raise OptionError(
                    "ratios",
                    "Give split names with ratios between 0 and 1 (a single split of ratio 1 "
                    "names the whole version).",
                )
            bad = [n for n in ratios if not isinstance(n, str) or not 0 < len(n) <= MAX_SPLIT_NAME]
            if bad:
                raise OptionError(
                    "ratios", f"Split names must have 1 to {MAX_SPLIT_NAME} characters."
                )
            if abs(sum(ratios.values()) - 1) > 1e-6:
                raise OptionError(
                    "ratios",
                    f"The ratios must add up to 1; they add up to {sum(ratios.values()):g}.",
                )
        _int_between("seed", self.seed, 0, MAX_SEED)

    def check_columns(self, available: list[str]) -> None:
        for field, column in (
            ("stratify_column", self.stratify_column),
            ("by_column", self.by_column),
        ):
            check_columns(field, [column] if column else None, available)


@dataclass
class TokenizerParams(_Options):
    """Train a tokenizer ``name`` with ``algorithm`` (bpe, wordpiece, unigram) to
    ``vocab_size`` tokens seen at least ``min_frequency`` times, on ``text_columns``."""

    name: str
    algorithm: str = "bpe"
    vocab_size: int = 8000
    min_frequency: int = 2
    special_tokens: list[str] | None = None
    lowercase: bool = False
    text_columns: list[str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise OptionError("name", "Give the tokenizer a name.")
        self.name = self.name.strip()
        if len(self.name) > MAX_NAME:
            raise OptionError("name", f"The name has more than {MAX_NAME} characters.")
        _choice("algorithm", self.algorithm, TOKENIZER_ALGORITHMS)
        _int_between("min_frequency", self.min_frequency, 1, 1_000_000)
        if self.special_tokens is not None and (
            not isinstance(self.special_tokens, list)
            or len(self.special_tokens) > 100
            or not all(isinstance(t, str) and 0 < len(t) <= 50 for t in self.special_tokens)
        ):
            raise OptionError(
                "special_tokens", "Give at most 100 special tokens of 1 to 50 characters."
            )
        if not isinstance(self.lowercase, bool):
            raise OptionError("lowercase", "Give true or false.")
        self.text_columns = _column_list("text_columns", self.text_columns)
        # The algorithm's own smallest vocabulary (byte-level BPE: 256 bytes + special tokens).
        from datasets_app.cleaning import tokenizer_training as training

        try:
            _, specials = training.special_token_roles(self.special_tokens)
        except JobInputError as exc:
            raise OptionError("special_tokens", str(exc)) from None
        smallest = training.min_vocab_size(self.algorithm, len(specials))
        if (
            isinstance(self.vocab_size, bool)
            or not isinstance(self.vocab_size, int)
            or not smallest <= self.vocab_size <= training.MAX_VOCAB
        ):
            raise OptionError(
                "vocab_size", training.vocab_size_error(self.algorithm, len(specials))
            )
