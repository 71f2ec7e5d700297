"""The Data stage pages: datasets, uploads, versions with profiles, cleaning, splits, tokenizers,
recipes and data cards."""

from __future__ import annotations

import json

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import (
    HttpRequest,
    HttpResponse,
    JsonResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from datasets_app import selectors, services
from datasets_app.uploads import too_large_message
from frontend import charts
from frontend.forms import (
    CleanForm,
    DataCardForm,
    RecipeForm,
    RolesForm,
    SplitForm,
    TokenizerForm,
    UploadForm,
)
from frontend.views.helpers import call_service, project_context, size_limited_upload
from projects import selectors as project_selectors


def _wants_json(request: HttpRequest) -> bool:
    return request.headers.get("X-Requested-With") == "XMLHttpRequest"


@login_required
def data_stage(request: HttpRequest, pk: int) -> HttpResponse:
    project = project_selectors.get_project_for_user(request.user, pk)
    context = project_context(request, project, "data")
    datasets = selectors.datasets_for_user(request.user).filter(project=project)
    context.update(
        datasets=datasets,
        upload_form=UploadForm(),
        recipes=selectors.recipes_for_user(request.user).filter(project=project),
        tokenizers=selectors.tokenizers_for_user(request.user).filter(project=project),
        jobs=selectors.data_jobs_for_user(request.user).filter(project=project)[:12],
        max_upload=settings.LLMHUB_MAX_UPLOAD_BYTES,
    )
    return render(request, "frontend/data/stage.html", context)


@size_limited_upload
def dataset_upload(request: HttpRequest, pk: int, error: str | None) -> HttpResponse:
    """Create a dataset from a file (``pk`` is the project), or add a version (``dataset``)."""
    project = project_selectors.get_project_for_user(request.user, pk)
    form = UploadForm(request.POST, request.FILES)
    if error or getattr(request, "upload_too_large", False):
        form.add_error("file", error or too_large_message(settings.LLMHUB_MAX_UPLOAD_BYTES))
    dataset_id = request.POST.get("dataset")
    job = None
    if form.is_valid():
        data = form.cleaned_data
        try:
            options = {
                "uploaded_file": data["file"],
                "file_format": data["file_format"] or None,
                "encoding": data["encoding"],
                "encoding_errors": data["encoding_errors"],
                "txt_mode": data["txt_mode"],
                "column_roles": services.parse_json_field(
                    data["column_roles"], field="column_roles"
                ),
            }
            if dataset_id:
                dataset = get_object_or_404(
                    selectors.datasets_for_user(request.user).filter(project=project),
                    pk=dataset_id,
                )
                job = services.upload_start(actor=request.user, dataset=dataset, **options)
            else:
                # A new dataset without a name is named after its file (the label says optional);
                # it is created only once the file and its options pass.
                job = services.dataset_create_with_upload(
                    actor=request.user,
                    project=project,
                    name=data["name"].strip()
                    or services.default_dataset_name(project=project, filename=data["file"].name),
                    description=data["description"],
                    **options,
                )
        except ValidationError as exc:
            call_service(form, _raise, error=exc)
    if job is None:
        if _wants_json(request):
            return JsonResponse({"errors": form.errors.get_json_data()}, status=400)
        messages.error(request, " ".join(e for errs in form.errors.values() for e in errs))
        return redirect("data-stage", pk=project.pk)
    target = reverse("dataset-page", args=[job.dataset_id])
    if _wants_json(request):
        return JsonResponse({"redirect": target, "job": job.pk}, status=202)
    messages.success(request, "Upload received: it is being ingested into a new version.")
    return redirect(target)


def _raise(*, error: ValidationError) -> None:
    raise error


@login_required
def dataset_detail(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = selectors.get_dataset_for_user(request.user, pk)
    card = dataset.card  # made with the dataset
    card_form = DataCardForm(
        request.POST or None,
        initial={field: getattr(card, field) for field in services.DATA_CARD_FIELDS},
    )
    if (
        request.method == "POST"
        and card_form.is_valid()
        and call_service(
            card_form,
            services.data_card_update,
            actor=request.user,
            dataset=dataset,
            **card_form.cleaned_data,
        )
    ):
        messages.success(request, "Data card saved.")
        return redirect("dataset-page", pk=dataset.pk)
    context = project_context(request, dataset.project, "data")
    context.update(
        dataset=dataset,
        card=card,
        card_form=card_form,
        versions=selectors.versions_for_user(request.user).filter(dataset=dataset),
        jobs=selectors.data_jobs_for_user(request.user).filter(dataset=dataset)[:20],
        upload_form=UploadForm(),
    )
    return render(request, "frontend/data/dataset.html", context)


def _profile_figures(profile: dict) -> list[dict]:
    """Plotly figures for a version's profile: lengths and tokens of the text columns, class
    balance, and languages and PII where there is something to see."""
    figures = []
    for name, column in (profile.get("columns") or {}).items():
        is_text = column.get("role") or (column.get("char_length") or {}).get("mean", 0) > 50
        lengths = column.get("char_length_histogram")
        if is_text and lengths and lengths.get("counts"):
            figures.append(
                {
                    "id": f"len-{name}",
                    "figure": charts.histogram(
                        lengths["edges"],
                        lengths["counts"],
                        title=f"{name}: length in characters",
                        x_title="characters",
                    ),
                }
            )
        tokens = column.get("token_length_histogram")
        if tokens and tokens.get("counts"):
            figures.append(
                {
                    "id": f"tok-{name}",
                    "figure": charts.histogram(
                        tokens["edges"],
                        tokens["counts"],
                        title=f"{name}: length in tokens",
                        x_title="tokens",
                    ),
                }
            )
        top = column.get("top_values")
        if top and column.get("role") == "label":
            figures.append(
                {
                    "id": f"top-{name}",
                    "figure": charts.bars(
                        [t["value"] for t in top],
                        [t["count"] for t in top],
                        title=f"{name}: class balance",
                        y_title="rows",
                        horizontal=len(top) > 8,
                    ),
                }
            )
        languages = column.get("languages") or []
        if is_text and languages and languages[0]["share"] < 0.95:
            figures.append(
                {
                    "id": f"lang-{name}",
                    "figure": charts.bars(
                        [lang["language"] for lang in languages],
                        [lang["share"] for lang in languages],
                        title=f"{name}: languages (share of sample)",
                        y_title="share",
                    ),
                }
            )
        pii = column.get("pii")
        if pii and any(pii.values()):
            figures.append(
                {
                    "id": f"pii-{name}",
                    "figure": charts.bars(
                        list(pii),
                        list(pii.values()),
                        title=f"{name}: PII hits by kind (sample)",
                        y_title="hits",
                        color="#ef4444",
                    ),
                }
            )
    return figures


@login_required
def version_detail(request: HttpRequest, pk: int, bound_forms: dict | None = None) -> HttpResponse:
    """The version page; ``bound_forms`` (a refused split or tokenizer form) are shown with their
    errors next to their fields instead of fresh ones."""
    version = selectors.get_version_for_user(request.user, pk)
    bound_forms = bound_forms or {}
    project = version.dataset.project
    recipes = list(selectors.recipes_for_user(request.user).filter(project=project))
    profile_job = selectors.latest_profile(version)
    profile = profile_job.result if profile_job else None
    producer = version.produced_by.filter(kind="clean").first()
    context = project_context(request, project, "data")
    context.update(
        version=version,
        dataset=version.dataset,
        lineage=selectors.lineage(version),
        children=version.children.all(),
        profile=profile,
        profile_figures=_profile_figures(profile) if profile else [],
        cleaning_report=producer.result if producer else None,
        clean_form=CleanForm(recipes=recipes),
        split_form=bound_forms.get("split_form") or SplitForm(columns=version.columns),
        tokenizer_form=bound_forms.get("tokenizer_form")
        or TokenizerForm(name_prefix=_tokenizer_name_prefix(version)),
        roles_form=RolesForm(initial={"column_roles": json.dumps(version.column_roles)}),
        has_recipes=bool(recipes),
        jobs=selectors.data_jobs_for_user(request.user).filter(source_version=version)[:10],
        tokenizers=selectors.tokenizers_for_user(request.user).filter(project=project),
        preview_url=reverse("dataset-version-rows", args=[version.pk]),
    )
    return render(
        request, "frontend/data/version.html", context, status=400 if bound_forms else 200
    )


def _tokenizer_name_prefix(version) -> str:
    # The service names a tokenizer left without a name "<prefix>-<algorithm>" too.
    return f"{version.dataset.name}-v{version.number}"


@login_required
@require_POST
def version_clean(request: HttpRequest, pk: int) -> HttpResponse:
    version = selectors.get_version_for_user(request.user, pk)
    recipes = selectors.recipes_for_user(request.user).filter(project=version.dataset.project)
    form = CleanForm(request.POST, recipes=recipes)
    if form.is_valid() and call_service(
        form,
        services.clean_launch,
        actor=request.user,
        version=version,
        recipe=recipes.get(pk=form.cleaned_data["recipe"]),
        num_proc=form.cleaned_data["num_proc"],
    ):
        messages.success(request, "Cleaning started: a new version appears when it finishes.")
    else:
        messages.error(request, " ".join(e for errs in form.errors.values() for e in errs))
    return redirect("version-page", pk=version.pk)


@login_required
@require_POST
def version_split(request: HttpRequest, pk: int) -> HttpResponse:
    version = selectors.get_version_for_user(request.user, pk)
    form = SplitForm(request.POST, columns=version.columns)
    if form.is_valid():
        data = form.cleaned_data
        by_column = data["by_column"] or None
        ratios = (
            None
            if by_column
            else {name: data[name] for name in ("train", "validation", "test") if data[name]}
        )
        if call_service(
            form,
            services.split_launch,
            actor=request.user,
            version=version,
            ratios=ratios,
            stratify_column=data["stratify_column"] or None,
            by_column=by_column,
            **({"strategy": data["strategy"]} if data.get("strategy") and not by_column else {}),
            # Not sent while splitting by a column (the field is hidden): the service's default.
            **({} if data["seed"] is None else {"seed": data["seed"]}),
        ):
            messages.success(request, "Splitting started.")
            return redirect("version-page", pk=version.pk)
    # Every error next to its field, on the version page itself.
    return version_detail(request, version.pk, bound_forms={"split_form": form})


@login_required
@require_POST
def version_tokenizer(request: HttpRequest, pk: int) -> HttpResponse:
    version = selectors.get_version_for_user(request.user, pk)
    form = TokenizerForm(request.POST, name_prefix=_tokenizer_name_prefix(version))
    if form.is_valid() and call_service(
        form, services.tokenizer_launch, actor=request.user, version=version, **form.cleaned_data
    ):
        messages.success(request, "Tokenizer training started.")
        return redirect("version-page", pk=version.pk)
    return version_detail(request, version.pk, bound_forms={"tokenizer_form": form})


@login_required
@require_POST
def version_roles(request: HttpRequest, pk: int) -> HttpResponse:
    version = selectors.get_version_for_user(request.user, pk)
    form = RolesForm(request.POST)
    new = None
    if form.is_valid():
        try:
            roles = services.parse_json_field(
                form.cleaned_data["column_roles"], field="column_roles"
            )
            new = call_service(
                form,
                services.version_remap_roles,
                actor=request.user,
                version=version,
                column_roles=roles,
            )
        except ValidationError as exc:
            call_service(form, _raise, error=exc)
    if new is None:
        messages.error(request, " ".join(e for errs in form.errors.values() for e in errs))
        return redirect("version-page", pk=version.pk)
    messages.success(request, f"Created v{new.number} with the new column roles.")
    return redirect("version-page", pk=new.pk)


@login_required
@require_POST
def version_profile(request: HttpRequest, pk: int) -> HttpResponse:
    version = selectors.get_version_for_user(request.user, pk)
    tokenizer = (
        selectors.tokenizers_for_user(request.user)
        .filter(pk=request.POST.get("tokenizer") or None, project=version.dataset.project)
        .first()
    )
    services.profile_launch(actor=request.user, version=version, tokenizer=tokenizer)
    messages.success(request, "Profiling started.")
    return redirect("version-page", pk=version.pk)


@login_required
def recipe_edit(request: HttpRequest, pk: int, recipe_pk: int | None = None) -> HttpResponse:
    """Create (no ``recipe_pk``) or edit a cleaning recipe of project ``pk``."""
    from datasets_app.cleaning.recipe import step_catalog

    project = project_selectors.get_project_for_user(request.user, pk)
    catalog = step_catalog()
    recipe = None
    if recipe_pk is not None:
        recipe = get_object_or_404(
            selectors.recipes_for_user(request.user).filter(project=project), pk=recipe_pk
        )
        initial = {
            "name": recipe.name,
            "description": recipe.description,
            "steps": json.dumps(recipe.steps, indent=2),
        }
    else:
        initial = {"steps": json.dumps(catalog["default_recipe"], indent=2)}
    form = RecipeForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        try:
            data["steps"] = services.parse_json_field(data["steps"], field="steps")
        except ValidationError as exc:
            call_service(form, _raise, error=exc)
        else:
            saved = (
                call_service(
                    form, services.recipe_update, actor=request.user, recipe=recipe, **data
                )
                if recipe
                else call_service(
                    form, services.recipe_create, actor=request.user, project=project, **data
                )
            )
            if saved:
                messages.success(request, f"Recipe {saved.name} saved.")
                return redirect("data-stage", pk=project.pk)
    context = project_context(request, project, "data")
    context.update(form=form, recipe=recipe, catalog=catalog)
    return render(request, "frontend/data/recipe.html", context)
