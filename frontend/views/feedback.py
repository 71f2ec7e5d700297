"""The Feedback stage pages: the project's Feedback tab (campaigns with their progress and
agreement, a new campaign), a campaign's manager page (progress per rater, agreement, position
bias, disagreements to adjudicate, outlier raters, win rates and Bradley-Terry, AI raters,
exports, settings), and the raters' own pages: the campaigns they rate and the keyboard-first
rater screen, which labels through the rater API (evaluation/feedback/api/labeling.py).

Raters (LABEL without VIEW_WORK) see only their campaigns: every project page turns them away
(frontend.views.helpers.guard_project_pages: the project's page to their campaigns in it, the
rest 404), the manager page is a 404 for them, and their own pages show nothing else of the
project (no tabs, no model names when the campaign is blind)."""

from __future__ import annotations

from collections import defaultdict

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Sum
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.views.decorators.http import require_POST

from evaluation import selectors as evaluation_selectors
from evaluation.feedback import ai_selectors, selectors
from evaluation.feedback.models import Campaign, CampaignStatus
from evaluation.feedback.services import campaigns as campaign_services
from evaluation.feedback.services.labeling import campaign_criteria
from frontend.forms import (
    AdjudicateForm,
    AIRaterForm,
    CampaignForm,
    CampaignSettingsForm,
    FeedbackExportForm,
)
from frontend.selectors import raw_agreement
from frontend.views.helpers import call_service, project_context, run_action, size_limited_upload
from llmhub.models import JobStatus
from projects.models import Project
from projects.permissions import Action, role_allows, roles_allowed
from projects.selectors import (
    get_project_for_user,
    get_visible,
    members_for_user,
    projects_for_user,
    role_in_team,
)
from projects.services import require
from serving import selectors as serving_selectors
from training import selectors as training_selectors

# Where a campaign's source parameters are refused, on the new campaign form.
SOURCE_FIELD = {"evaluation": "runs", "requests": "endpoint", "versions": "versions"}


def _work_project(request: HttpRequest, pk: int) -> Project:
    """The project, for a page showing the team's work: raters get 404."""
    return get_visible(
        projects_for_user(request.user), request.user, pk, team_path="team", action=Action.VIEW_WORK
    )


def _managed_campaign(request: HttpRequest, pk: int) -> Campaign:
    """A campaign for its manager page: a rater who rates it still gets 404 (they see it only
    through their own screen)."""
    campaign = selectors.get_campaign_for_user(request.user, pk)
    if not role_allows(role_in_team(request.user, campaign.project.team_id), Action.VIEW_WORK):
        raise Http404(f"No campaign with id {pk} was found.")
    return campaign


def _labelers(request: HttpRequest, project: Project) -> list:
    """The team's members whose role may label: the raters a campaign may have."""
    return list(
        members_for_user(request.user)
        .filter(team_id=project.team_id, role__in=roles_allowed(Action.LABEL))
        .order_by("user__username")
    )


# --- the Feedback tab ---------------------------------------------------------------------------


def _campaign_form(request: HttpRequest, project: Project, data=None, files=None) -> CampaignForm:
    runs = (
        evaluation_selectors.evaluation_runs_for_user(request.user)
        .filter(project=project, status=JobStatus.SUCCEEDED)
        .order_by("-created_at")[:200]
    )
    endpoints = serving_selectors.endpoints_for_user(request.user).filter(
        project=project, archived_at=None
    )
    versions = (
        training_selectors.model_versions_for_user(request.user)
        .filter(registered_model__project=project)
        .order_by("-created_at")[:200]
    )
    return CampaignForm(
        data,
        files,
        runs=list(runs),
        endpoints=list(endpoints),
        model_versions=list(versions),
        members=_labelers(request, project),
    )


