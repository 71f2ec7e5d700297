"""The drift job's runner: a window of an endpoint's recent requests against its reference.

``run_drift_job`` reads the window (the main version's last ``window_requests`` answered
requests within the job's window, from the request log's text), the reference (a dataset
version's split and text column, by default the serving version's training data), loads the
version's tokenizer from its stored files (not its weights) and the offline sentence encoder,
and hands both sides to the plain runtime (:func:`serving.monitoring.runtime.drift
.compute_drift`). Every slow step runs outside any transaction; the results are written at the
end: the job's result and report, one :class:`DriftStatistic` per statistic, and an
observation per statistic to :func:`serving.monitoring.alerts.observe`.

Nothing to compare is not a failure: a window without requests, a log without text
(``store_text`` off) or a reference without text finishes with result ``no_data`` and a
sentence saying why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings as django_settings
from django.db import transaction
from django.utils import timezone

from llmhub import storage
from llmhub.jobs import JobContext, job_runner
from llmhub.reporting import JobCancelled, JobInputError
from serving.engine.types import SERVE_CLASSIFY, SERVE_GENERATE
from serving.models import RequestLog, RequestRoute
from serving.monitoring import alerts
from serving.monitoring.models import AlertKind, DriftJob, DriftStatistic
from serving.monitoring.runtime.config import DriftConfig
from serving.monitoring.runtime.drift import DriftReport, Sample, compute_drift, skipped
from serving.monitoring.selectors import resolve_reference
from serving.selectors import serve_kind_for

logger = logging.getLogger(__name__)

# A reference larger than this is sampled (seeded by the config): every check samples far fewer
# rows than this, and tokenizing millions of training rows would dwarf the statistics.
REFERENCE_MAX_ROWS = 20_000
# Weight files are never fetched for the tokenizer.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack")
# Routes whose logged prompt joins several inputs with a newline (one per input).
MULTI_INPUT_ROUTES = (RequestRoute.PREDICT, RequestRoute.EMBEDDINGS)
INPUT_CHECKS = ("prompt_length", "tokens", "domain_classifier", "embedding_centroid", "outputs")


@dataclass
class Side:
    """One side of the comparison as read, and the sentence saying why it is empty (if so)."""

    sample: Sample
    rows: int = 0
    reason: str = ""
    notes: list[str] = field(default_factory=list)


# --- the window ------------------------------------------------------------------------------


def read_window(job: DriftJob) -> Side:
    """The main version's last ``window_requests`` answered requests (status < 400) logged in
    the job's window, newest first: prompts, and the answers the version kind gives."""
    endpoint = job.endpoint
    logs = RequestLog.objects.filter(
        endpoint_id=job.endpoint_id,
        canary=False,
        status_code__lt=400,
        created_at__gte=job.window_start,
        created_at__lte=job.window_end,
    )
    logs = (
        logs.filter(version_id=job.version_id)
        if job.version_id
        else logs.filter(version__isnull=True)
    )
    rows = list(
        logs.order_by("-created_at", "-id").values_list("prompt_text", "completion_text", "route")[
            : job.window_requests
        ]
    )
    hours = round((job.window_end - job.window_start).total_seconds() / 3600)
    if not rows:
        return Side(
            Sample(),
            reason=(
                f"No answered requests to {endpoint.slug} in the window (the last {hours} h): "
                "nothing to compare yet."
            ),
        )
    kind = serve_kind_for(job.version) if job.version is not None else SERVE_GENERATE
    texts: list[str] = []
    labels: list[str] = []
    completions: list[str] = []
    without_text = 0
    for prompt, completion, route in rows:
        if prompt is None:
            without_text += 1
            continue
        if route in MULTI_INPUT_ROUTES:
            inputs = prompt.split("\n")
            if route == RequestRoute.PREDICT and kind == SERVE_CLASSIFY:
                predicted = (completion or "").split("\n")
                if len(predicted) != len(inputs):  # an input held a newline: keep it whole
                    inputs, predicted = [prompt], predicted[:1]
                texts += inputs
                labels += predicted
            else:
                texts += inputs
            continue
        texts.append(prompt)
        if kind == SERVE_GENERATE and completion is not None:
            completions.append(completion)
    if not texts:
        return Side(
            Sample(),
            rows=len(rows),
            reason=(
                f"{len(rows):,} requests in the window, but {endpoint.slug} keeps no request text "
                "(store_text is off): turn text storage on to check drift."
            ),
        )
    notes = []
    if without_text:
        notes.append(
            f"{without_text:,} requests of the window have no stored text and are left out."
        )
    sample = Sample(
        texts=texts,
        labels=labels if kind == SERVE_CLASSIFY and labels else None,
        completions=completions if kind == SERVE_GENERATE and completions else None,
    )
    return Side(sample, rows=len(texts), notes=notes)


