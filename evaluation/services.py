"""Every write of the evaluation stage: launching evaluations and bias reports, storing their
results, and feeding measured values to the project's goals."""

from __future__ import annotations

import math
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from datasets_app.models import DatasetVersion
from evaluation.metrics.catalog import METRICS
from evaluation.models import BiasKind, BiasReport, EvaluationExample, EvaluationRun
from evaluation.runtime.config import validate_bias_params, validate_metrics, validate_settings
from llmhub.jobs import enqueue_job, requires_broker
from llmhub.models import JobStatus
from projects.audit import record_event
from projects.models import Goal, Project
from projects.permissions import Action
from projects.services import goal_record_measurement, require
from training.models import ModelVersion, Stage

# What a model is evaluated on by default when no metrics are named.
DEFAULT_METRICS = {
    "classification": ["accuracy", "f1_macro", "precision_macro", "recall_macro"],
    "summarization": ["rouge1", "rouge2", "rougeL", "bleu", "gen_len"],
    "translation": ["bleu", "chrf", "gen_len"],
    "generation": ["perplexity", "rougeL", "bleu"],
    "qa": ["exact_match", "token_f1"],
}
# The column role holding references, per task type.
REFERENCE_ROLES = {
    "classification": ("label",),
    "summarization": ("target",),
    "translation": ("target",),
    "generation": ("target",),
    "qa": ("answers", "target"),
}
# Split names that count as the same split when goals look for measurements.
SPLIT_ALIASES = {
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test",),
    "train": ("train",),
}
EXAMPLE_BATCH = 2000


def _error(field: str | None, message: str) -> ValidationError:
    return ValidationError({field: message} if field else message)


def _runtime_check(field: str, check, *args) -> Any:
    """Run one of the evaluation runtime's validators (the worker runs the same one on the
    same values), its JobInputError as a ValidationError on ``field``."""
    from llmhub.reporting import JobInputError

    try:
        return check(*args)
    except JobInputError as exc:
        raise _error(field, str(exc)) from exc


def _has_tokenizer(version: ModelVersion) -> bool:
    return any(f in version.files for f in ("tokenizer.json", "tokenizer_config.json"))


@requires_broker
@transaction.atomic
def evaluation_launch(
    *,
    actor,
    model_version: ModelVersion,
    dataset_version: DatasetVersion,
    split: str = "test",
    metrics: list[str] | None = None,
    settings: dict | None = None,
    name: str = "",
) -> EvaluationRun:
    """Queue the evaluation of ``model_version`` on ``split`` of ``dataset_version``."""
    project = model_version.project
    require(actor, project.team, Action.RUN_JOBS)
    if dataset_version.dataset.project_id != project.pk:
        raise _error("dataset_version", "The dataset version belongs to another project.")
    task = project.task_type
    metrics = _runtime_check("metrics", validate_metrics, task, metrics or DEFAULT_METRICS[task])
    settings = _runtime_check("settings", validate_settings, settings)
    problem = dataset_version.missing_split(split)
    if problem:
        raise _error("split", problem)
    if any(METRICS[m].needs_references for m in metrics):
        roles = dataset_version.column_roles
        if not any(
            r in roles and roles[r] in dataset_version.columns for r in REFERENCE_ROLES[task]
        ):
            raise _error(
                "dataset_version",
                f"{dataset_version} has no references to compare with: map a "
                f"{' or '.join(repr(r) for r in REFERENCE_ROLES[task])} column on its page, or "
                "choose metrics that need none (perplexity, loss).",
            )
    if not _has_tokenizer(model_version):
        raise _error(
            "model_version",
            f"{model_version} has no tokenizer files; register it with its tokenizer.",
        )
    run = EvaluationRun(
        project=project,
        created_by=actor,
        name=(name or "").strip(),
        model_version=model_version,
        dataset_version=dataset_version,
        split=split,
        task_type=task,
        metrics=metrics,
        settings=settings,
    )
    run.full_clean()
    run.save()
    record_event(
        actor=actor,
        team=project.team,
        project=project,
        verb="evaluation.launched",
        target=run,
        changes={"model": str(model_version), "split": split},
    )
    enqueue_job(run)
    return run