def _feedback_page(
    request: HttpRequest, project: Project, *, form: CampaignForm | None = None
) -> HttpResponse:
    campaigns = list(
        selectors.campaigns_for_user(request.user)
        .filter(project=project)
        .annotate(n_submitted=Sum("items__submitted"))
    )
    agreement = raw_agreement(campaigns, request.user)  # one aggregate query
    for campaign in campaigns:
        campaign.n_submitted = campaign.n_submitted or 0
        wanted = campaign.n_items * campaign.overlap
        campaign.progress = campaign.n_submitted / wanted if wanted else 0.0
        campaign.agreement = agreement.get(campaign.pk)
    context = project_context(request, project, "feedback")
    can_edit = context["can"]["edit_project"]
    context.update(
        campaigns=campaigns,
        form=form or (_campaign_form(request, project) if can_edit else None),
        form_open=form is not None or not campaigns,
    )
    return render(request, "frontend/feedback/stage.html", context)


@login_required
def feedback_stage(request: HttpRequest, pk: int) -> HttpResponse:
    return _feedback_page(request, _work_project(request, pk))


def _create_with_generation(*, actor, project: Project, campaign_form: CampaignForm) -> Campaign:
    """The campaign, and for versions' generations the job that makes its items: both or
    neither (a refused generation leaves no empty campaign behind)."""
    form = campaign_form
    arguments = form.service_arguments()
    source_field = SOURCE_FIELD.get(arguments["source"], "upload")
    try:
        with transaction.atomic():
            campaign = campaign_services.campaign_create(actor=actor, project=project, **arguments)
            generation = form.generation_arguments()
            if generation is not None:
                from evaluation.feedback.services.ai_raters import generation_launch

                generation_launch(actor=actor, campaign=campaign, **generation)
    except ValidationError as exc:
        # The source's parameters are refused next to the source's own field.
        if hasattr(exc, "error_dict"):
            errors = exc.message_dict
            for name in ("source_params", "items"):
                if name in errors:
                    errors.setdefault(source_field, []).extend(errors.pop(name))
            if arguments["source"] == "versions":
                for name in ("prompts", "settings"):
                    if name in errors and name not in form.fields:
                        errors.setdefault("versions", []).extend(errors.pop(name))
            raise ValidationError(errors) from exc
        raise
    return campaign


@size_limited_upload
def campaign_create(request: HttpRequest, pk: int, upload_error: str | None) -> HttpResponse:
    project = _work_project(request, pk)
    require(request.user, project.team, Action.EDIT_PROJECT)
    form = _campaign_form(request, project, request.POST, request.FILES)
    if upload_error:
        form.is_valid()
        form.add_error("upload", upload_error)
    elif form.is_valid():
        campaign = call_service(
            form, _create_with_generation, actor=request.user, project=project, campaign_form=form
        )
        if campaign is not None:
            what = (
                "a job is generating its items"
                if campaign.source == "versions"
                else "launch it when its raters are ready"
            )
            messages.success(request, f"Campaign {campaign.name} created: {what}.")
            return _back(campaign)
    return _feedback_page(request, project, form=form)


# --- the campaign page --------------------------------------------------------------------------


def _stats(campaign: Campaign) -> dict:
    from evaluation.feedback.stats import campaign_stats

    return campaign_stats(campaign)


def _figures(stats: dict) -> dict:
    """The page's Plotly figures (frontend/charts_feedback.py), by name."""
    from frontend.charts_feedback import feedback_figures

    return feedback_figures(stats)