# --- the reference ---------------------------------------------------------------------------


def _label_names(job: DriftJob) -> dict[str, str]:
    """The served classifier's id -> label name, so integer labels compare with predictions."""
    config = job.version.config if job.version is not None else {}
    return {str(k): str(v) for k, v in (config or {}).get("id2label", {}).items()}


def read_reference(job: DriftJob, config: DriftConfig) -> Side:
    """The reference's text (and its labels or answers, where the data has them), at most
    :data:`REFERENCE_MAX_ROWS` rows (a seeded sample)."""
    import pyarrow.parquet as pq

    resolved = resolve_reference(job.endpoint)
    version = job.reference_version
    if version is None:
        return Side(Sample(), reason=resolved.reason or "The drift job has no reference.")
    text_column = job.reference_column or resolved.text_column
    if not text_column:
        return Side(Sample(), reason=resolved.reason or f"{version} has no text column.")
    same = resolved.version is not None and resolved.version.pk == version.pk
    roles = version.column_roles or {}
    label_column = resolved.label_column if same else roles.get("label", "")
    completion_column = resolved.completion_column if same else roles.get("target", "")
    try:
        name = version.splits.get(name=job.reference_split).file if job.reference_split else None
    except version.splits.model.DoesNotExist:
        return Side(Sample(), reason=f"{version} no longer has a '{job.reference_split}' split.")
    path = storage.local_copy(name or version.file)
    schema = pq.read_schema(path)
    columns = [c for c in (text_column, label_column, completion_column) if c]
    columns = [c for c in dict.fromkeys(columns) if c in schema.names]
    if text_column not in columns:
        return Side(Sample(), reason=f"{version} has no column '{text_column}'.")
    table = pq.read_table(path, columns=columns)
    notes = []
    if table.num_rows > REFERENCE_MAX_ROWS:
        rng = np.random.default_rng(config.seed)
        keep = np.sort(rng.choice(table.num_rows, REFERENCE_MAX_ROWS, replace=False))
        table = table.take(keep)
        notes.append(f"The reference was sampled to {REFERENCE_MAX_ROWS:,} rows.")
    data = {c: table.column(c).to_pylist() for c in columns}
    keep_rows = [i for i, t in enumerate(data[text_column]) if isinstance(t, str) and t.strip()]
    texts = [data[text_column][i] for i in keep_rows]
    if not texts:
        return Side(
            Sample(),
            reason=f"The reference {version} has no text in its column '{text_column}'.",
        )
    labels = None
    if label_column in data:
        names = _label_names(job)
        labels = [
            names.get(str(data[label_column][i]), str(data[label_column][i])) for i in keep_rows
        ]
    completions = None
    if completion_column in data:
        completions = [
            c for c in (data[completion_column][i] for i in keep_rows) if isinstance(c, str)
        ]
    return Side(
        Sample(texts=texts, labels=labels, completions=completions or None),
        rows=len(texts),
        notes=notes,
    )


# --- the tokenizer and the encoder -----------------------------------------------------------


def load_version_tokenizer(version) -> tuple[Any, str]:
    """The served version's tokenizer from its stored files (its weights are not fetched), or
    (None, why): lengths and tokens are then counted in words."""
    if version is None:
        return None, "No registry version is served: lengths and tokens are counted in words."
    from evaluation.runtime.models import load_tokenizer

    files = [f for f in version.files if not f.lower().endswith(WEIGHT_SUFFIXES)]
    try:
        directory = storage.local_directory(version.files_prefix, files)
        return load_tokenizer(Path(directory)), ""
    except (JobInputError, OSError) as exc:
        return None, f"The tokenizer of {version} cannot be loaded ({exc}); counting words."


def load_embedder() -> tuple[Any, str]:
    """A function embedding texts with the offline MiniLM, or (None, why)."""
    if not getattr(django_settings, "LLMHUB_DRIFT_EMBEDDINGS", True):
        return None, "The embedding check is turned off (LLMHUB_DRIFT_EMBEDDINGS)."
    from serving.monitoring.runtime.embeddings import default_encoder_dir, embed_texts

    try:
        directory = default_encoder_dir()
    except JobInputError as exc:
        return None, f"The offline sentence encoder is not installed: {exc}"
    return (lambda texts: embed_texts(directory, texts)), ""


# --- the job ---------------------------------------------------------------------------------


def _no_data(reason: str, sizes: dict[str, int], config: DriftConfig) -> DriftReport:
    return DriftReport(
        [skipped(name, reason, **sizes) for name in INPUT_CHECKS], sizes, config.to_dict()
    )


