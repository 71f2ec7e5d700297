"""Evaluate a local model directory on a Parquet split: metrics with 95% intervals, per example.

The Celery task on the ``gpu`` queue builds an :class:`EvalConfig` and calls
:func:`evaluate_model`; nothing here imports Django. What it does depends on the model's kind
(read from ``config.json``) and the project's task type:

============================  ====================================================================
classification                a sequence classifier predicts labels (mapped through
                              ``config.id2label``); a causal/seq2seq model generates the label
                              text. Compared with the ``label`` column as strings.
generation / summarization /  a causal LM continues the input (``prompt`` and/or ``text``),
translation                   a seq2seq model reads it; the new text is compared with ``target``.
qa                            an extractive QA head picks a span of ``context``; a causal/seq2seq
                              model generates from QA_PROMPT (SEQ2SEQ_QA_PROMPT). Compared with
                              ``answers.text`` (or ``target``), best over the answers.
perplexity / loss /           causal LM: on ``target`` given the input when there is a target,
bits_per_char / bits_per_byte else on the whole text with a sliding window (below); seq2seq: on
                              ``target`` given the input; masked LM: pseudo-perplexity of ``text``
                              (each token masked in turn); sequence classifier: ``loss`` only, the
                              cross-entropy of the label. Bits per character/byte: causal LMs only.
============================  ====================================================================

A causal LM's perplexity of a text column scores every token of the split once
(:mod:`evaluation.runtime.sliding`: windows of the model's context, ``stride`` apart, none cut
to its first N tokens). With ``join_rows`` (default: when the split's only column is the text,
what a .txt upload becomes: the training runtime's rule for one stream) the rows are one text
joined by newlines (``ROW_SEPARATOR``, the data stage's rule for
text-file rows), tokenized once without special tokens; its first token is context only. Else
each row is a document: the tokenizer's BOS (when it has one) is its unscored context, so
every text token is scored. ``score_end_token`` appends the EOS token to each document (to the
joined text once) and scores it. The scored tokens, characters and bytes are reported.

Inputs are built with ``shared_runtime.inputs.build_input``, as the training runtime builds them.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evaluation.metrics.catalog import BITS_METRICS, METRICS, TASK_TYPES
from evaluation.runtime.config import SETTINGS, validate_metrics, validate_settings
from llmhub.reporting import JobCancelled, JobInputError, Reporter
from shared_runtime.inputs import (  # noqa: F401 - re-exported: the runtime's input formats
    PROMPT_SEPARATOR,
    QA_PROMPT,
    SEQ2SEQ_QA_PROMPT,
    build_input,
)
from shared_runtime.inputs import cell_text as _text

logger = logging.getLogger(__name__)

# How much of each input a per-example row keeps: enough to read, small enough to store.
INPUT_PREVIEW_CHARS = 2000
# The longest answer span (in tokens) an extractive QA head may pick.
MAX_ANSWER_TOKENS = 30

_LM_METRICS = ("perplexity", "loss", *BITS_METRICS)
# How text-file rows join back into the text they came from (lines and chunks of a .txt
# upload, datasets_app/cleaning/readers/text_reader.py), as the training stream joins them.
ROW_SEPARATOR = "\n"


@dataclass
class EvalConfig:
    """Everything one evaluation run needs; ``__post_init__`` refuses bad values with
    JobInputError messages a user can act on. Paths must exist on the worker."""

    model_dir: Path = field(
        metadata={
            "help": "A local model directory written by save_pretrained (config.json, "
            "safetensors weights, tokenizer files)."
        }
    )
    task_type: str = field(metadata={"help": f"One of {', '.join(TASK_TYPES)}."})
    data_path: Path = field(metadata={"help": "The split to evaluate on, as a Parquet file."})
    column_roles: dict[str, str] = field(
        default_factory=dict,
        metadata={
            "help": "Role -> column name, e.g. {'text': 'document', 'target': 'summary'} "
            "(roles from datasets_app.columns.ROLES)."
        },
    )
    metrics: list[str] = field(
        default_factory=list, metadata={"help": "Catalog metric names that fit the task type."}
    )
    max_new_tokens: int = field(default=64, metadata={"help": "Most tokens generated per example."})
    temperature: float = field(
        default=0.0, metadata={"help": "Sampling temperature; 0 means greedy decoding."}
    )
    top_p: float = field(
        default=1.0, metadata={"help": "Nucleus sampling mass in (0, 1]; used only when sampling."}
    )
    num_beams: int = field(default=1, metadata={"help": "Beam width; 1 means no beam search."})
    do_sample: bool | None = field(
        default=None,
        metadata={
            "help": "Sample instead of greedy/beam search; None: sample when temperature > 0."
        },
    )
    batch_size: int = field(
        default=8, metadata={"help": "Examples per forward pass or generate call."}
    )
    max_examples: int | None = field(
        default=None, metadata={"help": "Evaluate only the first N rows of the split; None: all."}
    )
    seed: int = field(
        default=0, metadata={"help": "Seed for sampling and for the bootstrap intervals."}
    )
    device: str = field(
        default="auto",
        metadata={"help": "'auto' (a GPU when there is one), 'cpu', 'cuda' or 'cuda:N'."},
    )
    n_bootstrap: int = field(
        default=1000, metadata={"help": "Bootstrap resamples for the 95% intervals; 0 skips them."}
    )
    stride: int | None = field(
        default=None,
        metadata={
            "help": "Tokens a perplexity window moves on long text; None: the model's context."
        },
    )
    join_rows: bool | None = field(
        default=None,
        metadata={
            "help": "Score a text column's rows as one newline-joined text; None: when the "
            "split's only column is the text (what a .txt upload becomes)."
        },
    )
    score_end_token: bool = field(
        default=False,
        metadata={"help": "Append the EOS token to each document (the joined text) and score it."},
    )

    def __post_init__(self) -> None:
        self.model_dir = Path(self.model_dir)
        self.data_path = Path(self.data_path)
        if self.task_type not in TASK_TYPES:
            raise JobInputError(
                f"Unknown task type {self.task_type!r}. Task types: {', '.join(TASK_TYPES)}."
            )
        self.metrics = validate_metrics(self.task_type, self.metrics)
        if not isinstance(self.column_roles, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.column_roles.items()
        ):
            raise JobInputError("column_roles must map role names to column names.")
        # The one settings validator, which the service ran on the same values before launch.
        validate_settings({s.name: getattr(self, s.name) for s in SETTINGS})
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu", "cuda", "mps")
            or (self.device.startswith("cuda:") and self.device[5:].isdigit())
        ):
            raise JobInputError(
                f"Unknown device {self.device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'."
            )

    @property
    def generation(self) -> Any:
        from evaluation.runtime.models import GenerationSettings

        return GenerationSettings(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            num_beams=self.num_beams,
            do_sample=self.do_sample,
        )


@dataclass
class EvalResult:
    """What :func:`evaluate_model` returns (JSON-able through :meth:`as_dict`).

    metrics: ``{name: {"value", "ci_low", "ci_high", "n"}}`` in the order asked for.
    examples: one row per evaluated example: ``{"index": row number in the file, "input": str
        (first INPUT_PREVIEW_CHARS chars), "reference": str | None, "prediction": str | None,
        "scores": {score name: float | None}}``, plus ``"references": [str]`` for QA and
        ``"stats": {"nll_sum", "n_tokens", "gen_len"}`` when measured (what
        ``bias.slice_metrics`` needs to recompute corpus-level metrics on a slice).
    model_kind: one of ``models.MODEL_KINDS``. device: where it ran ('cpu', 'cuda:0').
    n_examples: rows evaluated. warnings: things the user should know (truncated inputs, rows
        skipped for lack of a reference, labels the model does not know, and what a
        perplexity scored). scoring: for a causal LM's perplexity of a text column, the counts
        behind it (``tokens``, ``scored_tokens``, ``characters``, ``scored_characters``,
        ``bytes``, ``scored_bytes``, ``windows``, ``window``, ``stride``, ``joined``,
        ``end_token``); empty otherwise.
    """

    metrics: dict[str, dict[str, Any]]
    examples: list[dict[str, Any]]
    model_kind: str
    device: str
    n_examples: int
    warnings: list[str] = field(default_factory=list)
    scoring: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- inputs -----------------------------------------------------------------------------------


def _answers(value: Any) -> list[str]:
    """SQuAD-style answers as a list of strings: {'text': [...]} (dict or JSON), a list, a str."""
    if value is None:
        return []
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith(("{", "[")):
            try:
                return _answers(json.loads(stripped))
            except json.JSONDecodeError:
                pass
        return [value] if stripped else []
    if isinstance(value, dict):
        return _answers(value.get("text"))
    if isinstance(value, list | tuple) or hasattr(value, "tolist"):
        items = value.tolist() if hasattr(value, "tolist") else value
        return [str(x) for x in items if x is not None and str(x).strip()]
    return [str(value)]


def _load_rows(config: EvalConfig) -> tuple[list[dict[str, Any]], list[str]]:
    import pyarrow.parquet as pq

    if not config.data_path.is_file():
        raise JobInputError(f"No data file at {config.data_path}.")
    try:
        table = pq.read_table(config.data_path)
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise JobInputError(f"{config.data_path} cannot be read as Parquet: {exc}") from exc
    columns = list(table.column_names)
    missing = {r: c for r, c in config.column_roles.items() if c not in columns}
    if missing:
        listed = ", ".join(f"'{c}' (role '{r}')" for r, c in missing.items())
        raise JobInputError(
            f"The split has no column {listed}; its columns are {', '.join(columns)}."
        )
    if config.max_examples is not None:
        table = table.slice(0, config.max_examples)
    if table.num_rows == 0:
        raise JobInputError("The split has no rows to evaluate.")
    return table.to_pylist(), columns


# --- the run ----------------------------------------------------------------------------------


@dataclass
class _Run:
    config: EvalConfig
    reporter: Reporter
    phases: int
    phase: int = 0
    warnings: list[str] = field(default_factory=list)

    def hook(self, label: str) -> Callable[[int, int], None]:
        """A per-batch callback for the current phase: checks for cancellation, reports."""
        phase = self.phase

        def on_batch(done: int, total: int) -> None:
            if self.reporter.should_stop():
                raise JobCancelled("Evaluation cancelled.")
            fraction = (phase + done / max(total, 1)) / self.phases * 0.95
            self.reporter.progress(fraction, f"{label}: batch {done + 1} of {total}")

        self.phase += 1
        return on_batch


def evaluate_model(config: EvalConfig, *, reporter: Reporter) -> EvalResult:
    """Evaluate ``config.model_dir`` on ``config.data_path`` with ``config.metrics``.

    Raises JobInputError for: a directory that is not a model or has no tokenizer, a metric that
    does not fit the task or the model, missing columns, a split without references for metrics
    that need them; JobCancelled when ``reporter.should_stop()`` turns true between batches.
    """
    import torch

    from evaluation.metrics.compute import compute_metrics
    from evaluation.runtime import models as m

    validate_metrics(config.task_type, config.metrics)
    reporter.progress(0.0, "Loading the model")
    loaded = m.load_model(config.model_dir, device=config.device)
    kind, task, roles = loaded.kind, config.task_type, dict(config.column_roles)
    _check_model_fits(kind, task, config.metrics)
    rows, columns = _load_rows(config)
    random.seed(config.seed)
    torch.manual_seed(config.seed)

    ref_metrics = [n for n in config.metrics if METRICS[n].needs_references]
    lm_metrics = [n for n in config.metrics if n in _LM_METRICS]
    output_metrics = [n for n in config.metrics if n not in _LM_METRICS]
    classifier = kind == m.SEQUENCE_CLASSIFICATION
    warnings: list[str] = []

    # Rows without a reference cannot be compared; drop them when any metric needs one (a
    # classifier's loss needs the true label too).
    references = _references(rows, roles, task)
    indices = list(range(len(rows)))
    if ref_metrics or (lm_metrics and classifier):
        _require_references(
            references, roles, _reference_role(task), columns, ref_metrics or lm_metrics
        )
        keep = [i for i, r in enumerate(references) if r]
        if len(keep) < len(rows):
            warnings.append(f"{len(rows) - len(keep)} rows without a reference were skipped.")
            rows = [rows[i] for i in keep]
            references = [references[i] for i in keep]
            indices = keep
    _require_inputs(rows, roles, task, lm_metrics)

    phases = 1 if classifier else int(bool(output_metrics)) + int(bool(lm_metrics))
    run = _Run(config, reporter, phases=phases)
    predictions: list[str] | None = None
    extra: dict[str, list[float]] = {}

    if classifier:
        predictions, loss_stats, references = _classify(
            loaded, rows, roles, references, config, run
        )
        if lm_metrics:
            extra.update(loss_stats)
        if not output_metrics:
            predictions = None
    elif output_metrics:
        if kind == m.EXTRACTIVE_QA:
            predictions = _extract_answers(loaded, rows, roles, config, run)
        else:
            prompts = [build_input(row, roles, task, model_kind=kind) for row in rows]
            texts, lengths, truncated = m.generate(
                loaded,
                prompts,
                config.generation,
                batch_size=config.batch_size,
                on_batch=run.hook("Generating"),
            )
            if truncated:
                warnings.append(
                    f"{truncated} inputs were longer than the model reads and were truncated."
                )
            predictions = [_clean_generation(t, task) for t in texts]
            if task == "classification":
                predictions = _snap_labels(predictions, references)
            extra["gen_len"] = [float(x) for x in lengths]
    scoring: dict[str, Any] = {}
    if lm_metrics and not classifier:
        extra.update(
            _lm_scores(loaded, rows, roles, references, config, run, warnings, scoring, columns)
        )

    if reporter.should_stop():
        raise JobCancelled("Evaluation cancelled.")
    reporter.progress(0.96, "Computing metrics")
    metric_refs: list[Any] | None = None
    if ref_metrics:
        metric_refs = [r[0] for r in references] if task == "classification" else references
    results = compute_metrics(
        config.metrics,
        predictions=predictions,
        references=metric_refs,
        per_example_extra=extra or None,
        n_bootstrap=config.n_bootstrap,
        seed=config.seed,
    )
    examples = []
    for i, row_index in enumerate(indices):
        refs = references[i]
        example: dict[str, Any] = {
            "index": row_index,
            "input": build_input(rows[i], roles, task, model_kind=kind)[:INPUT_PREVIEW_CHARS],
            "reference": refs[0] if refs else None,
            "prediction": predictions[i] if predictions is not None else None,
            "scores": _json_scores(results.example_scores(i)),
        }
        if task == "qa":
            example["references"] = list(refs)
        if extra:
            example["stats"] = {k: v[i] for k, v in extra.items()}
        examples.append(example)
    if kind == m.MASKED_LM and "perplexity" in config.metrics:
        warnings.append(
            "A masked LM has no left-to-right likelihood: 'perplexity' here is pseudo-perplexity "
            "(each token masked in turn), not comparable with a causal LM's perplexity."
        )
    warnings = run.warnings + warnings
    for w in warnings:
        logger.warning(w)
    reporter.progress(1.0, "Done")
    device = loaded.device
    if device == "cuda":
        device = f"cuda:{torch.cuda.current_device()}"
    return EvalResult(
        metrics={k: dict(v) for k, v in results.metrics.items()},
        examples=examples,
        model_kind=kind,
        device=device,
        n_examples=len(rows),
        warnings=warnings,
        scoring=scoring,
    )


def _json_scores(scores: dict[str, float | None]) -> dict[str, float | None]:
    return {k: (None if v is None or not math.isfinite(v) else float(v)) for k, v in scores.items()}


def _check_model_fits(kind: str, task: str, metrics: list[str]) -> None:
    from evaluation.runtime import models as m

    outputs = [n for n in metrics if n not in _LM_METRICS]
    label = kind.replace("_", " ")
    if kind == m.MASKED_LM and outputs:
        raise JobInputError(
            f"A masked LM cannot generate, so {', '.join(outputs)} cannot be computed; evaluate it "
            "with perplexity or loss (pseudo-likelihood), or fine-tune it for the task first."
        )
    if kind == m.SEQUENCE_CLASSIFICATION and task != "classification":
        raise JobInputError(f"A sequence classifier cannot be evaluated on a {task} task.")
    if kind == m.SEQUENCE_CLASSIFICATION and "perplexity" in metrics:
        raise JobInputError(
            "Perplexity needs a language model; a sequence classifier has only 'loss' (the "
            "cross-entropy of the true label)."
        )
    if kind == m.EXTRACTIVE_QA and task != "qa":
        raise JobInputError(f"An extractive QA model cannot be evaluated on a {task} task.")
    if kind == m.EXTRACTIVE_QA and any(n in _LM_METRICS for n in metrics):
        raise JobInputError(
            f"A {label} model has no perplexity or loss to report; choose exact_match or token_f1."
        )
    bits = [n for n in metrics if n in BITS_METRICS]
    if bits and kind != m.CAUSAL_LM:
        raise JobInputError(
            f"{', '.join(bits)} are measured on a causal LM's likelihood of text; a {label} "
            "model has none comparable (choose perplexity or loss)."
        )


def _reference_role(task: str) -> str:
    return {"classification": "label", "qa": "answers"}.get(task, "target")


def _references(rows: list[dict[str, Any]], roles: dict[str, str], task: str) -> list[list[str]]:
    if task == "qa" and "answers" in roles:
        return [_answers(row.get(roles["answers"])) for row in rows]
    role = "target" if task == "qa" else _reference_role(task)
    if role not in roles:
        return [[] for _ in rows]
    out = []
    for row in rows:
        value = _text(row, roles, role).strip()
        out.append([value] if value else [])
    return out


def _require_references(
    references: list[list[str]],
    roles: dict[str, str],
    role: str,
    columns: list[str],
    metrics: list[str],
) -> None:
    what = f"{', '.join(metrics)} compare the model's output with a reference"
    if role == "answers" and role not in roles and "target" in roles:
        role = "target"
    if role not in roles:
        raise JobInputError(
            f"This split has no references: {what}, but no column is mapped to the role "
            f"'{role}' (columns: {', '.join(columns)}). Map the reference column on the "
            "dataset version page, or choose perplexity."
        )
    if not any(references):
        raise JobInputError(
            f"This split has no references: {what}, but the column '{roles[role]}' (role "
            f"'{role}') is empty in every row."
        )


def _require_inputs(
    rows: list[dict[str, Any]], roles: dict[str, str], task: str, lm_metrics: list[str]
) -> None:
    needed = ("context", "question") if task == "qa" else None
    if needed:
        missing = [r for r in needed if r not in roles]
        if missing:
            raise JobInputError(
                f"A QA evaluation needs the roles 'context' and 'question'; "
                f"{', '.join(repr(r) for r in missing)} is not mapped."
            )
        return
    if not any(r in roles for r in ("text", "prompt")) and not (lm_metrics and "target" in roles):
        raise JobInputError(
            "Nothing to feed the model: map a column to the role 'text' (or 'prompt')."
        )
    if any(r in roles for r in ("text", "prompt")) and not any(
        build_input(row, roles, task) for row in rows
    ):
        raise JobInputError("The input column is empty in every row.")


def _clean_generation(text: str, task: str) -> str:
    """Short-answer tasks take the first line of the output; the others keep all of it."""
    text = text.strip()
    if task in ("qa", "classification"):
        return text.split("\n", 1)[0].strip()
    return text


def _snap_labels(predictions: list[str], references: list[list[str]]) -> list[str]:
    """Map generated labels to the known label spelling when they differ only in case."""
    known = {r[0].lower(): r[0] for r in references if r}
    return [known.get(p.lower(), p) for p in predictions]


# --- classification ---------------------------------------------------------------------------


def _classify(
    loaded: Any,
    rows: list[dict[str, Any]],
    roles: dict[str, str],
    references: list[list[str]],
    config: EvalConfig,
    run: _Run,
) -> tuple[list[str], dict[str, list[float]], list[list[str]]]:
    """Predicted label names, per-example label cross-entropy (for 'loss'), and the references
    (integer labels mapped to the model's label names where the data holds ids)."""
    import torch

    id2label = {int(k): str(v) for k, v in (loaded.config.id2label or {}).items()}
    label2id = {v: k for k, v in id2label.items()}
    refs = [r[0] if r else "" for r in references]
    # Integer label columns with a model whose labels have names: compare by name.
    if (
        refs
        and not any(r in label2id for r in refs)
        and all(r.lstrip("-").isdigit() and int(r) in id2label for r in refs if r)
    ):
        refs = [id2label[int(r)] if r else r for r in refs]
        references = [[r] if r else [] for r in refs]
    unknown = sorted({r for r in refs if r and r not in label2id})
    if refs and unknown and len(unknown) == len({r for r in refs if r}):
        raise JobInputError(
            f"The model's labels ({', '.join(sorted(label2id)[:20])}) share nothing with the "
            f"label column's values ({', '.join(unknown[:20])}). Evaluate the model on the "
            "dataset it was trained for, or check the label column."
        )
    if unknown:
        run.warnings.append(
            f"{len(unknown)} label value(s) in the data are unknown to the model "
            f"({', '.join(unknown[:10])}); those rows always count as wrong."
        )
    texts = [build_input(row, roles, "classification") for row in rows]
    tok = loaded.tokenizer
    predictions: list[str] = []
    nll, counts = [], []
    batches = range(0, len(texts), config.batch_size)
    hook = run.hook("Classifying")
    with torch.no_grad():
        for b, start in enumerate(batches):
            hook(b, len(batches))
            chunk = texts[start : start + config.batch_size]
            enc = tok(
                chunk,
                truncation=True,
                max_length=loaded.max_positions,
                padding=True,
                return_tensors="pt",
            )
            enc = {
                k: v.to(loaded.device)
                for k, v in enc.items()
                if k != "token_type_ids" or "token_type_ids" in _forward_args(loaded.model)
            }
            logits = loaded.model(**enc).logits.float()
            logprobs = torch.log_softmax(logits, dim=-1).cpu()
            for r, ids in enumerate(logits.argmax(dim=-1).tolist()):
                predictions.append(id2label.get(ids, str(ids)))
                ref = refs[start + r]
                if ref in label2id:
                    nll.append(-float(logprobs[r, label2id[ref]]))
                    counts.append(1)
                else:
                    nll.append(0.0)
                    counts.append(0)
    return predictions, {"nll_sum": nll, "n_tokens": [float(c) for c in counts]}, references


def _forward_args(model: Any) -> set[str]:
    import inspect

    return set(inspect.signature(model.forward).parameters)


# --- extractive QA ----------------------------------------------------------------------------


def _extract_answers(
    loaded: Any, rows: list[dict[str, Any]], roles: dict[str, str], config: EvalConfig, run: _Run
) -> list[str]:
    """The best span of the context: highest start + end logit with start <= end, at most
    MAX_ANSWER_TOKENS long, inside the context. Contexts longer than the model reads are cut
    (no sliding window), which a warning reports."""
    import torch

    tok = loaded.tokenizer
    if not getattr(tok, "is_fast", False):
        raise JobInputError("Extractive QA needs a fast tokenizer (tokenizer.json) for offsets.")
    questions = [_text(row, roles, "question") for row in rows]
    contexts = [_text(row, roles, "context") for row in rows]
    answers: list[str] = []
    truncated = 0
    batches = range(0, len(rows), config.batch_size)
    hook = run.hook("Answering")
    with torch.no_grad():
        for b, start in enumerate(batches):
            hook(b, len(batches))
            q = questions[start : start + config.batch_size]
            c = contexts[start : start + config.batch_size]
            enc = tok(
                q,
                c,
                truncation="only_second",
                max_length=loaded.max_positions,
                padding=True,
                return_offsets_mapping=True,
                return_tensors="pt",
            )
            offsets = enc.pop("offset_mapping")
            inputs = {
                k: v.to(loaded.device) for k, v in enc.items() if k in _forward_args(loaded.model)
            }
            out = loaded.model(**inputs)
            starts, ends = out.start_logits.float().cpu(), out.end_logits.float().cpu()
            for r in range(len(q)):
                seq_ids = enc.sequence_ids(r)
                ctx = torch.tensor([s == 1 for s in seq_ids])
                if not bool(ctx.any()):
                    answers.append("")
                    continue
                last_ctx = max(i for i, s in enumerate(seq_ids) if s == 1)
                if offsets[r, last_ctx, 1] < len(c[r].rstrip()):
                    truncated += 1
                s_logit = starts[r].masked_fill(~ctx, -1e9)
                e_logit = ends[r].masked_fill(~ctx, -1e9)
                scores = s_logit[:, None] + e_logit[None, :]
                n = scores.shape[0]
                i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
                allowed = (j >= i) & (j - i < MAX_ANSWER_TOKENS)
                scores = scores.masked_fill(~allowed, -1e18)
                best = int(scores.argmax())
                si, ei = divmod(best, n)
                answers.append(c[r][int(offsets[r, si, 0]) : int(offsets[r, ei, 1])].strip())
    if truncated:
        run.warnings.append(
            f"{truncated} contexts were longer than the model reads; answers were "
            "looked for in their beginning only."
        )
    return answers


# --- perplexity / loss ------------------------------------------------------------------------


def _lm_scores(
    loaded: Any,
    rows: list[dict[str, Any]],
    roles: dict[str, str],
    references: list[list[str]],
    config: EvalConfig,
    run: _Run,
    warnings: list[str],
    scoring: dict[str, Any],
    columns: list[str],
) -> dict[str, list[float]]:
    """Per-example summed token NLL and token counts for perplexity and loss (with the
    characters and UTF-8 bytes the scored tokens cover, for the bits metrics)."""
    from evaluation.runtime import models as m

    task = config.task_type
    hook = run.hook("Scoring likelihood")
    if loaded.kind == m.MASKED_LM:
        texts = [build_input(row, roles, task) or _text(row, roles, "target") for row in rows]
        scores = m.masked_pll(loaded, texts, batch_size=config.batch_size, on_batch=hook)
        return {"nll_sum": [-s for s, _ in scores], "n_tokens": [float(n) for _, n in scores]}

    targets = _lm_targets(rows, roles, task, references)
    limit = loaded.max_positions
    truncated = 0
    if loaded.kind == m.SEQ2SEQ:
        if targets is None:
            raise JobInputError(
                "A seq2seq model's perplexity is measured on the target given the "
                "input: map a column to the role 'target'."
            )
        return _seq2seq_scores(loaded, rows, roles, task, targets, config, hook, warnings)
    if targets is None:
        texts = [build_input(row, roles, task) for row in rows]
        # As the training runtime decides (document_separator "auto"): a table whose only
        # column is the text is one text cut into rows, anything else rows of documents.
        joined = config.join_rows
        if joined is None:
            joined = columns == [roles.get("text")]
        return _text_scores(loaded, texts, joined, config, hook, warnings, scoring)
    if config.join_rows:
        warnings.append(
            "join_rows applies to a text column's perplexity; this split has targets, so each "
            "target was scored given its input."
        )
    sequences, chars, nbytes = [], [], []
    for row, target in zip(rows, targets, strict=True):
        source = build_input(row, roles, task)
        context = m.encode(loaded, source) if source else []
        # The target continues the prompt, so it is tokenized after a separating space.
        scored_text = (" " if context else "") + target
        target_ids = m.encode(loaded, scored_text, special=False)
        if not context:
            bos = loaded.tokenizer.bos_token_id
            context = [bos] if bos is not None else []
        if len(target_ids) > limit // 2:
            target_ids = target_ids[: max(1, limit // 2)]
            scored_text = loaded.tokenizer.decode(target_ids)
        room = limit - len(target_ids)
        if len(context) > room:
            truncated += 1
            context = context[-room:] if room > 0 else []
        sequences.append((context + target_ids, len(context)))
        # Without any context the first target token is not scored (nothing predicts it).
        chars.append(float(len(scored_text)) if context else 0.0)
        nbytes.append(float(len(scored_text.encode("utf-8"))) if context else 0.0)
    if truncated:
        warnings.append(
            f"{truncated} examples were longer than the model reads ({limit} tokens) "
            "and were truncated for perplexity."
        )
    scores = m.causal_nll(loaded, sequences, batch_size=config.batch_size, on_batch=hook)
    return {
        "nll_sum": [s for s, _ in scores],
        "n_tokens": [float(n) for _, n in scores],
        "n_chars": chars,
        "n_bytes": nbytes,
    }


def _tokenize(tok: Any, text: str) -> tuple[list[int], list[int]]:
    """(ids, each token's start offset in ``text``) without special tokens. A slow tokenizer
    has no offsets: its tokens then start where the decoded tokens before them end."""
    if getattr(tok, "is_fast", False):
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return list(enc["input_ids"]), [int(a) for a, _ in enc["offset_mapping"]]
    ids = list(tok(text, add_special_tokens=False, verbose=False)["input_ids"])
    starts, at = [], 0
    for i in range(len(ids)):
        starts.append(at)
        at = min(len(text), len(tok.decode(ids[: i + 1])))
    return ids, starts


def _text_scores(
    loaded: Any,
    texts: list[str],
    joined: bool,
    config: EvalConfig,
    hook: Callable[[int, int], None],
    warnings: list[str],
    scoring: dict[str, Any],
) -> dict[str, list[float]]:
    """A causal LM's likelihood of whole texts, every token scored once by a sliding window
    (as one joined text or each row a document: see the module docstring), per row."""
    import numpy as np

    from evaluation.runtime.sliding import (
        plan_windows,
        sliding_token_nll,
        token_spans,
        utf8_prefix_bytes,
    )

    tok = loaded.tokenizer
    window = loaded.max_positions
    stride = window if config.stride is None else config.stride
    if stride > window:
        raise JobInputError(
            f"stride must be at most the model's context ({window} tokens), not {stride}: "
            "a larger one would skip tokens."
        )
    eos = tok.eos_token_id
    if config.score_end_token and eos is None:
        raise JobInputError(
            "score_end_token: the tokenizer has no end-of-text (EOS) token to score."
        )
    n_rows = len(texts)
    # Each document: its ids, its text, the span boundaries of its text tokens, the row of
    # each text token, how many ids come before the text (BOS) and after it (EOS), and the row
    # its end token belongs to (it covers no text).
    documents: list[tuple[list[int], str, np.ndarray, np.ndarray, int, int, int]] = []
    if joined:
        text = ROW_SEPARATOR.join(texts)
        ids, starts = _tokenize(tok, text)
        row_starts = np.cumsum([0] + [len(t) + len(ROW_SEPARATOR) for t in texts[:-1]])
        token_rows = np.searchsorted(row_starts, np.asarray(starts, dtype=np.int64), "right") - 1
        token_rows = np.clip(token_rows, 0, n_rows - 1)
        tail = [eos] if config.score_end_token else []
        spans = token_spans(starts, len(text))
        documents.append((ids + tail, text, spans, token_rows, 0, len(tail), n_rows - 1))
    else:
        bos = tok.bos_token_id
        head = [bos] if bos is not None else []
        tail = [eos] if config.score_end_token else []
        for r, text in enumerate(texts):
            ids, starts = _tokenize(tok, text)
            spans = token_spans(starts, len(text))
            documents.append(
                (head + ids + tail, text, spans, np.full(len(ids), r), len(head), len(tail), r)
            )
    nll = sliding_token_nll(
        loaded.model,
        [d[0] for d in documents],
        window=window,
        stride=stride,
        batch_size=config.batch_size,
        device=loaded.device,
        pad_id=loaded.pad_id,
        on_batch=hook,
    )
    sums, counts = np.zeros(n_rows), np.zeros(n_rows)
    chars, nbytes = np.zeros(n_rows), np.zeros(n_rows)
    n_tokens = n_chars = n_bytes = n_windows = 0
    for (ids, text, spans, token_rows, head, tail, tail_row), values in zip(
        documents, nll, strict=True
    ):
        n_windows += len(plan_windows(len(ids), window, stride))
        n_text = len(ids) - head - tail
        n_tokens += n_text + tail
        n_chars += len(text)
        prefix = utf8_prefix_bytes(text)
        n_bytes += int(prefix[-1])
        text_nll = values[head : head + n_text]
        scored = ~np.isnan(text_nll)
        own_chars = np.diff(spans)
        own_bytes = np.diff(prefix[spans])
        np.add.at(sums, token_rows[scored], text_nll[scored])
        np.add.at(counts, token_rows[scored], 1)
        np.add.at(chars, token_rows[scored], own_chars[scored])
        np.add.at(nbytes, token_rows[scored], own_bytes[scored])
        if tail and not np.isnan(values[-1]):
            sums[tail_row] += values[-1]
            counts[tail_row] += 1
    scoring.update(
        tokens=int(n_tokens),
        scored_tokens=int(counts.sum()),
        characters=int(n_chars),
        scored_characters=int(chars.sum()),
        bytes=int(n_bytes),
        scored_bytes=int(nbytes.sum()),
        windows=int(n_windows),
        window=int(window),
        stride=int(stride),
        joined=bool(joined),
        end_token=bool(config.score_end_token),
    )
    how = (
        f"the {n_rows:,} rows as one text joined by newlines"
        if joined
        else f"each of the {n_rows:,} rows as a document"
    )
    warnings.append(
        f"Perplexity scored {int(counts.sum()):,} of {int(n_tokens):,} tokens "
        f"({int(chars.sum()):,} of {int(n_chars):,} characters) of {how}, in {n_windows:,} "
        f"windows of up to {window} tokens, stride {stride}"
        + (", end-of-text tokens included" if config.score_end_token else "")
        + "; a first token without context is not scored."
    )
    return {
        "nll_sum": sums.tolist(),
        "n_tokens": counts.tolist(),
        "n_chars": chars.tolist(),
        "n_bytes": nbytes.tolist(),
    }


def _lm_targets(
    rows: list[dict[str, Any]], roles: dict[str, str], task: str, references: list[list[str]]
) -> list[str] | None:
    """What the likelihood is measured on: the target (first answer for QA), or None for the
    whole text."""
    if task == "qa":
        return [r[0] if r else "" for r in references]
    if "target" in roles and any(r.get(roles["target"]) for r in rows):
        return [_text(row, roles, "target") for row in rows]
    return None


def _seq2seq_scores(
    loaded: Any,
    rows: list[dict[str, Any]],
    roles: dict[str, str],
    task: str,
    targets: list[str],
    config: EvalConfig,
    hook: Callable[[int, int], None],
    warnings: list[str],
) -> dict[str, list[float]]:
    import torch

    tok, model = loaded.tokenizer, loaded.model
    nll, counts = [], []
    limit = loaded.max_positions
    n = len(rows)
    batches = range(0, n, config.batch_size)
    with torch.no_grad():
        for b, start in enumerate(batches):
            hook(b, len(batches))
            sources = [
                build_input(r, roles, task, model_kind=loaded.kind)
                for r in rows[start : start + config.batch_size]
            ]
            tgts = targets[start : start + config.batch_size]
            enc = tok(sources, truncation=True, max_length=limit, padding=True, return_tensors="pt")
            lab = tok(
                text_target=tgts,
                truncation=True,
                max_length=limit,
                padding=True,
                return_tensors="pt",
            )
            labels = lab["input_ids"].masked_fill(lab["attention_mask"] == 0, -100)
            inputs = {k: v.to(loaded.device) for k, v in enc.items() if k in _forward_args(model)}
            logits = model(**inputs, labels=labels.to(loaded.device)).logits.float().cpu()
            logprobs = torch.log_softmax(logits, dim=-1)
            mask = labels != -100
            picked = logprobs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            nll.extend((-(picked * mask).sum(dim=1)).tolist())
            counts.extend(mask.sum(dim=1).float().tolist())
    return {"nll_sum": nll, "n_tokens": counts}