def _campaign_page(
    request: HttpRequest,
    campaign: Campaign,
    *,
    settings_form: CampaignSettingsForm | None = None,
    ai_rater_form: AIRaterForm | None = None,
    export_form: FeedbackExportForm | None = None,
    adjudicate_form: AdjudicateForm | None = None,
) -> HttpResponse:
    project = campaign.project
    context = project_context(request, project, "feedback")
    members = _labelers(request, project)
    raters = [row.user for row in campaign.rater_rows.select_related("user")]
    endpoints = list(
        serving_selectors.endpoints_for_user(request.user).filter(project=project, archived_at=None)
    )
    stats = _stats(campaign)
    ai_raters = list(campaign.ai_raters.all())
    ai_jobs: dict[int, list] = defaultdict(list)
    jobs = ai_selectors.ai_rating_jobs_for_user(request.user).filter(ai_rater__campaign=campaign)
    for job in jobs.order_by("-created_at"):
        ai_jobs[job.ai_rater_id].append(job)
    # campaign_stats gives {"humans": ..., "raters": [one row per AI rater, by "id"]}.
    ai_agreement = {row["id"]: row for row in stats["ai_raters"]["raters"]}
    for ai_rater in ai_raters:
        ai_rater.recent_jobs = ai_jobs[ai_rater.pk][:3]
        ai_rater.stats = ai_agreement.get(ai_rater.pk)
    unlisted_adjudication = _adjudication_forms(
        campaign, stats["disagreements"]["items"], adjudicate_form
    )
    context.update(
        campaign=campaign,
        stats=stats,
        figures=_figures(stats),
        raters=raters,
        ai_raters=ai_raters,
        exports=list(
            campaign.exports.select_related("dataset_version__dataset").order_by("-created_at")[:20]
        ),
        generations=list(campaign.generations.order_by("-created_at")[:5]),
        settings_form=settings_form
        or CampaignSettingsForm(campaign=campaign, members=members, current_raters=raters),
        settings_open=settings_form is not None,
        ai_rater_form=ai_rater_form or AIRaterForm(endpoints=endpoints),
        ai_rater_open=ai_rater_form is not None,
        export_form=export_form or FeedbackExportForm(),
        adjudicate_form=adjudicate_form,
        unlisted_adjudication=unlisted_adjudication,
        rate_url=reverse("feedback-rate", args=[campaign.pk]),
        is_rater=any(u.pk == request.user.pk for u in raters),
    )
    return render(request, "frontend/feedback/campaign.html", context)


@login_required
def campaign_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _campaign_page(request, _managed_campaign(request, pk))


def _back(campaign: Campaign, anchor: str = "") -> HttpResponse:
    """Back to the campaign page, at one of its sections."""
    url = reverse("feedback-campaign-page", args=[campaign.pk])
    return redirect(f"{url}#{anchor}" if anchor else url)


def _edited_campaign(request: HttpRequest, pk: int) -> Campaign:
    campaign = _managed_campaign(request, pk)
    require(request.user, campaign.project.team, Action.EDIT_PROJECT)
    return campaign


@login_required
@require_POST
def campaign_launch(request: HttpRequest, pk: int) -> HttpResponse:
    campaign = _edited_campaign(request, pk)
    if run_action(
        request, campaign_services.campaign_launch, actor=request.user, campaign=campaign
    ):
        messages.success(request, f"{campaign.name} launched: its raters can start.")
    return _back(campaign)


@login_required
@require_POST
def campaign_close(request: HttpRequest, pk: int) -> HttpResponse:
    campaign = _edited_campaign(request, pk)
    if run_action(request, campaign_services.campaign_close, actor=request.user, campaign=campaign):
        messages.success(request, f"{campaign.name} closed: no more items are handed out.")
    return _back(campaign)


def _save_settings(*, actor, campaign: Campaign, changes: dict, raters: list | None) -> Campaign:
    """Raters first (raising the overlap may need the new ones), then the other changes; all or
    nothing."""
    with transaction.atomic():
        if raters is not None:
            campaign = campaign_services.campaign_set_raters(
                actor=actor, campaign=campaign, raters=raters
            )
        if changes:
            campaign = campaign_services.campaign_update(actor=actor, campaign=campaign, **changes)
    return campaign


