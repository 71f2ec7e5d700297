"""Dashboard and project pages: the Define stage (project, goals, activity) and the tabs."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from evaluation import selectors as evaluation_selectors
from frontend.forms import GoalForm, ProjectCreateForm, ProjectForm
from frontend.monitor_loop import monitor_loop
from frontend.selectors import feedback_loop
from frontend.views.helpers import STAGES, call_service, project_context, run_action
from llmhub.models import ACTIVE_STATUSES
from llmhub.services import job_cancel
from projects import selectors, services
from projects.permissions import Action, role_allows


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    teams = list(selectors.teams_for_user(request.user))
    projects = list(selectors.projects_for_user(request.user).order_by("team__name", "name"))
    goal_totals = {"met": 0, "not_met": 0, "not_measured": 0}
    # Where the user only rates (no VIEW_WORK), a project leads to their campaigns in it.
    work_teams = {t.pk for t in teams if role_allows(t.my_role, Action.VIEW_WORK)}
    for project in projects:
        project.rates_only = project.team_id not in work_teams
        for goal in project.goals.all():
            goal_totals[goal.status] += 1
    return render(
        request,
        "frontend/dashboard.html",
        {
            "teams": teams,
            "projects": projects,
            "goal_totals": goal_totals,
            "can_create_project": any(role_allows(t.my_role, Action.CREATE_PROJECT) for t in teams),
            "activity": selectors.audit_events_for_user(request.user)[:8],
        },
    )


@login_required
def project_create(request: HttpRequest) -> HttpResponse:
    teams = [
        t
        for t in selectors.teams_for_user(request.user)
        if role_allows(t.my_role, Action.CREATE_PROJECT)
    ]
    if not teams:
        messages.info(request, "Create a team first (or ask a team admin to make you a manager).")
        return redirect("team-create")
    initial_team = request.GET.get("team")
    form = ProjectCreateForm(request.POST or None, teams=teams, initial={"team": initial_team})
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        team = next(t for t in teams if str(t.pk) == data.pop("team"))
        project = call_service(form, services.project_create, actor=request.user, team=team, **data)
        if project:
            messages.success(request, f"Project {project.name} created. Now set its goals.")
            return redirect("project-detail", pk=project.pk)
    return render(request, "frontend/project_form.html", {"form": form, "creating": True})


@login_required
def project_edit(request: HttpRequest, pk: int) -> HttpResponse:
    project = selectors.get_project_for_user(request.user, pk)
    initial = {name: getattr(project, name) for name in services.PROJECT_EDITABLE_FIELDS}
    form = ProjectForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        updates = dict(form.cleaned_data)
        if not updates["slug"]:
            updates.pop("slug")  # keep the current slug rather than clearing it
        if call_service(
            form, services.project_update, actor=request.user, project=project, **updates
        ):
            messages.success(request, "Project saved.")
            return redirect("project-detail", pk=project.pk)
    context = project_context(request, project, "define")
    context.update(form=form, creating=False)
    return render(request, "frontend/project_form.html", context)


@login_required
@require_POST
def project_delete(request: HttpRequest, pk: int) -> HttpResponse:
    project = selectors.get_project_for_user(request.user, pk)
    if run_action(request, services.project_delete, actor=request.user, project=project):
        messages.success(request, f"Project {project.name} deleted.")
        return redirect("dashboard")
    return redirect("project-detail", pk=pk)


@login_required
def project_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """The Define stage: problem, goals, the feedback and monitor loops, health and activity."""
    project = selectors.get_project_for_user(request.user, pk)
    context = project_context(request, project, "define")
    context.update(
        goals=project.goals.all(),
        goal_form=GoalForm(task_type=project.task_type),
        activity=selectors.audit_events_for_user(request.user).filter(project=project)[:15],
        health_checks=selectors.health_checks_for_user(request.user).filter(project=project)[:3],
        # Running evaluations change the goals' status when they end: the page follows them.
        live_jobs=evaluation_selectors.evaluation_runs_for_user(request.user).filter(
            project=project, status__in=ACTIVE_STATUSES
        ),
        feedback_loop=feedback_loop(request.user, project),
        monitor_loop=monitor_loop(request.user, project),
    )
    return render(request, "frontend/project_define.html", context)


@login_required
def project_stage(request: HttpRequest, pk: int, stage: str) -> HttpResponse:
    """A lifecycle stage that has no page of its own yet."""
    if stage not in dict(STAGES) or stage == "define":
        raise Http404("No such stage.")
    project = selectors.get_project_for_user(request.user, pk)
    return render(
        request, "frontend/project_stage_pending.html", project_context(request, project, stage)
    )


@login_required
def project_activity(request: HttpRequest, pk: int) -> HttpResponse:
    project = selectors.get_project_for_user(request.user, pk)
    context = project_context(request, project, "define")
    context["activity"] = selectors.audit_events_for_user(request.user).filter(project=project)[
        :200
    ]
    return render(request, "frontend/project_activity.html", context)


@login_required
def goal_create(request: HttpRequest, pk: int) -> HttpResponse:
    project = selectors.get_project_for_user(request.user, pk)
    form = GoalForm(request.POST or None, task_type=project.task_type)
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        data["comparison"] = data["comparison"] or None
        if call_service(form, services.goal_create, actor=request.user, project=project, **data):
            messages.success(request, "Goal added.")
            return redirect("project-detail", pk=project.pk)
    context = project_context(request, project, "define")
    context.update(form=form, goal=None)
    return render(request, "frontend/goal_form.html", context)


@login_required
def goal_edit(request: HttpRequest, pk: int) -> HttpResponse:
    goal = get_object_or_404(selectors.goals_for_user(request.user), pk=pk)
    project = goal.project
    initial = {f: getattr(goal, f) for f in services.GOAL_EDITABLE_FIELDS}
    form = GoalForm(request.POST or None, task_type=project.task_type, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        data["comparison"] = data["comparison"] or goal.comparison
        if call_service(form, services.goal_update, actor=request.user, goal=goal, **data):
            messages.success(request, "Goal saved.")
            return redirect("project-detail", pk=project.pk)
    context = project_context(request, project, "define")
    context.update(form=form, goal=goal)
    return render(request, "frontend/goal_form.html", context)


@login_required
@require_POST
def goal_delete(request: HttpRequest, pk: int) -> HttpResponse:
    goal = get_object_or_404(selectors.goals_for_user(request.user), pk=pk)
    if run_action(request, services.goal_delete, actor=request.user, goal=goal):
        messages.success(request, "Goal removed.")
    return redirect("project-detail", pk=goal.project_id)


@login_required
@require_POST
def health_check_launch(request: HttpRequest, pk: int) -> HttpResponse:
    project = selectors.get_project_for_user(request.user, pk)
    if run_action(request, services.health_check_launch, actor=request.user, project=project):
        messages.success(request, "Health check queued.")
    return redirect("project-detail", pk=pk)


@login_required
@require_POST
def health_check_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(selectors.health_checks_for_user(request.user), pk=pk)
    if run_action(request, job_cancel, actor=request.user, job=job):
        messages.success(request, "Cancel requested.")
    return redirect("project-detail", pk=job.project_id)
