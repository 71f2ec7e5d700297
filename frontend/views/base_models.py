"""The Base models page of the Train tab: the team's registered pretrained bases (license,
parameters, architecture), the installed offline packages ready to add, and an upload form
for an archive of a model directory."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from datasets_app.uploads import too_large_message
from frontend.views.helpers import call_service, project_context, run_action, size_limited_upload
from projects import selectors as project_selectors
from training import base_models


class BaseModelUploadForm(forms.Form):
    name = forms.CharField(max_length=120, help_text="How jobs and lineage will name it.")
    file = forms.FileField(
        label="Model archive",
        help_text="A .zip, .tar or .tar.gz of the directory <code>save_pretrained</code> wrote: "
        "config.json, *.safetensors weights and the tokenizer files. Pickled weights (.bin, "
        ".pt) are refused.",
        widget=forms.ClearableFileInput(attrs={"accept": ".zip,.tar,.tgz,.gz"}),
    )
    license = forms.CharField(
        max_length=100, required=False, help_text="e.g. Apache-2.0, MIT, cc-by-4.0."
    )
    description = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="Where it comes from."
    )


def _page(request: HttpRequest, project, upload_form: BaseModelUploadForm) -> HttpResponse:
    registered = list(base_models.base_models_for_user(request.user).filter(team=project.team))
    have = {b.package for b in registered if b.package}
    context = project_context(request, project, "train")
    context.update(
        base_models=registered,
        packages=[
            {**p, "registered": p["package"] in have} for p in base_models.installed_packages()
        ],
        upload_form=upload_form,
        max_upload=settings.LLMHUB_MAX_UPLOAD_BYTES,
    )
    return render(request, "frontend/train/base_models.html", context)


@login_required
def base_models_page(request: HttpRequest, pk: int) -> HttpResponse:
    project = project_selectors.get_project_for_user(request.user, pk)
    return _page(request, project, BaseModelUploadForm())


@login_required
@require_POST
def base_model_add_package(request: HttpRequest, pk: int) -> HttpResponse:
    """Register an installed offline package with the project's team."""
    project = project_selectors.get_project_for_user(request.user, pk)
    package = request.POST.get("package", "")
    if run_action(
        request,
        base_models.base_model_register_package,
        actor=request.user,
        team=project.team,
        package=package,
    ):
        messages.success(request, f"{package} is registered: every job of the team can use it.")
    return redirect("base-models-page", pk=project.pk)


@size_limited_upload
def base_model_upload(request: HttpRequest, pk: int, error: str | None) -> HttpResponse:
    """Register an uploaded archive of a model directory."""
    project = project_selectors.get_project_for_user(request.user, pk)
    form = BaseModelUploadForm(request.POST, request.FILES)
    if error or getattr(request, "upload_too_large", False):
        form.add_error("file", error or too_large_message(settings.LLMHUB_MAX_UPLOAD_BYTES))
    if form.is_valid():
        data = form.cleaned_data
        base = call_service(
            form,
            base_models.base_model_upload,
            actor=request.user,
            team=project.team,
            name=data["name"],
            uploaded_file=data["file"],
            license=data["license"],
            description=data["description"],
        )
        if base is not None:
            messages.success(
                request, f"{base.name} is registered: every job of the team can use it."
            )
            return redirect("base-models-page", pk=project.pk)
    return _page(request, project, form)
