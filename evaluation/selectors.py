"""Reads of the evaluation stage: runs, examples, comparisons, goal progress, bias reports.

Comparison data is built with a fixed number of queries whatever the number of runs: one for
the runs (with their models and jobs), one for the training curves they came from (read from
each finished job's stored curve summary), and two for a per-example diff.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from evaluation.metrics.catalog import METRICS
from evaluation.models import BiasReport, EvaluationExample, EvaluationRun
from llmhub.models import JobStatus
from projects.models import Project
from projects.selectors import User, get_visible, visible_to
from training.models import TrainingJob

MAX_COMPARED = 50


def evaluation_runs_for_user(user: User) -> QuerySet[EvaluationRun]:
    return visible_to(
        EvaluationRun.objects.select_related(
            "project__team",
            "model_version__registered_model",
            "dataset_version__dataset",
            "created_by",
        ),
        user,
    )


def get_evaluation_run_for_user(user: User, pk) -> EvaluationRun:
    return get_visible(evaluation_runs_for_user(user), user, pk)


def examples_of(
    run: EvaluationRun, *, search: str = "", order: str = "index"
) -> QuerySet[EvaluationExample]:
    """A run's examples, optionally searched (input, reference, prediction) and sorted:
    ``index``, ``score`` (worst first) or ``-score`` (best first)."""
    from django.db.models import F, Q

    examples = run.examples.all()
    if search:
        examples = examples.filter(
            Q(input__icontains=search)
            | Q(reference__icontains=search)
            | Q(prediction__icontains=search)
        )
    if order == "score":
        return examples.order_by(F("score").asc(nulls_last=True), "index")
    if order == "-score":
        return examples.order_by(F("score").desc(nulls_last=True), "index")
    return examples.order_by("index")


def bias_reports_for_user(user: User) -> QuerySet[BiasReport]:
    return visible_to(
        BiasReport.objects.select_related(
            "project__team",
            "model_version__registered_model",
            "probe_version__dataset",
            "evaluation",
            "created_by",
        ),
        user,
    )


def comparison(runs: list[EvaluationRun], *, baseline_id: int | None = None) -> dict[str, Any]:
    """Everything the comparison page charts: per metric, each run's value and interval and
    its difference to the baseline; and the training loss curves of the runs' models."""
    if not runs:
        return {"runs": [], "metrics": [], "curves": {}}
    baseline = next((r for r in runs if r.pk == baseline_id), runs[0])
    metric_names = list(dict.fromkeys(m for r in runs for m in r.metrics))
    table = []
    for name in metric_names:
        info = METRICS.get(name)
        base = baseline.value(name)
        row = {
            "metric": name,
            "label": info.label if info else name,
            "higher_is_better": info.higher_is_better if info else True,
            "values": [],
        }
        for run in runs:
            result = run.results.get(name) or {}
            value = result.get("value")
            delta = None if value is None or base is None else value - base
            better = None
            if delta not in (None, 0) and info is not None:
                better = (delta > 0) == info.higher_is_better
            row["values"].append(
                {
                    "run": run.pk,
                    "value": value,
                    "ci_low": result.get("ci_low"),
                    "ci_high": result.get("ci_high"),
                    "delta": delta,
                    "better": better,
                }
            )
        table.append(row)
    jobs = {
        job.model_version_id: job
        for job in TrainingJob.objects.filter(
            model_version__in=[r.model_version_id for r in runs]
        ).only("id", "name", "model_version_id", "curve_summary", "status")
    }
    curves = {}
    for run in runs:
        job = jobs.get(run.model_version_id)
        if job is not None and job.curve_summary.get("loss"):
            curves[run.pk] = {"job": job.pk, "name": job.name, "loss": job.curve_summary["loss"]}
    return {
        "baseline": baseline.pk,
        "runs": [
            {
                "id": r.pk,
                "name": str(r),
                "model": str(r.model_version),
                "model_version": r.model_version_id,
                # A diverged training run's warnings follow its model into every comparison.
                "model_warnings": [w.get("message", "") for w in r.model_version.warnings or []],
                "split": r.split,
                "dataset_version": str(r.dataset_version),
                "n_examples": r.n_examples,
                "finished_at": r.finished_at.isoformat() if r.finished_at else None,
            }
            for r in runs
        ],
        "metrics": table,
        "curves": curves,
    }


def example_diff(run_a: EvaluationRun, run_b: EvaluationRun, *, limit: int = 200) -> dict[str, Any]:
    """Examples where the runs disagree: where A scored better than B and the reverse, by each
    example's primary score (correctness for classification), largest gaps first."""
    fields = ("index", "input", "reference", "prediction", "score")
    a = {row[0]: row for row in run_a.examples.values_list(*fields)}
    b = {row[0]: row for row in run_b.examples.values_list(*fields)}
    a_better, b_better, same = [], [], 0
    for index in sorted(a.keys() & b.keys()):
        row_a, row_b = a[index], b[index]
        if row_a[4] is None or row_b[4] is None or row_a[4] == row_b[4]:
            same += 1
            continue
        item = {
            "index": index,
            "input": row_a[1][:500],
            "reference": row_a[2],
            "prediction_a": row_a[3],
            "prediction_b": row_b[3],
            "score_a": row_a[4],
            "score_b": row_b[4],
            "gap": abs(row_a[4] - row_b[4]),
        }
        (a_better if row_a[4] > row_b[4] else b_better).append(item)
    for items in (a_better, b_better):
        items.sort(key=lambda item: (-item["gap"], item["index"]))
    return {
        "a": run_a.pk,
        "b": run_b.pk,
        "compared": len(a.keys() & b.keys()),
        "same": same,
        "a_better_count": len(a_better),
        "b_better_count": len(b_better),
        "a_better": a_better[:limit],
        "b_better": b_better[:limit],
    }


def goal_progress(project: Project) -> list[dict[str, Any]]:
    """For each goal: its status, the best model so far on its metric and split, and the
    metric over time across model versions (every succeeded evaluation on that split)."""
    from evaluation.services import SPLIT_ALIASES

    runs = list(
        EvaluationRun.objects.filter(project=project, status=JobStatus.SUCCEEDED)
        .select_related("model_version__registered_model")
        .order_by("finished_at", "id")
    )
    progress = []
    for goal in project.goals.all():
        splits = SPLIT_ALIASES.get(goal.split, (goal.split,))
        points = [
            {
                "run": r.pk,
                "model": str(r.model_version),
                "model_version": r.model_version_id,
                "value": r.value(goal.metric),
                "at": r.finished_at.isoformat(),
            }
            for r in runs
            if r.split in splits and r.value(goal.metric) is not None
        ]
        best = None
        if points:
            pick = max if goal.comparison == ">=" else min
            best = pick(points, key=lambda p: p["value"])
        progress.append(
            {
                "goal": goal,
                "points": points,
                "best": best,
                "best_meets": best is not None and goal.is_met_by(best["value"]),
            }
        )
    return progress


def confusion_of(run: EvaluationRun) -> dict[str, Any] | None:
    """The confusion matrix, per-class precision/recall/F1 and most confused pairs of a
    classification run, from its stored examples (None for other task types)."""
    from evaluation.metrics.confusion import confusion

    if run.task_type != "classification":
        return None
    pairs = run.examples.order_by().values_list("reference", "prediction").iterator(chunk_size=5000)
    return {"run": run.pk, **confusion(pairs)}
