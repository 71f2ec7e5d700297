"""The Evaluate stage pages: goals against evaluations, runs with their worst cases, side-by-side
comparisons, and bias reports."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from datasets_app import selectors as data_selectors
from evaluation import selectors, services
from evaluation.metrics.catalog import BITS_METRICS, METRICS
from frontend import charts, charts_evaluation
from frontend.forms import BiasReportForm, EvaluationForm
from frontend.views import runs as runs_views
from frontend.views.helpers import call_service, project_context, run_action
from projects import selectors as project_selectors
from training import selectors as training_selectors


def _goal_figure(item: dict) -> dict:
    goal = item["goal"]
    by_model: dict[str, dict] = {}
    for point in item["points"]:
        series = by_model.setdefault(
            point["model"], {"name": point["model"], "x": [], "y": [], "mode": "lines+markers"}
        )
        series["x"].append(point["at"])
        series["y"].append(point["value"])
    return charts.lines(
        list(by_model.values()),
        title=str(goal),
        x_title="evaluated at",
        y_title=goal.metric_label,
        target=goal.target,
        height=280,
    )


@login_required
def evaluate_stage(request: HttpRequest, pk: int) -> HttpResponse:
    project = project_selectors.get_project_for_user(request.user, pk)
    models = training_selectors.model_versions_for_user(request.user).filter(
        registered_model__project=project
    )
    versions = data_selectors.versions_for_user(request.user).filter(dataset__project=project)
    form = EvaluationForm(
        request.POST or None, models=models, versions=versions, task_type=project.task_type
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        run = call_service(
            form,
            services.evaluation_launch,
            actor=request.user,
            model_version=models.get(pk=data["model_version"]),
            dataset_version=versions.get(pk=data["dataset_version"]),
            split=data["split"].strip(),
            metrics=data["metrics"] or None,
            settings=form.settings(),
        )
        if run:
            messages.success(request, f"Evaluation #{run.pk} queued on the gpu queue.")
            return redirect("evaluate-stage", pk=project.pk)
    progress = selectors.goal_progress(project)
    runs = list(selectors.evaluation_runs_for_user(request.user).filter(project=project)[:50])
    metric_columns = list(dict.fromkeys(m for run in runs for m in run.metrics))[:5]
    context = project_context(request, project, "evaluate")
    context.update(
        form=form,
        goals=[
            {
                **item,
                "figure_id": f"goal-{item['goal'].pk}",
                "figure": _goal_figure(item) if item["points"] else None,
            }
            for item in progress
        ],
        runs=runs,
        metric_columns=[
            (name, METRICS[name].label if name in METRICS else name) for name in metric_columns
        ],
        bias_reports=selectors.bias_reports_for_user(request.user).filter(project=project)[:20],
        bias_form=BiasReportForm(models=models, versions=versions),
        has_models=models.exists(),
    )
    return render(request, "frontend/evaluate/stage.html", context)


@login_required
@require_POST
def bias_report_launch(request: HttpRequest, pk: int) -> HttpResponse:
    project = project_selectors.get_project_for_user(request.user, pk)
    models = training_selectors.model_versions_for_user(request.user).filter(
        registered_model__project=project
    )
    versions = data_selectors.versions_for_user(request.user).filter(dataset__project=project)
    form = BiasReportForm(request.POST, models=models, versions=versions)
    if form.is_valid():
        data = form.cleaned_data
        report = call_service(
            form,
            services.bias_report_launch,
            actor=request.user,
            model_version=models.get(pk=data["model_version"]),
            kind=data["kind"],
            probe_version=versions.filter(pk=data["probe_version"] or None).first(),
            params=form.params(),
        )
        if report:
            messages.success(request, f"{report.get_kind_display()} queued.")
            return redirect("bias-report-page", pk=report.pk)
    messages.error(request, " ".join(e for errs in form.errors.values() for e in errs))
    return redirect("evaluate-stage", pk=project.pk)


@login_required
def evaluation_run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    run = selectors.get_evaluation_run_for_user(request.user, pk)
    order = request.GET.get("order", "score")
    if order not in ("index", "score", "-score"):
        order = "score"
    search = request.GET.get("q", "").strip()
    page = Paginator(selectors.examples_of(run, search=search, order=order), 25).get_page(
        request.GET.get("page")
    )
    figure = None
    if run.results:
        names = [m for m in run.metrics if run.results.get(m, {}).get("value") is not None]
        bounded = [m for m in names if m in METRICS and METRICS[m].bounded]
        if bounded:
            figure = charts.metric_bars(
                [{"name": str(run), "values": [run.results[m] for m in bounded]}],
                [METRICS[m].label for m in bounded],
                title="Metrics with 95% intervals",
            )
    # Classification runs: the confusion matrix from the stored examples (once they exist).
    confusion = selectors.confusion_of(run) if run.status == "succeeded" else None
    if confusion is not None and not confusion["n"]:
        confusion = None
    confusion_figure = charts_evaluation.confusion_heatmap(confusion) if confusion else None
    confusion_rows = (
        [
            (label, list(zip(counts, shares, strict=True)))
            for label, counts, shares in zip(
                confusion["labels"], confusion["matrix"], confusion["normalized"], strict=True
            )
        ]
        if confusion
        else []
    )
    context = project_context(request, run.project, "evaluate")
    context.update(
        confusion=confusion,
        confusion_figure=confusion_figure,
        confusion_rows=confusion_rows,
        run=run,
        page=page,
        order=order,
        search=search,
        figure=figure,
        columns=run.dataset_version.columns,
        slices=run.slice_reports.all()[:10],
    )
    return render(request, "frontend/evaluate/run.html", context)


@login_required
@require_POST
def evaluation_slice(request: HttpRequest, pk: int) -> HttpResponse:
    run = selectors.get_evaluation_run_for_user(request.user, pk)
    if run_action(
        request,
        services.slice_report_launch,
        actor=request.user,
        evaluation=run,
        column=request.POST.get("column", ""),
        metric=request.POST.get("metric") or None,
    ):
        messages.success(request, "Slice report queued.")
    return redirect("evaluation-run-page", pk=pk)


@login_required
def compare(request: HttpRequest, pk: int) -> HttpResponse:
    project = project_selectors.get_project_for_user(request.user, pk)
    try:
        ids = [int(i) for i in request.GET.getlist("runs") if i]
    except ValueError:
        raise Http404("Bad run ids.") from None
    available = selectors.evaluation_runs_for_user(request.user).filter(
        project=project, status="succeeded"
    )
    found = {run.pk: run for run in available.filter(pk__in=ids)}
    chosen = [found[i] for i in dict.fromkeys(ids) if i in found]
    # The same cap as the API's (one constant); the page shows the first ones and says so.
    runs = chosen[: selectors.MAX_COMPARED]
    baseline = request.GET.get("baseline")
    data = selectors.comparison(
        runs, baseline_id=int(baseline) if baseline and baseline.isdigit() else None
    )
    bars = bits = curves = diff = None
    if runs:
        bounded = [
            row
            for row in data["metrics"]
            if row["metric"] in METRICS and METRICS[row["metric"]].bounded
        ]

        def run_bars(rows: list[dict], **options):
            """One bar group per metric row, one bar per run."""
            series = [
                {
                    "name": run["name"] + " · " + run["model"],
                    "values": [row["values"][i] for row in rows],
                }
                for i, run in enumerate(data["runs"])
            ]
            return charts.metric_bars(series, [row["label"] for row in rows], **options)

        bars = run_bars(bounded, title="Metrics with 95% intervals")
        # Code lengths compare models across tokenizers: their own chart, in bits.
        coded = [row for row in data["metrics"] if row["metric"] in BITS_METRICS]
        if coded:
            bits = run_bars(
                coded,
                title="Bits per character / byte with 95% intervals (lower is better)",
                y_title="bits",
            )
        if data["curves"]:
            curves = charts.lines(
                [
                    {"name": c["name"], "x": c["loss"]["steps"], "y": c["loss"]["values"]}
                    for c in data["curves"].values()
                ],
                title="Training loss of the compared models",
                y_title="loss",
            )
    # What the compared models were trained with, the differing hyperparameters first.
    hp_diff = runs_views.hyperparameter_diff(
        [(f"#{run.pk} {run.model_version}", run.model_version.hyperparameters) for run in runs]
    )
    a, b = request.GET.get("a"), request.GET.get("b")
    if a and b and a.isdigit() and b.isdigit() and int(a) in found and int(b) in found:
        diff = selectors.example_diff(found[int(a)], found[int(b)], limit=50)
    context = project_context(request, project, "evaluate")
    context.update(
        runs=runs,
        data=data,
        bars=bars,
        bits=bits,
        curves=curves,
        diff=diff,
        hp_diff=hp_diff,
        available=available[:100],
        selected=set(found),
        runs_chosen=len(chosen),
        max_compared=selectors.MAX_COMPARED,
    )
    return render(request, "frontend/evaluate/compare.html", context)


@login_required
def bias_report_detail(request: HttpRequest, pk: int) -> HttpResponse:
    report = get_object_or_404(selectors.bias_reports_for_user(request.user), pk=pk)
    figure = None
    groups = (report.report or {}).get("groups") or []
    if groups:
        figure = charts.group_bars(
            groups,
            title=report.get_kind_display(),
            ideal=0.5 if report.kind in ("crows_pairs", "winobias") else None,
        )
    context = project_context(request, report.project, "evaluate")
    context.update(report=report, figure=figure)
    return render(request, "frontend/evaluate/bias.html", context)
