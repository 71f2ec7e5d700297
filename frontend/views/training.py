"""The Train stage pages: jobs and their live curves, the launch form, sweeps, the registry."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from datasets_app import selectors as data_selectors
from frontend import charts
from frontend.forms import TrainingLaunchForm
from frontend.views import runs
from frontend.views.helpers import call_service, project_context, run_action
from llmhub.services import job_cancel
from projects import selectors as project_selectors
from training import selectors, services
from training.models import BaseSource, Stage, TrainingKind, TrainingMethod


@login_required
def train_stage(request: HttpRequest, pk: int) -> HttpResponse:
    project = project_selectors.get_project_for_user(request.user, pk)
    context = project_context(request, project, "train")
    context.update(
        jobs=selectors.training_jobs_for_user(request.user).filter(project=project)[:50],
        sweeps=selectors.sweeps_for_user(request.user).filter(project=project)[:10],
        model_versions=selectors.model_versions_for_user(request.user).filter(
            registered_model__project=project
        )[:30],
        api_base=request.build_absolute_uri("/api/v1/"),
    )
    return render(request, "frontend/train/stage.html", context)


def _launch_form(request: HttpRequest, project, data=None) -> TrainingLaunchForm:
    """The launch form with choices from the project: its versions (and their splits), model
    versions, tokenizers and the team's registered base models; defaults follow them."""
    from training.base_models import base_models_for_user
    from training.runtime.config import hyperparameter_schema
    from training.runtime.presets import preset_catalog

    versions = data_selectors.versions_for_user(request.user).filter(dataset__project=project)
    return TrainingLaunchForm(
        data,
        kinds=TrainingKind.choices,
        base_sources=BaseSource.choices,
        methods=TrainingMethod.choices,
        presets=preset_catalog(),
        model_versions=selectors.model_versions_for_user(request.user).filter(
            registered_model__project=project
        ),
        tokenizers=data_selectors.tokenizers_for_user(request.user).filter(project=project),
        versions=versions,
        hyperparameters=hyperparameter_schema(),
        task_type=project.task_type,
        base_models=base_models_for_user(request.user).filter(team=project.team),
        # "Clone this run" (?clone=<job id>): that job's settings over the defaults; an alert's
        # "Retrain" (?retrain=<alert id>): the serving version's job, fine-tuned on the window.
        initial={
            "name": f"{project.slug}-run",
            "size": "tiny",
            **runs.clone_for(request, project),
            **runs.retrain_for(request, project),
        },
    )


