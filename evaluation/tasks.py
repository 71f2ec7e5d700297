"""Evaluation and bias-report runners on the gpu queue (the runtimes import torch lazily)."""

from __future__ import annotations

from pathlib import Path

from datasets_app.models import DatasetVersion
from evaluation import services
from evaluation.models import BiasKind, BiasReport, EvaluationRun
from llmhub import storage
from llmhub.jobs import JobContext, job_runner

PROBES = Path(__file__).resolve().parent / "probes"
BUILT_IN_PROBES = {
    BiasKind.CROWS_PAIRS: PROBES / "crows_pairs.csv",
    BiasKind.BOLD: PROBES / "bold_prompts.jsonl",
    BiasKind.WINOBIAS: PROBES / "winobias.jsonl",
}


def split_path(version: DatasetVersion, split: str) -> Path:
    if not split:
        return storage.local_copy(version.file)
    return storage.local_copy(version.splits.get(name=split).file)


def model_dir(model_version) -> Path:
    return storage.local_directory(model_version.files_prefix, model_version.files)


@job_runner(EvaluationRun)
def run_evaluation(run: EvaluationRun, ctx: JobContext) -> None:
    """Evaluate, store per-example outputs, refresh the project's goals."""
    from evaluation.runtime.evaluate_model import EvalConfig, evaluate_model

    settings = dict(run.settings)
    config = EvalConfig(
        model_dir=model_dir(run.model_version),
        task_type=run.task_type,
        data_path=split_path(run.dataset_version, run.split),
        column_roles=run.dataset_version.column_roles,
        metrics=run.metrics,
        **settings,
    )
    result = evaluate_model(config, reporter=ctx)
    services.evaluation_store_results(run=run, result=result.as_dict())
    # Goals follow the latest succeeded evaluation, so refresh them once this run counts as one.
    ctx.after_success(lambda: services.goals_refresh(project=run.project))


def _probe_path(report: BiasReport) -> Path:
    """The built-in probe file, or the team's own probe set (a dataset version, Parquet)."""
    if report.probe_version is None:
        return BUILT_IN_PROBES[report.kind]
    return storage.local_copy(report.probe_version.file)


@job_runner(BiasReport)
def run_bias_report(report: BiasReport, ctx: JobContext) -> None:
    """Probe a model version for bias, or slice an evaluation by a column."""
    from evaluation.runtime import bias

    if report.kind == BiasKind.SLICE:
        result = _slice(report)
    else:
        probe_fn = {
            BiasKind.CROWS_PAIRS: bias.crows_pairs,
            BiasKind.BOLD: bias.bold,
            BiasKind.WINOBIAS: bias.winobias,
        }[report.kind]
        result = probe_fn(
            model_dir(report.model_version), _probe_path(report), reporter=ctx, **report.params
        )
    # A probe's statistics may be NaN (a group with no examples): stored as null.
    ctx.record(report=services.json_safe(result))


def _slice(report: BiasReport) -> dict:
    import pyarrow.parquet as pq

    from evaluation.runtime.bias import slice_metrics

    run = report.evaluation
    column = report.params["column"]
    values = (
        pq.read_table(split_path(run.dataset_version, run.split), columns=[column])
        .column(column)
        .to_pylist()
    )
    examples = [
        {
            "index": e.index,
            "input": e.input,
            "reference": e.reference,
            "prediction": e.prediction,
            "scores": e.scores,
        }
        for e in run.examples.order_by("index")
    ]
    return slice_metrics(
        examples,
        slice_values=[values[e["index"]] for e in examples],
        metric=report.params["metric"],
    )


# The feedback stage's AI-rating and generation runners: imported here, which Celery's
# autodiscovery loads, so the worker registers them.
from evaluation.feedback import ai_tasks  # noqa: E402, F401