def _primary_score(names: list[str], scores: dict[str, Any]) -> float | None:
    """The first of ``names`` with a numeric per-example score (what "worst cases" sort by)."""
    for name in names:
        value = scores.get(name)
        if isinstance(value, int | float):
            return float(value)
    return None


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as None: JSON columns refuse them (SQLite's check and
    PostgreSQL's jsonb), and no JSON reader could serve them. A perplexity overflows to
    infinity on a model that diverged."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


@transaction.atomic
def evaluation_store_results(*, run: EvaluationRun, result: dict[str, Any]) -> EvaluationRun:
    """Store a finished evaluation (system write by the runner) and refresh the goals."""
    examples = result.get("examples", [])
    score_order = ["correct", *run.metrics]
    EvaluationExample.objects.filter(run=run).delete()  # a re-delivered task starts clean
    for start in range(0, len(examples), EXAMPLE_BATCH):
        EvaluationExample.objects.bulk_create(
            [
                EvaluationExample(
                    run=run,
                    index=e["index"],
                    input=e.get("input") or "",
                    reference=e.get("reference"),
                    prediction=e.get("prediction"),
                    scores=json_safe(e.get("scores") or {}),
                    score=_primary_score(score_order, json_safe(e.get("scores") or {})),
                )
                for e in examples[start : start + EXAMPLE_BATCH]
            ]
        )
    EvaluationRun.objects.filter(pk=run.pk).update(
        results=json_safe(result["metrics"]),
        model_kind=result.get("model_kind", ""),
        device=result.get("device", ""),
        n_examples=result.get("n_examples", len(examples)),
        warnings=result.get("warnings", []),
        scoring=json_safe(result.get("scoring") or {}),
    )
    run.refresh_from_db()
    return run


def chosen_model_version(project: Project) -> ModelVersion | None:
    """The model the project's goals are measured on: the production version, else staging,
    else the most recently evaluated one without warnings."""
    versions = ModelVersion.objects.filter(registered_model__project=project)
    for stage in (Stage.PRODUCTION, Stage.STAGING):
        chosen = versions.filter(stage=stage).order_by("-created_at").first()
        if chosen is not None:
            return chosen
    # Never a version with warnings (a diverged run) on its own: only a stage set by hand.
    latest = (
        EvaluationRun.objects.filter(project=project, status=JobStatus.SUCCEEDED)
        .filter(model_version__warnings=[])
        .order_by("-finished_at", "-id")
        .select_related("model_version")
        .first()
    )
    return latest.model_version if latest else None


def latest_run_for(goal: Goal, model_version: ModelVersion) -> EvaluationRun | None:
    splits = SPLIT_ALIASES.get(goal.split, (goal.split,))
    for run in EvaluationRun.objects.filter(
        model_version=model_version, status=JobStatus.SUCCEEDED, split__in=splits
    ).order_by("-finished_at", "-id"):
        if run.value(goal.metric) is not None:
            return run
    return None


def goals_refresh(*, project: Project) -> list[Goal]:
    """Give every goal the value of the latest evaluation of the chosen model on its split."""
    chosen = chosen_model_version(project)
    updated = []
    if chosen is None:
        return updated
    for goal in project.goals.all():
        run = latest_run_for(goal, chosen)
        if run is None:
            continue
        value = run.value(goal.metric)
        source = f"{chosen} · evaluation #{run.pk} on {run.split or 'all rows'}"
        if goal.measured_value != value or goal.measured_source != source:
            updated.append(goal_record_measurement(goal=goal, value=value, source=source))
    return updated


# --- bias reports -----------------------------------------------------------------------------


@requires_broker
@transaction.atomic
def bias_report_launch(
    *,
    actor,
    model_version: ModelVersion,
    kind: str,
    probe_version: DatasetVersion | None = None,
    params: dict | None = None,
) -> BiasReport:
    """Queue a probe of ``model_version`` with a built-in or uploaded probe set."""
    project = model_version.project
    require(actor, project.team, Action.RUN_JOBS)
    if kind not in (BiasKind.CROWS_PAIRS, BiasKind.BOLD, BiasKind.WINOBIAS):
        raise _error(
            "kind", "Choose crows_pairs, bold or winobias (slices come from an evaluation run)."
        )
    params = _runtime_check("params", validate_bias_params, kind, params)
    if probe_version is not None:
        if probe_version.dataset.project_id != project.pk:
            raise _error("probe_version", "The probe set belongs to another project.")
        from evaluation.runtime.bias import PROBE_COLUMNS

        missing = [c for c in PROBE_COLUMNS[kind] if c not in probe_version.columns]
        if missing:
            raise _error(
                "probe_version",
                f"A {BiasKind(kind).label} probe set needs the column(s) "
                f"{', '.join(missing)}; {probe_version} has {', '.join(probe_version.columns)}.",
            )
    if not _has_tokenizer(model_version):
        raise _error("model_version", f"{model_version} has no tokenizer files.")
    report = BiasReport(
        project=project,
        created_by=actor,
        kind=kind,
        model_version=model_version,
        probe_version=probe_version,
        params=params,
    )
    report.full_clean()
    report.save()
    record_event(
        actor=actor,
        team=project.team,
        project=project,
        verb="bias_report.launched",
        target=report,
        changes={"kind": kind, "model": str(model_version)},
    )
    enqueue_job(report)
    return report


@requires_broker
@transaction.atomic
def slice_report_launch(
    *, actor, evaluation: EvaluationRun, column: str, metric: str | None = None
) -> BiasReport:
    """Queue a report of ``metric`` per value of ``column`` over an evaluation's examples."""
    project = evaluation.project
    require(actor, project.team, Action.RUN_JOBS)
    if evaluation.status != JobStatus.SUCCEEDED:
        raise _error("evaluation", "Slice a finished (succeeded) evaluation.")
    columns = evaluation.dataset_version.columns
    if column not in columns:
        raise _error("column", f"No column named '{column}'. Columns: {', '.join(columns)}.")
    metric = metric or evaluation.metrics[0]
    if metric not in evaluation.metrics:
        raise _error(
            "metric",
            f"The evaluation did not measure {metric}; it measured "
            f"{', '.join(evaluation.metrics)}.",
        )
    report = BiasReport(
        project=project,
        created_by=actor,
        kind=BiasKind.SLICE,
        model_version=evaluation.model_version,
        evaluation=evaluation,
        params={"column": column, "metric": metric},
    )
    report.full_clean()
    report.save()
    record_event(
        actor=actor,
        team=project.team,
        project=project,
        verb="bias_report.launched",
        target=report,
        changes={"kind": "slice", "column": column},
    )
    enqueue_job(report)
    return report