@login_required
def training_launch(request: HttpRequest, pk: int) -> HttpResponse:
    project = project_selectors.get_project_for_user(request.user, pk)
    form = _launch_form(request, project, request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        launch = _launch_arguments(request, data, form.hyperparameters())
        if data["sweep_space"]:
            sweep = call_service(
                form,
                _on_form_fields(form, services.sweep_launch),
                actor=request.user,
                project=project,
                name=data["name"],
                base=launch,
                search_space=data["sweep_space"],
                method=data["sweep_method"],
                max_trials=data["sweep_max_trials"],
                metric=data["sweep_metric"].strip(),
                direction=data["sweep_direction"],
            )
            if sweep:
                messages.success(
                    request, f"{sweep.name}: {sweep.max_trials} trials queued on the gpu queue."
                )
                return redirect("sweep-page", pk=sweep.pk)
        else:
            job = call_service(
                form,
                _on_form_fields(form, services.training_job_launch),
                actor=request.user,
                project=project,
                name=data["name"],
                **launch,
            )
            if job:
                messages.success(request, f"{job.name} queued on the gpu queue.")
                return redirect("training-job-page", pk=job.pk)
    context = project_context(request, project, "train")
    context.update(form=form, estimate_url=reverse("training-job-estimate"))
    return render(request, "frontend/train/launch.html", context)


# Fields of the launch services that the form spells differently.
_SERVICE_FIELDS = {
    "model_spec": "family",
    "search_space": "sweep_space",
    "max_trials": "sweep_max_trials",
    "metric": "sweep_metric",
    "direction": "sweep_direction",
}


def _on_form_fields(form: TrainingLaunchForm, service):
    """``service``, with the fields of its ValidationErrors renamed to the form's: a
    hyperparameter's error (``hyperparameters: "learning_rate must be positive"``) lands on that
    hyperparameter's field, ``model_spec`` on the architecture."""

    def run(**kwargs):
        try:
            return service(**kwargs)
        except ValidationError as exc:
            if not hasattr(exc, "error_dict"):
                raise
            errors: dict[str, list[str]] = {}
            for field, messages_ in exc.message_dict.items():
                for message in messages_:
                    target = _SERVICE_FIELDS.get(field, field)
                    if field == "hyperparameters":
                        named = [n for n in form.hyperparameter_names if message.startswith(n)]
                        target = f"hp_{max(named, key=len)}" if named else field
                    errors.setdefault(target, []).append(message)
            raise ValidationError(errors) from exc

    return run


def _launch_arguments(request: HttpRequest, data: dict, hyperparameters: dict) -> dict:
    """The launch form's choices as ``training_job_launch`` keyword arguments (less the actor,
    project and name), each object looked up within the user's teams."""
    from training.base_models import base_models_for_user

    source = data["base_source"]
    arguments = {
        "kind": data["kind"],
        "method": data["method"],
        "base_source": source,
        "model_spec": {"family": data["family"], "size": data["size"]}
        if source == BaseSource.RANDOM
        else None,
        "base_model_version": selectors.model_versions_for_user(request.user)
        .filter(pk=data.get("base_model_version") or None)
        .first(),
        "base_path": data.get("base_path", ""),
        "hub_model_id": data.get("hub_model_id", ""),
        "tokenizer": data_selectors.tokenizers_for_user(request.user)
        .filter(pk=data["tokenizer"] or None)
        .first(),
        "train_version": data_selectors.versions_for_user(request.user)
        .filter(pk=data["train_version"])
        .first(),
        "train_split": (data.get("train_split") or "").strip(),
        "eval_split": (data.get("eval_split") or "").strip(),
        "hyperparameters": hyperparameters,
    }
    if source == BaseSource.BASE_MODEL:
        arguments["base_model"] = (
            base_models_for_user(request.user).filter(pk=data.get("base_model") or None).first()
        )
    return arguments


@login_required
def training_job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = selectors.get_training_job_for_user(request.user, pk)
    context = project_context(request, job.project, "train")
    context.update(
        job=job,
        # A filter argument that does not resolve raises in a template: an external run's
        # hyperparameters need not name a precision.
        precision=job.precision_used or job.hyperparameters.get("precision") or "—",
        checkpoints=job.checkpoints.all()[:20],
        curves_url=reverse("training-job-curves", args=[job.pk]),
        job_url=reverse("training-job-detail", args=[job.pk]),
    )
    return render(request, "frontend/train/job.html", context)


@login_required
@require_POST
def training_job_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    job = selectors.get_training_job_for_user(request.user, pk)
    if run_action(request, job_cancel, actor=request.user, job=job):
        messages.success(
            request, "Cancel requested: the job stops within seconds and keeps its last checkpoint."
        )
    return redirect("training-job-page", pk=pk)


@login_required
@require_POST
def training_job_resume(request: HttpRequest, pk: int) -> HttpResponse:
    job = selectors.get_training_job_for_user(request.user, pk)
    try:
        resumed = services.training_job_resume(actor=request.user, job=job)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("training-job-page", pk=pk)
    messages.success(request, "Resumed from the last checkpoint.")
    return redirect("training-job-page", pk=resumed.pk)


@login_required
def model_version_detail(request: HttpRequest, pk: int) -> HttpResponse:
    version = selectors.get_model_version_for_user(request.user, pk)
    # Tags and description (saved on POST), stage history, evaluations, goal status.
    extras = runs.model_version_page(request, version)
    if isinstance(extras, HttpResponse):
        return extras
    context = project_context(request, version.project, "train")
    context.update(
        **extras,
        version=version,
        lineage=selectors.lineage_of(version),
        stage_choices=Stage.choices,
        siblings=selectors.model_versions_for_user(request.user).filter(
            registered_model=version.registered_model
        ),
    )
    return render(request, "frontend/train/model_version.html", context)


@login_required
@require_POST
def model_version_stage(request: HttpRequest, pk: int) -> HttpResponse:
    version = selectors.get_model_version_for_user(request.user, pk)
    stage = request.POST.get("stage", "")
    if run_action(
        request, services.model_version_set_stage, actor=request.user, version=version, stage=stage
    ):
        messages.success(request, f"{version} is now {stage}.")
    return redirect("model-version-page", pk=pk)


@login_required
def sweep_detail(request: HttpRequest, pk: int) -> HttpResponse:
    sweep = get_object_or_404(selectors.sweeps_for_user(request.user), pk=pk)
    trials = selectors.sweep_ranking(sweep)
    finished = [t for t in trials if sweep.metric in t.final_metrics]
    figure = None
    if len(finished) >= 2:
        dimensions = [
            _sweep_dimension(name, [t.hyperparameters.get(name) for t in finished])
            for name in sweep.search_space
        ] + [{"label": sweep.metric, "values": [t.final_metrics[sweep.metric] for t in finished]}]
        figure = charts.parallel_coordinates(
            dimensions,
            color=[t.final_metrics[sweep.metric] for t in finished],
            title=f"Trials by {sweep.metric}",
            color_title=sweep.metric,
        )
    context = project_context(request, sweep.project, "train")
    context.update(
        sweep=sweep, trials=trials, figure=figure, best=finished[0] if finished else None
    )
    return render(request, "frontend/train/sweep.html", context)


def _sweep_dimension(name: str, values: list) -> dict:
    """One axis of the sweep chart: numbers as they are; choices (an ``lr_scheduler`` grid) as
    categories, one tick each."""
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return {"label": name, "values": [float(v) for v in values]}
    categories = sorted({str(v) for v in values})
    return {
        "label": name,
        "values": [categories.index(str(v)) for v in values],
        "tickvals": list(range(len(categories))),
        "ticktext": categories,
    }