@login_required
@require_POST
def campaign_settings(request: HttpRequest, pk: int) -> HttpResponse:
    campaign = _edited_campaign(request, pk)
    raters = [row.user for row in campaign.rater_rows.select_related("user")]
    form = CampaignSettingsForm(
        request.POST,
        campaign=campaign,
        members=_labelers(request, campaign.project),
        current_raters=raters,
    )
    if form.is_valid():
        changes, new_raters = form.changes(), form.raters_changed()
        if not changes and new_raters is None:
            messages.info(request, "Nothing changed.")
            return _back(campaign)
        saved = call_service(
            form,
            _save_settings,
            actor=request.user,
            campaign=campaign,
            changes=changes,
            raters=new_raters,
        )
        if saved is not None:
            messages.success(request, f"{saved.name}: settings saved.")
            return _back(campaign)
    campaign.refresh_from_db()
    return _campaign_page(request, campaign, settings_form=form)


def _adjudicate_form(campaign: Campaign, item_pk: int | None, responses, **kwargs):
    return AdjudicateForm(
        task=campaign.task,
        n_responses=len(responses or []),
        criteria=campaign_criteria(campaign) if campaign.task == "rating" else (),
        item_pk=item_pk,
        **kwargs,
    )


def _adjudication_forms(
    campaign: Campaign, disagreements: list[dict], bound: AdjudicateForm | None
) -> AdjudicateForm | None:
    """A form per item in disagreement (its task's inputs, for its number of responses; the
    posted one bound, with its errors); the bound form when its item is not listed. One query
    for the items' responses."""
    responses = dict(
        campaign.items.filter(pk__in=[d["item"] for d in disagreements]).values_list(
            "pk", "responses"
        )
    )
    unlisted = bound
    for row in disagreements:
        if bound is not None and bound.initial.get("item") == row["item"]:
            row["form"], unlisted = bound, None
        else:
            row["form"] = _adjudicate_form(
                campaign,
                row["item"],
                responses.get(row["item"]),
                adjudicated=row.get("adjudicated_value"),
            )
    return unlisted


@login_required
@require_POST
def item_adjudicate(request: HttpRequest, pk: int) -> HttpResponse:
    from evaluation.feedback.services.labeling import item_adjudicate as adjudicate

    campaign = _edited_campaign(request, pk)
    raw = request.POST.get("item", "")
    # A hidden field a person does not type: anything but a short whole number is no item.
    item = campaign.items.filter(pk=int(raw)).first() if raw.isdigit() and len(raw) < 19 else None
    form = _adjudicate_form(
        campaign, item.pk if item else None, item.responses if item else [], data=request.POST
    )
    if item is None:
        form.is_valid()
        form.add_error(None, "That item is not in this campaign.")
    elif form.is_valid() and call_service(
        form, adjudicate, actor=request.user, item=item, value=form.value()
    ):
        messages.success(request, f"Item {item.index}: the adjudicated label now counts.")
        return _back(campaign, "disagreements")
    # Every error at once, next to its input, in the item's row.
    return _campaign_page(request, campaign, adjudicate_form=form)


@login_required
@require_POST
def ai_rater_create(request: HttpRequest, pk: int) -> HttpResponse:
    from evaluation.feedback.services.ai_raters import ai_rater_create as create

    campaign = _edited_campaign(request, pk)
    endpoints = serving_selectors.endpoints_for_user(request.user).filter(
        project=campaign.project, archived_at=None
    )
    form = AIRaterForm(request.POST, endpoints=list(endpoints))
    if form.is_valid():
        ai_rater = call_service(
            form, create, actor=request.user, campaign=campaign, **form.service_arguments()
        )
        if ai_rater is not None:
            messages.success(request, f"AI rater {ai_rater.name} added: run it to label the items.")
            return _back(campaign, "ai-raters")
    return _campaign_page(request, campaign, ai_rater_form=form)


def _ai_rater(request: HttpRequest, campaign: Campaign, ai_rater_pk: int):
    ai_rater = campaign.ai_raters.filter(pk=ai_rater_pk).first()
    if ai_rater is None:
        raise Http404(f"No AI rater with id {ai_rater_pk} was found.")
    return ai_rater