def _message(job: DriftJob, report: DriftReport, reason: str) -> str:
    if reason:
        return reason
    if report.status == "no_data":
        reasons = {c.reason for c in report.checks if c.reason}
        return " ".join(sorted(reasons)) or "Nothing could be compared."
    sizes = report.sizes
    if report.drifted:
        names = [s.name for c in report.checks for s in c.statistics if s.drifted]
        return (
            f"Drift in {sizes['current']:,} requests against {sizes['reference']:,} reference "
            f"rows: {', '.join(names)}."
        )
    return (
        f"No drift in {sizes['current']:,} requests against {sizes['reference']:,} reference rows."
    )


def _observations(job: DriftJob, report: DriftReport) -> list[alerts.Observation]:
    reference = str(job.reference_version) if job.reference_version else "the reference"
    out = []
    for check in report.checks:
        for stat in check.statistics:
            out.append(
                alerts.Observation(
                    kind=AlertKind.DRIFT,
                    statistic=stat.name,
                    value=float(stat.value),
                    threshold=float(stat.threshold),
                    breached=bool(stat.drifted),
                    message=(
                        f"{check.name.replace('_', ' ').capitalize()} drifted on "
                        f"{job.endpoint.slug}: {stat.name} = {stat.value:.4g} "
                        f"(threshold {stat.rule} {stat.threshold:g}) over "
                        f"{report.sizes['current']:,} requests against {reference}."
                    ),
                    version_id=job.version_id,
                    drift_job_id=job.pk,
                )
            )
    return out


def _check_stop(ctx: JobContext) -> None:
    if ctx.should_stop():
        raise JobCancelled()


def drift_compute(job: DriftJob, ctx: JobContext | None = None) -> tuple[DriftReport, str, dict]:
    """Read both sides and compute the report (no database writes); returns the report, the
    reason there is nothing to compare (or ""), and the row counts."""
    config = DriftConfig.from_dict(job.config)
    progress = ctx.progress if ctx is not None else (lambda *a: None)
    progress(0.05, "Reading the window's requests")
    window = read_window(job)
    if ctx is not None:
        _check_stop(ctx)
    progress(0.15, "Reading the reference")
    reference = read_reference(job, config) if not window.reason else Side(Sample())
    sizes = {"reference": reference.rows, "current": window.rows}
    reason = window.reason or reference.reason
    notes = [*window.notes, *reference.notes]
    if reason:
        report = _no_data(reason, sizes, config)
    else:
        progress(0.25, "Loading the tokenizer and the encoder")
        tokenizer, why_words = load_version_tokenizer(job.version)
        embed, why_no_embed = load_embedder()
        notes += [n for n in (why_words,) if n]
        if ctx is not None:
            _check_stop(ctx)
        progress(0.35, "Computing the statistics")
        report = compute_drift(
            reference.sample, window.sample, config, tokenizer=tokenizer, embed=embed
        )
        if why_no_embed:
            report.check("embedding_centroid").reason = why_no_embed
    report_notes = notes
    return report, reason, {**sizes, "notes": report_notes}


@job_runner(DriftJob)
def run_drift_job(job: DriftJob, ctx: JobContext) -> None:
    """Compute the drift of ``job``'s window, store the report and statistics, open or repeat
    an alert for each statistic past its threshold."""
    report, reason, sizes = drift_compute(job, ctx)
    result = report.status
    message = _message(job, report, reason)
    body = {**report.to_dict(), "message": message, "notes": sizes["notes"]}
    now = timezone.now()
    rows = [
        DriftStatistic(
            job_id=job.pk,
            endpoint_id=job.endpoint_id,
            check_name=check.name,
            name=stat.name,
            value=float(stat.value),
            threshold=float(stat.threshold),
            rule=stat.rule,
            drifted=bool(stat.drifted),
            noise_floor=None if stat.noise_floor is None else float(stat.noise_floor),
            computed_at=job.window_end or now,
        )
        for check in report.checks
        for stat in check.statistics
        if np.isfinite(stat.value)
    ]
    with transaction.atomic():
        ctx.record(
            result=result,
            report=_json_safe(body),
            reference_rows=sizes["reference"],
            window_rows=sizes["current"],
        )
        DriftStatistic.objects.filter(job_id=job.pk).delete()  # a re-run replaces its rows
        DriftStatistic.objects.bulk_create(rows)
    if result != "no_data":
        job.result = result
        alerts.observe(endpoint=job.endpoint, observations=_observations(job, report))
    ctx.set_summary(message)


def _json_safe(value: Any) -> Any:
    """NaN and infinities (a statistic on a degenerate side) as null; numpy scalars as floats."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