@login_required
@require_POST
def ai_rating_launch(request: HttpRequest, pk: int, ai_rater_pk: int) -> HttpResponse:
    from evaluation.feedback.services.ai_raters import ai_rating_launch as launch

    campaign = _edited_campaign(request, pk)
    ai_rater = _ai_rater(request, campaign, ai_rater_pk)
    max_items = request.POST.get("max_items", "").strip()
    try:
        limit = int(max_items) if max_items else None
    except ValueError:
        messages.error(request, "At most how many items: a whole number, or empty for all.")
        limit = -1
    if limit != -1 and run_action(
        request, launch, actor=request.user, ai_rater=ai_rater, max_items=limit
    ):
        messages.success(request, f"{ai_rater.name} is labeling the items.")
    return _back(campaign, "ai-raters")


@login_required
@require_POST
def ai_rater_approve(request: HttpRequest, pk: int, ai_rater_pk: int) -> HttpResponse:
    from evaluation.feedback.services.ai_raters import ai_rater_approve as approve

    campaign = _edited_campaign(request, pk)
    ai_rater = _ai_rater(request, campaign, ai_rater_pk)
    use = request.POST.get("use_for_training") == "1"
    if run_action(request, approve, actor=request.user, ai_rater=ai_rater, use_for_training=use):
        if use:
            messages.success(
                request, f"{ai_rater.name}'s labels may train models (its agreement is recorded)."
            )
        else:
            messages.success(request, f"{ai_rater.name}'s labels no longer count for training.")
    return _back(campaign, "ai-raters")


@login_required
@require_POST
def export_launch(request: HttpRequest, pk: int) -> HttpResponse:
    from evaluation.feedback.services.exports import feedback_export_launch

    campaign = _edited_campaign(request, pk)
    form = FeedbackExportForm(request.POST)
    if form.is_valid():
        export = call_service(
            form,
            feedback_export_launch,
            actor=request.user,
            campaign=campaign,
            format=form.cleaned_data["format"],
            include_ai=form.cleaned_data["include_ai"],
        )
        if export is not None:
            messages.success(request, "Export started: the dataset version appears when it ends.")
            return _back(campaign, "exports")
    return _campaign_page(request, campaign, export_form=form)


# --- the raters' pages --------------------------------------------------------------------------


@login_required
def my_campaigns(request: HttpRequest) -> HttpResponse:
    """The campaigns the user rates, with their progress: a rater's way in (``?project=``: those
    of one project, where a rater opening the project lands)."""
    campaigns = selectors.rater_campaigns_for_user(request.user).select_related("project__team")
    project = None
    if request.GET.get("project"):
        project = get_project_for_user(request.user, request.GET["project"])
        campaigns = campaigns.filter(project=project)
    return render(
        request,
        "frontend/feedback/my_campaigns.html",
        {"campaigns": list(campaigns), "project": project},
    )


def _api_url(name: str, *args) -> str:
    """A rater API route, or "" while it is not registered (the screen then says so)."""
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return ""


@login_required
def rate(request: HttpRequest, pk: int) -> HttpResponse:
    """The rater screen: one item at a time, keyboard first. The page carries no item: the
    script asks the rater API for the next one, so nothing of another item, another rater or
    (in blind mode) a model is ever in the page."""
    campaign = selectors.rater_campaigns_for_user(request.user).filter(pk=pk).first()
    if campaign is None:
        raise Http404(f"No campaign with id {pk} was found.")
    # The API routes with a placeholder id the script replaces with the assignment's.
    placeholder = 999999999
    urls = {
        "next": _api_url("feedback-labeling-next", campaign.pk),
        "undo": _api_url("feedback-labeling-undo", campaign.pk),
        "judgment": _api_url("feedback-assignment-judgment", placeholder).replace(
            str(placeholder), "{id}"
        ),
        "skip": _api_url("feedback-assignment-skip", placeholder).replace(str(placeholder), "{id}"),
    }
    return render(
        request,
        "frontend/feedback/rate.html",
        {
            "campaign": campaign,
            "active": campaign.status == CampaignStatus.ACTIVE,
            "urls": urls,
            "criteria": campaign_criteria(campaign) if campaign.task == "rating" else [],
        },
    )
